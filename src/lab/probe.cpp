#include "lab/probe.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "kernels/cpu/simd.h"

namespace glmlab {

ProbeResult summarize(std::vector<double> s) {
  ProbeResult r;
  r.samples = s;
  if (s.empty()) return r;
  std::sort(s.begin(), s.end());
  r.min = s.front();
  r.max = s.back();
  r.median = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  return r;
}

ProbeResult probe_memory_bandwidth(uint64_t bytes, int reps) {
  const size_t n = bytes / sizeof(float);
  std::vector<float> buf(n);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i += 1024) std::fill(buf.begin() + long(i), buf.begin() + long(std::min(n, i + 1024)), 1.0f);
  std::vector<double> gbs;
  volatile float sink = 0;
  for (int r = 0; r <= reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    float total = 0;
#pragma omp parallel reduction(+ : total)
    {
      int nth = omp_get_num_threads(), id = omp_get_thread_num();
      size_t per = (n + size_t(nth) - 1) / size_t(nth), a = std::min(n, per * size_t(id)), b = std::min(n, a + per);
      total += simd::dot(buf.data() + a, buf.data() + a, b - a);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    if (r > 0) gbs.push_back(double(n * sizeof(float)) / s / 1e9);  // r = 0 is the warm-up
  }
  return summarize(gbs);
}

ProbeResult probe_gemm(int n, int reps) {
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  std::vector<double> gf;
  for (int r = 0; r <= reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) gf.push_back(2.0 * n * n * double(n) / s / 1e9);
  }
  return summarize(gf);
}

}  // namespace glmlab

// Helpers shared by the CUDA tests (test_cuda.cpp: elementwise ops, matmul, attention, the whole model;
// test_cuda_backward.cpp: the backward ops and the optimizer). Included only where GLMLAB_HAVE_CUDA.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_ops.h"
#include "model/quantize.h"
#include "ops/device.h"
#include "ops/ops.h"

namespace glmlab::cuda_test {

#define SKIP_WITHOUT_GPU()                                                 \
  do {                                                                     \
    std::string why_;                                                      \
    if (!cuda::device_available(&why_)) GTEST_SKIP() << "no CUDA device: " << why_; \
  } while (0)

inline constexpr double kTolF32 = 2e-5;
inline constexpr double kTolBf16 = 1.5e-2;

// max |a − b| / max |b| (b = the reference); NaN anywhere gives +inf.
inline double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return std::numeric_limits<double>::infinity();
    if (std::isnan(b[i])) continue;
    num = std::max(num, std::fabs(double(a[i]) - double(b[i])));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

inline std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// The GPU: its Device and CudaOps.
struct Gpu {
  std::unique_ptr<Device> dev;
  cuda::CudaOps* ops = nullptr;
  explicit Gpu(bool bf16_activations = false) : dev(make_device(Backend::Cuda, bf16_activations)) {
    ops = dynamic_cast<cuda::CudaOps*>(&dev->ops());
    EXPECT_NE(ops, nullptr);
  }
  // A device copy of a host vector (kept alive by the returned buffer).
  template <class T>
  DeviceBuffer put(const std::vector<T>& v) {
    DeviceBuffer b(*dev, v.size() * sizeof(T), "test input");
    dev->upload(b.get(), v.data(), v.size() * sizeof(T));
    return b;
  }
  template <class T>
  std::vector<T> get(const DeviceBuffer& b, size_t n) {
    std::vector<T> v(n);
    dev->download(v.data(), b.get(), n * sizeof(T));
    return v;
  }
};

// A host matrix of any dtype with its storage, and its copy on the GPU.
struct TestMatrix {
  Matrix host;
  std::vector<uint8_t> data, scales;
  QuantizedMatrix q;
  DeviceBuffer d_data, d_scales;
  Matrix dev;
};

// W [rows, cols] of `dtype` from uniform(−1, 1) numbers (Q8/Q4: quantized with group_size, 0 = a row).
inline std::unique_ptr<TestMatrix> make_matrix(Gpu& g, DType dtype, int64_t rows, int64_t cols, int64_t group_size,
                                        uint64_t seed) {
  auto t = std::make_unique<TestMatrix>();
  const auto f = random_floats(size_t(rows * cols), seed);
  if (is_quantized(dtype)) {
    t->q = make_quantized(dtype, rows, cols, group_size);
    quantize_rows(f.data(), rows, 0, t->q);
    t->host = t->q.m;
  } else {
    t->host.dtype = dtype;
    t->host.rows = rows;
    t->host.cols = cols;
    t->data.resize(t->host.data_bytes());
    for (size_t i = 0; i < f.size(); ++i) {
      if (dtype == DType::F32) std::memcpy(t->data.data() + 4 * i, &f[i], 4);
      const uint16_t h = dtype == DType::F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
      if (dtype != DType::F32) std::memcpy(t->data.data() + 2 * i, &h, 2);
    }
    t->host.data = t->data.data();
  }
  t->dev = t->host;
  t->d_data = DeviceBuffer(*g.dev, t->host.data_bytes(), "test matrix");
  g.dev->upload(t->d_data.get(), t->host.data, t->host.data_bytes());
  t->dev.data = t->d_data.get();
  if (t->host.scales) {
    const size_t sb = size_t(rows * t->host.groups()) * 2;
    t->d_scales = DeviceBuffer(*g.dev, sb, "test scales");
    g.dev->upload(t->d_scales.get(), t->host.scales, sb);
    t->dev.scales = t->d_scales.get<const uint16_t>();
  }
  return t;
}

inline const char* dname(DType t) { return dtype_name(t).data(); }

struct MatmulCase {
  int64_t N, M, K, group;
  bool bias;
};

struct AttnCase {
  const char* what;
  int B, T, P, H, G, D, S;
  double holes;       // fraction of keys with key_valid 0
  bool empty_row;     // sequence 0 has no valid key at all (its rows: zeros, lse −inf)
  bool segments;      // packed segments in the mask
};

// Random q (rows of a qkv matrix: q heads then k, v, + padding), a cache, its key_valid holes and
// segments of 23 slots, for one case; host() views them.
struct AttnData {
  int64_t qstride = 0;
  std::vector<float> q, k, v;
  std::vector<uint8_t> valid;
  std::vector<int32_t> seg;
  bool segments = false;
  AttnData(const AttnCase& c, uint64_t seed) : qstride(int64_t(c.H + 2 * c.G) * c.D + 4), segments(c.segments) {
    q = random_floats(size_t(int64_t(c.B) * c.T * qstride), seed, -2, 2);
    const size_t kvn = size_t(c.B) * c.S * c.G * c.D;
    k = random_floats(kvn, seed + 1, -2, 2);
    v = random_floats(kvn, seed + 2);
    std::mt19937 rng{uint32_t(seed)};
    std::uniform_real_distribution<double> u(0, 1);
    valid.resize(size_t(c.B) * c.S);
    for (auto& x : valid) x = u(rng) >= c.holes;
    if (c.empty_row)
      for (int j = 0; j < c.S; ++j) valid[size_t(j)] = 0;
    seg.resize(size_t(c.B) * c.S);
    for (int b = 0; b < c.B; ++b)
      for (int j = 0; j < c.S; ++j) seg[size_t(b * c.S + j)] = j / 23;
  }
  KVView host(int S) { return KVView{k.data(), v.data(), valid.data(), S, segments ? seg.data() : nullptr}; }
};

inline const std::vector<DType> kAllDtypes = {DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4};

inline const std::vector<AttnCase> kAttnCases = {
    {"prefill causal GQA 4 D 64", 2, 37, 0, 8, 2, 64, 64, 0.0, false, false},
    {"prefill P>0 GQA 16 D 128 holes", 2, 20, 50, 32, 2, 128, 80, 0.1, false, false},
    {"prefill one sequence without keys", 2, 5, 3, 4, 1, 64, 16, 0.0, true, false},
    {"prefill packed segments", 1, 70, 0, 4, 2, 64, 70, 0.0, false, true},
    {"decode long P GQA 16 D 128", 3, 1, 1500, 32, 2, 128, 2048, 0.05, false, false},
    {"decode GQA 4 D 64 holes", 2, 1, 700, 16, 4, 64, 1024, 0.3, false, false},
    {"decode tiny D 16", 3, 1, 130, 4, 2, 16, 256, 0.0, false, false},
};

}  // namespace glmlab::cuda_test

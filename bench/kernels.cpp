// Matrix kernels of the fast CPU back end at ChatGLM3-6B shapes (Google Benchmark): what prefill,
// decode and the training backward spend their time in. Each case names its peer measured in the
// same run — fp32 OpenBLAS sgemm on the same shape — so results read as ratios on a noisy machine.
//
//   build/glmlab_kernel_bench --benchmark_min_time=0.5 --benchmark_repetitions=3 \
//       --benchmark_report_aggregates_only=true
//
// Weights rotate through a pool larger than the last-level cache (≥ 384 MB), so every call reads
// them from memory, as a model's layers do. Counters: GFLOP/s (2·N·M·K per call) and weight GB/s.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <array>
#include <random>
#include <vector>

#include "kernels/cpu/dpbf16_packed.h"
#include "kernels/cpu/f16_packed.h"
#include "kernels/cpu/runtime.h"
#include "kernels/cpu/vnni_packed.h"
#include "model/quantize.h"
#include "ops/ops.h"
#include "util/dtype.h"

namespace glmlab {
namespace {

struct Pool {
  std::vector<std::vector<uint16_t>> bf16;
  std::vector<std::vector<float>> f32;
};

// A pool of random matrices [M, K] whose total size passes 384 MB (at least 2 copies).
Pool make_pool(int64_t M, int64_t K, bool want_f32) {
  const int64_t bytes = M * K * (want_f32 ? 4 : 2);
  const int64_t copies = std::max<int64_t>(2, (int64_t(384) << 20) / bytes + 1);
  std::mt19937 g(7);
  std::uniform_real_distribution<float> d(-0.02f, 0.02f);
  Pool p;
  for (int64_t c = 0; c < copies; ++c) {
    if (want_f32) {
      p.f32.emplace_back(static_cast<size_t>(M * K));
      for (auto& v : p.f32.back()) v = d(g);
    } else {
      p.bf16.emplace_back(static_cast<size_t>(M * K));
      for (auto& v : p.bf16.back()) v = f32_to_bf16(d(g));
    }
  }
  return p;
}

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = d(g);
  return v;
}

void set_counters(benchmark::State& st, int64_t N, int64_t M, int64_t K, int64_t elem_bytes) {
  const double calls = double(st.iterations());
  st.counters["GFLOP/s"] = benchmark::Counter(calls * 2.0 * double(N * M * K) / 1e9, benchmark::Counter::kIsRate);
  st.counters["GB/s"] = benchmark::Counter(calls * double(M * K * elem_bytes) / 1e9, benchmark::Counter::kIsRate);
}

// bf16 W through Ops with bf16 activations (AMX, AVX512-BF16 or the GEMV by row count and CPU,
// exactly what a bf16 model runs): the forward y[N, M] = x[N, K] · Wᵀ, or the training backward's
// input gradient dx[N, K] += dy[N, M] · W.
template <bool kBackward>
void BM_Bf16(benchmark::State& st) {
  const int64_t N = st.range(0), M = st.range(1), K = st.range(2);
  auto pool = make_pool(M, K, false);
  auto ops = make_ops(Backend::Cpu, true);
  auto in = random_vec(N * (kBackward ? M : K), 1);
  std::vector<float> out(static_cast<size_t>(N * (kBackward ? K : M)));
  size_t i = 0;
  for (auto _ : st) {
    Matrix W{DType::BF16, M, K, pool.bf16[i++ % pool.bf16.size()].data()};
    if (kBackward)
      ops->matmul_backward_input(in.data(), N, W, out.data());
    else
      ops->matmul(in.data(), N, W, nullptr, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, N, M, K, 2);
}
void BM_MatmulBf16(benchmark::State& st) { BM_Bf16<false>(st); }
void BM_MatmulBackwardInputBf16(benchmark::State& st) { BM_Bf16<true>(st); }

// The peer: OpenBLAS fp32 sgemm of the same product (what the fp32 path and the probe run).
void BM_SgemmF32(benchmark::State& st) {
  const int64_t N = st.range(0), M = st.range(1), K = st.range(2);
  auto pool = make_pool(M, K, true);
  auto x = random_vec(N * K, 1);
  std::vector<float> y(static_cast<size_t>(N * M));
  size_t i = 0;
  for (auto _ : st) {
    const float* W = pool.f32[i++ % pool.f32.size()].data();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(M), int(K), 1.0f, x.data(), int(K), W, int(K),
                0.0f, y.data(), int(M));
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(st, N, M, K, 4);
}

// ChatGLM3-6B: query_key_value, dense, dense_h_to_4h, dense_4h_to_h; 110 tokens (a batch-1
// training step on tiny.json) and 512 (a long prompt). Decode (N = 1) for the GEMV.
void shapes(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> ns) {
  for (int64_t n : ns)
    for (auto [m, k] : {std::pair<int64_t, int64_t>{4608, 4096}, {4096, 4096}, {27392, 4096}, {4096, 13696}})
      b->Args({n, m, k});
  b->ArgNames({"N", "M", "K"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_MatmulBf16)->Apply([](auto* b) { shapes(b, {1, 110, 256, 512, 800}); });
BENCHMARK(BM_MatmulBackwardInputBf16)->Apply([](auto* b) { shapes(b, {110, 512, 800}); });
BENCHMARK(BM_SgemmF32)->Apply([](auto* b) { shapes(b, {110, 512}); });

// Training's frozen bases (row-major, as the backward reads them) at a micro-batch's token count: the
// forward y = x·Wᵀ and the input gradient dx += dy·W through Ops with approximate activations, W bf16
// (the peer in the same run), fp16, or QAT int8 / int4 (group 128) of the same random values, on one of
// the two largest 6B matrices (k13696 as in BM_DecodeBatch).
void BM_TrainBase(benchmark::State& st) {
  const int64_t N = st.range(0), M = st.range(2) ? 4096 : 27392, K = st.range(2) ? 13696 : 4096;
  const DType dt = std::array{DType::BF16, DType::F16, DType::Q8, DType::Q4}[size_t(st.range(1))];
  const bool backward = st.range(3) != 0;
  auto src = make_pool(M, K, false);
  std::vector<QuantizedMatrix> qpool;
  std::vector<std::vector<uint16_t>> f16pool;
  std::vector<Matrix> mats;
  for (const auto& b : src.bf16) {
    const Matrix B{DType::BF16, M, K, b.data()};
    if (dt == DType::Q8 || dt == DType::Q4) {
      qpool.push_back(quantize(B, dt, 128));
    } else if (dt == DType::F16) {
      f16pool.emplace_back(b.size());
      for (size_t i = 0; i < b.size(); ++i) f16pool.back()[i] = f32_to_f16(bf16_to_f32(b[i]));
    }
  }
  for (size_t c = 0; c < src.bf16.size(); ++c)
    mats.push_back(dt == DType::BF16  ? Matrix{DType::BF16, M, K, src.bf16[c].data()}
                   : dt == DType::F16 ? Matrix{DType::F16, M, K, f16pool[c].data()}
                                      : qpool[c].m);
  if (dt != DType::BF16) src.bf16.clear();
  auto ops = make_ops(Backend::Cpu, true);
  auto in = random_vec(N * (backward ? M : K), 1);
  std::vector<float> out(static_cast<size_t>(N * (backward ? K : M)));
  size_t i = 0;
  for (auto _ : st) {
    const Matrix& W = mats[i++ % mats.size()];
    if (backward)
      ops->matmul_backward_input(in.data(), N, W, out.data());
    else
      ops->matmul(in.data(), N, W, nullptr, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  set_counters(st, N, M, K, 0);
}
BENCHMARK(BM_TrainBase)
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (int64_t n : {16, 110, 800})
        for (int d : {0, 1, 2, 3})
          for (int k : {0, 1})
            for (int bwd : {0, 1}) b->Args({n, d, k, bwd});
    })
    ->ArgNames({"N", "dtype", "k13696", "backward"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Batched decode (issue 16): N sequences' activation rows against one of ChatGLM3-6B's two largest matrices
// (k13696 = 0: dense_h_to_4h, 27392 × 4096; 1: dense_4h_to_h, 4096 × 13696) in bf16, int8 or int4 (group 128) through Ops::matmul with approximate activations, as a
// model's decode step runs it. Counter "rows/s" = N × calls per second: it grows with N while the weights
// are read once per call and stops growing where compute binds.
void BM_DecodeBatch(benchmark::State& st) {
  const int64_t N = st.range(0), M = st.range(2) ? 4096 : 27392, K = st.range(2) ? 13696 : 4096;
  const DType dt = st.range(1) == 16 ? DType::BF16 : st.range(1) == 8 ? DType::Q8 : DType::Q4;
  std::vector<QuantizedMatrix> qpool;
  Pool pool;
  if (dt == DType::BF16) {
    pool = make_pool(M, K, false);
  } else {
    auto src = make_pool(M, K, false);  // the same random values, quantized
    for (const auto& b : src.bf16) qpool.push_back(quantize(Matrix{DType::BF16, M, K, b.data()}, dt, 128));
  }
  std::vector<vnni::PackedMatrix> packed;  // the layout the engine packs quantized weights into at load
  std::vector<dpbf16::PackedMatrix> packed16;  // and bf16 weights
  if (st.range(3) && dt == DType::BF16) {
    if (!dpbf16::packable(Matrix{DType::BF16, M, K, pool.bf16[0].data()}))
      return st.SkipWithError("no AVX512-BF16 packing on this CPU");
    for (const auto& b : pool.bf16) packed16.push_back(dpbf16::pack(Matrix{DType::BF16, M, K, b.data()}));
  }
  if (st.range(3) && dt != DType::BF16) {
    if (!vnni::packable(qpool[0].m)) return st.SkipWithError("no VNNI packing on this CPU");
    for (const auto& q : qpool) packed.push_back(vnni::pack(q.m));
    qpool.clear();
  }
  auto ops = make_ops(Backend::Cpu, true);
  auto x = random_vec(N * K, 1);
  std::vector<float> y(static_cast<size_t>(N * M));
  size_t i = 0;
  const size_t copies = dt == DType::BF16 ? pool.bf16.size() : !packed.empty() ? packed.size() : qpool.size();
  auto qm = [&](size_t c) { return !packed.empty() ? packed[c].m : qpool[c].m; };
  for (auto _ : st) {
    const size_t c = i++ % copies;
    const Matrix W = !packed16.empty()    ? packed16[c].m
                     : dt == DType::BF16 ? Matrix{DType::BF16, M, K, pool.bf16[c].data()}
                                         : qm(c);
    ops->matmul(x.data(), N, W, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const Matrix W0 = dt == DType::BF16 ? Matrix{DType::BF16, M, K, pool.bf16[0].data()} : qm(0);
  st.counters["rows/s"] = benchmark::Counter(double(st.iterations()) * double(N), benchmark::Counter::kIsRate);
  st.counters["GB/s"] = benchmark::Counter(double(st.iterations()) * double(W0.nbytes()) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeBatch)
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (int bits : {16, 8, 4})
        for (int k : {0, 1})
          for (int packed : {0, 1})
            for (int n : {1, 2, 4, 8, 16, 32, 64, 128, 512}) b->Args({n, bits, k, packed});
    })
    ->ArgNames({"N", "bits", "k13696", "packed"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// fp16 weights (an fp16 model's matrices, and the output layer of an int8/int4 one) through Ops with
// approximate activations, as decode runs them: [M, K] = 27392 × 4096 (k13696:0), 4096 × 13696 (1), the
// 65024 × 4096 output layer (2), or random:small's 65024 × 512 output layer (3).
void BM_DecodeF16(benchmark::State& st) {
  const int64_t N = st.range(0), shape = st.range(1);
  const int64_t M = shape == 0 ? 27392 : shape == 1 ? 4096 : 65024, K = shape == 1 ? 13696 : shape == 3 ? 512 : 4096;
  auto pool = make_pool(M, K, false);
  for (auto& c : pool.bf16)
    for (auto& v : c) v = f32_to_f16(bf16_to_f32(v));
  auto ops = make_ops(Backend::Cpu, true);
  std::vector<f16p::PackedMatrix> packed;  // the layout the engine packs fp16 weights into at load
  if (st.range(2)) {
    if (!f16p::packable(Matrix{DType::F16, M, K, pool.bf16[0].data()})) return st.SkipWithError("no AVX-512");
    for (const auto& c : pool.bf16) packed.push_back(f16p::pack(Matrix{DType::F16, M, K, c.data()}));
  }
  auto x = random_vec(N * K, 1);
  std::vector<float> y(static_cast<size_t>(N * M));
  size_t i = 0;
  for (auto _ : st) {
    const size_t c = i++ % pool.bf16.size();
    const Matrix W = packed.empty() ? Matrix{DType::F16, M, K, pool.bf16[c].data()} : packed[c].m;
    ops->matmul(x.data(), N, W, nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["rows/s"] = benchmark::Counter(double(st.iterations()) * double(N), benchmark::Counter::kIsRate);
  st.counters["GB/s"] = benchmark::Counter(double(st.iterations()) * double(M * K * 2) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeF16)
    ->ArgsProduct({{1, 2, 4, 8, 16, 512}, {0, 1, 2, 3}, {0, 1}})
    ->ArgNames({"N", "shape", "packed"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace glmlab

int main(int argc, char** argv) {
  glmlab::prepare_cpu_runtime(argc, argv);  // OpenBLAS core and OpenMP spin, as glmlab itself runs
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}


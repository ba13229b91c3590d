// The CUDA back end (src/kernels/cuda) held to the fp32 CPU reference, op by op and as a whole model
// (the backward ops and AdamW: test_cuda_backward.cpp; the device trainer: test_device_trainer.cpp;
// shared helpers: cuda_test_util.h).
//
// Every GPU test starts with SKIP_WITHOUT_GPU(): on a machine without a usable GPU (CI: nvcc, no GPU)
// it is skipped with CUDA's own reason. CudaBuild.* run everywhere: they keep the host side of a CUDA
// build exercised (no GPU → a clear Error) and check the build without CUDA says so.
//
// Tolerances (normalized: max |gpu − ref| / max |ref|, so a wrong nibble order, scale, group or mask
// is off by O(1)):
//   fp32 activations (gemv, simple, cuBLAS fp32, attention, elementwise)  2e-5
//   bf16/fp16 activations (WMMA, cuBLAS bf16)                              1.5e-2
//   whole model, fp32 activations: 1e-4; bf16 activations: 3e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <vector>

#include "ops/device.h"
#include "ops/ops.h"
#include "test_util.h"

#ifdef GLMLAB_HAVE_CUDA
#include "cuda_test_util.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_ops.h"
#include "model/device_engine.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/loader.h"
#include "model/quantize.h"
#endif

namespace glmlab {
namespace {

using test::error_of;

// ---- runs everywhere ----------------------------------------------------------------------------

TEST(CudaBuild, WithoutAGpuTheCudaDeviceSaysWhy) {
#ifndef GLMLAB_HAVE_CUDA
  EXPECT_FALSE(cuda_built());
  EXPECT_CONTAINS(error_of([] { make_device(Backend::Cuda); }), "built without the CUDA back end");
#else
  EXPECT_TRUE(cuda_built());
  std::string why = "<unchanged>";
  if (cuda::device_available(&why)) {  // a GPU: the positive side of the same contract
    EXPECT_TRUE(why.empty()) << why;
    auto dev = make_device(Backend::Cuda);
    EXPECT_FALSE(dev->name().empty());
    EXPECT_EQ(dev->ops().name(), "cuda");
    return;
  }
  EXPECT_FALSE(why.empty());
  EXPECT_NE(why, "<unchanged>");
  EXPECT_CONTAINS(why, "cudaGetDeviceCount");
  const std::string e = error_of([] { make_device(Backend::Cuda); });
  EXPECT_CONTAINS(e, "device cuda: no usable GPU");
  EXPECT_CONTAINS(e, why);
#endif
}

TEST(CudaBuild, CliOnCudaFailsClearlyWithoutAGpu) {
#ifdef GLMLAB_HAVE_CUDA
  std::string why;
  if (cuda::device_available(&why)) GTEST_SKIP() << "a GPU is visible: this test checks the no-GPU message";
  const char* want = "no usable GPU";
#else
  const char* want = "built without the CUDA back end";
#endif
  auto r = test::run_cli("generate --model random:tiny --device cuda -n 2 --ids \"5 6 7\"");
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, want);
  // Training on the device trainer: the same error before anything is read or written.
  const std::string data = test::dev_json_head("cuda-cli-data", 4);
  const auto out = test::temp_dir("cuda-cli-train");
  for (const std::string cmd : {"train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " + data +
                                    " --steps 1 --truncate --device cuda --out " + (out / "train").string(),
                                "bench train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " +
                                    data + " --steps 1 --probe off --no-progress --device cuda --out " +
                                    (out / "bench").string()}) {
    r = test::run_cli(cmd);
    EXPECT_NE(r.rc, 0) << cmd << "\n" << r.out;
    EXPECT_CONTAINS(r.out, want);
    EXPECT_FALSE(std::filesystem::exists(out / "train" / "adapter_model.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(out / "bench" / "summary.json"));
  }
}

}  // namespace
}  // namespace glmlab

#ifdef GLMLAB_HAVE_CUDA
namespace glmlab {
namespace {
using namespace cuda_test;

// ---- elementwise ops ------------------------------------------------------------------------------

TEST(CudaOps, EmbeddingEveryTableDtype) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  const std::vector<int32_t> ids = {0, 7, 299, 5, 5, 123};
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4}) {
    SCOPED_TRACE(dname(t));
    auto m = make_matrix(g, t, 300, 96, 32, 3);
    std::vector<float> want(ids.size() * 96);
    ref->embedding(m->host, ids.data(), int64_t(ids.size()), want.data());
    auto d_ids = g.put(ids);
    DeviceBuffer out(*g.dev, want.size() * 4, "out");
    g.ops->embedding(m->dev, d_ids.get<int32_t>(), int64_t(ids.size()), out.f());
    EXPECT_EQ(g.get<float>(out, want.size()), want);  // a copy: exact
  }
}

TEST(CudaOps, RmsnormWithInvRms) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  for (int64_t C : {4096, 100, 7}) {
    SCOPED_TRACE(C);
    const int64_t N = 5;
    auto x = random_floats(size_t(N * C), 11, -3, 3), w = random_floats(size_t(C), 12, 0.5f, 1.5f);
    std::vector<float> y(x.size()), r(N);
    ref->rmsnorm(x.data(), w.data(), N, C, 1e-5f, y.data(), r.data());
    auto dx = g.put(x), dw = g.put(w);
    DeviceBuffer dy(*g.dev, y.size() * 4, "y"), dr(*g.dev, N * 4, "r");
    g.ops->rmsnorm(dx.f(), dw.f(), N, C, 1e-5f, dy.f(), dr.f());
    EXPECT_LT(normalized_error(g.get<float>(dy, y.size()), y), kTolF32);
    EXPECT_LT(normalized_error(g.get<float>(dr, size_t(N)), r), kTolF32);
  }
}

TEST(CudaOps, RopeInterleavedPartialOnQAndKHeads) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  for (int D : {128, 64, 16}) {
    SCOPED_TRACE(D);
    const int64_t N = 6, heads = 5, stride = heads * D + 8;  // padding after the heads stays untouched
    auto x = random_floats(size_t(N * stride), 21);
    const std::vector<int32_t> pos = {0, 1, 17, 500, 4095, 8191};
    auto want = x;
    ref->rope(want.data(), N, stride, int(heads), D, pos.data(), 10000.0f);
    auto dx = g.put(x), dp = g.put(pos);
    g.ops->rope(dx.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    EXPECT_LT(normalized_error(g.get<float>(dx, x.size()), want), kTolF32);
  }
}

TEST(CudaOps, SwigluAddAndKvStore) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  const int64_t N = 7, F = 300;
  auto u = random_floats(size_t(N * 2 * F), 31, -6, 6);
  std::vector<float> want(size_t(N * F));
  ref->swiglu(u.data(), N, F, want.data());
  auto du = g.put(u);
  DeviceBuffer out(*g.dev, want.size() * 4, "out");
  g.ops->swiglu(du.f(), N, F, out.f());
  EXPECT_LT(normalized_error(g.get<float>(out, want.size()), want), kTolF32);

  auto y = random_floats(1001, 32), x = random_floats(1001, 33);
  auto dy = g.put(y), dx = g.put(x);
  ref->add(y.data(), x.data(), 1001);
  g.ops->add(dy.f(), dx.f(), 1001);
  EXPECT_EQ(g.get<float>(dy, 1001), y);

  // kv_store reads its start slot from device memory.
  const int B = 2, T = 3, S = 10;
  const int64_t W = 24, stride = 80, offset = 40;
  auto src = random_floats(size_t(B * T * stride), 34);
  std::vector<float> cache(size_t(B * S * W), -1.0f);
  const std::vector<int32_t> start = {4};
  auto dsrc = g.put(src), dcache = g.put(cache), dstart = g.put(start);
  ref->kv_store(src.data(), stride, offset, B, T, W, cache.data(), S, start.data());
  g.ops->kv_store(dsrc.f(), stride, offset, B, T, W, dcache.f(), S, dstart.get<int32_t>());
  EXPECT_EQ(g.get<float>(dcache, cache.size()), cache);
}

TEST(CudaOps, ArgmaxTiesNanAndInf) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  const int64_t V = 70000;
  std::vector<float> x(size_t(5 * V), 0.0f);
  auto r = random_floats(size_t(V), 41);
  std::copy(r.begin(), r.end(), x.begin());                 // row 0: random
  x[size_t(V + 999)] = 3.0f;                                   // row 1: ties at 999 and 60000 → 999
  x[size_t(V + 60000)] = 3.0f;
  x[size_t(2 * V + 12)] = 9.0f;                                // row 2: a NaN → 5
  x[size_t(2 * V + 50000)] = std::numeric_limits<float>::quiet_NaN();
  x[size_t(3 * V + 12)] = std::numeric_limits<float>::infinity();  // row 3: +Inf → 5
  for (int64_t i = 0; i < V; ++i) x[size_t(4 * V + i)] = -float(i);  // row 4: the first element
  std::vector<int32_t> want(5);
  make_ref_ops()->argmax(x.data(), 5, V, want.data());
  EXPECT_EQ(want[1], 999);
  EXPECT_EQ(want[2], 5);
  EXPECT_EQ(want[3], 5);
  EXPECT_EQ(want[4], 0);
  auto dx = g.put(x);
  DeviceBuffer out(*g.dev, 5 * 4, "ids");
  g.ops->argmax(dx.f(), 5, V, out.get<int32_t>());
  EXPECT_EQ(g.get<int32_t>(out, 5), want);
  // V ≤ 5 with a NaN gives 0 (the host rule).
  std::vector<float> small = {1, std::numeric_limits<float>::quiet_NaN(), 2};
  auto ds = g.put(small);
  g.ops->argmax(ds.f(), 1, 3, out.get<int32_t>());
  EXPECT_EQ(g.get<int32_t>(out, 1)[0], 0);
}

// ---- matmul -----------------------------------------------------------------------------------------

// One path on one (dtype, shape) against the reference; tol per the activations the path uses.
void check_matmul(Gpu& g, cuda::MatmulPath path, DType dt, const MatmulCase& c, double tol, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << dname(dt) << " N " << c.N << " M " << c.M << " K " << c.K << " group "
                                  << c.group << (c.bias ? " +bias" : ""));
  auto W = make_matrix(g, dt, c.M, c.K, c.group, seed);
  auto x = random_floats(size_t(c.N * c.K), seed + 1), bias = random_floats(size_t(c.M), seed + 2);
  std::vector<float> want(size_t(c.N * c.M));
  make_ref_ops()->matmul(x.data(), c.N, W->host, c.bias ? bias.data() : nullptr, want.data());
  auto dx = g.put(x), db = g.put(bias);
  DeviceBuffer dy(*g.dev, want.size() * 4, "y");
  g.dev->fill(dy.get(), 0xff, want.size() * 4);  // NaN: every output must be written
  g.ops->matmul_with(path, dx.f(), c.N, W->dev, c.bias ? db.f() : nullptr, dy.f());
  EXPECT_LT(normalized_error(g.get<float>(dy, want.size()), want), tol);
}


TEST(CudaMatmul, GemvEveryDtypeRowsOneToEightGroups) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  uint64_t seed = 100;
  for (DType dt : kAllDtypes)
    for (int64_t N = 1; N <= 8; ++N)
      for (int64_t group : {32, 64, 128, 0})
        if (is_quantized(dt) || group == 32) check_matmul(g, cuda::MatmulPath::Gemv, dt, {N, 203, 512, group, N % 2 == 1}, kTolF32, seed++);
  // A 6B-like shape: K = 13696 (four_h_to_h), group 128.
  for (DType dt : {DType::BF16, DType::Q4}) check_matmul(g, cuda::MatmulPath::Gemv, dt, {3, 64, 13696, 128, false}, kTolF32, seed++);
}

TEST(CudaMatmul, GemvRefusesWhatItCannotRead) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto W = make_matrix(g, DType::Q4, 16, 48, 16, 5);  // K 48: not a multiple of 32 int4 values
  auto dx = g.put(random_floats(48, 6));
  DeviceBuffer dy(*g.dev, 16 * 4, "y");
  EXPECT_CONTAINS(error_of([&] { g.ops->matmul_with(cuda::MatmulPath::Gemv, dx.f(), 1, W->dev, nullptr, dy.f()); }),
                  "gemv path cannot take");
  // Auto takes it anyway (another kernel).
  std::vector<float> want(16);
  auto x = g.get<float>(dx, 48);
  make_ref_ops()->matmul(x.data(), 1, W->host, nullptr, want.data());
  g.ops->matmul(dx.f(), 1, W->dev, nullptr, dy.f());
  EXPECT_LT(normalized_error(g.get<float>(dy, 16), want), kTolF32);
}

const std::vector<MatmulCase> kGemmCases = {
    {9, 77, 100, 0, true}, {37, 130, 256, 32, false}, {64, 64, 64, 64, true}, {129, 203, 512, 128, false},
    {600, 96, 160, 32, true}, {17, 1000, 4096, 128, false}};

TEST(CudaMatmul, SimpleEveryDtypeOddShapes) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  uint64_t seed = 300;
  for (DType dt : kAllDtypes)
    for (auto c : kGemmCases) check_matmul(g, cuda::MatmulPath::Simple, dt, c, kTolF32, seed++);
  check_matmul(g, cuda::MatmulPath::Simple, DType::Q4, {11, 33, 101, 0, true}, kTolF32, seed++);  // odd K: a half byte
}

TEST(CudaMatmul, WmmaEveryDtypeOddShapes) {
  SKIP_WITHOUT_GPU();
  Gpu g(true);
  uint64_t seed = 500;
  for (DType dt : {DType::F16, DType::BF16, DType::Q8, DType::Q4})
    for (auto c : kGemmCases) check_matmul(g, cuda::MatmulPath::Wmma, dt, c, kTolBf16, seed++);
  auto W = make_matrix(g, DType::F32, 16, 16, 0, 1);
  auto dx = g.put(random_floats(16 * 16, 2));
  DeviceBuffer dy(*g.dev, 16 * 16 * 4, "y");
  EXPECT_CONTAINS(error_of([&] { g.ops->matmul_with(cuda::MatmulPath::Wmma, dx.f(), 16, W->dev, nullptr, dy.f()); }),
                  "16-bit and quantized weights only");
}

TEST(CudaMatmul, CublasEveryDtypeBothActivationPrecisions) {
  SKIP_WITHOUT_GPU();
  for (bool bf16 : {false, true}) {
    Gpu g(bf16);
    if (!g.ops->has_cublas()) GTEST_SKIP() << g.ops->cublas_status();
    SCOPED_TRACE(bf16 ? "bf16 activations" : "fp32 activations");
    uint64_t seed = 700;
    for (DType dt : kAllDtypes)
      for (auto c : kGemmCases)
        check_matmul(g, cuda::MatmulPath::Cublas, dt, c, bf16 && dt != DType::F32 ? kTolBf16 : kTolF32, seed++);
  }
}

// Auto picks gemv, grouped gemv, cuBLAS / WMMA or simple by shape; each must match the reference.
TEST(CudaMatmul, AutoEveryDtypeAcrossTheDispatchBoundaries) {
  SKIP_WITHOUT_GPU();
  for (bool bf16 : {false, true}) {
    Gpu g(bf16);
    SCOPED_TRACE(bf16 ? "bf16 activations" : "fp32 activations");
    uint64_t seed = 900;
    for (DType dt : kAllDtypes)
      for (int64_t N : {1, 8, 9, 31, 32, 33, 100}) {
        const bool rounded = bf16 && dt != DType::F32 && N > (is_quantized(dt) ? 32 : 8);
        check_matmul(g, cuda::MatmulPath::Auto, dt, {N, 160, 256, 64, true}, rounded ? kTolBf16 : kTolF32, seed++);
      }
  }
}

// ---- attention ---------------------------------------------------------------------------------------

void check_attention(Gpu& g, const AttnCase& c, cuda::AttentionPath path, int splits, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << c.what << (path == cuda::AttentionPath::Naive ? " naive" : " flash")
                                  << " splits " << splits);
  AttnData in(c, seed);
  const int64_t qstride = in.qstride;
  auto &q = in.q, &k = in.k, &v = in.v;
  auto &valid = in.valid;
  auto& seg = in.seg;
  KVView hk = in.host(c.S);
  const size_t rows = size_t(c.B) * c.T;
  std::vector<float> want(rows * c.H * c.D), want_lse(rows * c.H);
  make_ref_ops()->attention(q.data(), qstride, hk, c.B, c.T, c.P, c.H, c.G, c.D, want.data(), want_lse.data());
  auto dq = g.put(q), dk = g.put(k), dv = g.put(v), dvalid = g.put(valid), dseg = g.put(seg);
  KVView dkv{dk.f(), dv.f(), dvalid.get<uint8_t>(), c.S, c.segments ? dseg.get<int32_t>() : nullptr};
  DeviceBuffer out(*g.dev, want.size() * 4, "out"), lse(*g.dev, want_lse.size() * 4, "lse");
  g.dev->fill(out.get(), 0xff, want.size() * 4);
  g.ops->attention_with(path, splits, dq.f(), qstride, dkv, c.B, c.T, c.P, c.H, c.G, c.D, out.f(), lse.f());
  const auto got = g.get<float>(out, want.size());
  EXPECT_LT(normalized_error(got, want), kTolF32);
  auto got_lse = g.get<float>(lse, want_lse.size());
  for (size_t i = 0; i < want_lse.size(); ++i) {
    if (std::isinf(want_lse[i])) {
      ASSERT_TRUE(std::isinf(got_lse[i]) && got_lse[i] < 0) << "row·head " << i << ": " << got_lse[i];
    } else {
      ASSERT_NEAR(got_lse[i], want_lse[i], 1e-4 * std::max(1.0f, std::fabs(want_lse[i]))) << "row·head " << i;
    }
  }
  if (c.empty_row) {
    for (size_t i = 0; i < size_t(c.T) * c.H * c.D; ++i) ASSERT_EQ(got[i], 0.0f) << "sequence 0, element " << i;
  }
}


TEST(CudaAttention, FlashSplitsOneThreeAutoAgainstTheReference) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  uint64_t seed = 1000;
  for (const auto& c : kAttnCases)
    for (int splits : {1, 3, 0}) check_attention(g, c, cuda::AttentionPath::Flash, splits, seed++);
}

TEST(CudaAttention, NaiveAgainstTheReference) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  uint64_t seed = 2000;
  for (const auto& c : kAttnCases) check_attention(g, c, cuda::AttentionPath::Naive, 0, seed++);
}

TEST(CudaAttention, ScratchCannotGrowDuringAGraphCapture) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  const AttnCase c{"decode", 1, 1, 1000, 8, 2, 64, 1024, 0.0, false, false};
  std::vector<uint8_t> valid(1024, 1);
  DeviceBuffer q(*g.dev, 8 * 64 * 4, "q"), k(*g.dev, 1024 * 2 * 64 * 4, "k"), v(*g.dev, 1024 * 2 * 64 * 4, "v");
  auto dvalid = g.put(valid);
  DeviceBuffer out(*g.dev, 8 * 64 * 4, "out");
  KVView kv{k.f(), v.f(), dvalid.get<uint8_t>(), 1024, nullptr};
  g.dev->begin_capture();
  const std::string e = error_of([&] {
    g.ops->attention_with(cuda::AttentionPath::Flash, 16, q.f(), 8 * 64, kv, c.B, c.T, c.P, c.H, c.G, c.D, out.f(),
                          nullptr);
  });
  EXPECT_CONTAINS(e, "during a graph capture");
  EXPECT_EQ(g.dev->end_capture(), -1);
  // The stream is usable again: the same call runs eagerly.
  g.ops->attention_with(cuda::AttentionPath::Flash, 16, q.f(), 8 * 64, kv, c.B, c.T, c.P, c.H, c.G, c.D, out.f(),
                        nullptr);
  g.dev->sync();
}

// ---- the whole model on the device engine --------------------------------------------------------------

StepInput prefill_of(const std::vector<std::vector<int32_t>>& prompts) { return make_prefill(prompts); }

std::vector<std::vector<int32_t>> prompts_of(const std::vector<int>& lengths, int V, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_int_distribution<int> id(10, V - 1);
  std::vector<std::vector<int32_t>> out;
  for (int n : lengths) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(id(rng));
    out.push_back(p);
  }
  return out;
}

// Prefill (all logits) and decode steps across the 128 bucket on the GPU vs the host engine on cpu-ref.
void check_logits(const std::string& preset, const std::string& dtype, bool bf16, double tol, int steps) {
  SCOPED_TRACE(preset + " " + dtype + (bf16 ? " bf16 activations" : " fp32 activations"));
  Model m = load_model("random:" + preset, dtype, 7);
  const int V = m.config().vocab_size;
  auto prompts = prompts_of({9, 4, 6}, V, 3);
  const int cap = 9 + steps;
  auto ref = make_ref_ops();
  HostEngine host(m, *ref);
  DeviceEngine dev(make_device(Backend::Cuda, bf16), m, EngineLimits{3, cap, 27, 27});
  host.reset(3, cap);
  dev.reset(3, cap);
  std::vector<float> a, b;
  StepInput in = prefill_of(prompts);
  host.step(in, Logits::All, a);
  dev.step(in, Logits::All, b);
  EXPECT_LT(normalized_error(b, a), tol) << "prefill";
  std::vector<int32_t> pos = {9, 4, 6};
  std::mt19937 rng(5);
  for (int s = 0; s < steps; ++s) {
    StepInput d;
    d.B = 3;
    d.T = 1;
    for (int i = 0; i < 3; ++i) {
      d.ids.push_back(int32_t(10 + rng() % uint32_t(V - 10)));
      d.pos.push_back(pos[size_t(i)]++);
      d.valid.push_back(1);
    }
    host.step(d, Logits::Last, a);
    dev.step(d, Logits::Last, b);
    ASSERT_LT(normalized_error(b, a), tol) << "decode step " << s;
  }
  EXPECT_GT(dev.replays(), 0);
}

TEST(CudaModel, TinyLogitsMatchTheReferenceEveryDtype) {
  SKIP_WITHOUT_GPU();
  check_logits("tiny", "fp32", false, 1e-4, 130);
  for (const char* dt : {"bf16", "fp16", "int8", "int4"}) check_logits("tiny", dt, false, 1e-4, 130);
  for (const char* dt : {"bf16", "int4"}) check_logits("tiny", dt, true, 3e-2, 20);
}

TEST(CudaModel, SmallLogitsMatchTheReference) {
  SKIP_WITHOUT_GPU();
  check_logits("small", "bf16", false, 1e-4, 10);
  check_logits("small", "bf16", true, 3e-2, 10);
  check_logits("small", "int4", true, 3e-2, 10);
}

// Greedy generation on the GPU (argmax on the device, graphs replayed) gives the host engine's tokens.
TEST(CudaModel, GreedyGenerateGivesTheHostTokensWithGraphReplay) {
  SKIP_WITHOUT_GPU();
  for (const char* dt : {"fp32", "int4"}) {
    Model m = load_model("random:tiny", dt, 11);
    for (auto lengths : {std::vector<int>{12}, std::vector<int>{5, 12, 8}}) {
      SCOPED_TRACE(testing::Message() << dt << " batch " << lengths.size());
      auto prompts = prompts_of(lengths, m.config().vocab_size, 17);
      GenerateOptions o;
      o.max_new_tokens = o.min_new_tokens = 140;
      o.sampling.greedy = true;
      auto ops = make_ops(Backend::Cpu, false);
      GenerateResult want = generate(m, *ops, prompts, o);
      DeviceEngine dev(make_device(Backend::Cuda, false), m, EngineLimits{3, 12 + 140, 36, 0});
      GenerateResult got = generate(dev, prompts, o);
      ASSERT_EQ(got.tokens.size(), want.tokens.size());
      for (size_t b = 0; b < want.tokens.size(); ++b) EXPECT_EQ(got.tokens[b], want.tokens[b]) << "sequence " << b;
      EXPECT_GT(dev.replays(), 100);
      EXPECT_EQ(dev.graphs_recorded(), 2);  // buckets 128 and 152
    }
  }
}

TEST(CudaModel, MemoryCheckNamesWhatDoesNotFit) {
  SKIP_WITHOUT_GPU();
  Model m = load_model("random:tiny", "fp32", 1);
  const std::string e = error_of([&] { DeviceEngine(make_device(Backend::Cuda), m, EngineLimits{1000000, 512, 512, 0}); });
  EXPECT_CONTAINS(e, "needs");
  EXPECT_CONTAINS(e, "KV cache");
  EXPECT_CONTAINS(e, "GiB are free");
}

}  // namespace
}  // namespace glmlab
#endif  // GLMLAB_HAVE_CUDA

// The CUDA back end (src/kernels/cuda) held to the fp32 CPU reference, op by op and as a whole model.
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
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_ops.h"
#include "model/device_engine.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/loader.h"
#include "model/optimizer.h"
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

#define SKIP_WITHOUT_GPU()                                                 \
  do {                                                                     \
    std::string why_;                                                      \
    if (!cuda::device_available(&why_)) GTEST_SKIP() << "no CUDA device: " << why_; \
  } while (0)

constexpr double kTolF32 = 2e-5;
constexpr double kTolBf16 = 1.5e-2;

// max |a − b| / max |b| (b = the reference); NaN anywhere gives +inf.
double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
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

std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
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
std::unique_ptr<TestMatrix> make_matrix(Gpu& g, DType dtype, int64_t rows, int64_t cols, int64_t group_size,
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

const char* dname(DType t) { return dtype_name(t).data(); }

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

struct MatmulCase {
  int64_t N, M, K, group;
  bool bias;
};

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

const std::vector<DType> kAllDtypes = {DType::F32, DType::F16, DType::BF16, DType::Q8, DType::Q4};

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

const std::vector<AttnCase> kAttnCases = {
    {"prefill causal GQA 4 D 64", 2, 37, 0, 8, 2, 64, 64, 0.0, false, false},
    {"prefill P>0 GQA 16 D 128 holes", 2, 20, 50, 32, 2, 128, 80, 0.1, false, false},
    {"prefill one sequence without keys", 2, 5, 3, 4, 1, 64, 16, 0.0, true, false},
    {"prefill packed segments", 1, 70, 0, 4, 2, 64, 70, 0.0, false, true},
    {"decode long P GQA 16 D 128", 3, 1, 1500, 32, 2, 128, 2048, 0.05, false, false},
    {"decode GQA 4 D 64 holes", 2, 1, 700, 16, 4, 64, 1024, 0.3, false, false},
    {"decode tiny D 16", 3, 1, 130, 4, 2, 16, 256, 0.0, false, false},
};

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

// ---- backward ops and the optimizer -------------------------------------------------------------------
// Every gradient output starts with values in it (gradients ACCUMULATE), and NaN-filled inputs of the
// right size catch reads past the end only where a NaN would reach an output.

TEST(CudaBackward, RmsnormRopeSwigluAccumulate) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  for (int64_t C : {4096, 100, 7}) {
    SCOPED_TRACE(C);
    const int64_t N = 6;
    auto x = random_floats(size_t(N * C), 51, -3, 3), w = random_floats(size_t(C), 52, 0.5f, 1.5f);
    auto dy = random_floats(x.size(), 53), dx = random_floats(x.size(), 54);
    std::vector<float> y(x.size()), r(N);
    ref->rmsnorm(x.data(), w.data(), N, C, 1e-5f, y.data(), r.data());
    auto want = dx;
    ref->rmsnorm_backward(dy.data(), x.data(), w.data(), r.data(), N, C, 1e-5f, want.data());
    auto d_dy = g.put(dy), d_x = g.put(x), d_w = g.put(w), d_r = g.put(r), d_dx = g.put(dx);
    g.ops->rmsnorm_backward(d_dy.f(), d_x.f(), d_w.f(), d_r.f(), N, C, 1e-5f, d_dx.f());
    EXPECT_LT(normalized_error(g.get<float>(d_dx, dx.size()), want), kTolF32);
  }
  for (int D : {128, 64, 16}) {
    SCOPED_TRACE(D);
    const int64_t N = 6, heads = 5, stride = heads * D + 8;
    auto x = random_floats(size_t(N * stride), 61);
    const std::vector<int32_t> pos = {0, 1, 17, 500, 4095, 8191};
    auto want = x;
    ref->rope_backward(want.data(), N, stride, int(heads), D, pos.data(), 10000.0f);
    auto dx = g.put(x), dp = g.put(pos);
    g.ops->rope_backward(dx.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    const auto got = g.get<float>(dx, x.size());
    EXPECT_LT(normalized_error(got, want), kTolF32);
    // rope then its backward is the identity (the transpose of a rotation is its inverse).
    auto fw = g.put(x);
    g.ops->rope(fw.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    g.ops->rope_backward(fw.f(), N, stride, int(heads), D, dp.get<int32_t>(), 10000.0f);
    EXPECT_LT(normalized_error(g.get<float>(fw, x.size()), x), 1e-5);
  }
  const int64_t N = 7, F = 300;
  auto u = random_floats(size_t(N * 2 * F), 71, -6, 6), dout = random_floats(size_t(N * F), 72);
  auto du = random_floats(u.size(), 73), want = du;
  ref->swiglu_backward(dout.data(), u.data(), N, F, want.data());
  auto d_u = g.put(u), d_dout = g.put(dout), d_du = g.put(du);
  g.ops->swiglu_backward(d_dout.f(), d_u.f(), N, F, d_du.f());
  EXPECT_LT(normalized_error(g.get<float>(d_du, du.size()), want), kTolF32);
}

TEST(CudaBackward, CrossEntropyLossGradientIgnoredRowsAndBadLabels) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  const int64_t N = 9, V = 65024;
  auto z = random_floats(size_t(N * V), 81, -8, 8);
  z[size_t(3 * V + 77)] = 40.0f;  // a dominant logit: softmax ≈ onehot
  const std::vector<int32_t> labels = {0, 65023, -100, 77, 12345, -100, 5, 77, 40000};
  auto want = z;
  const double want_loss = make_ref_ops()->cross_entropy(want.data(), labels.data(), N, V, 0.25f);
  auto dz = g.put(z), dl = g.put(labels);
  const double got_loss = g.ops->cross_entropy(dz.f(), dl.get<int32_t>(), N, V, 0.25f);
  EXPECT_NEAR(got_loss, want_loss, 1e-6 * std::fabs(want_loss));
  const auto got = g.get<float>(dz, z.size());
  EXPECT_LT(normalized_error(got, want), kTolF32);
  for (int64_t v = 0; v < V; ++v) ASSERT_EQ(got[size_t(2 * V + v)], 0.0f) << "ignored row 2, logit " << v;
  // A label outside the vocabulary is an Error naming it and its row, as on the host.
  auto bad = labels;
  bad[4] = 65024;
  bad[6] = -7;
  auto db = g.put(bad), dz2 = g.put(z);
  const std::string e = error_of([&] { g.ops->cross_entropy(dz2.f(), db.get<int32_t>(), N, V, 1.0f); });
  EXPECT_CONTAINS(e, "label 65024 of row 4 is outside the vocabulary [0, 65024)");
}

const std::vector<MatmulCase> kGradCases = {{37, 203, 130, 32, false}, {1, 64, 64, 64, false},
                                            {130, 512, 1024, 128, false}, {33, 96, 160, 0, false}};

TEST(CudaBackward, MatmulInputGradientEveryDtypeBothPaths) {
  SKIP_WITHOUT_GPU();
  auto ref = make_ref_ops();
  for (bool bf16 : {false, true}) {
    Gpu g(bf16);
    SCOPED_TRACE(bf16 ? "bf16 activations" : "fp32 activations");
    std::vector<cuda::BackwardPath> paths = {cuda::BackwardPath::Simple, cuda::BackwardPath::Auto};
    if (g.ops->has_cublas()) paths.push_back(cuda::BackwardPath::Cublas);
    uint64_t seed = 1100;
    for (auto path : paths)
      for (DType dt : kAllDtypes)
        for (const auto& c : kGradCases) {
          SCOPED_TRACE(testing::Message() << "path " << int(path) << " " << dname(dt) << " N " << c.N << " M " << c.M
                                          << " K " << c.K << " group " << c.group);
          auto W = make_matrix(g, dt, c.M, c.K, c.group, seed);
          auto dy = random_floats(size_t(c.N * c.M), seed + 1), dx = random_floats(size_t(c.N * c.K), seed + 2);
          auto want = dx;
          ref->matmul_backward_input(dy.data(), c.N, W->host, want.data());
          auto d_dy = g.put(dy), d_dx = g.put(dx);
          g.ops->matmul_backward_input_with(path, d_dy.f(), c.N, W->dev, d_dx.f());
          const bool rounded = bf16 && dt != DType::F32 && path != cuda::BackwardPath::Simple && g.ops->has_cublas();
          EXPECT_LT(normalized_error(g.get<float>(d_dx, dx.size()), want), rounded ? kTolBf16 : kTolF32);
          seed += 3;
        }
  }
}

TEST(CudaBackward, MatmulWeightGradientBothPaths) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  std::vector<cuda::BackwardPath> paths = {cuda::BackwardPath::Simple, cuda::BackwardPath::Auto};
  if (g.ops->has_cublas()) paths.push_back(cuda::BackwardPath::Cublas);
  uint64_t seed = 1300;
  // LoRA's shapes (r 8 against 4096 and 13696) and odd ones.
  for (auto path : paths)
    for (auto [N, M, K] : std::vector<std::array<int64_t, 3>>{{37, 8, 203}, {130, 4608, 8}, {520, 8, 13696}, {1, 3, 5}}) {
      SCOPED_TRACE(testing::Message() << "path " << int(path) << " N " << N << " M " << M << " K " << K);
      auto dy = random_floats(size_t(N * M), seed), x = random_floats(size_t(N * K), seed + 1);
      auto dW = random_floats(size_t(M * K), seed + 2), want = dW;
      make_ref_ops()->matmul_backward_weight(dy.data(), x.data(), N, M, K, want.data());
      auto d_dy = g.put(dy), d_x = g.put(x), d_dW = g.put(dW);
      g.ops->matmul_backward_weight_with(path, d_dy.f(), d_x.f(), N, M, K, d_dW.f());
      EXPECT_LT(normalized_error(g.get<float>(d_dW, dW.size()), want), kTolF32);
      seed += 3;
    }
}

// The forward on the host (reference out and lse), the backward on both; every case of the forward's
// list: causal prefill, P > 0, GQA 4 and 16, D 16/64/128, key holes, a sequence without keys, segments.
TEST(CudaBackward, AttentionAgainstTheReference) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  uint64_t seed = 1500;
  for (const auto& c : kAttnCases) {
    SCOPED_TRACE(c.what);
    AttnData in(c, seed);
    const int64_t qstride = in.qstride, dqstride = int64_t(c.H) * c.D + 8;
    auto &q = in.q, &k = in.k, &v = in.v;
    auto &valid = in.valid;
    auto& seg = in.seg;
    const size_t kvn = k.size();
    KVView hk = in.host(c.S);
    const size_t rows = size_t(c.B) * c.T;
    std::vector<float> out(rows * c.H * c.D), lse(rows * c.H);
    ref->attention(q.data(), qstride, hk, c.B, c.T, c.P, c.H, c.G, c.D, out.data(), lse.data());
    auto dout = random_floats(out.size(), seed + 3);
    auto dq = random_floats(rows * size_t(dqstride), seed + 4);
    auto dk = random_floats(kvn, seed + 5), dv = random_floats(kvn, seed + 6);
    auto want_dq = dq, want_dk = dk, want_dv = dv;
    ref->attention_backward(q.data(), qstride, hk, c.B, c.T, c.P, c.H, c.G, c.D, out.data(), lse.data(), dout.data(),
                            want_dq.data(), dqstride, want_dk.data(), want_dv.data());
    auto d_q = g.put(q), d_k = g.put(k), d_v = g.put(v), d_valid = g.put(valid), d_seg = g.put(seg);
    auto d_out = g.put(out), d_lse = g.put(lse), d_dout = g.put(dout);
    auto d_dq = g.put(dq), d_dk = g.put(dk), d_dv = g.put(dv);
    KVView dkv{d_k.f(), d_v.f(), d_valid.get<uint8_t>(), c.S, c.segments ? d_seg.get<int32_t>() : nullptr};
    g.ops->attention_backward(d_q.f(), qstride, dkv, c.B, c.T, c.P, c.H, c.G, c.D, d_out.f(), d_lse.f(), d_dout.f(),
                              d_dq.f(), dqstride, d_dk.f(), d_dv.f());
    // Each gradient's error against the size of what the op added (the accumulated start values are O(1)).
    auto added = [](const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& start) {
      std::vector<float> a(got.size()), b(want.size());
      for (size_t i = 0; i < got.size(); ++i) a[i] = got[i] - start[i], b[i] = want[i] - start[i];
      return normalized_error(a, b);
    };
    EXPECT_LT(added(g.get<float>(d_dq, dq.size()), want_dq, dq), 1e-4) << "dq";
    EXPECT_LT(added(g.get<float>(d_dk, dk.size()), want_dk, dk), 1e-4) << "dk";
    EXPECT_LT(added(g.get<float>(d_dv, dv.size()), want_dv, dv), 1e-4) << "dv";
    seed += 10;
  }
}

// The adapters' helpers on a device trainer: dropout masks, VeRA's column scalings and λ gradients give
// the host's bits (the same hash, the same fp32 operations in the same order).
TEST(CudaOps, AdapterDropoutAndVeraScalingsGiveTheHostBits) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  auto ref = make_ref_ops();
  const int64_t N = 37, M = 1001;
  auto x = random_floats(size_t(N * M), 301), v = random_floats(size_t(M), 302), b = random_floats(size_t(N * M), 303);
  for (float p : {0.1f, 0.5f}) {
    std::vector<float> want(x.size());
    ref->dropout(x.data(), N * M, 0x1234567890abcdefULL, p, want.data());
    auto dx = g.put(x);
    DeviceBuffer out(*g.dev, x.size() * 4, "out");
    g.ops->dropout(dx.f(), N * M, 0x1234567890abcdefULL, p, out.f());
    EXPECT_EQ(g.get<float>(out, x.size()), want) << "p " << p;
    g.ops->dropout(dx.f(), N * M, 0x1234567890abcdefULL, p, dx.f());  // in place
    EXPECT_EQ(g.get<float>(dx, x.size()), want) << "in place, p " << p;
  }
  auto want = x;
  ref->mul_cols(want.data(), N, M, v.data());
  auto dx = g.put(x), dv = g.put(v), db = g.put(b);
  g.ops->mul_cols(dx.f(), N, M, dv.f());
  EXPECT_EQ(g.get<float>(dx, x.size()), want);
  auto acc = random_floats(size_t(M), 304), want_acc = acc;
  ref->col_dot(x.data(), b.data(), N, M, want_acc.data());
  auto dx2 = g.put(x), dacc = g.put(acc);
  g.ops->col_dot(dx2.f(), db.f(), N, M, dacc.f());
  EXPECT_EQ(g.get<float>(dacc, size_t(M)), want_acc);
}

// Three AdamW steps on the device give the host's bits (the same fp32 operations in the same order), and
// the norm and scale helpers give the host's clipping.
TEST(CudaOptimizer, AdamWGivesTheHostBitsAndTheNormClips) {
  SKIP_WITHOUT_GPU();
  Gpu g;
  const int64_t n = 100003;
  auto p = random_floats(size_t(n), 91), m = std::vector<float>(size_t(n), 0.0f), v = m;
  auto d_p = g.put(p), d_m = g.put(m), d_v = g.put(v);
  AdamWConfig cfg;
  cfg.weight_decay = 0.01;
  for (int t = 1; t <= 3; ++t) {
    auto grad = random_floats(size_t(n), 92 + uint64_t(t), -0.1f, 0.1f);
    const AdamWStep s = adamw_step(cfg, t, 1e-2 * t);
    adamw_update(p.data(), grad.data(), m.data(), v.data(), n, s);
    auto d_g = g.put(grad);
    g.ops->adamw(d_p.f(), d_g.f(), d_m.f(), d_v.f(), n, s);
  }
  EXPECT_EQ(g.get<float>(d_p, size_t(n)), p);
  EXPECT_EQ(g.get<float>(d_m, size_t(n)), m);
  EXPECT_EQ(g.get<float>(d_v, size_t(n)), v);

  auto x = random_floats(size_t(n), 99, -3, 3);
  auto d_x = g.put(x);
  const double want = make_ref_ops()->sum_squares(x.data(), n);
  EXPECT_NEAR(g.ops->sum_squares(d_x.f(), n), want, 1e-12 * want);
  EXPECT_NEAR(g.ops->sum_squares(d_x.f(), 5), make_ref_ops()->sum_squares(x.data(), 5), 1e-12);
  g.ops->scale(d_x.f(), n, 0.3);
  make_ref_ops()->scale(x.data(), n, 0.3);
  EXPECT_EQ(g.get<float>(d_x, size_t(n)), x);
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

// Weight-only int8/int4 (issue 4): the quantized kernels against the fp32 reference, with error bounds
// a wrong nibble order or scale breaks; fast vs reference on both matmul paths; the quantizer against
// the oracle's implementation; THUDM and GPTQ tensors from the oracle (tools/reference/quant_golden.py);
// quantize → save → load round trips; whole-model logits of quantized tiny models.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

#include "lab/parity.h"
#include "model/checkpoint_writer.h"
#include "model/loader.h"
#include "model/quant_load.h"
#include "model/quantize.h"
#include "model/safetensors.h"
#include "ops/ops.h"
#include "test_numeric.h"
#include "test_quant_util.h"
#include "test_util.h"
#include "util/error.h"

namespace glmlab {
namespace {

using test::randv;

using test::golden_path;

// Normalized errors of a against b: max|a-b| / max|b| (test::nmax) and ‖a-b‖₂ / ‖b‖₂.
using test::nmax;
double nrms(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, r = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) e += double(a[i] - b[i]) * (a[i] - b[i]), r += double(b[i]) * b[i];
  return std::sqrt(e / r);
}

using test::group_weights;
std::vector<float> matmul(Ops& ops, const std::vector<float>& x, int64_t N, const Matrix& W) {
  std::vector<float> y(size_t(N * W.rows));
  ops.matmul(x.data(), N, W, nullptr, y.data());
  return y;
}

using Copy = test::MatrixCopy;

// Error bounds of quantized matmul against the fp32 matmul of the unquantized weights (relative RMS
// over the outputs). Round-to-nearest noise is about step/√12 per weight, step = max|w|/qmax of a
// group: observed ≈ 0.006 (int8) and ≈ 0.11 (int4) on these weights; the bounds leave 2× room. A
// swapped nibble order, unsigned nibbles, a scale of the wrong group or transposed scales are ≥ 0.5.
constexpr double kBoundQ8 = 0.015, kBoundQ4 = 0.25;

// cpu: the fast back end as it runs by default (approximate activations: int8 per 32 inputs on VNNI
// for ≤ 4 rows, bf16 on AMX for prefill, where the CPU has them); exact: activations kept fp32.
class QuantKernels : public ::testing::Test {
 protected:
  std::unique_ptr<Ops> ref = make_ref_ops(), cpu = make_ops(Backend::Cpu), exact = make_ops(Backend::Cpu, false);
};

TEST_F(QuantKernels, EveryKernelWithinItsBoundOfFp32AndMutationsAreNot) {
  const int64_t M = 37, K = 256, G = 64;
  auto w = group_weights(M, K, G, 1);
  Matrix wf{DType::F32, M, K, w.data()};
  for (DType q : {DType::Q8, DType::Q4})
    for (int64_t N : {1, 3, 12, 17}) {  // GEMV (12: Q4 in two passes of tokens) and tile paths
      SCOPED_TRACE(fmt::format("{} N={}", dtype_name(q), N));
      const double bound = q == DType::Q8 ? kBoundQ8 : kBoundQ4;
      QuantizedMatrix qm = quantize(wf, q, G);
      auto x = randv(size_t(N * K), 2);
      auto yf = matmul(*ref, x, N, wf);
      double e_cpu = nrms(matmul(*cpu, x, N, qm.m), yf), e_ref = nrms(matmul(*ref, x, N, qm.m), yf),
             e_exact = nrms(matmul(*exact, x, N, qm.m), yf);
      EXPECT_LT(e_cpu, bound);
      EXPECT_LT(e_ref, bound);
      EXPECT_LT(e_exact, bound);
      EXPECT_GT(e_cpu, bound / 20) << "suspiciously exact: is the matrix quantized at all?";
      if (N == 1)
        std::printf("[ info ] %s: relative RMS error vs fp32 %.4f (fp32 activations %.4f, bound %.3f)\n",
                    std::string(dtype_name(q)).c_str(), e_cpu, e_exact, bound);
      // Each mutation must fail the bound, on both back ends.
      std::vector<std::pair<const char*, Copy>> bad;
      Copy shift(qm.m);  // every group reads the scale of the next one (the last wraps around)
      for (int64_t r = 0; r < M; ++r)
        for (int64_t g = 0; g < qm.m.groups(); ++g) shift.scales[size_t(r * qm.m.groups() + g)] = qm.m.scales[r * qm.m.groups() + (g + 1) % qm.m.groups()];
      bad.emplace_back("scale of the next group", std::move(shift));
      Copy tr(qm.m);  // scales read as [groups, rows] (GPTQ's order) instead of [rows, groups]
      for (int64_t r = 0; r < M; ++r)
        for (int64_t g = 0; g < qm.m.groups(); ++g) tr.scales[size_t(r * qm.m.groups() + g)] = qm.m.scales[(g * M + r) % (M * qm.m.groups())];
      bad.emplace_back("transposed scales", std::move(tr));
      if (q == DType::Q4) {
        Copy sw(qm.m), us(qm.m);
        for (auto& b : sw.data) b = uint8_t((b << 4) | (b >> 4));  // odd element in the high nibble
        for (auto& b : us.data) b ^= 0x88;                          // nibbles read as unsigned 0..15
        bad.emplace_back("swapped nibbles", std::move(sw));
        bad.emplace_back("unsigned nibbles", std::move(us));
      }
      for (auto& [what, c] : bad) {
        double e1 = nrms(matmul(*cpu, x, N, c.m), yf), e2 = nrms(matmul(*ref, x, N, c.m), yf),
               e3 = nrms(matmul(*exact, x, N, c.m), yf);
        EXPECT_GT(e1, 2 * bound) << what;
        EXPECT_GT(e2, 2 * bound) << what;
        EXPECT_GT(e3, 2 * bound) << what;
        if (N == 1) std::printf("[ info ]   %s: %.3f\n", what, e1);
      }
    }
}

TEST_F(QuantKernels, FastMatchesReferenceOnGemvAndTilePathsOddSizes) {
  // With fp32 activations the fast kernels and the reference read the same dequantized values: they
  // differ only by fp32 summation order. With approximate activations (int8 per 32 inputs, or bf16
  // tiles) the difference is the activation rounding: relative RMS ≈ 0.004 (int8) / 0.002 (bf16),
  // bound 0.01. Odd rows, partial last groups, odd K (int4: a padded nibble), SIMD tails; M = 64 and
  // K = 256 / 384 take the VNNI and AMX paths where the CPU has them.
  for (int64_t M : {37, 64})
    for (DType q : {DType::Q8, DType::Q4})
      for (int64_t K : {200, 203, 256, 384})
        for (int64_t G : {32, 64, 128, 0}) {
          auto w = group_weights(M, K, G ? G : K, uint32_t(K + G));
          QuantizedMatrix qm = quantize(Matrix{DType::F32, M, K, w.data()}, q, G);
          for (int64_t N : {1, 2, 3, 4, 5, 9, 17}) {
            SCOPED_TRACE(fmt::format("{} M={} K={} G={} N={}", dtype_name(q), M, K, G, N));
            auto x = randv(size_t(N * K), uint32_t(N));
            auto bias = randv(size_t(M), 3);
            std::vector<float> a(size_t(N * M)), b(a.size()), c(a.size());
            ref->matmul(x.data(), N, qm.m, bias.data(), a.data());
            exact->matmul(x.data(), N, qm.m, bias.data(), b.data());
            cpu->matmul(x.data(), N, qm.m, bias.data(), c.data());
            EXPECT_LT(nmax(b, a), 2e-6);
            EXPECT_LT(nrms(c, a), 1e-2);
          }
        }
}

TEST_F(QuantKernels, HandBuiltBytesDecodeAsDocumented) {
  // Q4 row of 6 values, group 2 (3 scales): bytes 0x7F, 0x80, 0x08 = (7, -1), (-8, 0), (0, -8).
  const uint8_t bytes[3] = {0x7F, 0x80, 0x08};
  const uint16_t sc[3] = {f32_to_f16(1.0f), f32_to_f16(0.5f), f32_to_f16(-2.0f)};
  Matrix m{DType::Q4, 1, 6, bytes};
  m.scales = sc;
  m.group_size = 2;
  const float want[6] = {7.0f, -1.0f, -4.0f, 0.0f, 0.0f, 16.0f};
  for (int c = 0; c < 6; ++c) {
    EXPECT_EQ(m.at(0, c), want[c]) << c;
    std::vector<float> x(6, 0.0f), y(1);
    x[size_t(c)] = 1.0f;  // the fast GEMV picks out one weight
    cpu->matmul(x.data(), 1, m, nullptr, y.data());
    EXPECT_EQ(y[0], want[c]) << c;
  }
  // Q8: int8 values as they are, one scale per row here.
  const int8_t q8[4] = {-128, 127, -1, 0};
  const uint16_t s8 = f32_to_f16(0.25f);
  Matrix m8{DType::Q8, 1, 4, q8};
  m8.scales = &s8;
  m8.group_size = 4;
  EXPECT_EQ(m8.at(0, 0), -32.0f);
  EXPECT_EQ(m8.at(0, 1), 31.75f);
  EXPECT_EQ(m8.at(0, 2), -0.25f);
  EXPECT_EQ(m8.nbytes(), 4u + 2u);
  EXPECT_EQ(m.nbytes(), 3u + 6u);
}

// ------------------------------------------------------------------------------- quantizer

TEST(QuantQuantizer, MatchesTheOraclesImplementationBitExactly) {
  SafetensorsSet g = SafetensorsSet::open(golden_path("quant/glmlab_ref.safetensors"));
  const TensorInfo& src = g.get("source");
  Matrix w{DType::F32, src.shape[0], src.shape[1], src.data};
  for (auto [name, q, G] : {std::tuple{"q8", DType::Q8, 64}, std::tuple{"q4", DType::Q4, 64}, std::tuple{"q4g0", DType::Q4, 0}}) {
    SCOPED_TRACE(name);
    QuantizedMatrix qm = quantize(w, q, G);
    const TensorInfo& wb = g.get(std::string(name) + ".weight");
    const TensorInfo& sb = g.get(std::string(name) + ".weight_scale");
    ASSERT_EQ(qm.data.size(), wb.nbytes);
    ASSERT_EQ(qm.scales.size(), sb.nbytes);
    EXPECT_EQ(0, std::memcmp(qm.data.data(), wb.data, wb.nbytes));
    EXPECT_EQ(0, std::memcmp(qm.scales.data(), sb.data, sb.nbytes));
  }
  // Row 4 holds exact ties (scale 0.0625): half to even gives 7, 2, 2, 0, 4, -2, 0, -2; row 3's
  // all-zero group has scale 0 and q 0.
  QuantizedMatrix q4 = quantize(w, DType::Q4, 64);
  const int want[8] = {7, 2, 2, 0, 4, -2, 0, -2};
  for (int c = 0; c < 8; ++c) EXPECT_EQ(quantized_value(q4.m, 4, c), want[c]) << c;
  EXPECT_EQ(quantized_scale(q4.m, 4, 0), 0.0625f);
  EXPECT_EQ(quantized_scale(q4.m, 3, 0), 0.0f);
  EXPECT_EQ(q4.m.at(3, 5), 0.0f);
}

TEST(QuantQuantizer, RejectsBadGroupsAndNonFiniteWeights) {
  std::vector<float> w(64, 1.0f);
  Matrix m{DType::F32, 2, 32, w.data()};
  EXPECT_THROW(quantize(m, DType::Q4, 7), Error);   // odd int4 group
  EXPECT_THROW(quantize(m, DType::Q8, -1), Error);
  EXPECT_EQ(quantize(m, DType::Q8, 0).m.group_size, 32);  // 0 = per row
  EXPECT_EQ(quantize(m, DType::Q8, 128).m.group_size, 32);
  w[5] = std::nanf("");
  try {
    quantize(m, DType::Q8, 16);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 0 column 5"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------------------- formats users have

void expect_equal_rows(const Matrix& m, const TensorInfo& expected) {
  ASSERT_EQ(expected.shape, (std::vector<int64_t>{m.rows, m.cols}));
  std::vector<float> row(static_cast<size_t>(m.cols));
  const float* e = reinterpret_cast<const float*>(expected.data);
  int64_t bad = 0;
  for (int64_t r = 0; r < m.rows; ++r) {
    read_row(m, r, row.data());
    for (int64_t c = 0; c < m.cols; ++c) bad += row[size_t(c)] != e[r * m.cols + c];
  }
  EXPECT_EQ(bad, 0) << "values differing from the oracle's dequantized matrix";
}

TEST(QuantLoad, ThudmTensorsLoadToTheOraclesValuesZeroCopy) {
  SafetensorsSet g = SafetensorsSet::open(golden_path("quant/thudm.safetensors"));
  for (int bits : {4, 8}) {
    SCOPED_TRACE(bits);
    std::string mod = fmt::format("int{}", bits);
    QuantConfig qc;
    qc.method = QuantConfig::Method::Thudm;
    qc.bits = bits;
    EXPECT_EQ(stored_linear(g, mod), StoredLinear::Int);
    QuantizedMatrix qm = read_quantized_linear(g, mod, 37, 160, qc, "thudm");
    EXPECT_EQ(qm.m.dtype, bits == 4 ? DType::Q4 : DType::Q8);
    EXPECT_EQ(qm.m.group_size, 160);  // per row
    EXPECT_TRUE(qm.data.empty() && qm.scales.empty());
    EXPECT_EQ(qm.m.data, g.get(mod + ".weight").data);  // zero copy
    expect_equal_rows(qm.m, g.get(mod + ".expected"));
      // glmlab's per-row quantizer on THUDM's fp16 source agrees with THUDM's fp16 arithmetic except
    // near ties (THUDM rounds w/scale to fp16 first; glmlab divides in fp32): never by more than 1.
    // Observed: 4 of 5920 values (int4), 75 of 5920 (int8).
    const TensorInfo& s = g.get(mod + ".source");
    QuantizedMatrix ours = quantize(Matrix{DType::F16, 37, 160, s.data}, qm.m.dtype, 0);
    int64_t differ = 0;
    for (int64_t r = bits == 4 ? 1 : 0; r < 37; ++r)  // int4 row 0 is hand-set
      for (int64_t c = 0; c < 160; ++c) {
        int d = std::abs(quantized_value(ours.m, r, c) - quantized_value(qm.m, r, c));
        EXPECT_LE(d, 1);
        differ += d != 0;
      }
    EXPECT_LT(differ, 37 * 160 * (bits == 4 ? 1 : 3) / 100);  // fp16 quotients are coarser near ±127
    std::printf("[ info ] int%d: our quantizer differs from THUDM's on %lld of %d values\n", bits, (long long)differ, 37 * 160);
  }
}

TEST(QuantLoad, NonFiniteScalesAreNamedErrors) {
  // A NaN or Inf scale turns a group of outputs into NaN: the loader names the tensor, row and group.
  // Stored fp16 Inf, fp32 NaN, and an fp32 scale beyond fp16's range (1e6 → Inf once converted).
  auto dir = test::temp_dir("quant-scales");
  std::vector<int8_t> w(size_t(4 * 64), 3);
  QuantConfig qc;
  qc.method = QuantConfig::Method::Thudm;
  qc.bits = 8;
  struct Case {
    DType dtype;
    float bad;
  };
  for (Case c : {Case{DType::F16, std::numeric_limits<float>::infinity()}, Case{DType::F32, std::nanf("")},
                 Case{DType::F32, 1e6f}}) {
    SCOPED_TRACE(fmt::format("{} {}", dtype_name(c.dtype), c.bad));
    std::vector<float> s32(4, 0.01f);
    s32[2] = c.bad;
    std::vector<uint16_t> s16(4);
    for (size_t i = 0; i < 4; ++i) s16[i] = f32_to_f16(s32[i]);
    const void* sp = c.dtype == DType::F16 ? static_cast<const void*>(s16.data()) : s32.data();
    const std::string path = (dir / "q.safetensors").string();
    write_safetensors(path, {{"lin.weight", DType::I8, {4, 64}, w.data(), w.size()},
                             {"lin.weight_scale", c.dtype, {4}, sp, size_t(4 * (c.dtype == DType::F16 ? 2 : 4))}});
    SafetensorsSet set = SafetensorsSet::open(path);
    std::string e = test::error_of([&] { read_quantized_linear(set, "lin", 4, 64, qc, "ckpt"); });
    EXPECT_NE(e.find("ckpt: tensor lin.weight_scale holds a scale that is not finite"), std::string::npos) << e;
    EXPECT_NE(e.find("row 2, group 0"), std::string::npos) << e;
  }
  // The same file with finite scales loads.
  std::vector<uint16_t> ok(4, f32_to_f16(0.01f));
  write_safetensors((dir / "ok.safetensors").string(), {{"lin.weight", DType::I8, {4, 64}, w.data(), w.size()},
                                                        {"lin.weight_scale", DType::F16, {4}, ok.data(), 8}});
  SafetensorsSet set = SafetensorsSet::open((dir / "ok.safetensors").string());
  EXPECT_EQ(read_quantized_linear(set, "lin", 4, 64, qc, "ckpt").m.dtype, DType::Q8);
}

TEST(QuantLoad, GptqTensorsLoadToTheOraclesValues) {
  SafetensorsSet g = SafetensorsSet::open(golden_path("quant/gptq.safetensors"));
  for (auto [mod, bits, rows, cols, group, v1] : {std::tuple{"lin", 4, 64, 256, 64, true}, std::tuple{"lin2", 4, 64, 256, 64, false},
                                                 std::tuple{"lin8", 8, 32, 128, 32, true}}) {
    SCOPED_TRACE(mod);
    QuantConfig qc;
    qc.method = QuantConfig::Method::Gptq;
    qc.bits = bits;
    qc.group_size = group;
    qc.gptq_zero_minus_one = v1;
    EXPECT_EQ(stored_linear(g, mod), StoredLinear::Gptq);
    QuantizedMatrix qm = read_quantized_linear(g, mod, rows, cols, qc, "gptq");
    EXPECT_EQ(qm.m.dtype, bits == 4 ? DType::Q4 : DType::Q8);
    expect_equal_rows(qm.m, g.get(std::string(mod) + ".expected"));
    // The other zero-point convention is an error that names it.
    qc.gptq_zero_minus_one = !v1;
    try {
      read_quantized_linear(g, mod, rows, cols, qc, "gptq");
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("convention"), std::string::npos) << e.what();
    }
  }
}

TEST(QuantLoad, GptqActOrderAndConfiglessCheckpointsAreRefused) {
  SafetensorsSet g = SafetensorsSet::open(golden_path("quant/gptq.safetensors"));
  QuantConfig qc;
  qc.method = QuantConfig::Method::Gptq;
  qc.bits = 4;
  qc.group_size = 64;
  // A permuted g_idx (desc_act): written to a copy of lin's tensors.
  std::vector<int32_t> gidx(256);
  for (int i = 0; i < 256; ++i) gidx[size_t(i)] = (i % 4);
  std::vector<TensorToWrite> t;
  for (const char* s : {".qweight", ".qzeros", ".scales"}) {
    auto& ti = g.get(std::string("lin") + s);
    t.push_back({ti.name, ti.dtype, ti.shape, ti.data, ti.nbytes});
  }
  t.push_back({"lin.g_idx", DType::I32, {256}, gidx.data(), gidx.size() * 4});
  auto dir = test::temp_dir("quant_gidx");
  write_safetensors((dir / "m.safetensors").string(), t);
  SafetensorsSet bad = SafetensorsSet::open((dir / "m.safetensors").string());
  try {
    read_quantized_linear(bad, "lin", 64, 256, qc, "x");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("g_idx"), std::string::npos) << e.what();
  }
  QuantConfig none;  // GPTQ tensors with no quantization_config
  EXPECT_THROW(read_quantized_linear(g, "lin", 64, 256, none, "x"), Error);
}

// ------------------------------------------------------------------------------- round trips

void expect_same_weights(const ModelWeights& a, const ModelWeights& b) {
  auto same = [](const Matrix& x, const Matrix& y) {
    bool ok = x.dtype == y.dtype && x.rows == y.rows && x.cols == y.cols && x.group_size == y.group_size &&
              x.data_bytes() == y.data_bytes() && std::memcmp(x.data, y.data, x.data_bytes()) == 0;
    if (ok && x.quantized()) ok = std::memcmp(x.scales, y.scales, size_t(x.rows * x.groups()) * 2) == 0;
    return ok;
  };
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_TRUE(same(a.embedding, b.embedding));
  EXPECT_TRUE(same(a.output, b.output));
  EXPECT_EQ(a.final_norm, b.final_norm);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t l = 0; l < a.layers.size(); ++l) {
    auto &x = a.layers[l], &y = b.layers[l];
    EXPECT_TRUE(same(x.qkv, y.qkv) && same(x.dense, y.dense) && same(x.h_to_4h, y.h_to_4h) &&
                same(x.four_h_to_h, y.four_h_to_h)) << "layer " << l;
    EXPECT_EQ(x.qkv_bias, y.qkv_bias);
    EXPECT_EQ(x.input_norm, y.input_norm);
    EXPECT_EQ(x.post_norm, y.post_norm);
  }
}

TEST(QuantRoundTrip, QuantizeSaveLoadIsBitExact) {
  struct Case {
    std::string spec, dtype;
    int group;
  };
  for (const Case& c : {Case{"random:tiny", "int4", 32}, Case{"random:tiny", "int8", 0},
                        Case{golden_path("tiny-f32"), "int4", 64}, Case{golden_path("tiny-bf16"), "int8", 32},
                        Case{golden_path("tiny-thudm-int4"), "", 0}, Case{golden_path("tiny-gptq-int4"), "", 0}}) {
    SCOPED_TRACE(c.spec + " " + c.dtype);
    Model m = load_model(c.spec, c.dtype, 5, c.group);
    auto dir = test::temp_dir("quant_roundtrip") / "out";
    write_checkpoint(m.config(), m.weights(), dir.string());
    EXPECT_FALSE(std::filesystem::exists(dir.string() + ".tmp"));
    Model back = load_model(dir.string());  // default dtype: as stored
    expect_same_weights(m.weights(), back.weights());
    EXPECT_EQ(back.config().quant.method, QuantConfig::Method::Glmlab);
    EXPECT_THROW(write_checkpoint(m.config(), m.weights(), dir.string()), Error);  // never overwrites
  }
}

TEST(QuantRoundTrip, CliQuantizeWritesWhatLoadingQuantizes) {
  auto dir = test::temp_dir("quant_cli") / "q4";
  auto r = test::run_cli(fmt::format("quantize --model {} --dtype int4 --group-size 32 -o {}", golden_path("tiny-f32"), dir.string()));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("int4 (group 32"), std::string::npos) << r.out;
  expect_same_weights(load_model(golden_path("tiny-f32"), "int4", 0, 32).weights(), load_model(dir.string()).weights());
  r = test::run_cli(fmt::format("quantize --model {} --dtype int4 -o {}", golden_path("tiny-f32"), dir.string()));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  r = test::run_cli(fmt::format("quantize --model random:tiny --dtype bf16 -o {}x", dir.string()));
  EXPECT_EQ(r.rc, 1);
  // A quantized checkpoint asked for as the other quantized type is refused (no double quantization),
  // and loads dequantized into float dtypes.
  EXPECT_THROW(load_model(dir.string(), "int8"), Error);
  Model f = load_model(dir.string(), "fp32");
  Model q = load_model(dir.string());
  EXPECT_EQ(f.weights().layers[1].h_to_4h.at(7, 33), q.weights().layers[1].h_to_4h.at(7, 33));
}

TEST(QuantRoundTrip, RandomQuantizedIsTheQuantizedRandomModel) {
  // random:PRESET int4 quantizes the same fp32 numbers as random:PRESET fp32, block by block.
  Model f = load_model("random:tiny", "fp32", 9);
  Model q = load_model("random:tiny", "int4", 9, 32);
  QuantizedMatrix ref = quantize(f.weights().layers[0].h_to_4h, DType::Q4, 32);
  const Matrix& got = q.weights().layers[0].h_to_4h;
  EXPECT_EQ(0, std::memcmp(ref.data.data(), got.data, got.data_bytes()));
  EXPECT_EQ(0, std::memcmp(ref.scales.data(), got.scales, ref.scales.size()));
  EXPECT_EQ(q.weights().embedding.dtype, DType::F16);
  EXPECT_EQ(got.nbytes(), size_t(got.rows * got.cols / 2 + got.rows * got.cols / 32 * 2));  // 4.5 bits a weight
}

TEST(QuantPacked, PackedWeightsReadTheSameAndAreRefusedByTrainingAndWriters) {
  Model m = load_model("random:tiny", "int4", 3, 32);
  const Model same = load_model("random:tiny", "int4", 3, 32);
  auto ops = make_ops(Backend::Cpu, true);
  const int n = m.pack_weights(*ops);
  if (n == 0) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  EXPECT_EQ(n, 4 * m.config().num_layers + 1);  // and the fp16 output layer (kernels/cpu/f16_packed.h)
  EXPECT_EQ(m.weights().output.layout, MatrixLayout::Rows16);
  const Matrix& p = m.weights().layers[1].h_to_4h;
  const Matrix& r = same.weights().layers[1].h_to_4h;
  EXPECT_EQ(p.layout, MatrixLayout::Vnni16);
  for (int64_t i = 0; i < p.rows; i += 7)
    for (int64_t c = 0; c < p.cols; c += 3) ASSERT_EQ(p.at(i, c), r.at(i, c));
  EXPECT_EQ(m.pack_weights(*ops), 0);  // already packed
  // Training and checkpoint writing need row-major bytes: clear errors, not garbage.
  auto dir = test::temp_dir("quant_packed") / "out";
  try {
    write_checkpoint(m.config(), m.weights(), dir.string());
    ADD_FAILURE() << "wrote a packed checkpoint";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("repacked for inference"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
  std::vector<float> dy(size_t(2 * p.rows), 1.0f), dx(size_t(2 * p.cols));
  EXPECT_THROW(ops->matmul_backward_input(dy.data(), 2, p, dx.data()), Error);
}

// ------------------------------------------------------------------------------- whole model

ParityReport parity(const Model& m, Backend be, const std::string& golden, double atol, double rtol, double top1,
                    bool exact = false) {
  auto ops = make_ops(be, !exact);
  ParityOptions o;
  o.atol = atol;
  o.rtol = rtol;
  o.min_top1 = top1;
  return run_parity(m, *ops, golden_path(golden), o);
}

TEST(QuantGolden, ThudmAndGptqCheckpointsMatchTheOracleTightly) {
  // The oracle ran in fp32 on the dequantized weights; glmlab with fp32 activations computes in fp32
  // from the quantized ones (sum of q·x, then × scale): observed max |Δ| ≈ 7e-6 on logits of
  // magnitude ≈ 8. With the default approximate activations (prefill of 27 rows: weights and
  // activations in bf16 on AMX; decode steps: int8 activations per 32 inputs on VNNI) the logits move
  // by observed max_rel 1.6e-2 .. 2.2e-2 (like a bf16 model: test_model.cpp allows 4e-2): bound 5e-2,
  // and every top-1 agrees.
  for (const char* name : {"tiny-thudm-int4", "tiny-thudm-int8", "tiny-gptq-int4"}) {
    Model m = load_model(golden_path(name));
    EXPECT_TRUE(is_quantized(m.weights().dtype)) << name;
    for (Backend be : {Backend::Cpu, Backend::CpuRef}) {
      ParityReport r = parity(m, be, std::string(name) + "/golden.safetensors", 5e-5, 0, 1.0, true);
      EXPECT_TRUE(r.pass) << name << "\n" << parity_table(r, false);
    }
    ParityReport r = parity(m, Backend::Cpu, std::string(name) + "/golden.safetensors", 0, 5e-2, 1.0);
    EXPECT_TRUE(r.pass) << name << " approximate activations\n" << parity_table(r, false);
    std::printf("[ info ] %s, approximate activations: max_rel %.2e\n", name, r.max_rel);
    // Packed for the VNNI kernels, as generate, serve, bench infer and parity load it: every matmul on
    // int8 activations per 128 inputs (prefill included). Observed max_rel 2.3e-2 .. 2.9e-2; one top-1 of
    // 27 differs in tiny-thudm-int8 and in tiny-gptq-int4, both near-ties (reference margins 0.037 and
    // 0.015 against row errors of 0.16 and 0.10: ParityRow::near_tie). Same bound, every other top-1.
    if (m.pack_weights(*make_ops(Backend::Cpu, true)) > 0) {
      EXPECT_EQ(m.weights().layers[0].qkv.layout, MatrixLayout::Vnni16);
      r = parity(m, Backend::Cpu, std::string(name) + "/golden.safetensors", 0, 5e-2, 1.0);
      EXPECT_TRUE(r.pass) << name << " packed\n" << parity_table(r, false);
      std::printf("[ info ] %s, packed for VNNI: max_rel %.2e\n", name, r.max_rel);
    }
  }
}

TEST(QuantGolden, Int8AndInt4LogitsWithinStatedBoundsOfFp32) {
  // tiny-f32 quantized by glmlab against the oracle's fp32 logits. Observed (max_rel per position,
  // top-1 agreement): int8 per row 0.023 / 96%, group 32 0.034 / 100%; int4 per row 0.74 / 78%,
  // group 32 0.50 / 63%. The tiny model's Gaussian 64-wide rows are a hard case for int4; THUDM's own
  // int4 of the same model (oracle) is as far from fp32: max |Δ| 5.2, 78% top-1. Bounds: int8 max_rel
  // 0.06 and 90% top-1; int4 no worse than 1.2 × THUDM's max |Δ|.
  const double thudm_int4_max_abs = 5.21;
  for (int g : {0, 32}) {
    Model q8 = load_model(golden_path("tiny-f32"), "int8", 0, g);
    ParityReport r = parity(q8, Backend::Cpu, "tiny-f32/golden.safetensors", 0, 0.06, 0.9);
    EXPECT_TRUE(r.pass) << "int8 group " << g << "\n" << parity_table(r, false);
    Model q4 = load_model(golden_path("tiny-f32"), "int4", 0, g);
    r = parity(q4, Backend::Cpu, "tiny-f32/golden.safetensors", 1.2 * thudm_int4_max_abs, 0, 0.5);
    EXPECT_TRUE(r.pass) << "int4 group " << g << "\n" << parity_table(r, false);
    std::printf("[ info ] group %d: int4 max|Δ| %.3f (THUDM's %.2f), top-1 %.0f%%\n", g, r.max_abs, thudm_int4_max_abs,
                100 * r.top1_rate);
    // The same bounds with the weights packed for the VNNI kernels (int8 activations per 128 inputs).
    auto ops = make_ops(Backend::Cpu, true);
    if (q8.pack_weights(*ops) > 0 && q4.pack_weights(*ops) > 0) {
      r = parity(q8, Backend::Cpu, "tiny-f32/golden.safetensors", 0, 0.06, 0.9);
      EXPECT_TRUE(r.pass) << "packed int8 group " << g << "\n" << parity_table(r, false);
      r = parity(q4, Backend::Cpu, "tiny-f32/golden.safetensors", 1.2 * thudm_int4_max_abs, 0, 0.5);
      EXPECT_TRUE(r.pass) << "packed int4 group " << g << "\n" << parity_table(r, false);
      std::printf("[ info ] group %d packed: int4 max|Δ| %.3f, top-1 %.0f%%\n", g, r.max_abs, 100 * r.top1_rate);
    }
  }
  // Per row, glmlab's int4 of the fp16 checkpoint is THUDM's int4 model up to rare near-tie roundings:
  // observed max_rel 0.045, top-1 93%.
  Model t = load_model(golden_path("tiny-f16"), "int4", 0, 0);
  ParityReport r = parity(t, Backend::Cpu, "tiny-thudm-int4/golden.safetensors", 0, 0.1, 0.85);
  EXPECT_TRUE(r.pass) << parity_table(r, false);
  // A nibble-order bug is far outside the int4 bound. (These buffers are the quantizer's own heap
  // memory, so swapping the nibbles in place is legitimate.)
  Model bad = load_model(golden_path("tiny-f32"), "int4", 0, 32);
  for (auto& l : bad.weights().layers)
    for (const Matrix* m : {&l.qkv, &l.dense, &l.h_to_4h, &l.four_h_to_h}) {
      auto* p = const_cast<uint8_t*>(static_cast<const uint8_t*>(m->data));
      for (size_t i = 0; i < m->data_bytes(); ++i) p[i] = uint8_t((p[i] << 4) | (p[i] >> 4));
    }
  r = parity(bad, Backend::Cpu, "tiny-f32/golden.safetensors", 1.2 * thudm_int4_max_abs, 0, 0.5);
  EXPECT_FALSE(r.pass);
  std::printf("[ info ] int4 with swapped nibbles: max|Δ| %.2f, top-1 %.0f%%\n", r.max_abs, 100 * r.top1_rate);
}

}  // namespace
}  // namespace glmlab

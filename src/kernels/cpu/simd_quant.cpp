// Highway implementations of simd_quant.h, compiled once per target ISA and dispatched at run time.
// Weights are widened in registers (int8 → int32 → fp32; int4 by sign-extending shifts of the byte),
// accumulated in fp32 per group, then scaled once per group.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/simd_quant.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/cpu/simd_quant.h"
#include "kernels/cpu/vnni_packed.h"

HWY_BEFORE_NAMESPACE();
namespace glmlab::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using D8 = hn::Rebind<int8_t, DF>;
constexpr int64_t kPrefetch = 4096;  // bytes ahead on the weight stream (one stream per thread)

// The group [b0, b1) of a row, in stored units (Q8: values; Q4: bytes).
struct Span {
  int64_t b0, b1;
};
HWY_INLINE Span group_span(const Matrix& W, int64_t g, int64_t units) {
  const int64_t G = W.dtype == DType::Q4 ? W.group_size / 2 : W.group_size;
  return Span{g * G, g + 1 == W.groups() ? units : (g + 1) * G};
}

// One Q8 row against NT tokens.
template <int NT>
HWY_INLINE void RowQ8(const Matrix& W, int64_t r, const float* x, int64_t xs, float* out) {
  const DF df;
  const DI di;
  const D8 d8;
  const int64_t L = int64_t(hn::Lanes(df)), K = W.cols, ng = W.groups();
  const int8_t* q = static_cast<const int8_t*>(W.data) + r * K;
  const uint16_t* sc = W.scales + r * ng;
  hn::Vec<DF> tot[NT];
  float tail[NT];
  for (int t = 0; t < NT; ++t) tot[t] = hn::Zero(df), tail[t] = 0;
  for (int64_t g = 0; g < ng; ++g) {
    const Span sp = group_span(W, g, K);
    hn::Vec<DF> a0[NT], a1[NT];
    for (int t = 0; t < NT; ++t) a0[t] = a1[t] = hn::Zero(df);
    int64_t k = sp.b0;
    for (; k + 2 * L <= sp.b1; k += 2 * L) {
      hwy::Prefetch(q + k + kPrefetch);
      const auto w0 = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + k)));
      const auto w1 = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + k + L)));
      for (int t = 0; t < NT; ++t) {
        a0[t] = hn::MulAdd(w0, hn::LoadU(df, x + t * xs + k), a0[t]);
        a1[t] = hn::MulAdd(w1, hn::LoadU(df, x + t * xs + k + L), a1[t]);
      }
    }
    for (; k + L <= sp.b1; k += L) {
      const auto w0 = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + k)));
      for (int t = 0; t < NT; ++t) a0[t] = hn::MulAdd(w0, hn::LoadU(df, x + t * xs + k), a0[t]);
    }
    const float s = f16_to_f32(sc[g]);
    const auto vs = hn::Set(df, s);
    for (int t = 0; t < NT; ++t) {
      float ts = 0;
      for (int64_t j = k; j < sp.b1; ++j) ts += float(q[j]) * x[t * xs + j];
      tot[t] = hn::MulAdd(hn::Add(a0[t], a1[t]), vs, tot[t]);
      tail[t] += s * ts;
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hn::GetLane(hn::SumOfLanes(df, tot[t])) + tail[t];
}

// One Q4 row against NT tokens whose activations are split (even inputs, then odd inputs).
template <int NT>
HWY_INLINE void RowQ4(const Matrix& W, int64_t r, const float* x, int64_t xs, float* out) {
  const DF df;
  const DI di;
  const D8 d8;
  const int64_t L = int64_t(hn::Lanes(df)), Kh = W.row_bytes(), ng = W.groups();
  const int8_t* p = static_cast<const int8_t*>(W.data) + r * Kh;
  const uint16_t* sc = W.scales + r * ng;
  hn::Vec<DF> tot[NT];
  float tail[NT];
  for (int t = 0; t < NT; ++t) tot[t] = hn::Zero(df), tail[t] = 0;
  for (int64_t g = 0; g < ng; ++g) {
    const Span sp = group_span(W, g, Kh);
    hn::Vec<DF> ah[NT], al[NT];
    for (int t = 0; t < NT; ++t) ah[t] = al[t] = hn::Zero(df);
    int64_t b = sp.b0;
    for (; b + L <= sp.b1; b += L) {
      hwy::Prefetch(p + b + kPrefetch);
      const auto v = hn::PromoteTo(di, hn::LoadU(d8, p + b));           // sign-extended bytes
      const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(v));           // even input: high nibble
      const auto lo = hn::ConvertTo(df, hn::ShiftRight<28>(hn::ShiftLeft<28>(v)));  // odd: low nibble
      for (int t = 0; t < NT; ++t) {
        ah[t] = hn::MulAdd(hi, hn::LoadU(df, x + t * xs + b), ah[t]);
        al[t] = hn::MulAdd(lo, hn::LoadU(df, x + t * xs + Kh + b), al[t]);
      }
    }
    const float s = f16_to_f32(sc[g]);
    const auto vs = hn::Set(df, s);
    for (int t = 0; t < NT; ++t) {
      float ts = 0;
      for (int64_t j = b; j < sp.b1; ++j)
        ts += float(p[j] >> 4) * x[t * xs + j] + float(int8_t(uint8_t(p[j]) << 4) >> 4) * x[t * xs + Kh + j];
      tot[t] = hn::MulAdd(hn::Add(ah[t], al[t]), vs, tot[t]);
      tail[t] += s * ts;
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hn::GetLane(hn::SumOfLanes(df, tot[t])) + tail[t];
}

template <int NT>
void GemvQT(const Matrix& W, int64_t r0, int64_t r1, const float* x, int64_t xs, float* y, int64_t ys) {
  float out[NT];
  for (int64_t r = r0; r < r1; ++r) {
    if (W.dtype == DType::Q8)
      RowQ8<NT>(W, r, x, xs, out);
    else
      RowQ4<NT>(W, r, x, xs, out);
    for (int t = 0; t < NT; ++t) y[t * ys + r] = out[t];
  }
}

void GemvQRows(const Matrix& W, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt, float* y, int64_t ys) {
  switch (nt) {
    case 1: GemvQT<1>(W, r0, r1, x, xs, y, ys); break;
    case 2: GemvQT<2>(W, r0, r1, x, xs, y, ys); break;
    case 3: GemvQT<3>(W, r0, r1, x, xs, y, ys); break;
    default: GemvQT<4>(W, r0, r1, x, xs, y, ys); break;
  }
}

// fp32 → bf16 bits, round to nearest even (weights are finite).
HWY_INLINE void StoreBF16(hn::Vec<DF> v, uint16_t* p) {
  const DI di;
  const hn::Rebind<uint16_t, DI> d16;
  auto u = hn::BitCast(di, v);
  u = hn::Add(u, hn::Add(hn::Set(di, 0x7FFF), hn::And(hn::ShiftRight<16>(u), hn::Set(di, 1))));
  const auto hi = hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(hn::RebindToUnsigned<DI>(), u)));  // ≤ 0xFFFF
  hn::StoreU(hn::DemoteTo(d16, hi), d16, p);
}

template <class Out>
HWY_INLINE void Put(hn::Vec<DF> v, Out* p) {
  if constexpr (sizeof(Out) == 4) hn::StoreU(v, DF(), p); else StoreBF16(v, p);
}
template <class Out>
HWY_INLINE void PutScalar(float v, Out* p) {
  if constexpr (sizeof(Out) == 4) *p = v; else *p = f32_to_bf16(v);
}

template <class Out>
void DequantRowsT(const Matrix& W, int64_t r0, int64_t r1, Out* out, int64_t ld) {
  const DF df;
  const DI di;
  const D8 d8;
  const int64_t L = int64_t(hn::Lanes(df)), units = W.row_bytes(), ng = W.groups();
  for (int64_t r = r0; r < r1; ++r) {
    const int8_t* p = static_cast<const int8_t*>(W.data) + r * units;
    Out* o = out + (r - r0) * ld;
    for (int64_t g = 0; g < ng; ++g) {
      const Span sp = group_span(W, g, units);
      const float s = f16_to_f32(W.scales[r * ng + g]);
      const auto vs = hn::Set(df, s);
      int64_t b = sp.b0;
      if (W.dtype == DType::Q8) {
        for (; b + L <= sp.b1; b += L) Put(hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, p + b))), vs), o + b);
        for (; b < sp.b1; ++b) PutScalar(float(p[b]) * s, o + b);
      } else {
        for (; b + L <= sp.b1; b += L) {
          const auto v = hn::PromoteTo(di, hn::LoadU(d8, p + b));
          Put(hn::Mul(hn::ConvertTo(df, hn::ShiftRight<4>(v)), vs), o + b);
          Put(hn::Mul(hn::ConvertTo(df, hn::ShiftRight<28>(hn::ShiftLeft<28>(v))), vs), o + units + b);
        }
        for (; b < sp.b1; ++b) {
          PutScalar(float(p[b] >> 4) * s, o + b);
          PutScalar(float(int8_t(uint8_t(p[b]) << 4) >> 4) * s, o + units + b);
        }
      }
    }
  }
}

void DequantRowsBF16(const Matrix& W, int64_t r0, int64_t r1, uint16_t* out, int64_t ld) {
  DequantRowsT(W, r0, r1, out, ld);
}

void DequantRows(const Matrix& W, int64_t r0, int64_t r1, float* out, int64_t ld) {
  DequantRowsT(W, r0, r1, out, ld);
}

}  // namespace HWY_NAMESPACE
}  // namespace glmlab::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace glmlab::simd {
HWY_EXPORT(GemvQRows);
HWY_EXPORT(DequantRows);
HWY_EXPORT(DequantRowsBF16);

namespace {
// Rows [r0, r1) of a packed (Vnni16, vnni_packed.h) matrix as a row-major matrix of r1 − r0 rows in the
// calling thread's buffers; r0 and r1 become 0 and r1 − r0. Row-major matrices pass through.
Matrix row_major(const Matrix& W, int64_t& r0, int64_t& r1) {
  if (W.layout == MatrixLayout::RowMajor) return W;
  thread_local std::vector<uint8_t> data;
  thread_local std::vector<uint16_t> scales;
  const int64_t n = r1 - r0;
  data.resize(size_t(n * W.row_bytes()));
  scales.resize(size_t(n * W.groups()));
  vnni::unpack_rows(W, r0, r1, data.data(), scales.data());
  Matrix m = W;
  m.layout = MatrixLayout::RowMajor;
  m.rows = n;
  m.data = data.data();
  m.scales = scales.data();
  r0 = 0;
  r1 = n;
  return m;
}
}  // namespace

void gemv_q_rows(const Matrix& W, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt, float* y, int64_t ys) {
  const int64_t first = r0;
  const Matrix m = row_major(W, r0, r1);
  HWY_DYNAMIC_DISPATCH(GemvQRows)(m, r0, r1, x, xs, nt, y + (first - r0), ys);
}
void dequant_rows(const Matrix& W, int64_t r0, int64_t r1, float* out, int64_t ld) {
  const Matrix m = row_major(W, r0, r1);
  HWY_DYNAMIC_DISPATCH(DequantRows)(m, r0, r1, out, ld);
}
void dequant_rows_bf16(const Matrix& W, int64_t r0, int64_t r1, uint16_t* out, int64_t ld) {
  const Matrix m = row_major(W, r0, r1);
  HWY_DYNAMIC_DISPATCH(DequantRowsBF16)(m, r0, r1, out, ld);
}
void split_q4(const float* x, int64_t K, float* out) {
  const int64_t Kh = (K + 1) / 2;
  for (int64_t j = 0; j < Kh; ++j) {
    out[j] = x[2 * j];
    out[Kh + j] = 2 * j + 1 < K ? x[2 * j + 1] : 0.0f;
  }
}
}  // namespace glmlab::simd
#endif

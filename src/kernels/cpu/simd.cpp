// Highway implementations of simd.h, compiled once per target ISA (foreach_target) and dispatched
// at run time.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/simd.cpp"
#include <cmath>

#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/cpu/simd.h"

HWY_BEFORE_NAMESPACE();
namespace glmlab::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

template <class D>
HWY_INLINE hn::Vec<D> load_as_f32(D df, const float* p) { return hn::LoadU(df, p); }
template <class D>
HWY_INLINE hn::Vec<D> load_as_f32(D df, const hwy::bfloat16_t* p) {
  const hn::Rebind<hwy::bfloat16_t, D> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, p));
}
template <class D>
HWY_INLINE hn::Vec<D> load_as_f32(D df, const hwy::float16_t* p) {
  const hn::Rebind<hwy::float16_t, D> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, p));
}
HWY_INLINE float scalar(float v) { return v; }
HWY_INLINE float scalar(hwy::bfloat16_t v) { return hwy::F32FromBF16(v); }
HWY_INLINE float scalar(hwy::float16_t v) {
  uint16_t bits;
  hwy::CopyBytes<2>(&v, &bits);
  return f16_to_f32(bits);
}

template <typename T>
void ToF32T(const T* src, float* dst, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(load_as_f32(df, src + i), df, dst + i);
  for (; i < n; ++i) dst[i] = scalar(src[i]);
}

void ToF32(const void* src, DType dtype, float* dst, size_t n) {
  switch (dtype) {
    case DType::F32: ToF32T(static_cast<const float*>(src), dst, n); break;
    case DType::F16: ToF32T(static_cast<const hwy::float16_t*>(src), dst, n); break;
    case DType::BF16: ToF32T(static_cast<const hwy::bfloat16_t*>(src), dst, n); break;
    default: break;
  }
}

// One weight row against NT token rows; two accumulators per token hide FMA latency.
template <int NT, typename T>
HWY_INLINE void RowDot(const T* w, int64_t K, const float* x, int64_t xs, float* out) {
  const DF df;
  const int64_t L = int64_t(hn::Lanes(df));
  hn::Vec<DF> a0[NT], a1[NT];
  for (int t = 0; t < NT; ++t) a0[t] = a1[t] = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * L <= K; i += 2 * L) {
    hwy::Prefetch(w + K + i);  // the next row, as RowsDot does
    const auto w0 = load_as_f32(df, w + i), w1 = load_as_f32(df, w + i + L);
    for (int t = 0; t < NT; ++t) {
      a0[t] = hn::MulAdd(w0, hn::LoadU(df, x + t * xs + i), a0[t]);
      a1[t] = hn::MulAdd(w1, hn::LoadU(df, x + t * xs + i + L), a1[t]);
    }
  }
  for (; i + L <= K; i += L) {
    const auto w0 = load_as_f32(df, w + i);
    for (int t = 0; t < NT; ++t) a0[t] = hn::MulAdd(w0, hn::LoadU(df, x + t * xs + i), a0[t]);
  }
  for (int t = 0; t < NT; ++t) {
    float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0[t], a1[t])));
    for (int64_t j = i; j < K; ++j) s += scalar(w[j]) * x[t * xs + j];
    out[t] = s;
  }
}

// NR weight rows (anywhere in W) against NT token rows at once: NR concurrent weight streams (more
// memory-level parallelism for the memory-bound decode) and each activation vector loaded once for NR rows.
template <int NR, int NT, typename T>
HWY_INLINE void RowsDot(const T* const* w, int64_t K, const float* x, int64_t xs, float* out /* [NR][NT] */) {
  const DF df;
  const int64_t L = int64_t(hn::Lanes(df));
  hn::Vec<DF> acc[NR][NT];
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) acc[r][t] = hn::Zero(df);
  int64_t i = 0;
  for (; i + L <= K; i += L) {
    hn::Vec<DF> wv[NR];
    // Each stream 2 KiB ahead: rows are short (8 KB for ChatGLM3) and the prefetch runs on into the
    // stream's next row, which the hardware prefetcher alone ramps up too late at every row start.
    for (int r = 0; r < NR; ++r) hwy::Prefetch(reinterpret_cast<const char*>(w[r] + i) + 2048);
    for (int r = 0; r < NR; ++r) wv[r] = load_as_f32(df, w[r] + i);
    for (int t = 0; t < NT; ++t) {
      const auto xv = hn::LoadU(df, x + t * xs + i);
      for (int r = 0; r < NR; ++r) acc[r][t] = hn::MulAdd(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int t = 0; t < NT; ++t) {
      float s = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
      for (int64_t j = i; j < K; ++j) s += scalar(w[r][j]) * x[t * xs + j];
      out[r * NT + t] = s;
    }
}

// Rows [r0, r1): cut into NR equal parts read side by side, one row of each at a time, so that each part
// is one long sequential stream through consecutive rows (neighbouring rows side by side would restart
// every stream at every row); rows left over go one by one.
template <int NT, typename T>
void GemvT(const T* W, int64_t K, int64_t r0, int64_t r1, const float* x, int64_t xs, float* y, int64_t ys) {
  constexpr int NR = NT <= 2 ? 4 : NT <= 4 ? 2 : 1;
  float out[NR * NT];
  int64_t r = r0;
  if constexpr (NR > 1) {
    const int64_t part = (r1 - r0) / NR;
    for (int64_t j = 0; j < part; ++j) {
      const T* w[NR];
      for (int i = 0; i < NR; ++i) w[i] = W + (r0 + i * part + j) * K;
      RowsDot<NR, NT>(w, K, x, xs, out);
      for (int i = 0; i < NR; ++i)
        for (int t = 0; t < NT; ++t) y[t * ys + r0 + i * part + j] = out[i * NT + t];
    }
    r = r0 + NR * part;
  }
  for (; r < r1; ++r) {
    RowDot<NT>(W + r * K, K, x, xs, out);
    for (int t = 0; t < NT; ++t) y[t * ys + r] = out[t];
  }
}

template <typename T>
void GemvDispatchNT(const T* W, int64_t K, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt, float* y,
                    int64_t ys) {
  switch (nt) {
    case 1: GemvT<1>(W, K, r0, r1, x, xs, y, ys); break;
    case 2: GemvT<2>(W, K, r0, r1, x, xs, y, ys); break;
    case 3: GemvT<3>(W, K, r0, r1, x, xs, y, ys); break;
    case 4: GemvT<4>(W, K, r0, r1, x, xs, y, ys); break;
    case 5: GemvT<5>(W, K, r0, r1, x, xs, y, ys); break;
    case 6: GemvT<6>(W, K, r0, r1, x, xs, y, ys); break;
    case 7: GemvT<7>(W, K, r0, r1, x, xs, y, ys); break;
    default: GemvT<8>(W, K, r0, r1, x, xs, y, ys); break;
  }
}

void GemvRows(const void* W, DType dtype, int64_t K, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt,
              float* y, int64_t ys) {
  switch (dtype) {
    case DType::F32: GemvDispatchNT(static_cast<const float*>(W), K, r0, r1, x, xs, nt, y, ys); break;
    case DType::F16: GemvDispatchNT(static_cast<const hwy::float16_t*>(W), K, r0, r1, x, xs, nt, y, ys); break;
    case DType::BF16: GemvDispatchNT(static_cast<const hwy::bfloat16_t*>(W), K, r0, r1, x, xs, nt, y, ys); break;
    default: break;
  }
}

float Dot(const float* a, const float* b, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
  size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    acc0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(df, a + i + L), hn::LoadU(df, b + i + L), acc1);
  }
  for (; i + L <= n; i += L) acc0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), acc0);
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(acc0, acc1)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void Axpy(float a, const float* x, float* y, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto va = hn::Set(df, a);
  size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

void Scale(float a, float* y, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto va = hn::Set(df, a);
  size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(hn::Mul(va, hn::LoadU(df, y + i)), df, y + i);
  for (; i < n; ++i) y[i] *= a;
}

float SumSquares(const float* x, size_t n) { return Dot(x, x, n); }

void Mul3(const float* x, float s, const float* w, float* y, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto vs = hn::Set(df, s);
  size_t i = 0;
  for (; i + L <= n; i += L)
    hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + i), vs), hn::LoadU(df, w + i)), df, y + i);
  for (; i < n; ++i) y[i] = x[i] * s * w[i];
}

int64_t ArgmaxFinite(const float* x, size_t n) {
  if (n == 0) return -1;
  const DF df;
  const hn::RebindToUnsigned<DF> du;
  const size_t L = hn::Lanes(df);
  const auto exp_mask = hn::Set(du, 0x7f800000u);
  // Pass 1: the largest value, and whether any exponent is all ones (Inf or NaN). Two accumulators.
  auto m0 = hn::Set(df, x[0]), m1 = m0;
  auto bad = hn::Zero(du);
  size_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const auto a = hn::LoadU(df, x + i), b = hn::LoadU(df, x + i + L);
    m0 = hn::Max(m0, a);
    m1 = hn::Max(m1, b);
    const auto ea = hn::And(hn::BitCast(du, a), exp_mask), eb = hn::And(hn::BitCast(du, b), exp_mask);
    bad = hn::Or(bad, hn::Or(hn::VecFromMask(du, hn::Eq(ea, exp_mask)), hn::VecFromMask(du, hn::Eq(eb, exp_mask))));
  }
  if (!hn::AllFalse(du, hn::Ne(bad, hn::Zero(du)))) return -1;
  float m = hn::GetLane(hn::MaxOfLanes(df, hn::Max(m0, m1)));
  for (size_t j = i; j < n; ++j) {
    if (!std::isfinite(x[j])) return -1;
    if (x[j] > m) m = x[j];
  }
  // Pass 2: the first index holding that value (a +0 and a -0 compare equal, as in the reference).
  const auto vm = hn::Set(df, m);
  for (i = 0; i + L <= n; i += L) {
    const intptr_t k = hn::FindFirstTrue(df, hn::Eq(hn::LoadU(df, x + i), vm));
    if (k >= 0) return int64_t(i) + k;
  }
  for (; i < n; ++i)
    if (x[i] == m) return int64_t(i);
  return -1;  // not reached: m is one of the values
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace glmlab::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace glmlab::simd {
HWY_EXPORT(ToF32);
HWY_EXPORT(GemvRows);
HWY_EXPORT(Dot);
HWY_EXPORT(Axpy);
HWY_EXPORT(Scale);
HWY_EXPORT(SumSquares);
HWY_EXPORT(Mul3);
HWY_EXPORT(ArgmaxFinite);
HWY_EXPORT(TargetName);

void to_f32(const void* src, DType dtype, float* dst, size_t n) { HWY_DYNAMIC_DISPATCH(ToF32)(src, dtype, dst, n); }
void gemv_rows(const void* W, DType dtype, int64_t K, int64_t r0, int64_t r1, const float* x, int64_t xs, int nt,
               float* y, int64_t ys) {
  HWY_DYNAMIC_DISPATCH(GemvRows)(W, dtype, K, r0, r1, x, xs, nt, y, ys);
}
float dot(const float* a, const float* b, size_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
void axpy(float a, const float* x, float* y, size_t n) { HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n); }
void scale(float a, float* y, size_t n) { HWY_DYNAMIC_DISPATCH(Scale)(a, y, n); }
float sum_squares(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(SumSquares)(x, n); }
void mul3(const float* x, float s, const float* w, float* y, size_t n) { HWY_DYNAMIC_DISPATCH(Mul3)(x, s, w, y, n); }
int64_t argmax_finite(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(ArgmaxFinite)(x, n); }
const char* target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
}  // namespace glmlab::simd
#endif

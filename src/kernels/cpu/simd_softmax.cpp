// Highway implementations of simd_softmax.h, compiled once per target ISA and dispatched at run time.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/simd_softmax.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kernels/cpu/simd_softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

HWY_BEFORE_NAMESPACE();
namespace glmlab::simd {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

float MaxOf(const float* x, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  auto m = hn::Set(df, -std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + L <= n; i += L) m = hn::Max(m, hn::LoadU(df, x + i));
  float r = hn::GetLane(hn::MaxOfLanes(df, m));
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

double ExpShiftSum(float* x, size_t n, float shift) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto vs = hn::Set(df, shift);
  auto acc = hn::Zero(df);
  size_t i = 0;
  for (; i + L <= n; i += L) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, x + i), vs));
    hn::StoreU(e, df, x + i);
    acc = hn::Add(acc, e);
  }
  if (i < n) {  // the tail through the same Exp, in the same lanes: a row's sum and values do not depend on
               // how many masked (−∞) keys follow it
    HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
    std::fill(buf, buf + L, -std::numeric_limits<float>::infinity());  // Exp(−∞) = 0, as for masked keys
    std::copy(x + i, x + n, buf);
    const auto e = hn::Exp(df, hn::Sub(hn::Load(df, buf), vs));
    hn::Store(e, df, buf);
    std::copy(buf, buf + (n - i), x + i);
    acc = hn::Add(acc, e);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// σ(g) and e = exp(−|g|) without overflow: Exp's argument stays ≤ 0 (hwy's Exp is valid up to +104 only;
// exp(−g) of a gate below −104 would be garbage). σ(g) = 1/(1 + e) for g ≥ 0, e/(1 + e) below; NaN stays NaN.
template <class V>
HWY_INLINE V Sigmoid(DF df, V g, V& e, V& den) {
  const auto one = hn::Set(df, 1.0f);
  e = hn::Exp(df, hn::Neg(hn::Abs(g)));
  den = hn::Add(one, e);
  return hn::Div(hn::IfThenElse(hn::Lt(g, hn::Zero(df)), e, one), den);
}

// One vector of SwiGLU: silu(g)·p, silu(g) = g/(1 + e) for g ≥ 0 (the reference's g/(1 + exp(−g))) and
// g·e/(1 + e) below.
template <class V>
HWY_INLINE V SwigluVec(DF df, V g, V p) {
  hn::Vec<DF> e, den;
  (void)Sigmoid(df, g, e, den);
  const auto num = hn::IfThenElse(hn::Lt(g, hn::Zero(df)), hn::Mul(g, e), g);
  return hn::Mul(hn::Div(num, den), p);
}

void SwigluRow(const float* g, const float* p, float* out, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  size_t i = 0;
  for (; i + L <= n; i += L) hn::StoreU(SwigluVec(df, hn::LoadU(df, g + i), hn::LoadU(df, p + i)), df, out + i);
  if (i < n) {  // the tail through the same vector code (zero-padded lanes are dropped)
    HWY_ALIGN float bg[HWY_MAX_BYTES / sizeof(float)] = {}, bp[HWY_MAX_BYTES / sizeof(float)] = {};
    std::copy(g + i, g + n, bg);
    std::copy(p + i, p + n, bp);
    hn::Store(SwigluVec(df, hn::Load(df, bg), hn::Load(df, bp)), df, bg);
    std::copy(bg, bg + (n - i), out + i);
  }
}

void SwigluBackwardRow(const float* d, const float* g, const float* p, float* dg, float* dp, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto one = hn::Set(df, 1.0f);
  auto step = [&](const float* sd, const float* sg, const float* sp, float* sdg, float* sdp) {
    const auto vg = hn::LoadU(df, sg), vp = hn::LoadU(df, sp), vd = hn::LoadU(df, sd);
    hn::Vec<DF> e, den;
    const auto sig = Sigmoid(df, vg, e, den);
    const auto dsilu = hn::Mul(sig, hn::MulAdd(vg, hn::Sub(one, sig), one));
    hn::StoreU(hn::MulAdd(hn::Mul(vd, vp), dsilu, hn::LoadU(df, sdg)), df, sdg);
    hn::StoreU(hn::MulAdd(hn::Mul(vd, vg), sig, hn::LoadU(df, sdp)), df, sdp);
  };
  size_t i = 0;
  for (; i + L <= n; i += L) step(d + i, g + i, p + i, dg + i, dp + i);
  if (i < n) {  // the tail through the same vector code, on zero-padded copies
    constexpr size_t kMax = HWY_MAX_BYTES / sizeof(float);
    HWY_ALIGN float b[5][kMax] = {};
    std::copy(d + i, d + n, b[0]);
    std::copy(g + i, g + n, b[1]);
    std::copy(p + i, p + n, b[2]);
    std::copy(dg + i, dg + n, b[3]);
    std::copy(dp + i, dp + n, b[4]);
    step(b[0], b[1], b[2], b[3], b[4]);
    std::copy(b[3], b[3] + (n - i), dg + i);
    std::copy(b[4], b[4] + (n - i), dp + i);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace glmlab::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace glmlab::simd {
HWY_EXPORT(MaxOf);
HWY_EXPORT(ExpShiftSum);
HWY_EXPORT(SwigluRow);
HWY_EXPORT(SwigluBackwardRow);

float max_of(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxOf)(x, n); }
double exp_shift_sum(float* x, size_t n, float shift) { return HWY_DYNAMIC_DISPATCH(ExpShiftSum)(x, n, shift); }
void swiglu_row(const float* g, const float* p, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(SwigluRow)(g, p, out, n);
}
void swiglu_backward_row(const float* d, const float* g, const float* p, float* dg, float* dp, size_t n) {
  HWY_DYNAMIC_DISPATCH(SwigluBackwardRow)(d, g, p, dg, dp, n);
}
}  // namespace glmlab::simd
#endif

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

void SwigluBackwardRow(const float* d, const float* g, const float* p, float* dg, float* dp, size_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto one = hn::Set(df, 1.0f);
  size_t i = 0;
  for (; i + L <= n; i += L) {
    const auto vg = hn::LoadU(df, g + i), vp = hn::LoadU(df, p + i), vd = hn::LoadU(df, d + i);
    const auto sig = hn::Div(one, hn::Add(one, hn::Exp(df, hn::Neg(vg))));
    const auto dsilu = hn::Mul(sig, hn::MulAdd(vg, hn::Sub(one, sig), one));
    hn::StoreU(hn::MulAdd(hn::Mul(vd, vp), dsilu, hn::LoadU(df, dg + i)), df, dg + i);
    hn::StoreU(hn::MulAdd(hn::Mul(vd, vg), sig, hn::LoadU(df, dp + i)), df, dp + i);
  }
  for (; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    dg[i] += d[i] * p[i] * sig * (1.0f + g[i] * (1.0f - sig));
    dp[i] += d[i] * g[i] * sig;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace glmlab::simd
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace glmlab::simd {
HWY_EXPORT(MaxOf);
HWY_EXPORT(ExpShiftSum);
HWY_EXPORT(SwigluBackwardRow);

float max_of(const float* x, size_t n) { return HWY_DYNAMIC_DISPATCH(MaxOf)(x, n); }
double exp_shift_sum(float* x, size_t n, float shift) { return HWY_DYNAMIC_DISPATCH(ExpShiftSum)(x, n, shift); }
void swiglu_backward_row(const float* d, const float* g, const float* p, float* dg, float* dp, size_t n) {
  HWY_DYNAMIC_DISPATCH(SwigluBackwardRow)(d, g, p, dg, dp, n);
}
}  // namespace glmlab::simd
#endif

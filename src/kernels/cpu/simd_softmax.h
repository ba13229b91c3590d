// SIMD building blocks of the fused softmax cross-entropy and SwiGLU, forward and backward (Highway, one code
// path per ISA chosen at run time; vectorized exp from hwy/contrib/math). Single-threaded; the callers
// in cpu_backward.cpp thread them over rows.
#pragma once
#include <cstddef>

namespace glmlab::simd {

float max_of(const float* x, size_t n);
// x[i] = exp(x[i] − shift) in place (one vectorized exp for every element, the tail too); returns Σ x[i],
// accumulated in fp32 lanes (element i always in lane i mod L: trailing −∞ entries change neither values
// nor sum).
double exp_shift_sum(float* x, size_t n, float shift);
// SwiGLU on one row: out[i] = silu(g[i])·p[i], silu(g) = g·σ(g) (σ without overflow for any gate).
void swiglu_row(const float* g, const float* p, float* out, size_t n);
// SwiGLU backward on one row: gate g, up p, dout d →
// dg += d·p·σ(g)(1 + g(1 − σ(g))), dp += d·g·σ(g).
void swiglu_backward_row(const float* d, const float* g, const float* p, float* dg, float* dp, size_t n);

}  // namespace glmlab::simd

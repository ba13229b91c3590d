// The kernels of glmlab probe (lab/probe.h): memory reads in the access patterns the decode kernels
// use, and register-resident loops of the instructions the matrix kernels use. Each is single-threaded;
// the probe runs one per thread. Compiled for AVX-512 by target attributes: call a peak only when its
// *_available() says yes (read() falls back to 32-byte loads without AVX-512).
#pragma once
#include <cstddef>
#include <cstdint>

namespace glmlab::probek {

bool avx512_available();  // AVX512-F
bool dpbf16_available();  // AVX512-BF16 (VDPBF16PS)
bool vnni_available();    // AVX512-VNNI (VPDPBUSD)

// Reads [p, p + bytes) once and returns a sum of it (so the reads cannot be dropped). The bytes are
// cut into rows of `row_bytes` (0 = one row per stream: `streams` long sequential streams); `streams`
// consecutive rows (1–16) are read side by side, 64 bytes of each in turn, and each is prefetched
// `prefetch` bytes ahead (0 = hardware prefetch only). p is 64-byte aligned, bytes a multiple of
// streams · 64 (and of row_bytes · streams when row_bytes > 0).
float read(const void* p, size_t bytes, int streams, size_t row_bytes, size_t prefetch);

// Register-resident peaks: `iters` iterations of 16 independent accumulator chains (enough to cover
// the latency of every unit these CPUs have). Each returns the operations done (a multiply-add counts
// 2) and writes a value derived from the accumulators to *sink.
double fma_f32(int64_t iters, float* sink);     // VFMADD231PS zmm: 32 flops each
double dot_bf16(int64_t iters, float* sink);    // VDPBF16PS zmm: 64 flops each
double dot_u8s8(int64_t iters, float* sink);    // VPDPBUSD zmm: 128 int ops each

}  // namespace glmlab::probek

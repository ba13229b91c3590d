// The kernels of glmlab probe (lab/probe.h): memory reads in the access patterns the decode kernels
// use, and register-resident loops of the instructions the matrix kernels use. Each is single-threaded;
// the probe runs one per thread. Compiled for AVX-512 and AVX2 by target attributes: call a peak only
// when its *_available() says yes (read() uses 32-byte loads without AVX-512; fma_f32 and dot_u8s8 take
// the AVX2 instructions of the AVX2 kernels where there is no AVX-512).
#pragma once
#include <cstddef>
#include <cstdint>

namespace glmlab::probek {

bool avx512_available();  // AVX512-F
bool dpbf16_available();  // AVX512-BF16 (VDPBF16PS)
bool vnni_available();    // AVX512-VNNI (VPDPBUSD)
bool avx2_available();    // AVX2 + FMA (the fp32 and int8 peaks of CPUs without AVX-512)

// Reads [p, p + bytes) once and returns a sum of it (so the reads cannot be dropped). The bytes are
// cut into rows of `row_bytes` (0 = one row per stream: `streams` long sequential streams); `streams`
// consecutive rows (1–16) are read side by side, 64 bytes of each in turn, and each is prefetched
// `prefetch` bytes ahead (0 = hardware prefetch only). p is 64-byte aligned, bytes a multiple of
// streams · 64 (and of row_bytes · streams when row_bytes > 0).
float read(const void* p, size_t bytes, int streams, size_t row_bytes, size_t prefetch);

// Register-resident peaks: `iters` iterations of 16 independent accumulator chains (enough to cover
// the latency of every unit these CPUs have). Each returns the operations done (a multiply-add counts
// 2) and writes a value derived from the accumulators to *sink.
double fma_f32(int64_t iters, float* sink);     // VFMADD231PS zmm: 32 flops each (ymm without AVX-512: 16)
double dot_bf16(int64_t iters, float* sink);    // VDPBF16PS zmm: 64 flops each
// VPDPBUSD zmm: 128 int ops each. Without AVX512-VNNI, the multiply of the AVX2 kernel (avx2_qgemv.h):
// VPMADDUBSW ymm, 32 byte products = 64 int ops each, in dot_u8s8_variants() numbers of chains (the
// probe keeps the fastest).
int dot_u8s8_variants();
double dot_u8s8(int variant, int64_t iters, float* sink);
// The name of the instruction dot_u8s8 and fma_f32 time on this CPU.
const char* int8_dot_unit();  // "AVX512-VNNI" | "AVX2" | ""
const char* fma_unit();       // "AVX-512" | "AVX2" | ""

}  // namespace glmlab::probek

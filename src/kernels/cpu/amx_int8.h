// int8 matrix products on Intel AMX tiles for int8/int4 weights packed at load (vnni_packed.h), for
// prefill and large batches: y[t·ys + r] = Σ_i x[t, i] · P[r, i], with the activations quantized exactly
// as the packed VNNI GEMV quantizes them (vnni::PackedActs: int8 per block of 128 inputs).
//
// The packed layout is already the layout AMX wants for its second operand: a 64-byte line of a 16-row
// block holds 4 consecutive bytes of each of the 16 rows, so 16 such lines are one B tile (64 inputs of
// Q8). TDPBSUD multiplies the activations (s8, the A tile: 16 tokens × 64 bytes) with the stored
// unsigned weight bytes (q + 128, or the Q4 nibbles q + 8 unpacked into bytes) into 16 × 16 int32 sums.
// Per block of 128 inputs the sums are exact integers; the kernel then folds them into fp32 exactly as
// the VNNI GEMV does — subtract the offset term, convert, multiply by the rows' group scales times the
// token's block scale, add — in the same order, so both give the same bits.
//
// A job is 32 tokens (2 A tiles) × 128 weight rows (4 pairs of B tiles) over all inputs; per block of 128
// inputs and pair of row blocks, 4 C tiles are zeroed, accumulated over the block's 2 steps, stored and
// folded (the fold of one unit is issued after the next unit's products, so the two overlap). The
// activations are first copied into whole 1 KB A tiles (rows K bytes apart would share L1 sets).
// Measured on 2 cores of an AMX Xeon (docs/BENCHMARKS.md session 16): ~14% of the probe's TDPBSUD peak
// at 512 tokens — without the fold the products alone reach ~30%: with 8 tile registers and a C store
// every 128 inputs, tile loads and stores serialize with the products. Still 2.5x the VNNI GEMV.
#pragma once
#include <cstdint>

#include "kernels/cpu/vnni_packed.h"
#include "util/matrix.h"

namespace glmlab::amx {

// True when the CPU has AMX-INT8 and P (a Vnni16 matrix) with activations `a` has the shape this kernel
// takes: cols % 64 == 0 and activation blocks of a multiple of 64 inputs.
bool int8_fits(const Matrix& P, const vnni::PackedActs& a);
// The product above for every row of P and every token of `a` (threads with OpenMP). Requires int8_fits.
void packed_gemm(const Matrix& P, const vnni::PackedActs& a, float* y, int64_t ys);

}  // namespace glmlab::amx

// Decode GEMV for Q8 / Q4 weights on AVX512-VNNI (as llama.cpp's Q8_0 dot products): the activation
// rows are quantized once per call to int8 in blocks of 32 inputs (scale max|x|/127, round half to
// even), and each 64-byte chunk of a weight row is multiplied with VPDPBUSD into exact int32 sums,
// scaled per 4-byte lane by (activation block scale × weight group scale). About 2× the fp32 kernels
// of simd_quant.cpp per core, which makes int4 decode memory-bound. The cost: activations carry
// int8 rounding (relative RMS ≈ 0.3% of a block's max), so it runs only where approximate
// activations are allowed (make_ops(..., bf16_activations = true), the default).
// Compiled for AVX-512 with VNNI by target attributes; call only when available().
#pragma once
#include <cstdint>
#include <vector>

#include "util/matrix.h"

namespace glmlab::vnni {

// True when the CPU has AVX512-F/BW/VL and AVX512-VNNI.
bool available();
// Shapes this kernel takes: any cols (a last partial block of 32 activations, a masked last chunk of
// weights) and a group size that either divides the inputs of a
// 64-byte chunk (Q4: 128, Q8: 64) or is a multiple of them (every ChatGLM3 matrix, groups 32/64/128/row).
bool fits(const Matrix& W);

// Activation rows (any number), quantized for a Q8 or Q4 weight matrix of `cols` inputs (layout in the .cpp).
struct QuantizedActs {
  DType wtype = DType::Q8;
  int nt = 0;
  int64_t units = 0;           // bytes per weight row (= per activation row in the kernel's order)
  int64_t lanes = 0;           // int32 lanes per row, padded to whole 64-byte chunks (16 lanes each)
  std::vector<uint8_t> q;      // [nt, 2 (Q4: even | odd) or 1 (Q8), lanes·4] int8 (Q4) or uint8 = int8 + 128 (Q8)
  bool q8_signed = false;      // Q8: q holds the int8 values themselves (the AVX2 GEMV's operand), not + 128
  std::vector<float> scale;    // [nt, lanes] activation scale of each lane's block
  std::vector<int32_t> corr;   // Q4: [nt, lanes] 8 · Σ of the lane's 8 int8 activations (unsigned-nibble offset)
  // Q4 on AVX2 (avx2q::prepare): [nt, groups] Σ of corr · scale over each weight group's lanes, for
  // weight groups of goff_group inputs (0: not computed).
  std::vector<float> goff;
  int64_t goff_group = 0;
};
// q8_signed: Q8 activations stored as int8 (avx2q::gemv), not as int8 + 128 (the VNNI kernels).
void quantize_acts(const float* x, int nt, int64_t cols, DType wtype, QuantizedActs& out, bool q8_signed = false);
// The same in plain scalar code, one input at a time: the oracle of quantize_acts' AVX2 blocks (their
// output is bit-identical) and its path on CPUs without AVX2.
void quantize_acts_reference(const float* x, int nt, int64_t cols, DType wtype, QuantizedActs& out,
                             bool q8_signed = false);

// y[t·ys + r] = Σ_i x[t, i] · W[r, i] for rows [r0, r1), tokens t < a.nt. Up to 8 tokens share one
// pass over a weight row; more tokens pass in groups of 8 over blocks of rows that stay in L1, so the
// weights are read from memory once per call whatever the batch.
void gemv(const Matrix& W, int64_t r0, int64_t r1, const QuantizedActs& a, float* y, int64_t ys);

}  // namespace glmlab::vnni

// Weight-only quantization to glmlab's Q8 / Q4 matrix layouts (docs/QUANTIZATION.md): group-wise
// symmetric, round half to even, fp16 scales; the scalar dequantization the reference back end reads;
// and the owned buffers a quantized matrix lives in.
//   Q8: q ∈ [−127, 127], scale = fp16(max|w| / 127) per group of `group_size` inputs of a row.
//   Q4: q ∈ [−7, 7],     scale = fp16(max|w| / 7) (THUDM's choice; loaded GPTQ weights may hold −8).
//   q = round_half_even(w / scale) computed in fp32 with the rounded scale; W[r, c] = q · scale.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/weights.h"
#include "util/large_pages.h"

namespace glmlab {

// A Q8/Q4 matrix and the storage it owns (both empty when `m` is a view into a mapped file).
struct QuantizedMatrix {
  Matrix m;
  WeightBytes data;    // [rows, row_bytes], on huge pages where large
  WeightBytes scales;  // fp16 bits [rows, groups]
};

// The group size a Q8/Q4 matrix of `cols` inputs gets for a requested size: 0 (per row) or one ≥ cols
// gives cols. Errors on negative sizes and on odd Q4 groups (two values share a byte).
int64_t effective_group_size(DType q, int64_t cols, int64_t group_size);
// Bytes of data + scales of a [rows, cols] Q8/Q4 matrix.
uint64_t quantized_bytes(DType q, int64_t rows, int64_t cols, int64_t group_size);
// Zeroed storage for a [rows, cols] Q8/Q4 matrix (no memory check: the caller plans memory).
QuantizedMatrix make_quantized(DType q, int64_t rows, int64_t cols, int64_t group_size);

// Quantizes fp32 rows src[n, cols] into rows [r0, r0 + n) of `qm` (thread-safe for disjoint rows).
// Non-finite weights and scales beyond fp16 are errors.
void quantize_rows(const float* src, int64_t n, int64_t r0, QuantizedMatrix& qm);
// Quantizes a whole F32/F16/BF16 matrix, a block of rows at a time, threaded.
QuantizedMatrix quantize(const Matrix& src, DType q, int64_t group_size);

// Row r of any matrix (F32/F16/BF16, or Q8/Q4 dequantized: exact q·scale products) into out[cols].
void read_row(const Matrix& w, int64_t r, float* out);

// "int4 (group 128, fp16 scales; embedding/output bf16)" or "bf16": what a loaded model holds.
std::string describe_weights(const ModelWeights& w);

}  // namespace glmlab

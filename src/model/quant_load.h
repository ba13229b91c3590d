// Reading the quantized linears of a checkpoint into Q8/Q4 matrices (docs/QUANTIZATION.md):
// - glmlab and THUDM: `<module>.weight` I8 ([out, in] int8, or [out, ceil(in/2)] int4 with the even
//   element in the high nibble) + `<module>.weight_scale` fp16 ([out] per row, or [out, groups]):
//   zero copy — the Matrix points into the mapped file.
// - GPTQ / auto-round: `<module>.qweight` int32 [in·bits/32, out] (packed along the input, lowest bits
//   first), `.qzeros` int32 [groups, out·bits/32], `.scales` fp16 [groups, out], `.g_idx` int32 [in]
//   (must be i / group): repacked into our row-major layout, q − zero (zero must be 2^(bits−1)).
#pragma once
#include <string>
#include <vector>

#include "model/quant_config.h"
#include "model/quantize.h"
#include "model/safetensors.h"

namespace glmlab {

enum class StoredLinear { Float, Int, Gptq };

// How the linear `module` (a name without ".weight") is stored in `set`.
StoredLinear stored_linear(const SafetensorsSet& set, const std::string& module);
// The tensor names a linear of that kind uses (for the unexpected-tensor check). A GPTQ export may
// store an all-zero `.bias` for a linear without one (has_bias false): included; a nonzero one is an error.
std::vector<std::string> stored_linear_names(const SafetensorsSet& set, const std::string& module, StoredLinear kind,
                                             bool has_bias);

// The stored quantized linear as a Q8/Q4 matrix [rows, cols]: a view into the mapping where the
// layout is ours (data/scales left empty), else repacked into owned buffers. Shapes, dtypes and the
// GPTQ conventions are checked; errors name the tensor. `dir` is for messages.
QuantizedMatrix read_quantized_linear(const SafetensorsSet& set, const std::string& module, int64_t rows,
                                      int64_t cols, const QuantConfig& qc, const std::string& dir);
// Bytes read_quantized_linear allocates for it (0 for a zero-copy view).
uint64_t quantized_linear_alloc_bytes(const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                                      const QuantConfig& qc);

}  // namespace glmlab

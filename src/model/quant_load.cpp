// Quantized linears from checkpoints: glmlab/THUDM zero copy, GPTQ repacking (see quant_load.h).
#include "model/quant_load.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace glmlab {

namespace {

std::string shape_of(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

const TensorInfo& need(const SafetensorsSet& set, const std::string& name, const std::string& dir, const char* why) {
  const TensorInfo* t = set.find(name);
  if (!t) fail("{}: tensor {} is missing ({})", dir, name, why);
  return *t;
}

void expect_shape(const TensorInfo& t, std::vector<int64_t> shape, const std::string& dir, const std::string& what) {
  if (t.shape != shape) fail("{}: tensor {} has shape {} but {} needs {}", dir, t.name, t.shape_str(), what, shape_of(shape));
}

float float_at(const TensorInfo& t, size_t i) {
  switch (t.dtype) {
    case DType::F32: { float f; std::memcpy(&f, t.data + 4 * i, 4); return f; }
    case DType::F16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); return f16_to_f32(h); }
    case DType::BF16: { uint16_t h; std::memcpy(&h, t.data + 2 * i, 2); return bf16_to_f32(h); }
    default: fail("tensor {}: expected F16, BF16 or F32 scales, got {}", t.name, dtype_safetensors_name(t.dtype));
  }
}

uint32_t u32_at(const TensorInfo& t, size_t i) {
  uint32_t v;
  std::memcpy(&v, t.data + 4 * i, 4);
  return v;
}

// A NaN or Inf scale (stored, or an fp32 scale beyond fp16's range) would turn a whole group of outputs
// into NaN: named here, as non-finite float weights are (weights.cpp).
void check_scales_finite(const Matrix& m, const std::string& name, const std::string& dir) {
  const size_t n = size_t(m.rows * m.groups());
  if (size_t i = first_non_finite(m.scales, DType::F16, n); i < n)
    fail("{}: tensor {} holds a scale that is not finite ({}) at index {} (row {}, group {}; stored as fp16): the "
         "checkpoint is corrupt", dir, name, f16_to_f32(m.scales[i]), i, int64_t(i) / m.groups(), int64_t(i) % m.groups());
}

// glmlab / THUDM: weight I8 + weight_scale.
QuantizedMatrix read_int(const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                         const QuantConfig& qc, const std::string& dir) {
  const TensorInfo& w = need(set, module + ".weight", dir, "");
  if (!set.find(module + ".weight_scale"))
    fail("{}: tensor {} is stored as {} (a quantized linear) but {}.weight_scale, its scales, is missing", dir, w.name,
         dtype_safetensors_name(w.dtype), module);
  const TensorInfo& s = set.get(module + ".weight_scale");
  // The stored width says the bits; the config must agree when it says.
  const int64_t half = (cols + 1) / 2;
  int bits = w.shape.size() == 2 && w.shape[1] == cols ? 8 : w.shape.size() == 2 && w.shape[1] == half ? 4 : 0;
  if (bits == 0 || w.shape[0] != rows)
    fail("{}: tensor {} has shape {} but a quantized [{}, {}] linear needs [{}, {}] (int8) or [{}, {}] (int4)", dir,
         w.name, w.shape_str(), rows, cols, rows, cols, rows, half);
  if (qc.quantized() && qc.bits != bits)
    fail("{}: tensor {} holds int{} values ({}) but config.json says {} bits", dir, w.name, bits, w.shape_str(), qc.bits);
  QuantizedMatrix qm;
  qm.m = Matrix{bits == 8 ? DType::Q8 : DType::Q4, rows, cols, w.data};
  int64_t ng = s.shape.size() == 1 ? 1 : s.shape.size() == 2 ? s.shape[1] : -1;
  if (s.shape.empty() || s.shape[0] != rows || ng < 1)
    fail("{}: tensor {} has shape {} but the scales of a [{}, {}] linear are [{}] or [{}, groups]", dir, s.name,
         s.shape_str(), rows, cols, rows, rows);
  int64_t g = ng == 1 ? cols : qc.group_size;
  if (g <= 0 || (cols + g - 1) / g != ng)
    fail("{}: tensor {} has {} groups per row, which does not fit {} inputs with group size {} (config.json)", dir,
         s.name, ng, cols, qc.group_size);
  qm.m.group_size = effective_group_size(qm.m.dtype, cols, g);
  if (s.dtype == DType::F16 && reinterpret_cast<uintptr_t>(s.data) % 2 == 0) {
    qm.m.scales = reinterpret_cast<const uint16_t*>(s.data);  // zero copy
  } else {
    qm.scales.resize(size_t(rows * ng) * 2);
    auto* dst = reinterpret_cast<uint16_t*>(qm.scales.data());
    for (size_t i = 0; i < size_t(rows * ng); ++i) dst[i] = f32_to_f16(float_at(s, i));
    qm.m.scales = dst;
  }
  check_scales_finite(qm.m, s.name, dir);
  return qm;
}

// GPTQ / auto-round: qweight [cols·bits/32, rows] int32, qzeros [ng, rows·bits/32], scales [ng, rows], g_idx [cols].
QuantizedMatrix read_gptq(const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                          const QuantConfig& qc, const std::string& dir) {
  if (qc.method != QuantConfig::Method::Gptq)
    fail("{}: {}.qweight is a GPTQ tensor but config.json has no GPTQ quantization_config (nor a quantize_config.json)",
         dir, module);
  const int bits = qc.bits, per = 32 / bits;
  const int64_t G = qc.group_size ? std::min<int64_t>(qc.group_size, cols) : cols, ng = (cols + G - 1) / G;
  const TensorInfo& qw = need(set, module + ".qweight", dir, "");
  const TensorInfo& qz = need(set, module + ".qzeros", dir, "GPTQ zero points");
  const TensorInfo& sc = need(set, module + ".scales", dir, "GPTQ scales");
  if (cols % per != 0 || rows % per != 0)
    fail("{}: {} [{}, {}] cannot be GPTQ-packed: {} values per int32 along both dims", dir, module, rows, cols, per);
  for (auto* t : {&qw, &qz})
    if (t->dtype != DType::I32) fail("{}: tensor {} must be I32, got {}", dir, t->name, dtype_safetensors_name(t->dtype));
  std::string what = fmt::format("int{} GPTQ [{}, {}] with group {}", bits, rows, cols, G);
  expect_shape(qw, {cols / per, rows}, dir, what);
  expect_shape(qz, {ng, rows / per}, dir, what);
  expect_shape(sc, {ng, rows}, dir, what);
  if (const TensorInfo* gi = set.find(module + ".g_idx")) {
    if (gi->dtype != DType::I32) fail("{}: tensor {} must be I32", dir, gi->name);
    expect_shape(*gi, {cols}, dir, what);
    for (int64_t k = 0; k < cols; ++k)
      if (int64_t(int32_t(u32_at(*gi, size_t(k)))) != k / G)
        fail("{}: tensor {}[{}] = {} but glmlab needs the trivial order g_idx[i] = i / {} (desc_act / act-order "
             "checkpoints are not supported)", dir, gi->name, k, int32_t(u32_at(*gi, size_t(k))), G);
  }
  // Symmetric: every zero point is 2^(bits−1), stored as such minus one in the v1 convention.
  const uint32_t zero = 1u << (bits - 1), stored = zero - (qc.gptq_zero_minus_one ? 1 : 0), mask = (1u << bits) - 1;
  for (size_t i = 0; i < size_t(qz.numel()); ++i) {
    uint32_t w = u32_at(qz, i);
    for (int j = 0; j < per; ++j)
      if (((w >> (bits * j)) & mask) != stored) {
        uint32_t z = (w >> (bits * j)) & mask;
        fail("{}: {}: zero point {} (stored {}) of group {} output {} is not {}: glmlab reads symmetric GPTQ only{}", dir,
             qz.name, z + (stored != zero ? 1 : 0), z, int64_t(i) / (rows / per), int64_t(i) % (rows / per) * per + j, zero,
             (qc.gptq_zero_minus_one ? z == zero : z + 1 == zero)
                 ? " (the stored zeros look like the other zero-point convention: check checkpoint_format / "
                   "packing_format in quantization_config)"
                 : "");
      }
  }
  QuantizedMatrix qm = make_quantized(bits == 4 ? DType::Q4 : DType::Q8, rows, cols, G);
  const int64_t rb = qm.m.row_bytes();
  const uint32_t flip = bits == 4 ? 0x88888888u : 0x80808080u;  // q − zero in two's complement
  // One packed input row pk holds inputs [per·pk, per·pk + per) of every output: 4 bytes of our row o.
#pragma omp parallel for schedule(static)
  for (int64_t o0 = 0; o0 < rows; o0 += 64)
    for (int64_t pk = 0; pk < cols / per; ++pk)
      for (int64_t o = o0; o < std::min(rows, o0 + 64); ++o) {
        uint32_t w = u32_at(qw, size_t(pk * rows + o)) ^ flip;
        if (bits == 4) w = ((w & 0x0F0F0F0Fu) << 4) | ((w >> 4) & 0x0F0F0F0Fu);  // even input → high nibble
        std::memcpy(qm.data.data() + o * rb + pk * 4, &w, 4);                    // little-endian bytes
      }
  auto* s = reinterpret_cast<uint16_t*>(qm.scales.data());
  for (int64_t g = 0; g < ng; ++g)
    for (int64_t o = 0; o < rows; ++o) s[o * ng + g] = f32_to_f16(float_at(sc, size_t(g * rows + o)));
  check_scales_finite(qm.m, sc.name, dir);
  return qm;
}

}  // namespace

StoredLinear stored_linear(const SafetensorsSet& set, const std::string& module) {
  if (set.find(module + ".qweight")) return StoredLinear::Gptq;
  const TensorInfo* w = set.find(module + ".weight");
  if (w && (w->dtype == DType::I8 || w->dtype == DType::U8)) return StoredLinear::Int;
  return StoredLinear::Float;
}

std::vector<std::string> stored_linear_names(const SafetensorsSet& set, const std::string& module, StoredLinear kind,
                                             bool has_bias) {
  std::vector<std::string> n;
  if (kind == StoredLinear::Float) return {module + ".weight"};
  if (kind == StoredLinear::Int) return {module + ".weight", module + ".weight_scale"};
  for (const char* s : {".qweight", ".qzeros", ".scales", ".g_idx"})
    if (set.find(module + s)) n.push_back(module + s);
  if (const TensorInfo* b = set.find(module + ".bias"); b && !has_bias) {
    for (size_t i = 0; i < size_t(b->numel()); ++i)
      if (float_at(*b, i) != 0.0f)
        fail("tensor {} has a nonzero value ({}) but this ChatGLM3 linear has no bias", b->name, float_at(*b, i));
    n.push_back(module + ".bias");  // AutoGPTQ may store an all-zero bias for bias-free linears
  }
  return n;
}

QuantizedMatrix read_quantized_linear(const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                                      const QuantConfig& qc, const std::string& dir) {
  switch (stored_linear(set, module)) {
    case StoredLinear::Int: return read_int(set, module, rows, cols, qc, dir);
    case StoredLinear::Gptq: return read_gptq(set, module, rows, cols, qc, dir);
    default: fail("{}: {}.weight is not stored quantized", dir, module);
  }
}

uint64_t quantized_linear_alloc_bytes(const SafetensorsSet& set, const std::string& module, int64_t rows, int64_t cols,
                                      const QuantConfig& qc) {
  auto kind = stored_linear(set, module);
  if (kind == StoredLinear::Gptq)
    return quantized_bytes(qc.bits == 8 ? DType::Q8 : DType::Q4, rows, cols, qc.group_size);
  if (kind == StoredLinear::Int) {
    const TensorInfo* s = set.find(module + ".weight_scale");
    return s ? uint64_t(s->numel()) * 2 : 0;  // scales converted to fp16 at most
  }
  return 0;
}

}  // namespace glmlab

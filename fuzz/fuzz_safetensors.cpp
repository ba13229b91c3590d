// Fuzz target: one safetensors file (8-byte header length, JSON header, data block) -> SafetensorsFile,
// then every value of every tensor is read the way consumers read it (typed loads, which UBSan checks
// for alignment), and the same file through SafetensorsSet.
#include <cstring>

#include "fuzz_util.h"
#include "model/safetensors.h"

using namespace glmlab;

namespace {

uint64_t read_all(const TensorInfo& t) {
  uint64_t acc = 0;
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::F32: {
      const float* p = reinterpret_cast<const float*>(t.data);
      for (int64_t i = 0; i < n; ++i) acc += uint64_t(p[i] != p[i]);
      break;
    }
    case DType::F16:
    case DType::BF16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(t.data);
      for (int64_t i = 0; i < n; ++i)
        acc += uint64_t(t.dtype == DType::F16 ? f16_to_f32(p[i]) > 0 : bf16_to_f32(p[i]) > 0);
      break;
    }
    case DType::I32: {
      const int32_t* p = reinterpret_cast<const int32_t*>(t.data);
      for (int64_t i = 0; i < n; ++i) acc += uint64_t(p[i]);
      break;
    }
    case DType::I64: {
      const int64_t* p = reinterpret_cast<const int64_t*>(t.data);
      for (int64_t i = 0; i < n; ++i) acc += uint64_t(p[i]);
      break;
    }
    default:  // byte-sized (I8, U8) and packed types: every byte of the data
      for (size_t i = 0; i < t.nbytes; ++i) acc += t.data[i];
  }
  return acc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_path("model.safetensors");
  fuzz::write_bytes(path, data, size);
  const bool refused = fuzz::refused([&] {
    SafetensorsFile f(path);
    for (const auto& [name, t] : f.tensors()) {
      if (t.nbytes != uint64_t(t.numel()) * dtype_size(t.dtype) && dtype_size(t.dtype) != 0) __builtin_trap();
      fuzz::consume(read_all(t) + name.size());
    }
    for (const auto& [k, v] : f.metadata()) fuzz::consume(k.size() + v.size());
  });
  // The set opened on the same file agrees with the file: refused exactly when the file is.
  const bool set_refused = fuzz::refused([&] {
    SafetensorsSet s = SafetensorsSet::open(path);
    for (const std::string& name : s.names()) fuzz::consume(s.get(name).nbytes);
    fuzz::consume(s.total_bytes());
  });
  if (refused != set_refused) __builtin_trap();
  return 0;
}

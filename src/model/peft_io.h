// PEFT's adapter files: adapter_config.json + adapter_model.safetensors, as peft's save_pretrained
// writes them and PeftModel.from_pretrained reads them (LoRA and VeRA; tensor names in adapters.h).
// Loading checks everything against the model: unknown target modules, rank 0, a tensor missing,
// unexpected or of other shapes (an adapter made for another model), features glmlab does not
// implement (DoRA, bias, rank/alpha patterns, VeRA without saved projections) are errors.
#pragma once
#include <string>

#include "model/adapters.h"
#include "model/config.h"

namespace glmlab {

// Reads the adapter in `dir` (or fails naming the file and what is wrong).
Adapter load_adapter(const std::string& dir, const ModelConfig& model);

// The AdapterConfig of dir/adapter_config.json alone.
AdapterConfig read_adapter_config(const std::string& dir);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (each atomically: temporary file,
// then rename), creating dir. Tensors in fp32, metadata {"format": "pt"} as PEFT writes.
void save_adapter(const std::string& dir, const Adapter& adapter);

}  // namespace glmlab

// Fuzz target: config.json -> ModelConfig::from_file, then what the loader computes from an accepted
// config (parameter counts, the projection widths, KV cache bytes), and the round trip through
// to_json(), which must be accepted again with the same sizes.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/config.h"
#include "model/model.h"

using namespace glmlab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_path("config.json");
  fuzz::write_bytes(path, data, size);
  ModelConfig c;
  if (fuzz::refused([&] { c = ModelConfig::from_file(path); })) return 0;
  fuzz::consume(uint64_t(c.total_params()) + uint64_t(c.layer_params()) + uint64_t(c.q_dim()) +
                uint64_t(c.kv_dim()) + uint64_t(c.qkv_dim()));
  fuzz::consume(KVCache::bytes_needed(c, 1, c.seq_length));
  // Accepted once, accepted again after to_json (quantization settings are not part of to_json).
  ModelConfig again = ModelConfig::from_json(c.to_json(), "round trip");
  if (again.num_layers != c.num_layers || again.hidden_size != c.hidden_size ||
      again.ffn_hidden_size != c.ffn_hidden_size || again.num_heads != c.num_heads ||
      again.kv_channels != c.kv_channels || again.num_groups != c.num_groups || again.vocab_size != c.vocab_size ||
      again.seq_length != c.seq_length || again.eos_token_id != c.eos_token_id ||
      again.pad_token_id != c.pad_token_id || again.total_params() != c.total_params())
    __builtin_trap();
  return 0;
}

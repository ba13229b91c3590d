// Text generation over an Engine (model/engine.h: the host Model::forward, or the device-resident
// engine): batched prefill, then one cached decode step per new token. Greedy decoding asks the engine
// for the next ids only (argmax where the logits are); sampling brings the last logits to the host.
// Greedy or sampling (temperature, top-k, top-p, seed), stop ids, maximum new tokens, and a forced
// minimum length for benchmarks (no stop before N tokens).
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "model/engine.h"
#include "model/model.h"

namespace glmlab {

struct SamplingParams {
  bool greedy = true;
  float temperature = 0.8f;
  float top_p = 0.8f;
  int top_k = 0;          // 0 = off
  uint64_t seed = 0;
};

struct GenerateOptions {
  int max_new_tokens = 128;
  int min_new_tokens = 0;                              // forced length: stop ids are ignored before it
  std::vector<int32_t> stop_ids = {2, 64795, 64797};   // eos, <|user|>, <|observation|>
  SamplingParams sampling;
  // Called for every generated token of sequence b (before a stop is checked).
  std::function<void(int b, int32_t id)> on_token;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // generated ids per sequence (the stop id is not included)
  std::vector<bool> stopped;                 // ended on a stop id (not on the length limit)
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prefill_tokens = 0;                // real prompt tokens
  int64_t decode_steps = 0;                  // forward calls after prefill
  int64_t generated_tokens = 0;              // tokens in `tokens`, all sequences
};

// Picks the next token from one row of logits [V]. NaN/Inf logits follow the reference's
// InvalidScoreLogitsProcessor (all zero, id 5 = 5e4).
int32_t sample_token(std::vector<float> logits, const SamplingParams& p, std::mt19937_64& rng);

GenerateResult generate(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& opt);
// The same on a HostEngine(model, ops).
GenerateResult generate(const Model& model, Ops& ops, const std::vector<std::vector<int32_t>>& prompts,
                        const GenerateOptions& opt);

}  // namespace glmlab

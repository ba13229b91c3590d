// Shared set-up of glmlab train and glmlab bench train (see train_setup.h).
#include "cli/train_setup.h"

#include <limits>

#include "cli/checks.h"
#include "util/error.h"
#include "util/parse.h"

namespace glmlab::cli {

void add_adapter_options(CLI::App* cmd, AdapterArgs& a) {
  cmd->add_option("--targets", a.targets, "comma-separated: query_key_value,dense,dense_h_to_4h,dense_4h_to_h");
  cmd->add_option_function<int>("--rank,-r", [&a](int r) { a.rank = r, a.rank_given = true; },
                                "adapter rank (default: LoRA 8, VeRA 256)");
  cmd->add_option("--alpha", a.alpha, "LoRA alpha")
      ->check(FiniteIn(-std::numeric_limits<float>::max(), std::numeric_limits<float>::max()))
      ->capture_default_str();
  cmd->add_option("--dropout", a.dropout, "dropout on the adapter input, in [0, 1)")
      ->check(FiniteIn(0, 1))
      ->capture_default_str();
  cmd->add_flag("--rslora", a.rslora, "LoRA scaling alpha/sqrt(r) instead of alpha/r");
}

AdapterConfig make_adapter_config(const std::string& method, const AdapterArgs& a, uint64_t seed) {
  AdapterConfig ac = method == "vera" ? AdapterConfig::vera_defaults() : AdapterConfig::lora_defaults();
  ac.method = method_from_name(method);
  if (a.rank_given) ac.rank = a.rank;
  ac.alpha = a.alpha;
  if (!(a.dropout >= 0 && a.dropout < 1)) fail("--dropout must be in [0, 1), got {}", a.dropout);
  ac.dropout = a.dropout;
  ac.rslora = a.rslora;
  if (!a.targets.empty()) ac.targets = split_commas(a.targets);
  ac.seed = seed;
  return ac;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

std::vector<lab::TrainSample> train_samples(const Tokenizer& tok, const std::vector<lab::Record>& records,
                                            lab::SampleLimits limits, const ModelConfig& c,
                                            dist::Communicator* comm) {
  // Both limits positive and small enough that max input + max output + 1 never wraps (a limit above
  // the model's seq_length is allowed: seq_length then bounds the samples).
  check_int_range(limits.max_input, "--max-input", 1, kMaxSampleLimit);
  check_int_range(limits.max_output, "--max-output", 1, kMaxSampleLimit);
  limits.seq_length = c.seq_length;
  auto samples = lab::make_samples(tok, records, limits, comm);
  for (auto& s : samples)
    for (int32_t id : s.ids)
      if (id >= c.vocab_size) fail("{}: token id {} is outside the model's vocabulary of {}", s.where, id, c.vocab_size);
  return samples;
}

}  // namespace glmlab::cli

// What `glmlab train` and `glmlab bench train` share, so the benchmark measures exactly the run that
// `glmlab train` makes: the adapter options (--targets, --rank, --alpha, --dropout, --rslora) and how
// they become an AdapterConfig, and the training samples of a model (recipe ids and loss mask, length
// limits, every id inside the model's vocabulary).
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "lab/data/advertisegen.h"
#include "lab/train/train_data.h"
#include "model/adapters.h"
#include "model/config.h"
#include "model/tokenizer.h"

namespace glmlab::cli {

struct AdapterArgs {
  std::string targets;  // comma-separated; empty = PEFT's default (query_key_value)
  int rank = 0;         // the method's default (LoRA 8, VeRA 256) unless --rank is given
  bool rank_given = false;
  float alpha = 32, dropout = 0;
  bool rslora = false;
};

// --targets, --rank/-r, --alpha, --dropout, --rslora (the method is each command's own option).
void add_adapter_options(CLI::App* cmd, AdapterArgs& a);

// The method's defaults (AdapterConfig::lora_defaults / vera_defaults) with the options applied.
// Error for an unknown method.
AdapterConfig make_adapter_config(const std::string& method, const AdapterArgs& a, uint64_t seed);

// "a,b,,c" -> {"a", "b", "c"}
std::vector<std::string> split_commas(const std::string& s);

// lab::make_samples with the model's seq_length, then every id checked against its vocabulary (an
// error names the sample's FILE:LINE).
// --max-input / --max-output: at most 2^30 each (their sum + 1 must fit an int); at least 1.
constexpr int kMaxSampleLimit = 1 << 30;
std::vector<lab::TrainSample> train_samples(const Tokenizer& tok, const std::vector<lab::Record>& records,
                                            lab::SampleLimits limits, const ModelConfig& c,
                                            dist::Communicator* comm = nullptr);

}  // namespace glmlab::cli

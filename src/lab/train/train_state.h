// The resumable state of a training run, in one file written atomically:
// OUT/train_state.safetensors with the adapter parameters ("param.<PEFT name>"), AdamW's moments
// ("adam_m.<name>", "adam_v.<name>", trainable parameters only) and, in the metadata, "step" (optimizer
// steps done), "losses" (JSON list of every step's loss so far) and "run" (the options that must not
// change on --resume, as JSON). The PEFT adapter files beside it are for users; resume reads this file.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/adapters.h"
#include "model/optimizer.h"

namespace glmlab::lab {

struct TrainState {
  int64_t step = 0;
  std::vector<double> losses;
  std::string run;  // JSON of the options a resume must match
};

void save_train_state(const std::string& dir, const Adapter& adapter, const AdamW& opt, const TrainState& st,
                      const std::map<std::string, std::string>& extra_metadata = {});
// Fills adapter values and optimizer moments (names and shapes must match: Error otherwise).
// expect_run: the run's fingerprint; a state saved with other options is refused before anything is read.
TrainState load_train_state(const std::string& dir, Adapter& adapter, AdamW& opt,
                            const std::string* expect_run = nullptr);
bool has_train_state(const std::string& dir);

}  // namespace glmlab::lab

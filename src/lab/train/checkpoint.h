// A training run's output folder as one durable unit: OUT/adapter_model.safetensors and
// OUT/adapter_config.json (PEFT's files, for users) and OUT/train_state.safetensors (what --resume reads).
//
// A save writes the three files complete into OUT/.checkpoint-<pid>/ (each fsynced), then renames them
// into OUT — the adapter files first, the state last — fsyncs OUT and removes the temporary folder. The
// state records a hash of the two adapter files it was saved with. So after a kill at any moment:
//   - the state is always complete and always matches a complete adapter it names;
//   - the adapter files in OUT are those of the state, or (killed between the renames) of the save in
//     progress, one checkpoint newer; --resume then finds the mismatch and rewrites them from the state,
//     and `train` without --resume overwrites them;
//   - leftovers (.checkpoint-*, *.tmp.*) are removed when the next run takes the folder.
// A lock (flock on OUT/.glmlab-train.lock, released by the kernel when the process dies) keeps a second
// `train` off a folder in use: it is refused with the holder's pid.
#pragma once
#include <string>
#include <vector>

#include "lab/train/train_state.h"
#include "model/adapters.h"
#include "model/optimizer.h"

namespace glmlab::lab {

class OutLock {
 public:
  explicit OutLock(const std::string& dir);  // creates dir; Error when another process holds it
  ~OutLock();
  OutLock(const OutLock&) = delete;
  OutLock& operator=(const OutLock&) = delete;

 private:
  int fd_ = -1;
};

// Removes what a killed save left in dir (call while holding the lock); returns the names removed.
std::vector<std::string> clean_stale_temporaries(const std::string& dir);

void save_checkpoint(const std::string& dir, const Adapter& adapter, const AdamW& opt, const TrainState& st);

// True when dir's adapter files are those the state in dir was saved with (a state from before this
// check existed counts as matching).
bool adapter_matches_state(const std::string& dir);

}  // namespace glmlab::lab

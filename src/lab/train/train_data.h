// Fine-tuning data: AdvertiseGen records → training samples (the recipe's ids and loss mask,
// ../shared/docs/chatglm3.md §4, through lab::sample_ids) → micro-batches, padded or packed.
//
// Sample: ids = input + output of sample_ids(); labels = −100 on the input ids, the ids themselves on
// the output ids (the model shifts them by one inside the loss). Length limit = max_input + max_output
// + 1 (the recipe's 256 + 512 + 1 = 769) and the model's seq_length: a longer sample is an error naming
// its file and line, unless `truncate` (then it is cut to the limit, as the recipe does).
//
// Order: global sample k (k = 0, 1, ...) is perm_e[k mod n] with e = k div n and perm_e a Fisher–Yates
// shuffle of 0..n−1 by std::mt19937_64(seed + e) (draws reduced with 128-bit multiply, so the same on
// every platform). Micro-batch i holds global samples i·B .. i·B + B − 1, so a batch is a pure function
// of its number: a resumed run reads exactly what an uninterrupted one would.
// Padded: B rows, LEFT-padded to the longest (id 0, position 0, label −100), as the recipe's collator.
// Packed: the same B samples placed first-fit in rows of length max(longest, pack_length), positions
// restarting per sample, one segment id per sample (attention never crosses samples), trailing pads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/comm.h"
#include "lab/data/advertisegen.h"
#include "model/backward.h"
#include "model/tokenizer.h"

namespace glmlab::lab {

struct TrainSample {
  std::vector<int32_t> ids, labels;
  std::string where;  // FILE:LINE
};

struct SampleLimits {
  int max_input = 256, max_output = 512;  // the recipe's
  int seq_length = 0;                     // the model's (0 = no limit)
  bool truncate = false;
  int limit() const { return max_input + max_output + 1; }
};

// With a communicator of several ranks each rank tokenizes its share of the records and all get every
// sample (all-gather); an error on one rank is thrown on every rank (dist::CollectiveError).
std::vector<TrainSample> make_samples(const Tokenizer& tok, const std::vector<Record>& records,
                                      const SampleLimits& limits, dist::Communicator* comm = nullptr);

class BatchStream {
 public:
  // rank / world: data parallelism. Global micro-batch i is the B·world samples i·B·world ..; this
  // rank's micro-batch i is its share, samples (i·world + rank)·B .. + B − 1. So the union of the
  // ranks' micro-batches i is micro-batch i of one process with batch B·world, in the same order.
  BatchStream(const std::vector<TrainSample>& samples, int batch_size, bool pack, int pack_length, uint64_t seed,
              int rank = 0, int world = 1);
  TrainBatch batch(int64_t i) const;                 // this rank's micro-batch number i
  int64_t padded_tokens(int64_t i) const;            // its B·T (pads included), from the samples' lengths alone
  int64_t sample_index(int64_t k) const;             // index in `samples` of global sample k
  int batch_size() const { return B_; }

 private:
  struct Layout {  // which samples go into which row of a micro-batch, and the rows' length
    std::vector<std::vector<const TrainSample*>> rows;
    int T = 0;
  };
  Layout layout(int64_t i) const;

  const std::vector<TrainSample>& s_;
  int B_;
  bool pack_;
  int pack_length_;
  uint64_t seed_;
  int rank_ = 0, world_ = 1;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> perm_;
};

}  // namespace glmlab::lab

// Data-parallel gradient reduction for the adapter: the trainable parameters' gradients are summed over
// the ranks in buckets while the backward pass is still running on earlier layers.
//
// Buckets hold whole parameters in the order the backward finishes them (top layer first) and close
// at `bucket_bytes` (the last one may be smaller). When the backward reports a layer done
// (loss_and_backward's layer_done), every bucket whose parameters are all complete is copied into its
// flat buffer and a non-blocking all-reduce starts; pending ones are advanced (test) at each report, so
// MPI progresses them between layers. finish() starts what is left, waits for everything and copies the
// sums back. The loss is normalised by the global count of labelled tokens before the backward, so the
// sum of the ranks' gradients is the gradient of the global batch: no averaging afterwards.
//
// Times: exposed_s is the time the training thread spent inside communication (starting, testing,
// waiting, copying) — what the step pays; the all-reduce time of the same bytes done blocking is
// measured separately (blocking_all_reduce_s) to say how much was hidden.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dist/comm.h"
#include "model/adapters.h"

namespace glmlab::lab {

class GradSync {
 public:
  GradSync(dist::Communicator& comm, Adapter& adapter, size_t bucket_bytes = size_t(1) << 20);
  bool active() const { return comm_.size() > 1; }
  void begin();                // before the step's last micro-batch's backward
  void layer_done(int layer);  // gradients of `layer` (and every layer above it) are complete
  void finish();               // after the backward: everything reduced, sums in the gradients

  size_t buckets() const { return buckets_.size(); }
  size_t bytes() const { return bytes_; }           // gradient bytes reduced per step
  double exposed_s() const { return exposed_s_; }   // of the last step

  // One blocking all-reduce of all the gradient bytes (on a scratch copy), timed: the cost the
  // buckets hide. Collective: every rank must call it.
  double blocking_all_reduce_s();

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into adapter.params()
    int lowest_layer = 0;        // it is complete once this layer is done
    std::vector<float> buf;
    int handle = -1;
    bool started = false;
  };
  void start(Bucket& b);

  dist::Communicator& comm_;
  Adapter& adapter_;
  std::vector<Bucket> buckets_;
  size_t bytes_ = 0;
  double exposed_s_ = 0;
};

}  // namespace glmlab::lab

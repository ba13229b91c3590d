// Bucketed, overlapped gradient all-reduce (see grad_sync.h).
#include "lab/train/grad_sync.h"

#include <algorithm>
#include <chrono>

namespace glmlab::lab {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

GradSync::GradSync(dist::Communicator& comm, Adapter& adapter, size_t bucket_bytes) : comm_(comm), adapter_(adapter) {
  auto& ps = adapter.params();
  // The backward completes layers from the top down; parameters without a layer (none are trainable
  // today) go last.
  std::vector<size_t> order;
  for (size_t i = 0; i < ps.size(); ++i)
    if (ps[i].trainable) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ps[a].layer > ps[b].layer; });
  Bucket cur;
  size_t cur_bytes = 0;
  for (size_t i : order) {
    if (cur.params.empty()) cur.lowest_layer = ps[i].layer;
    cur.params.push_back(i);
    cur.lowest_layer = std::min(cur.lowest_layer, ps[i].layer);
    cur_bytes += ps[i].grad.size() * sizeof(float);
    bytes_ += ps[i].grad.size() * sizeof(float);
    if (cur_bytes >= bucket_bytes) {
      buckets_.push_back(std::move(cur));
      cur = Bucket{};
      cur_bytes = 0;
    }
  }
  if (!cur.params.empty()) buckets_.push_back(std::move(cur));
  for (auto& b : buckets_) {
    size_t n = 0;
    for (size_t i : b.params) n += ps[i].grad.size();
    b.buf.resize(n);
  }
}

void GradSync::begin() {
  exposed_s_ = 0;
  for (auto& b : buckets_) b.started = false, b.handle = -1;
}

void GradSync::start(Bucket& b) {
  auto& ps = adapter_.params();
  size_t at = 0;
  for (size_t i : b.params) {
    std::copy(ps[i].grad.begin(), ps[i].grad.end(), b.buf.begin() + long(at));
    at += ps[i].grad.size();
  }
  b.handle = comm_.start_all_reduce_sum(b.buf.data(), b.buf.size());
  b.started = true;
}

void GradSync::layer_done(int layer) {
  if (!active()) return;
  const double t0 = now_s();
  for (auto& b : buckets_)
    if (!b.started && b.lowest_layer >= layer) start(b);
  for (auto& b : buckets_)
    if (b.started) comm_.test(b.handle);
  exposed_s_ += now_s() - t0;
}

void GradSync::finish() {
  if (!active()) return;
  const double t0 = now_s();
  auto& ps = adapter_.params();
  for (auto& b : buckets_)
    if (!b.started) start(b);
  for (auto& b : buckets_) {
    comm_.wait(b.handle);
    size_t at = 0;
    for (size_t i : b.params) {
      std::copy(b.buf.begin() + long(at), b.buf.begin() + long(at + ps[i].grad.size()), ps[i].grad.begin());
      at += ps[i].grad.size();
    }
  }
  exposed_s_ += now_s() - t0;
}

double GradSync::blocking_all_reduce_s() {
  std::vector<float> scratch(bytes_ / sizeof(float), 1.0f);
  comm_.barrier();
  const double t0 = now_s();
  comm_.all_reduce_sum(scratch.data(), scratch.size());
  double t = now_s() - t0;
  comm_.all_reduce_max(&t, 1);  // the slowest rank's view
  return t;
}

}  // namespace glmlab::lab

// Training samples and micro-batches (see train_data.h for the definitions).
#include "lab/train_data.h"

#include <algorithm>
#include <random>

#include "util/error.h"

namespace glmlab::lab {

std::vector<TrainSample> make_samples(const Tokenizer& tok, const std::vector<Record>& records,
                                      const SampleLimits& lim) {
  std::vector<TrainSample> out;
  out.reserve(records.size());
  int limit = lim.limit();
  if (lim.seq_length > 0) limit = std::min(limit, lim.seq_length);
  for (const Record& r : records) {
    SampleIds s = sample_ids(tok, r.content, r.summary);
    TrainSample t;
    t.where = r.file + ":" + std::to_string(r.line);
    t.ids = s.input;
    t.ids.insert(t.ids.end(), s.output.begin(), s.output.end());
    t.labels.assign(s.input.size(), -100);
    t.labels.insert(t.labels.end(), s.output.begin(), s.output.end());
    if (int(t.ids.size()) > limit) {
      if (!lim.truncate)
        fail("{}: the sample has {} tokens ({} input + {} output), more than the limit of {} ({}); use --truncate "
             "to cut it as the recipe does",
             t.where, t.ids.size(), s.input.size(), s.output.size(), limit,
             limit == lim.limit() ? fmt::format("max input {} + max output {} + 1", lim.max_input, lim.max_output)
                                  : fmt::format("the model's seq_length {}", lim.seq_length));
      t.ids.resize(size_t(limit));
      t.labels.resize(size_t(limit));
    }
    out.push_back(std::move(t));
  }
  if (out.empty()) fail("no training samples");
  return out;
}

BatchStream::BatchStream(const std::vector<TrainSample>& samples, int batch_size, bool pack, int pack_length,
                         uint64_t seed)
    : s_(samples), B_(batch_size), pack_(pack), pack_length_(pack_length), seed_(seed) {
  if (batch_size < 1) fail("batch size must be at least 1, got {}", batch_size);
  if (samples.empty()) fail("no training samples");
}

int64_t BatchStream::sample_index(int64_t k) const {
  const int64_t n = int64_t(s_.size()), e = k / n;
  if (e != cached_epoch_) {
    perm_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) perm_[size_t(i)] = i;
    std::mt19937_64 rng(seed_ + uint64_t(e));
    for (int64_t i = n - 1; i > 0; --i) {  // Fisher–Yates; j uniform in [0, i] by 128-bit multiply
      const uint64_t j = uint64_t((unsigned __int128)(rng()) * uint64_t(i + 1) >> 64);
      std::swap(perm_[size_t(i)], perm_[size_t(j)]);
    }
    cached_epoch_ = e;
  }
  return perm_[size_t(k % n)];
}

TrainBatch BatchStream::batch(int64_t i) const {
  std::vector<const TrainSample*> members;
  int longest = 0;
  for (int j = 0; j < B_; ++j) {
    members.push_back(&s_[size_t(sample_index(i * B_ + j))]);
    longest = std::max(longest, int(members.back()->ids.size()));
  }
  TrainBatch b;
  if (!pack_) {
    b.in.B = B_;
    b.in.T = longest;
    const size_t N = size_t(B_) * size_t(longest);
    b.in.ids.assign(N, 0);
    b.in.pos.assign(N, 0);
    b.in.valid.assign(N, 0);
    b.labels.assign(N, -100);
    for (int r = 0; r < B_; ++r) {
      const TrainSample& s = *members[size_t(r)];
      const int n = int(s.ids.size()), pad = longest - n;
      for (int t = 0; t < n; ++t) {
        const size_t k = size_t(r) * longest + pad + t;
        b.in.ids[k] = s.ids[size_t(t)];
        b.labels[k] = s.labels[size_t(t)];
        b.in.pos[k] = t;
        b.in.valid[k] = 1;
      }
    }
    return b;
  }
  // Packed: first fit, in order, into rows of length T.
  const int T = std::max(longest, pack_length_);
  std::vector<std::vector<const TrainSample*>> rows;
  std::vector<int> used;
  for (auto* s : members) {
    size_t r = 0;
    while (r < rows.size() && used[r] + int(s->ids.size()) > T) ++r;
    if (r == rows.size()) {
      rows.emplace_back();
      used.push_back(0);
    }
    rows[r].push_back(s);
    used[r] += int(s->ids.size());
  }
  b.in.B = int(rows.size());
  b.in.T = T;
  const size_t N = rows.size() * size_t(T);
  b.in.ids.assign(N, 0);
  b.in.pos.assign(N, 0);
  b.in.valid.assign(N, 0);
  b.in.segment.assign(N, 0);
  b.labels.assign(N, -100);
  for (size_t r = 0; r < rows.size(); ++r) {
    int t0 = 0, seg = 0;
    for (auto* s : rows[r]) {
      for (size_t t = 0; t < s->ids.size(); ++t) {
        const size_t k = r * T + size_t(t0) + t;
        b.in.ids[k] = s->ids[t];
        b.labels[k] = s->labels[t];
        b.in.pos[k] = int32_t(t);
        b.in.valid[k] = 1;
        b.in.segment[k] = seg;
      }
      t0 += int(s->ids.size());
      ++seg;
    }
    for (int t = t0; t < T; ++t) b.in.segment[r * T + size_t(t)] = seg;  // trailing pads: their own segment
  }
  return b;
}

}  // namespace glmlab::lab

// Training samples and micro-batches (see train_data.h for the definitions).
#include "lab/train/train_data.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>

#include "util/error.h"

namespace glmlab::lab {

namespace {

TrainSample make_sample(const Tokenizer& tok, const Record& r, const SampleLimits& lim, int limit) {
  SampleIds s = sample_ids(tok, r.content, r.summary);
  TrainSample t;
  t.where = r.file + ":" + std::to_string(r.line);
  t.ids = s.input;
  t.ids.insert(t.ids.end(), s.output.begin(), s.output.end());
  t.labels.assign(s.input.size(), -100);
  t.labels.insert(t.labels.end(), s.output.begin(), s.output.end());
  if (int64_t(t.ids.size()) > limit) {
    if (!lim.truncate)
      fail("{}: the sample has {} tokens ({} input + {} output), more than the limit of {} ({}); use --truncate "
           "to cut it as the recipe does",
           t.where, t.ids.size(), s.input.size(), s.output.size(), limit,
           limit == lim.limit() ? fmt::format("max input {} + max output {} + 1", lim.max_input, lim.max_output)
                                : fmt::format("the model's seq_length {}", lim.seq_length));
    t.ids.resize(size_t(limit));
    t.labels.resize(size_t(limit));
  }
  return t;
}

// Samples as bytes for the all-gather: per sample u64 length, ids, labels, u64 where-length, where.
void put_u64(std::string& b, uint64_t v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); }
std::string serialize(const std::vector<TrainSample>& v) {
  std::string b;
  for (const auto& t : v) {
    put_u64(b, t.ids.size());
    b.append(reinterpret_cast<const char*>(t.ids.data()), t.ids.size() * 4);
    b.append(reinterpret_cast<const char*>(t.labels.data()), t.labels.size() * 4);
    put_u64(b, t.where.size());
    b += t.where;
  }
  return b;
}
void deserialize(const std::string& b, std::vector<TrainSample>& out) {
  size_t at = 0;
  auto get_u64 = [&] {
    uint64_t v;
    if (at + sizeof v > b.size()) fail("training samples from another rank: truncated message");
    std::memcpy(&v, b.data() + at, sizeof v);
    at += sizeof v;
    return v;
  };
  while (at < b.size()) {
    TrainSample t;
    const uint64_t n = get_u64();
    if (n > (b.size() - at) / 8) fail("training samples from another rank: bad length {}", n);
    t.ids.resize(size_t(n));
    t.labels.resize(size_t(n));
    std::memcpy(t.ids.data(), b.data() + at, n * 4);
    std::memcpy(t.labels.data(), b.data() + at + n * 4, n * 4);
    at += n * 8;
    const uint64_t w = get_u64();
    if (w > b.size() - at) fail("training samples from another rank: bad length {}", w);
    t.where.assign(b.data() + at, size_t(w));
    at += w;
    out.push_back(std::move(t));
  }
}

}  // namespace

std::vector<TrainSample> make_samples(const Tokenizer& tok, const std::vector<Record>& records,
                                      const SampleLimits& lim, dist::Communicator* comm) {
  if (lim.max_input < 0 || lim.max_output < 0 || int64_t(lim.max_input) + lim.max_output + 1 > (int64_t(1) << 30))
    fail("--max-input {} / --max-output {}: each must be in [0, 2^30) and their sum below 2^30", lim.max_input,
         lim.max_output);
  int limit = lim.limit();
  if (lim.seq_length > 0) limit = std::min(limit, lim.seq_length);
  std::vector<TrainSample> out;
  if (!comm || comm->size() == 1) {
    out.reserve(records.size());
    for (const Record& r : records) out.push_back(make_sample(tok, r, lim, limit));
    if (out.empty()) fail("no training samples");
    return out;
  }
  // Each rank tokenizes its contiguous share; a bad record is found by the rank that owns it and
  // becomes the same error on every rank (dist::agree). Then every rank gets every sample, in order.
  const dist::Share sh = dist::share_of(int64_t(records.size()), comm->rank(), comm->size());
  std::vector<TrainSample> mine;
  dist::agree(*comm, [&] {
    for (int64_t i = sh.begin; i < sh.end; ++i) mine.push_back(make_sample(tok, records[size_t(i)], lim, limit));
  });
  auto parts = comm->all_gather(serialize(mine));
  out.reserve(records.size());
  for (const auto& p : parts) deserialize(p, out);
  if (out.size() != records.size())
    fail("training samples: {} gathered from the ranks, {} records", out.size(), records.size());
  if (out.empty()) fail("no training samples");
  return out;
}

BatchStream::BatchStream(const std::vector<TrainSample>& samples, int batch_size, bool pack, int pack_length,
                         uint64_t seed, int rank, int world)
    : s_(samples), B_(batch_size), pack_(pack), pack_length_(pack_length), seed_(seed), rank_(rank), world_(world) {
  if (batch_size < 1) fail("batch size must be at least 1, got {}", batch_size);
  if (world < 1 || rank < 0 || rank >= world) fail("batch stream: rank {} of a world of {}", rank, world);
  if (samples.empty()) fail("no training samples");
}

int64_t BatchStream::sample_index(int64_t k) const {
  if (k < 0) fail("batch stream: sample number {} is negative", k);
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

BatchStream::Layout BatchStream::layout(int64_t i) const {
  if (i < 0 || i > (std::numeric_limits<int64_t>::max() / B_ - rank_) / world_ - 1)
    fail("batch stream: micro-batch number {} is out of range", i);
  std::vector<const TrainSample*> members;
  int longest = 0;
  for (int j = 0; j < B_; ++j) {
    members.push_back(&s_[size_t(sample_index((i * world_ + rank_) * B_ + j))]);
    longest = std::max(longest, int(members.back()->ids.size()));
  }
  Layout l;
  if (!pack_) {  // a row a sample, left-padded to the longest
    l.T = longest;
    for (auto* s : members) l.rows.push_back({s});
    return l;
  }
  // Packed: first fit, in order, into rows of length T.
  l.T = std::max(longest, pack_length_);
  std::vector<int> used;
  for (auto* s : members) {
    size_t r = 0;
    while (r < l.rows.size() && used[r] + int(s->ids.size()) > l.T) ++r;
    if (r == l.rows.size()) {
      l.rows.emplace_back();
      used.push_back(0);
    }
    l.rows[r].push_back(s);
    used[r] += int(s->ids.size());
  }
  return l;
}

int64_t BatchStream::padded_tokens(int64_t i) const {
  const Layout l = layout(i);
  return int64_t(l.rows.size()) * l.T;
}

TrainBatch BatchStream::batch(int64_t i) const {
  const Layout l = layout(i);
  const int T = l.T;
  TrainBatch b;
  b.in.B = int(l.rows.size());
  b.in.T = T;
  const size_t N = l.rows.size() * size_t(T);
  b.in.ids.assign(N, 0);
  b.in.pos.assign(N, 0);
  b.in.valid.assign(N, 0);
  b.labels.assign(N, -100);
  if (!pack_) {
    for (size_t r = 0; r < l.rows.size(); ++r) {
      const TrainSample& s = *l.rows[r][0];
      const int n = int(s.ids.size()), pad = T - n;
      for (int t = 0; t < n; ++t) {
        const size_t k = r * T + size_t(pad + t);
        b.in.ids[k] = s.ids[size_t(t)];
        b.labels[k] = s.labels[size_t(t)];
        b.in.pos[k] = t;
        b.in.valid[k] = 1;
      }
    }
    return b;
  }
  b.in.segment.assign(N, 0);
  for (size_t r = 0; r < l.rows.size(); ++r) {
    int t0 = 0, seg = 0;
    for (auto* s : l.rows[r]) {
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

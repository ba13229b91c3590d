// Continuous batching (serve/scheduler.h, issue 15): Model::forward_ragged against Model::forward, and
// the scheduler's replies against generate() at batch 1 — identical greedy tokens with fp32 activations
// whatever else shares the step (chunked prefills, joins, leaves, reused rows); with bf16 activations a
// difference only where batch 1's top two logits are a near-tie. Cancellation, the queue limit, stop
// callbacks, forced lengths, invalid requests, shutdown and the threaded mode.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include "model/generate.h"
#include "model/loader.h"
#include "serve/scheduler.h"
#include "test_util.h"
#include "util/dtype.h"

namespace glmlab {
namespace {

using serve::FinishReason;
using serve::Request;
using serve::Scheduler;
using serve::SchedulerOptions;
using serve::SequenceEvents;
using test::error_of;

const Model& small_model() {
  static Model m = load_model("random:small", "bf16", 11);
  return m;
}

std::vector<std::vector<int32_t>> prompts_of(const std::vector<int>& lengths, int V, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_int_distribution<int> id(10, std::min(V - 1, 60000));
  std::vector<std::vector<int32_t>> out;
  for (int n : lengths) {
    std::vector<int32_t> p = {64790, 64792};
    for (int i = 2; i < n; ++i) p.push_back(id(rng));
    out.push_back(p);
  }
  return out;
}

struct Reply {
  std::vector<int32_t> ids;
  FinishReason reason = FinishReason::Error;
  std::string error;
  int finishes = 0;
};

// Submits every prompt (greedy, max_tokens[i]) and steps the scheduler synchronously to the end.
std::vector<Reply> run_all(Scheduler& s, const std::vector<std::vector<int32_t>>& prompts,
                           const std::vector<int>& max_tokens, std::vector<int32_t> stop_ids = {}) {
  std::vector<Reply> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request r;
    r.prompt = prompts[i];
    r.max_tokens = max_tokens[i % max_tokens.size()];
    r.stop_ids = stop_ids;
    SequenceEvents ev;
    ev.on_token = [&out, i](int32_t id) { out[i].ids.push_back(id); return true; };
    ev.on_finish = [&out, i](FinishReason why, const std::string& e) { out[i].reason = why, out[i].error = e, ++out[i].finishes; };
    EXPECT_TRUE(s.submit(std::move(r), std::move(ev)).has_value());
  }
  s.run_until_idle();
  return out;
}

std::vector<int32_t> batch1(const Model& m, Ops& ops, const std::vector<int32_t>& prompt, int max_tokens,
                            std::vector<int32_t> stop_ids = {}) {
  GenerateOptions g;
  g.max_new_tokens = max_tokens;
  g.stop_ids = stop_ids;
  return generate(m, ops, {prompt}, g).tokens[0];
}

TEST(ServeRagged, ChunkedRunsMatchOneForwardCall) {
  // A prompt fed as chunks of 3 in steps shared with another sequence gives the same last logits as one
  // forward call of the whole prompt (fp32 reference ops).
  Model m = load_model("random:tiny", "fp32", 3);
  auto ops = make_ops(Backend::CpuRef);
  auto ps = prompts_of({11, 6}, m.config().vocab_size, 5);
  KVCache ref(m.config(), 1, 32);
  std::vector<float> want;
  m.forward(*ops, make_prefill({ps[0]}), ref, Logits::Last, want);

  KVCache cache(m.config(), 3, 32);
  std::vector<float> logits;
  int done0 = 0, done1 = 0;
  while (done0 < 11) {
    RaggedStep st;
    const int n0 = std::min(3, 11 - done0);
    st.runs.push_back({2, done0, n0, done0 + n0 == 11});
    st.ids.insert(st.ids.end(), ps[0].begin() + done0, ps[0].begin() + done0 + n0);
    if (done1 < 6) {
      const int n1 = std::min(4, 6 - done1);
      st.runs.push_back({0, done1, n1, true});
      st.ids.insert(st.ids.end(), ps[1].begin() + done1, ps[1].begin() + done1 + n1);
      done1 += n1;
    }
    m.forward_ragged(*ops, st, cache, logits);
    done0 += n0;
  }
  // The last step held run 0 (the end of prompt 0) with logits only.
  const int V = m.config().vocab_size;
  ASSERT_EQ(logits.size(), size_t(V));
  double md = 0;
  for (int i = 0; i < V; ++i) md = std::max(md, double(std::fabs(logits[size_t(i)] - want[size_t(i)])));
  EXPECT_LT(md, 1e-4);
}

TEST(ServeRagged, RefusesRunsThatDoNotFit) {
  Model m = load_model("random:tiny", "fp32", 3);
  auto ops = make_ops(Backend::CpuRef);
  KVCache cache(m.config(), 2, 8);
  std::vector<float> logits;
  RaggedStep st;
  st.ids = {5, 6, 7};
  st.runs = {{2, 0, 3, true}};
  EXPECT_NE(error_of([&] { m.forward_ragged(*ops, st, cache, logits); }).find("row 2"), std::string::npos);
  st.runs = {{0, 6, 3, true}};
  EXPECT_NE(error_of([&] { m.forward_ragged(*ops, st, cache, logits); }).find("does not fit"), std::string::npos);
  st.runs = {{0, 0, 2, true}};
  EXPECT_NE(error_of([&] { m.forward_ragged(*ops, st, cache, logits); }).find("3 ids"), std::string::npos);
  st.runs = {{0, 0, 3, true}};
  st.ids = {5, 6, 1 << 30};
  EXPECT_NE(error_of([&] { m.forward_ragged(*ops, st, cache, logits); }).find("vocabulary"), std::string::npos);
}

TEST(ServeScheduler, GreedyRepliesEqualBatchOneWithFp32Activations) {
  // 10 prompts of 3..40 tokens through 3 rows, prefill chunks of 16: sequences join and leave at every
  // step, long prompts are split, rows are reused. Every reply equals generate() at batch 1, token for
  // token (no stop ids, so every reply has its full length).
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, /*bf16_activations=*/false);
  auto ps = prompts_of({12, 3, 40, 7, 25, 9, 33, 4, 18, 21}, m.config().vocab_size, 17);
  std::vector<int> max_tokens = {9, 4, 13, 6, 2, 11};
  Scheduler s(m, *ops, SchedulerOptions{3, 64, 16, 128, KvDtype::F32});
  auto got = run_all(s, ps, max_tokens);
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(got[i].finishes, 1);
    EXPECT_EQ(got[i].reason, FinishReason::Length) << i;
    EXPECT_EQ(got[i].ids, batch1(m, *ops, ps[i], max_tokens[i % max_tokens.size()])) << "prompt " << i;
  }
  auto st = s.stats();
  EXPECT_EQ(st.finished, 10);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.queued, 0);
  int64_t prompt_tokens = 0, gen = 0;
  for (size_t i = 0; i < ps.size(); ++i) prompt_tokens += int64_t(ps[i].size()), gen += int64_t(got[i].ids.size());
  EXPECT_EQ(st.prompt_tokens, prompt_tokens);
  EXPECT_EQ(st.generated_tokens, gen);
  // Fewer forward calls than one prompt at a time would take: the batching happened.
  EXPECT_LT(st.steps, gen + int64_t(ps.size()));
}

TEST(ServeScheduler, StopIdsEndRepliesAsAtBatchOne) {
  // With the replies' own frequent ids as stop ids, sequences leave early, at different steps.
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, false);
  auto ps = prompts_of({5, 14, 8, 22, 6, 11}, m.config().vocab_size, 23);
  std::vector<int32_t> stops;
  for (auto& p : ps) {
    auto r = batch1(m, *ops, p, 6);
    stops.push_back(r[2]);  // the third token of each reply stops it (there or earlier)
  }
  Scheduler s(m, *ops, SchedulerOptions{4, 64, 8, 64, KvDtype::F32});
  auto got = run_all(s, ps, {12}, stops);
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(got[i].ids, batch1(m, *ops, ps[i], 12, stops)) << i;
    EXPECT_EQ(got[i].reason, FinishReason::Stop) << i;
    EXPECT_LE(got[i].ids.size(), 2u);
  }
}

TEST(ServeScheduler, Bf16ActivationsDifferOnlyAtNearTies) {
  // With bf16 activations the matmul of a row may round differently with other rows beside it. A reply
  // may then leave batch 1's path only where batch 1's top two logits are within 2% of the logit range.
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, true);
  auto ps = prompts_of({12, 3, 40, 7, 25, 9, 33, 4}, m.config().vocab_size, 29);
  Scheduler s(m, *ops, SchedulerOptions{4, 64, 16, 128});
  auto got = run_all(s, ps, {10});
  int same = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    auto want = batch1(m, *ops, ps[i], 10);
    if (got[i].ids == want) {
      ++same;
      continue;
    }
    size_t k = 0;
    while (k < want.size() && k < got[i].ids.size() && want[k] == got[i].ids[k]) ++k;
    ASSERT_LT(k, want.size());
    // Batch 1's logits at the diverging step.
    std::vector<int32_t> ctx = ps[i];
    ctx.insert(ctx.end(), want.begin(), want.begin() + long(k));
    KVCache cache(m.config(), 1, int(ctx.size()));
    std::vector<float> lg;
    m.forward(*ops, make_prefill({ctx}), cache, Logits::Last, lg);
    const float hi = *std::max_element(lg.begin(), lg.end()), lo = *std::min_element(lg.begin(), lg.end());
    const float gap = lg[size_t(want[k])] - lg[size_t(got[i].ids[k])];
    EXPECT_LE(gap, 0.02f * (hi - lo)) << "prompt " << i << " step " << k << ": not a near-tie";
  }
  EXPECT_GE(same, 6) << "most replies must still be identical";
}

TEST(ServeAttention, SequencesOfDifferentLengthsMatchTheReference) {
  // Ops::attention_seqs: decodes and prefill chunks (one over a block of 16 tokens) of different cached
  // lengths in rows of one cache, fp32 and bf16: the fast back end's single job list equals the
  // reference's one attention() per sequence, and each sequence equals attention() on its row alone.
  Model m = load_model("random:tiny", "fp32", 5);
  const ModelConfig& c = m.config();
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels, S = 48;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::vector<AttnSeq> seqs = {{3, 10, 1, 0}, {0, 0, 21, 1}, {2, 30, 1, 22}, {1, 5, 7, 23}};
  const int64_t N = 30;
  std::vector<float> q(size_t(N * H * D));
  for (auto& x : q) x = nd(rng);
  for (KvDtype dt : {KvDtype::F32, KvDtype::BF16}) {
    KVCache cache(c, 4, S, dt);
    std::vector<float> k(size_t(G * D)), v(k.size());
    for (int b = 0; b < 4; ++b)
      for (int j = 0; j < S; ++j) {
        for (size_t i = 0; i < k.size(); ++i) k[i] = nd(rng), v[i] = nd(rng);
        cache.store(0, b, j, k.data(), v.data());
        cache.valid(b)[j] = j % 11 != 4;  // a few padding slots
      }
    auto ref = make_ops(Backend::CpuRef), cpu = make_ops(Backend::Cpu, false);
    std::vector<float> o_ref(size_t(N * H * D)), o_cpu(o_ref.size()), l_ref(size_t(N * H)), l_cpu(l_ref.size());
    ref->attention_seqs(q.data(), H * D, cache.view(0), seqs.data(), int(seqs.size()), H, G, D, o_ref.data(), l_ref.data());
    cpu->attention_seqs(q.data(), H * D, cache.view(0), seqs.data(), int(seqs.size()), H, G, D, o_cpu.data(), l_cpu.data());
    for (size_t i = 0; i < o_ref.size(); ++i) ASSERT_NEAR(o_cpu[i], o_ref[i], 2e-5) << kv_dtype_name(dt) << " " << i;
    for (size_t i = 0; i < l_ref.size(); ++i) ASSERT_NEAR(l_cpu[i], l_ref[i], 2e-5) << kv_dtype_name(dt);
    for (const AttnSeq& sq : seqs) {  // each sequence alone, on its row as a cache of batch 1
      std::vector<float> o1(size_t(sq.T * H * D));
      cpu->attention(q.data() + sq.first * H * D, H * D, cache.row_view(0, sq.row), 1, sq.T, sq.P, H, G, D, o1.data(),
                     nullptr);
      for (size_t i = 0; i < o1.size(); ++i) ASSERT_EQ(o1[i], o_cpu[size_t(sq.first * H * D) + i]) << sq.row;
    }
  }
}

TEST(ServeKvBf16, AttentionOnABf16CacheEqualsFp32OnTheRoundedValues) {
  // Both host back ends: attention over a bf16 cache equals attention over an fp32 cache that holds the
  // same bf16-rounded keys and values (decode and a prefill chunk, a row of a larger cache).
  Model m = load_model("random:tiny", "fp32", 5);
  const ModelConfig& c = m.config();
  const int H = c.num_heads, G = c.num_groups, D = c.kv_channels, S = 24, P = 9, T = 5;
  KVCache c16(c, 2, S, KvDtype::BF16), c32(c, 2, S, KvDtype::F32);
  EXPECT_EQ(KVCache::bytes_needed(c, 2, S, KvDtype::BF16) - 2 * S * 5,
            (KVCache::bytes_needed(c, 2, S, KvDtype::F32) - 2 * S * 5) / 2);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> k(size_t(G * D)), v(k.size()), kr(k.size()), vr(k.size());
  for (int j = 0; j < P + T; ++j) {
    for (size_t i = 0; i < k.size(); ++i) {
      k[i] = nd(rng), v[i] = nd(rng);
      kr[i] = bf16_to_f32(f32_to_bf16(k[i])), vr[i] = bf16_to_f32(f32_to_bf16(v[i]));
    }
    c16.store(0, 1, j, k.data(), v.data());
    c32.store(0, 1, j, kr.data(), vr.data());
    c16.valid(1)[j] = c32.valid(1)[j] = 1;
  }
  std::vector<float> q(size_t(T * H * D));
  for (auto& x : q) x = nd(rng);
  for (Backend be : {Backend::CpuRef, Backend::Cpu}) {
    auto ops = make_ops(be, false);
    for (auto [t0, n] : {std::pair{0, T}, std::pair{T - 1, 1}}) {
      std::vector<float> o16(size_t(n * H * D)), o32(o16.size()), l16(size_t(n * H)), l32(l16.size());
      ops->attention(q.data() + t0 * H * D, H * D, c16.row_view(0, 1), 1, n, P + t0, H, G, D, o16.data(), l16.data());
      ops->attention(q.data() + t0 * H * D, H * D, c32.row_view(0, 1), 1, n, P + t0, H, G, D, o32.data(), l32.data());
      for (size_t i = 0; i < o16.size(); ++i) ASSERT_NEAR(o16[i], o32[i], 1e-5) << ops->name() << " " << i;
      for (size_t i = 0; i < l16.size(); ++i) ASSERT_NEAR(l16[i], l32[i], 1e-5) << ops->name();
    }
    // The backward refuses a bf16 cache.
    std::vector<float> o(size_t(T * H * D)), lse(size_t(T * H)), dq(o.size()), dk(size_t(S * G * D)), dv(dk.size());
    EXPECT_NE(error_of([&] {
                ops->attention_backward(q.data(), H * D, c16.row_view(0, 1), 1, T, P, H, G, D, o.data(), lse.data(),
                                        o.data(), dq.data(), H * D, dk.data(), dv.data());
              }).find("fp32"),
              std::string::npos);
  }
}

TEST(ServeKvBf16, SlotsOfChatGLM3At8x2048TakeTheStatedBytes) {
  // docs/SERVING.md: 28 layers × 2 (K, V) × 8 × 2048 × 2 groups × 128 × 2 bytes + 8 × 2048 × 5.
  const ModelConfig c = ModelConfig::preset("chatglm3-6b");
  EXPECT_EQ(Scheduler::kv_bytes(c, SchedulerOptions{8, 64, 256, 2048}), 469843968u);
  EXPECT_EQ(Scheduler::kv_bytes(c, SchedulerOptions{8, 64, 256, 2048, KvDtype::F32}), 939606016u);
  EXPECT_EQ(Scheduler::kv_bytes(c, SchedulerOptions{8, 64, 256, 0}), 469843968u);  // context 0 = 2048
}

TEST(ServeKvBf16, RepliesDoNotDependOnTheBatch) {
  // With bf16 slots (the default) and fp32 activations, a reply is the same alone (max_batch 1) and
  // among others (max_batch 4, chunked prefills), and stays close to the fp32 cache's reply.
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, false);
  auto ps = prompts_of({12, 3, 40, 7, 25, 9}, m.config().vocab_size, 47);
  Scheduler one(m, *ops, SchedulerOptions{1, 64, 256, 128});
  Scheduler four(m, *ops, SchedulerOptions{4, 64, 16, 128});
  Scheduler f32(m, *ops, SchedulerOptions{4, 64, 16, 128, KvDtype::F32});
  EXPECT_EQ(Scheduler::kv_bytes(m.config(), SchedulerOptions{4, 64, 16, 128}) - 4 * 128 * 5,
            (Scheduler::kv_bytes(m.config(), SchedulerOptions{4, 64, 16, 128, KvDtype::F32}) - 4 * 128 * 5) / 2);
  auto a = run_all(one, ps, {10}), b = run_all(four, ps, {10}), c = run_all(f32, ps, {10});
  int same_as_f32 = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(a[i].ids, b[i].ids) << i;
    same_as_f32 += a[i].ids == c[i].ids;
  }
  EXPECT_GE(same_as_f32, 4) << "bf16 keys and values may move a near-tie, not most replies";
}

TEST(ServeScheduler, CancelFreesTheRowAndTheOthersGoOn) {
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, false);
  auto ps = prompts_of({6, 6, 6}, m.config().vocab_size, 31);
  Scheduler s(m, *ops, SchedulerOptions{2, 8, 64, 64, KvDtype::F32});
  std::vector<Reply> out(3);
  std::vector<uint64_t> ids;
  for (size_t i = 0; i < 3; ++i) {
    Request r;
    r.prompt = ps[i];
    r.max_tokens = 8;
    r.stop_ids = {};
    SequenceEvents ev;
    ev.on_token = [&out, i](int32_t id) { out[i].ids.push_back(id); return true; };
    ev.on_finish = [&out, i](FinishReason why, const std::string&) { out[i].reason = why, ++out[i].finishes; };
    ids.push_back(*s.submit(std::move(r), std::move(ev)));
  }
  ASSERT_TRUE(s.step());  // prompts 0 and 1 prefilled (2 rows); 2 waits
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.stats().running, 2);
  EXPECT_EQ(s.stats().queued, 1);
  s.cancel(ids[0]);
  s.step();  // 0 leaves, 2 takes its row in the same step
  EXPECT_EQ(out[0].reason, FinishReason::Cancelled);
  EXPECT_EQ(out[0].finishes, 1);
  EXPECT_EQ(out[0].ids.size(), 2u);
  EXPECT_EQ(s.stats().queued, 0);
  s.run_until_idle();
  EXPECT_EQ(out[1].ids, batch1(m, *ops, ps[1], 8, {}));
  EXPECT_EQ(out[2].ids, batch1(m, *ops, ps[2], 8, {}));
  EXPECT_EQ(s.stats().cancelled, 1);
  s.cancel(ids[1]);  // finished: ignored
  s.cancel(12345);   // unknown: ignored
  EXPECT_FALSE(s.step());
  EXPECT_EQ(out[1].finishes, 1);
}

TEST(ServeScheduler, QueueLimitStopCallbackForcedLengthAndLimits) {
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, false);
  auto p = prompts_of({5}, m.config().vocab_size, 37)[0];
  Scheduler s(m, *ops, SchedulerOptions{1, 2, 64, 32, KvDtype::F32});
  auto events = [](Reply& out, int stop_after) {
    SequenceEvents ev;
    ev.on_token = [&out, stop_after](int32_t id) {
      out.ids.push_back(id);
      return int(out.ids.size()) < stop_after;
    };
    ev.on_finish = [&out](FinishReason why, const std::string& e) { out.reason = why, out.error = e, ++out.finishes; };
    return ev;
  };
  Reply a, b, c;
  Request r;
  r.prompt = p;
  r.max_tokens = 20;
  ASSERT_TRUE(s.submit(r, events(a, 3)));
  Request forced = r;
  forced.min_tokens = forced.max_tokens = 7;
  forced.stop_ids = batch1(m, *ops, p, 7, {});  // every id of the reply is a stop id, but ignored before 7
  ASSERT_TRUE(s.submit(forced, events(b, 100)));
  EXPECT_FALSE(s.submit(r, events(c, 100)).has_value());  // the queue holds 2
  EXPECT_EQ(s.stats().rejected, 1);
  s.run_until_idle();
  EXPECT_EQ(a.ids.size(), 3u);  // the callback said stop (a stop string, for the server)
  EXPECT_EQ(a.reason, FinishReason::Stop);
  EXPECT_EQ(b.ids, forced.stop_ids);
  EXPECT_EQ(b.reason, FinishReason::Length);

  // Invalid requests are errors and queue nothing.
  Request bad = r;
  bad.max_tokens = 28;  // 5 + 28 > 32
  EXPECT_NE(error_of([&] { s.submit(bad, {}); }).find("context of 32"), std::string::npos);
  bad = r;
  bad.prompt.clear();
  EXPECT_NE(error_of([&] { s.submit(bad, {}); }).find("empty"), std::string::npos);
  bad = r;
  bad.prompt.push_back(m.config().vocab_size);
  EXPECT_NE(error_of([&] { s.submit(bad, {}); }).find("vocabulary"), std::string::npos);
  bad = r;
  bad.sampling.greedy = false;
  bad.sampling.temperature = std::nanf("");
  EXPECT_NE(error_of([&] { s.submit(bad, {}); }).find("temperature"), std::string::npos);
  bad = r;
  bad.min_tokens = 21;
  EXPECT_NE(error_of([&] { s.submit(bad, {}); }).find("min_tokens"), std::string::npos);
  EXPECT_EQ(s.stats().queued, 0);
  // max_tokens 0 finishes with Length without a forward call.
  Reply z;
  Request zero = r;
  zero.max_tokens = 0;
  ASSERT_TRUE(s.submit(zero, events(z, 100)));
  const int64_t steps = s.stats().steps;
  s.run_until_idle();
  EXPECT_EQ(z.reason, FinishReason::Length);
  EXPECT_TRUE(z.ids.empty());
  EXPECT_EQ(s.stats().steps, steps);
  // Options out of range.
  EXPECT_NE(error_of([&] { Scheduler(m, *ops, SchedulerOptions{0, 2, 64, 32}); }).find("max_batch"), std::string::npos);
  EXPECT_NE(error_of([&] { Scheduler(m, *ops, SchedulerOptions{1, 2, 64, m.config().seq_length + 1}); }).find("context"),
            std::string::npos);
}

TEST(ServeScheduler, SampledRepliesFollowTheirOwnSeed) {
  // A sampled request's reply depends on its seed only, not on its neighbours.
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, false);
  auto ps = prompts_of({9, 9, 9}, m.config().vocab_size, 41);
  auto run = [&](int others) {
    Scheduler s(m, *ops, SchedulerOptions{4, 8, 64, 64, KvDtype::F32});
    std::vector<Reply> out(size_t(others) + 1);
    for (int i = 0; i <= others; ++i) {
      Request r;
      r.prompt = ps[size_t(i)];
      r.max_tokens = 10;
      r.stop_ids = {};
      r.sampling.greedy = false;
      r.sampling.temperature = 1.0f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 1000 + uint64_t(i);
      SequenceEvents ev;
      ev.on_token = [&out, i](int32_t id) { out[size_t(i)].ids.push_back(id); return true; };
      s.submit(r, ev);
    }
    s.run_until_idle();
    return out[0].ids;
  };
  auto alone = run(0);
  EXPECT_EQ(alone.size(), 10u);
  EXPECT_EQ(run(2), alone);
}

TEST(ServeScheduler, ThreadedSubmitsFromManyThreadsAndShutdown) {
  const Model& m = small_model();
  auto ops = make_ops(Backend::Cpu, false);
  auto ps = prompts_of({4, 9, 13, 6, 8, 11, 5, 7}, m.config().vocab_size, 43);
  Scheduler s(m, *ops, SchedulerOptions{3, 16, 8, 64, KvDtype::F32});
  s.start();
  std::vector<Reply> out(ps.size());
  std::atomic<int> done{0};
  std::vector<std::thread> th;
  for (size_t i = 0; i < ps.size(); ++i)
    th.emplace_back([&, i] {
      Request r;
      r.prompt = ps[i];
      r.max_tokens = 6;
      r.stop_ids = {};
      SequenceEvents ev;
      ev.on_token = [&out, i](int32_t id) { out[i].ids.push_back(id); return true; };
      ev.on_finish = [&out, &done, i](FinishReason why, const std::string&) { out[i].reason = why, ++out[i].finishes, ++done; };
      ASSERT_TRUE(s.submit(r, ev).has_value());
    });
  for (auto& t : th) t.join();
  for (int w = 0; w < 600 && done < int(ps.size()); ++w) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(done.load(), int(ps.size()));
  for (size_t i = 0; i < ps.size(); ++i) EXPECT_EQ(out[i].ids, batch1(m, *ops, ps[i], 6, {})) << i;

  // Shutdown without finishing: what runs or waits is cancelled, later submits are refused.
  Reply slow;
  Request r;
  r.prompt = ps[0];
  r.max_tokens = 40;
  r.stop_ids = {};
  SequenceEvents ev;
  ev.on_token = [&slow](int32_t id) { slow.ids.push_back(id); std::this_thread::sleep_for(std::chrono::milliseconds(5)); return true; };
  ev.on_finish = [&slow](FinishReason why, const std::string&) { slow.reason = why, ++slow.finishes; };
  ASSERT_TRUE(s.submit(r, ev));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  s.shutdown(false);
  EXPECT_EQ(slow.finishes, 1);
  EXPECT_EQ(slow.reason, FinishReason::Cancelled);
  EXPECT_LT(slow.ids.size(), 40u);
  EXPECT_FALSE(s.submit(r, {}).has_value());
}

}  // namespace
}  // namespace glmlab

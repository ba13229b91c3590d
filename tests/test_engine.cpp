// The device-resident engine (model/device_engine.h) on the host Device (ops/host_device.h), held to
// the host engine (Model::forward): the same logits for prefill and for decode steps across decode
// buckets, the same generated tokens (batched, left-padded, greedy and sampled), graphs recorded once
// per bucket and replayed, and clear errors for what it refuses. The host Device records graphs the way
// CUDA stream capture does, so an engine that forgot an upload or baked a host value into a recorded
// step fails here as it would on a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "model/adapters.h"
#include "model/device_engine.h"
#include "model/engine.h"
#include "model/generate.h"
#include "model/loader.h"
#include "ops/host_device.h"
#include "test_util.h"

namespace glmlab {
namespace {

using test::error_of;

Model tiny_model(uint64_t seed = 7, const std::string& dtype = "fp32") { return load_model("random:tiny", dtype, seed); }

StepInput prefill_input(const std::vector<std::vector<int32_t>>& prompts) {
  StepInput in;
  in.B = int(prompts.size());
  for (auto& p : prompts) in.T = std::max(in.T, int(p.size()));
  for (auto& p : prompts) {  // left padding, as generate() does
    const int pad = in.T - int(p.size());
    for (int t = 0; t < in.T; ++t) {
      const bool real = t >= pad;
      in.ids.push_back(real ? p[size_t(t - pad)] : 0);
      in.pos.push_back(real ? t - pad : 0);
      in.valid.push_back(real ? 1 : 0);
    }
  }
  return in;
}

std::vector<std::vector<int32_t>> random_prompts(const std::vector<int>& lengths, int V, uint64_t seed) {
  std::mt19937 rng{uint32_t(seed)};
  std::uniform_int_distribution<int> id(10, V - 1);
  std::vector<std::vector<int32_t>> out;
  for (int n : lengths) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(id(rng));
    out.push_back(p);
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

TEST(Engine, DecodeBucketsDoubleFrom128AndStopAtCapacity) {
  EXPECT_EQ(decode_bucket(0, 4096), 128);
  EXPECT_EQ(decode_bucket(127, 4096), 128);
  EXPECT_EQ(decode_bucket(128, 4096), 256);
  EXPECT_EQ(decode_bucket(300, 4096), 512);
  EXPECT_EQ(decode_bucket(2047, 3000), 2048);
  EXPECT_EQ(decode_bucket(2048, 3000), 3000);
  EXPECT_EQ(decode_bucket(10, 60), 60);
}

// Prefill (all logits) and 150 decode steps of a left-padded batch, crossing the 128 bucket: the device
// engine (graphs replayed) gives the host engine's logits. cpu-ref: the same op calls on the same
// values, except attention over a longer, masked key range, so only last-bit differences are allowed.
TEST(Engine, DeviceEngineMatchesHostEngineStepByStep) {
  for (Backend be : {Backend::CpuRef, Backend::Cpu}) {
    SCOPED_TRACE(be == Backend::CpuRef ? "cpu-ref" : "cpu");
    Model m = tiny_model();
    const int V = m.config().vocab_size;
    auto prompts = random_prompts({9, 4, 6}, V, 3);
    const int steps = 150, cap = 9 + steps;
    auto ops = make_ops(be, /*bf16_activations=*/false);
    HostEngine host(m, *ops);
    HostDeviceOptions ho;
    ho.bf16_activations = false;
    DeviceEngine dev(make_host_device(be, ho), m, EngineLimits{3, cap, 27, 27});
    host.reset(3, cap);
    dev.reset(3, cap);
    StepInput in = prefill_input(prompts);
    std::vector<float> a, b;
    host.step(in, Logits::All, a);
    dev.step(in, Logits::All, b);
    ASSERT_EQ(a.size(), size_t(27) * V);
    EXPECT_LT(max_abs_diff(a, b), 1e-5);
    std::vector<int32_t> pos = {9, 4, 6};
    std::mt19937 rng(5);
    for (int s = 0; s < steps; ++s) {
      StepInput d;
      d.B = 3;
      d.T = 1;
      for (int i = 0; i < 3; ++i) {
        d.ids.push_back(int32_t(10 + rng() % uint32_t(V - 10)));
        d.pos.push_back(pos[size_t(i)]++);
        d.valid.push_back(1);
      }
      host.step(d, Logits::Last, a);
      dev.step(d, Logits::Last, b);
      ASSERT_LT(max_abs_diff(a, b), 1e-5) << "decode step " << s << " (cache length " << 9 + s << ")";
    }
    EXPECT_EQ(dev.length(), cap);
    EXPECT_EQ(dev.graphs_recorded(), 2);  // buckets 128 and cap (= 159)
    EXPECT_EQ(dev.eager_steps(), 1 + 2);  // prefill + the first step of each bucket
    EXPECT_EQ(dev.replays(), steps - 2);
  }
}

// generate() on both engines: the same tokens, greedy (argmax on the device) and sampled (logits
// downloaded), batch 1 and a left-padded batch of 3, with the bf16 activations of the fast path.
TEST(Engine, GenerateOnDeviceEngineGivesHostTokens) {
  Model m = tiny_model(11, "bf16");
  const int V = m.config().vocab_size;
  for (bool greedy : {true, false})
    for (auto lengths : {std::vector<int>{12}, std::vector<int>{5, 12, 8}}) {
      SCOPED_TRACE(testing::Message() << (greedy ? "greedy" : "sampled") << " batch " << lengths.size());
      auto prompts = random_prompts(lengths, V, 17);
      GenerateOptions o;
      o.max_new_tokens = 140;
      o.min_new_tokens = 140;
      o.sampling.greedy = greedy;
      o.sampling.temperature = 0.8f;
      o.sampling.top_k = 50;
      o.sampling.seed = 99;
      auto ops = make_ops(Backend::Cpu, true);
      GenerateResult want = generate(m, *ops, prompts, o);
      DeviceEngine dev(make_host_device(Backend::Cpu), m, EngineLimits{3, 12 + 140, 36, 0});
      GenerateResult got = generate(dev, prompts, o);
      ASSERT_EQ(got.tokens.size(), want.tokens.size());
      for (size_t b = 0; b < want.tokens.size(); ++b) {
        EXPECT_EQ(got.tokens[b].size(), 140u);
        EXPECT_EQ(got.tokens[b], want.tokens[b]) << "sequence " << b;
      }
      EXPECT_GT(dev.replays(), 100);
    }
}

// Graph replay must read the step's inputs from device memory: a recording that baked the first step's
// slot or ids would repeat them. Proof that the emulation catches it: the same engine with graphs off
// gives the same logits as with graphs on, and both differ from a replay with stale inputs.
TEST(Engine, GraphsOffGivesTheSameLogitsAsReplay) {
  Model m = tiny_model(23);
  HostDeviceOptions on, off;
  on.bf16_activations = off.bf16_activations = false;
  off.graphs = false;
  DeviceEngine a(make_host_device(Backend::CpuRef, on), m, EngineLimits{1, 40, 8, 0});
  DeviceEngine b(make_host_device(Backend::CpuRef, off), m, EngineLimits{1, 40, 8, 0});
  a.reset(1, 40);
  b.reset(1, 40);
  StepInput p = prefill_input({{20, 30, 40, 50}});
  std::vector<float> la, lb, first;
  a.step(p, Logits::Last, la);
  b.step(p, Logits::Last, lb);
  for (int s = 0; s < 10; ++s) {
    StepInput d{1, 1, {int32_t(100 + 37 * s)}, {4 + s}, {1}, {}};
    a.step(d, Logits::Last, la);
    b.step(d, Logits::Last, lb);
    EXPECT_EQ(la, lb) << "step " << s;
    if (s == 0) first = la;
    if (s > 0) EXPECT_GT(max_abs_diff(la, first), 1e-3) << "step " << s << " repeats step 0";
  }
  EXPECT_EQ(a.replays(), 9);
  EXPECT_EQ(b.replays(), 0);
  EXPECT_EQ(b.graphs_recorded(), 0);
}

TEST(Engine, ResetStartsNewSequencesOnTheSameGraphs) {
  Model m = tiny_model(29);
  DeviceEngine dev(make_host_device(Backend::Cpu), m, EngineLimits{2, 64, 40, 0});
  auto prompts = random_prompts({7, 3}, m.config().vocab_size, 31);
  GenerateOptions o;
  o.max_new_tokens = o.min_new_tokens = 20;
  GenerateResult r1 = generate(dev, prompts, o);
  const int graphs = dev.graphs_recorded();
  GenerateResult r2 = generate(dev, prompts, o);
  EXPECT_EQ(r1.tokens, r2.tokens);
  EXPECT_EQ(dev.graphs_recorded(), graphs);
}

TEST(Engine, ClearErrors) {
  Model m = tiny_model();
  HostDeviceOptions small;
  small.memory_limit = 1 << 20;  // 1 MiB: the fp32 tiny model alone is ~17 MB (vocab 65024 × 64 × 2)
  auto e = error_of([&] { DeviceEngine(make_host_device(Backend::Cpu, small), m, EngineLimits{1, 64, 64, 0}); });
  EXPECT_CONTAINS(e, "needs");
  EXPECT_CONTAINS(e, "only 0.00 GiB are free");
  EXPECT_CONTAINS(e, "KV cache");

  e = error_of([&] { DeviceEngine(make_host_device(Backend::Cpu), m, EngineLimits{1, 100000, 0, 0}); });
  EXPECT_CONTAINS(e, "seq_length 512");

  DeviceEngine dev(make_host_device(Backend::Cpu), m, EngineLimits{2, 32, 16, 0});
  std::vector<float> l;
  EXPECT_CONTAINS(error_of([&] { dev.step(prefill_input({{1, 2}}), Logits::Last, l); }), "step before reset");
  EXPECT_CONTAINS(error_of([&] { dev.reset(3, 32); }), "at most 2");
  EXPECT_CONTAINS(error_of([&] { dev.reset(1, 33); }), "at most 32");
  dev.reset(1, 32);
  EXPECT_CONTAINS(error_of([&] { dev.step(prefill_input({{1, 2}, {3, 4}}), Logits::Last, l); }), "reset for 1");
  EXPECT_CONTAINS(error_of([&] { dev.step(prefill_input({std::vector<int32_t>(17, 5)}), Logits::Last, l); }),
                  "workspaces (16 tokens)");
  EXPECT_CONTAINS(error_of([&] { dev.step(prefill_input({{1, 70000}}), Logits::Last, l); }), "outside the vocabulary");
  EXPECT_CONTAINS(error_of([&] { dev.step(prefill_input({{1, 2, 3}}), Logits::All, l); }), "logits_rows");

  StepInput packed = prefill_input({{1, 2, 3}});
  packed.segment = {0, 0, 1};
  EXPECT_CONTAINS(error_of([&] { dev.step(packed, Logits::Last, l); }), "packed segments");
}

}  // namespace
}  // namespace glmlab

namespace glmlab {
namespace {

// The front end: --engine device gives the host engine's tokens, and bench infer on it measures the
// device's own bandwidth probe (and no GEMM probe).
TEST(EngineCli, GenerateOnTheDeviceEngineGivesTheHostTokens) {
  const std::string args = "generate --model random:tiny -n 12 --ids \"5 6 7 8 9\" --batch 2";
  auto host = test::run_cli(args + " --engine host");
  auto dev = test::run_cli(args + " --engine device");
  ASSERT_EQ(host.rc, 0) << host.out;
  ASSERT_EQ(dev.rc, 0) << dev.out;
  EXPECT_CONTAINS(dev.out, "device engine on cpu");
  EXPECT_CONTAINS(dev.out, "graphs on");
  auto tokens = [](const std::string& out) {
    auto b = out.find("<id:"), e = out.find("\nprefill:");
    return b == std::string::npos || e == std::string::npos ? std::string("<none>") : out.substr(b, e - b);
  };
  EXPECT_NE(tokens(host.out), "<none>") << host.out;
  EXPECT_EQ(tokens(host.out), tokens(dev.out));
}

TEST(EngineCli, BenchInferOnTheDeviceEngine) {
  auto out = test::temp_dir("engine-bench");
  auto r = test::run_cli("bench infer --model random:tiny --tokenizer bytes --records 2 "
                         "--dtype bf16 --max-new-tokens 6 --probe quick "
                         "--batch 1,2 --engine device --no-progress --json -o " + out.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "\"memory_kind\": \"device copy\"");
  EXPECT_CONTAINS(r.out, "\"device_bytes\"");
  EXPECT_TRUE(std::filesystem::exists(out / "summary.json"));
  EXPECT_CONTAINS(test::run_cli("generate --model random:tiny -n 2 --ids 1 --engine host --device cuda").out,
                  "the cuda back end runs only the device engine");
}

}  // namespace
}  // namespace glmlab

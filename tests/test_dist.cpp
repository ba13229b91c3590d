// Data parallelism (issue 13). Two kinds of tests:
//  - DistWorld.*: run inside an MPI world of 2 ranks by the CTest entries `dist_2ranks*` (mpirun -np 2
//    glmlab_tests --gtest_filter=DistWorld.*); in the plain test run they skip with a message.
//    2 ranks × batch 2 against 1 process × batch 4 on the same global batches: the loss, every adapter
//    gradient (bucketed, overlapped all-reduce) and the adapter after 5 AdamW steps, for LoRA and VeRA,
//    padded and packed, over 7 samples so that a global batch crosses the epoch boundary (uneven last
//    batch). Tolerance: the two runs sum the same fp32 terms in another order (each rank sums its
//    rows, then MPI adds the two partial sums), so gradients agree to a few fp32 roundings of the
//    largest term: |Δg| ≤ 2e-5 · max|g| (observed ≤ 9e-7), losses to 1e-6 relative. After 5 AdamW
//    steps (lr 1e-2) the difference is bounded by the same relative error carried through m/√v:
//    |Δθ| ≤ 1e-4 + 1e-4 · |θ| (observed ≤ 4e-7).
//  - DistCli.*: the CLI under `mpirun -np 2` as a subprocess: resume 2 → 1 and 1 → 2 ranks, a bad
//    record on rank 1, a failure on one rank in the middle of a step, bench infer sharding.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "dist/comm.h"
#include "dist/nccl_comm.h"
#include "lab/data/advertisegen.h"
#include "lab/train/grad_sync.h"
#include "lab/train/train_loop.h"
#include "model/backward.h"
#include "model/loader.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "test_util.h"

#ifdef GLMLAB_HAVE_NCCL
#include <cuda_runtime.h>
#endif

namespace glmlab {
namespace {

dist::Communicator& world2() { return dist::world(); }

#define NEED_TWO_RANKS()                                                                               \
  if (world2().size() != 2)                                                                            \
  GTEST_SKIP() << "needs an MPI world of 2 ranks: run by the CTest entry dist_2ranks (mpirun -np 2 "  \
                  "glmlab_tests --gtest_filter=DistWorld.*)"

// A summary of ~2000 tokens: longer than the recipe's limit of 256 + 512 + 1.
std::string long_summary() {
  std::string s;
  for (int i = 0; i < 1000; ++i) s += std::to_string(i) + " ";
  return s;
}

std::vector<lab::TrainSample> seven_samples(dist::Communicator* comm) {
  Tokenizer tok = Tokenizer::from_file(test::tokenizer_path());
  lab::ReadOptions ro;
  auto recs = lab::read_records({test::dev_json_path()}, ro);
  recs.resize(7);
  lab::SampleLimits lim;
  lim.max_input = 48;
  lim.max_output = 40;
  lim.truncate = true;
  return lab::make_samples(tok, recs, lim, comm);
}

AdapterConfig adapter_config(const std::string& method) {
  AdapterConfig c = method == "lora" ? AdapterConfig::lora_defaults() : AdapterConfig::vera_defaults();
  c.targets = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  if (method == "vera") c.rank = 16;
  c.seed = 7;
  return c;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

struct DistCase {
  std::string method;
  bool pack;
};
const DistCase kCases[] = {{"lora", false}, {"lora", true}, {"vera", false}, {"vera", true}};

TEST(DistWorld, GradientsOfTwoRanksEqualOneProcessWithTheGlobalBatch) {
  NEED_TWO_RANKS();
  auto& comm = world2();
  auto samples = seven_samples(&comm);
  ASSERT_EQ(samples.size(), 7u);
  Model model = load_model("random:tiny", "fp32", 3);
  auto ops = make_ops(Backend::Cpu, false);
  for (const DistCase& c : kCases) {
    SCOPED_TRACE(c.method + (c.pack ? " packed" : " padded"));
    Adapter mine = Adapter::create(model.config(), adapter_config(c.method));
    Adapter ref = Adapter::create(model.config(), adapter_config(c.method));
    // Make B (LoRA) / λb (VeRA) non-zero so that every parameter has a gradient.
    for (Adapter* a : {&mine, &ref})
      for (auto& p : a->params())
        if (p.trainable)
          for (size_t i = 0; i < p.value.size(); ++i) p.value[i] += 0.01f * float((i * 7 + 3) % 11) - 0.05f;
    lab::BatchStream rank_stream(samples, 2, c.pack, 0, 42, comm.rank(), 2);
    lab::BatchStream one_stream(samples, 4, c.pack, 0, 42);
    for (int64_t mb : {0, 1}) {  // micro-batch 1 holds samples 4..7: it crosses the epoch of 7 samples
      SCOPED_TRACE("micro-batch " + std::to_string(mb));
      TrainBatch part = rank_stream.batch(mb), whole = one_stream.batch(mb);
      const int64_t labelled = comm.sum(part.label_count());
      ASSERT_EQ(labelled, whole.label_count());
      mine.zero_grad();
      ref.zero_grad();
      model.set_adapter(&mine);
      lab::GradSync sync(comm, mine, 512);  // small buckets: several, started while the backward runs
      ASSERT_GT(sync.buckets(), 2u);
      sync.begin();
      double loss = loss_and_backward(*ops, model, mine, part, 1.0 / double(labelled), nullptr,
                                      [&](int l) { sync.layer_done(l); })
                        .loss_sum;
      sync.finish();
      loss = comm.sum(loss);
      model.set_adapter(&ref);
      const double want = loss_and_backward(*ops, model, ref, whole, 1.0 / double(labelled)).loss_sum;
      model.set_adapter(nullptr);
      EXPECT_NEAR(loss, want, 1e-6 * std::fabs(want));
      double worst = 0;
      for (size_t i = 0; i < mine.params().size(); ++i) {
        const auto& g = mine.params()[i].grad;
        const auto& w = ref.params()[i].grad;
        ASSERT_EQ(g.size(), w.size());
        if (g.empty()) continue;
        const double scale = max_abs(w);
        ASSERT_GT(scale, 0) << mine.params()[i].name << " has no gradient: the test would prove nothing";
        for (size_t k = 0; k < g.size(); ++k) {
          const double d = std::fabs(double(g[k]) - double(w[k]));
          worst = std::max(worst, d / scale);
          ASSERT_LE(d, 2e-5 * scale) << mine.params()[i].name << "[" << k << "]: " << g[k] << " vs " << w[k];
        }
      }
      std::printf("[rank %d] %s%s micro-batch %lld: loss %.9g vs %.9g, worst gradient |Δ|/max %.2e\n", comm.rank(),
                  c.method.c_str(), c.pack ? " packed" : "", (long long)mb, loss, want, worst);
    }
  }
}

TEST(DistWorld, FiveAdamWStepsOfTwoRanksEqualOneProcess) {
  NEED_TWO_RANKS();
  auto& comm = world2();
  auto samples = seven_samples(&comm);
  Model model = load_model("random:tiny", "fp32", 3);
  auto ops = make_ops(Backend::Cpu, false);
  for (const DistCase& c : kCases) {
    SCOPED_TRACE(c.method + (c.pack ? " packed" : " padded"));
    lab::TrainOptions o;
    o.adapter = adapter_config(c.method);
    o.adam.lr = 1e-2;
    o.steps = 5;
    o.warmup = 1;
    o.pack = c.pack;
    o.seed = 42;
    o.max_grad_norm = 1.0;
    o.batch_size = 2;
    o.comm = &comm;
    o.bucket_bytes = 512;
    Adapter dp = Adapter::create(model.config(), o.adapter);
    model.set_adapter(&dp);
    auto rep = lab::train(*ops, model, dp, samples, o);
    ASSERT_EQ(rep.steps_done, 5);
    EXPECT_GT(rep.grad_buckets, 2u);

    o.batch_size = 4;
    o.comm = nullptr;
    Adapter one = Adapter::create(model.config(), o.adapter);
    model.set_adapter(&one);
    auto want = lab::train(*ops, model, one, samples, o);
    model.set_adapter(nullptr);
    ASSERT_EQ(want.losses.size(), rep.losses.size());
    for (size_t i = 0; i < want.losses.size(); ++i) EXPECT_NEAR(rep.losses[i], want.losses[i], 1e-6 * want.losses[i]);
    double worst = 0;
    std::string bytes;
    for (size_t i = 0; i < dp.params().size(); ++i) {
      const auto& a = dp.params()[i].value;
      const auto& b = one.params()[i].value;
      bytes.append(reinterpret_cast<const char*>(a.data()), a.size() * 4);
      for (size_t k = 0; k < a.size(); ++k) {
        const double d = std::fabs(double(a[k]) - double(b[k]));
        worst = std::max(worst, d);
        ASSERT_LE(d, 1e-4 + 1e-4 * std::fabs(b[k])) << dp.params()[i].name << "[" << k << "]";
      }
    }
    // And every rank holds the very same adapter (the same reduced gradients, the same update).
    auto all = comm.all_gather(bytes);
    EXPECT_EQ(all[0], all[1]) << "the ranks' adapters differ";
    std::printf("[rank %d] %s%s: 5 steps, losses %.6f .. %.6f, worst |Δθ| %.2e\n", comm.rank(), c.method.c_str(),
                c.pack ? " packed" : "", rep.losses.front(), rep.losses.back(), worst);
  }
}

TEST(DistWorld, AgreeGivesEveryRankTheSameError) {
  NEED_TWO_RANKS();
  auto& comm = world2();
  std::string msg = test::error_of([&] {
    dist::agree(comm, [&] {
      if (comm.rank() == 1) fail("bad thing on one rank");
    });
  });
  EXPECT_EQ(msg, "rank 1: bad thing on one rank");
  EXPECT_NO_THROW(dist::agree(comm, [] {}));
  // A bad record found by the rank that tokenizes it stops every rank with its FILE:LINE.
  Tokenizer tok = Tokenizer::from_file(test::tokenizer_path());
  lab::ReadOptions ro;
  auto recs = lab::read_records({test::dev_json_path()}, ro);
  recs.resize(6);
  lab::SampleLimits lim;  // the recipe's limits: every dev.json record fits
  recs[4].summary = long_summary();  // rank 1 tokenizes records 3..5
  msg = test::error_of([&] { lab::make_samples(tok, recs, lim, &comm); });
  EXPECT_CONTAINS(msg, "rank 1: ");
  EXPECT_CONTAINS(msg, recs[4].file + ":" + std::to_string(recs[4].line));
}

// ---- the CLI under mpirun ----

std::string mpirun() {
  // As root (CI, this machine) Open MPI wants --allow-run-as-root; --oversubscribe lets 2 ranks run on
  // fewer cores; one thread per rank. Under scripts/sanitize.sh the ranks run without LeakSanitizer:
  // Open MPI's components leave their allocations to the exit by design and are unloaded by then, so
  // LSan cannot even name them in a suppression (ASan and UBSan stay on).
  return "ASAN_OPTIONS=\"${ASAN_OPTIONS:-}:detect_leaks=0\" mpirun --allow-run-as-root --oversubscribe -np ";
}
bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }


test::CliResult glmlab_on(int ranks, const std::string& args) {
  return test::run_shell((ranks > 0 ? mpirun() + std::to_string(ranks) + " " : std::string()) + GLMLAB_CLI + " " + args);
}

std::string data7() { return test::dev_json_head("dist-data", 7); }

std::string train_args(const std::string& data, const std::string& out, int batch, const std::string& extra = "") {
  return "train --model random:tiny --dtype fp32 --fp32-activations --tokenizer " + test::tokenizer_path() +
         " --data " + data + " --max-input 48 --max-output 40 --truncate --threads 1 --lr 1e-2 --steps 4 -b " +
         std::to_string(batch) + " --out " + out + " " + extra;
}

std::vector<float> adapter_values(const std::string& dir) {
  SafetensorsFile f(dir + "/adapter_model.safetensors");
  std::vector<float> v;
  for (const auto& [name, t] : f.tensors()) {
    const float* p = reinterpret_cast<const float*>(t.data);
    v.insert(v.end(), p, p + t.numel());
  }
  return v;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_LE(std::fabs(a[i] - b[i]), 1e-4 + 1e-4 * std::fabs(b[i])) << i;
}

TEST(DistCli, ResumeFromTwoRanksToOneAndFromOneToTwo) {
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun (apt-get install openmpi-bin)";
  const std::string data = data7();
  auto base = test::temp_dir("dist-resume");
  const std::string full = (base / "full").string(), a = (base / "a").string(), b = (base / "b").string();
  auto r = glmlab_on(0, train_args(data, full, 4));
  ASSERT_EQ(r.rc, 0) << r.out;
  // 2 ranks × 2 for 2 steps, then 1 process × 4 for the rest.
  r = glmlab_on(2, train_args(data, a, 2, "--stop-after 2"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "data parallel over 2 ranks");
  r = glmlab_on(0, train_args(data, a, 4, "--resume"));
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_close(adapter_values(a), adapter_values(full));
  // 1 process × 4 for 2 steps, then 2 ranks × 2.
  r = glmlab_on(0, train_args(data, b, 4, "--stop-after 2"));
  ASSERT_EQ(r.rc, 0) << r.out;
  r = glmlab_on(2, train_args(data, b, 2, "--resume"));
  ASSERT_EQ(r.rc, 0) << r.out;
  expect_close(adapter_values(b), adapter_values(full));
  // Another global batch is another run: refused on every rank with one message.
  r = glmlab_on(2, train_args(data, b, 1, "--resume"));
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "other options than the saved run");
}

// Data parallelism on the device trainer (--engine device on the host device; on GPUs the same path sums
// with NCCL): two ranks × 2 samples give the one-process run of 4 on the host trainer.
TEST(DistCli, TwoRanksOnTheDeviceTrainerEqualOneHostProcess) {
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun (apt-get install openmpi-bin)";
  const std::string data = data7();
  auto base = test::temp_dir("dist-device");
  const std::string one = (base / "one").string(), two = (base / "two").string();
  auto r = glmlab_on(0, train_args(data, one, 4));
  ASSERT_EQ(r.rc, 0) << r.out;
  r = glmlab_on(2, train_args(data, two, 2, "--engine device"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "data parallel over 2 ranks");
  EXPECT_CONTAINS(r.out, "device trainer");
  expect_close(adapter_values(two), adapter_values(one));
}

TEST(DistCli, BadRecordOnRankOneEndsBothRanksWithItsError) {
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun (apt-get install openmpi-bin)";
  auto dir = test::temp_dir("dist-bad");
  {
    std::ifstream in(test::dev_json_path());
    std::ofstream out(dir / "bad.json");
    std::string line;
    for (int i = 0; i < 8 && std::getline(in, line); ++i) {
      if (i == 6) line = "{\"content\": \"x\", \"summary\": \"" + long_summary() + "\"}";
      out << line << "\n";
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  auto r = glmlab_on(2, "train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " +
                            (dir / "bad.json").string() + " --threads 1 --steps 2 -b 2");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "rank 1: " + (dir / "bad.json").string() + ":7:");
  EXPECT_LT(s, 30.0) << r.out;
}

TEST(DistCli, FailureOfOneRankInsideAStepEndsEveryRank) {
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun (apt-get install openmpi-bin)";
  const std::string data = data7();
  auto out = test::temp_dir("dist-fault");
  auto t0 = std::chrono::steady_clock::now();
  // Rank 1 fails at the start of step 2 while rank 0 goes into the step's all-reduces.
  auto r = test::run_shell("GLMLAB_FAULT=train:1:2 " + mpirun() + "2 " + GLMLAB_CLI + " " +
                     train_args(data, (out / "x").string(), 2));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "error on rank 1 of 2: fault injected by GLMLAB_FAULT at step 2");
  EXPECT_LT(s, 30.0) << r.out;
}

TEST(DistCli, BenchInferWithTwoRanksCoversEveryRecordOnceAndItsTotalsAddUp) {
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun (apt-get install openmpi-bin)";
  auto out = test::temp_dir("dist-bench-infer");
  auto r = glmlab_on(2, "bench infer --model random:tiny --tokenizer bytes --records 7 "
                        "--dtype bf16 --max-new-tokens 6 --reps 2 "
                        "--batch 1,2 --probe off --threads 1 --no-progress --out " + out.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  auto s = nlohmann::json::parse(std::ifstream(out / "summary.json"));
  ASSERT_TRUE(s["distributed"].is_object()) << s.dump();
  EXPECT_EQ(s["distributed"]["ranks"], 2);
  // records.jsonl: each record once per (batch, repetition), no other.
  std::map<std::tuple<int, int>, std::multiset<size_t>> seen;
  std::map<int, int64_t> tokens;  // per batch, repetition 0
  std::ifstream in(out / "records.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    seen[{j["batch"].get<int>(), j["rep"].get<int>()}].insert(j["index"].get<size_t>());
    if (j["rep"] == 0) tokens[j["batch"].get<int>()] += j["output_tokens"].get<int64_t>();
  }
  ASSERT_EQ(seen.size(), 4u);  // batch 1, 2 × rep 0, 1
  for (const auto& [key, idx] : seen) {
    std::multiset<size_t> want;
    for (size_t i = 0; i < 7; ++i) want.insert(i);
    EXPECT_EQ(idx, want);
  }
  for (const auto& run : s["runs"]) {
    const int b = run["batch"].get<int>();
    EXPECT_EQ(run["records"], 7);
    EXPECT_EQ(run["output_tokens"].get<int64_t>(), tokens[b]);
    // The ranks' shares add up to the run, and the aggregate throughput is all tokens over the slowest
    // rank's wall time.
    int64_t rec = 0, tok = 0;
    double slowest = 0;
    for (const auto& x : s["distributed"]["per_rank"]) {
      if (x["batch"] != b) continue;
      rec += x["records"].get<int64_t>();
      tok += x["output_tokens"].get<int64_t>();
      slowest = std::max(slowest, x["wall_s"].get<double>());
      EXPECT_GT(x["records"].get<int64_t>(), 0);
    }
    EXPECT_EQ(rec, 7);
    EXPECT_EQ(tok, tokens[b]);
    EXPECT_GT(run["throughput_tps"]["median"].get<double>(), 0);
  }
}

TEST(DistCli, BenchTrainWithTwoRanksReportsTheJobTheRanksAndTheScaling) {
  if (!have_mpirun()) GTEST_SKIP() << "no mpirun (apt-get install openmpi-bin)";
  auto out = test::temp_dir("dist-bench-train");
  auto r = glmlab_on(2, "bench train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " + data7() +
                            " --max-input 48 --max-output 40 --truncate --method lora,vera --qat none --steps 2 "
                            "--warmup-steps 1 -b 2 --probe off --threads 1 --no-progress --grad-bucket-kb 1 --out " +
                            out.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "on 2 ranks:");
  EXPECT_CONTAINS(r.out, "scaling efficiency");
  auto s = nlohmann::json::parse(std::ifstream(out / "summary.json"));
  ASSERT_EQ(s["runs"].size(), 2u);
  for (const auto& run : s["runs"]) {
    SCOPED_TRACE(run["method"].dump());
    const auto& d = run["distributed"];
    ASSERT_TRUE(d.is_object()) << run.dump();
    EXPECT_EQ(d["ranks"], 2);
    EXPECT_EQ(run["samples"].get<int64_t>(), 2 * 2 * 2);  // 2 timed steps × 2 ranks × batch 2
    ASSERT_EQ(d["rank_samples_per_s"].size(), 2u);
    const double job = run["samples_per_s"].get<double>(), single = d["single_rank_samples_per_s"].get<double>();
    EXPECT_GT(single, 0);
    EXPECT_NEAR(d["scaling_efficiency"].get<double>(), job / (2 * single), 1e-9 * job);
    EXPECT_GT(d["grad_bytes_per_step"].get<int64_t>(), 0);
    EXPECT_GE(d["grad_buckets"].get<int64_t>(), 1);
    EXPECT_GT(d["allreduce_s"].get<double>(), 0);
    const double share = d["comm_only_share"].get<double>(), hidden = d["comm_hidden"].get<double>();
    EXPECT_GE(share, 0);
    EXPECT_LE(share, 1);
    EXPECT_GE(hidden, 0);
    EXPECT_LE(hidden, 1);
    EXPECT_LE(d["comm_only_s"]["median"].get<double>(), d["comm_exposed_s"]["median"].get<double>() + 1e-12);
  }
}

// The NCCL communicator in a world of one GPU (the device machine runs it: tools/device/cuda_check.sh):
// device buffers summed (blocking and not), max, int64, broadcast; host buffers through the bootstrap.
TEST(DistNccl, WorldOfOneGpuReducesAndBroadcastsDeviceBuffers) {
  if (!dist::nccl_available()) {
    auto boot = dist::make_single();
    EXPECT_CONTAINS(test::error_of([&] { dist::make_nccl(*boot); }), "built without NCCL");
    GTEST_SKIP() << "this build has no NCCL (CUDA + the nvidia-nccl-cu13 wheel)";
  }
#ifdef GLMLAB_HAVE_NCCL
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < 1) {
    cudaGetLastError();
    GTEST_SKIP() << "no GPU here: runs on the device machine (tools/device/cuda_check.sh)";
  }
  auto boot = dist::make_single();
  auto nccl = dist::make_nccl(*boot);
  EXPECT_EQ(nccl->backend(), "nccl");
  EXPECT_EQ(nccl->size(), 1);
  const size_t n = 3000;
  std::vector<float> host(n), back(n);
  for (size_t i = 0; i < n; ++i) host[i] = 0.5f * float(i) - 7;
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  nccl->all_reduce_sum(d, n);
  int h = nccl->start_all_reduce_sum(d, n);
  for (int i = 0; i < 100000 && !nccl->test(h); ++i) {
  }
  nccl->wait(h);
  nccl->broadcast(d, n * sizeof(float), 0);
  ASSERT_EQ(cudaMemcpy(back.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);  // a world of one: the sum is the value itself, bit for bit
  double* dd = nullptr;
  ASSERT_EQ(cudaMalloc(&dd, 2 * sizeof(double)), cudaSuccess);
  double hv[2] = {1.5, -2.25}, hb[2] = {};
  cudaMemcpy(dd, hv, sizeof hv, cudaMemcpyHostToDevice);
  nccl->all_reduce_max(dd, 2);
  cudaMemcpy(hb, dd, sizeof hb, cudaMemcpyDeviceToHost);
  EXPECT_EQ(hb[0], 1.5);
  EXPECT_EQ(hb[1], -2.25);
  // Host buffers go through the bootstrap.
  int64_t x[2] = {3, 4};
  nccl->all_reduce_sum(x, 2);
  EXPECT_EQ(x[1], 4);
  std::string s = "abc";
  nccl->broadcast_string(s, 0);
  EXPECT_EQ(s, "abc");
  cudaFree(d);
  cudaFree(dd);
#endif
}

}  // namespace
}  // namespace glmlab

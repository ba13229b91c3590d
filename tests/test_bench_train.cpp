// glmlab bench train (issue 5 §6): the no-argument default writes every output, well-formed and
// consistent (runs, CSV rows, one JSON line per timed step, PNG), each step's split adds up to its time,
// the tokens counted are the data's real tokens and the FLOPs follow the documented formula; packed
// batches count each sample; bad options give clear errors; the PyTorch + PEFT peer (train_peer.py:
// transformers' GlmForCausalLM with SDPA attention) runs glmlab's very micro-batches and writes the same
// schema, which `bench compare` reads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "lab/bench/bench_train.h"
#include "lab/data/sample.h"
#include "lab/train/train_data.h"
#include "model/config.h"
#include "model/loader.h"
#include "model/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

using test::is_png;
using test::lines_of;

namespace fs = std::filesystem;
using nlohmann::json;

// The formula of docs/FINETUNE.md written out again for one micro-batch whose samples have the given
// real lengths, every layer adapted on query_key_value by LoRA / VeRA of rank r.
double expected_flops(const ModelConfig& c, const std::vector<int64_t>& lengths, int64_t labelled, int r,
                      bool forward) {
  const double C = c.hidden_size, F = c.ffn_hidden_size, H = c.num_heads, D = c.kv_channels, V = c.vocab_size;
  const double QKV = (c.num_heads + 2.0 * c.num_groups) * D;
  const double P = QKV * C + C * H * D + 2 * F * C + C * F;
  const double adapter = c.num_layers * 2.0 * r * (C + QKV);  // per token
  double f = 2 * V * C * double(labelled);
  for (int64_t len : lengths) {
    const double n = double(len), attn = 2 * H * D * n * (n + 1);
    if (forward)
      f += c.num_layers * (2 * P * n + attn) + adapter * n;
    else
      f += c.num_layers * (2 * P * n + 2 * attn) - 2 * QKV * C * n + 2 * adapter * n;
  }
  return f;
}

// ------------------------------------------------------------------------------- the default run

TEST(BenchTrain, DefaultRunWritesWellFormedConsistentOutputs) {
  fs::path dir = test::temp_dir("bench-train-default");
  fs::path out = dir / "out";
  // No options but where to write, a quick probe and no progress bar: the embedded default.
  auto r = test::run_cli("bench train --probe quick --no-progress --out " + out.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "| lora bf16 |");
  EXPECT_CONTAINS(r.out, "| vera int8 QAT |");
  for (const char* f : {"summary.json", "summary.csv", "steps.jsonl", "batches.jsonl", "config.json", "training.png"})
    ASSERT_TRUE(fs::exists(out / f)) << f;
  for (const auto& e : fs::directory_iterator(out)) EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);
  EXPECT_TRUE(is_png(out / "training.png", 10000));

  json s = json::parse(read_file((out / "summary.json").string()));
  EXPECT_EQ(s["schema"], "glmlab-bench-train/1");
  EXPECT_EQ(s["engine"], "glmlab");
  EXPECT_EQ(s["model"]["spec"], "random:small");
  EXPECT_EQ(s["data"]["source"], "<embedded sample>");
  ASSERT_TRUE(s["probes"].is_object());
  const double probe = s["probes"]["gemm_gflops"]["median"];
  EXPECT_GT(probe, 0);
  EXPECT_GT(s["machine"]["cores"].get<int>(), 0);
  const int steps = s["options"]["steps"], warmup = s["options"]["warmup_steps"], B = s["options"]["batch_size"];
  EXPECT_GE(steps, 2);
  EXPECT_GE(warmup, 1);
  ASSERT_EQ(s["runs"].size(), 4u);
  const char* expect[4][3] = {{"lora", "none", "bf16"}, {"vera", "none", "bf16"}, {"lora", "int8", "int8"},
                              {"vera", "int8", "int8"}};
  for (size_t k = 0; k < 4; ++k) {
    const json& run = s["runs"][k];
    EXPECT_EQ(run["method"], expect[k][0]);
    EXPECT_EQ(run["qat"], expect[k][1]);
    EXPECT_EQ(run["dtype"], expect[k][2]);
    EXPECT_EQ(run["rank"], k % 2 ? 256 : 8);
    EXPECT_EQ(run["steps"], steps);
    EXPECT_GT(run["trainable_params"].get<int64_t>(), 0);
    EXPECT_GT(run["peak_rss_bytes"].get<uint64_t>(), run["weight_bytes"].get<uint64_t>());
    for (const char* key : {"step_s", "forward_s", "backward_s", "optimizer_s"}) {
      const json& sp = run[key];
      EXPECT_LE(sp["min"].get<double>(), sp["median"].get<double>()) << key;
      EXPECT_LE(sp["median"].get<double>(), sp["max"].get<double>()) << key;
    }
    EXPECT_GT(run["forward_s"]["min"].get<double>(), 0);
    EXPECT_GT(run["backward_s"]["min"].get<double>(), 0);
    EXPECT_TRUE(std::isfinite(run["loss_last"].get<double>()));
  }

  // CSV: a header and one row per run.
  auto csv = lines_of(read_file((out / "summary.csv").string()));
  ASSERT_EQ(csv.size(), 1 + s["runs"].size());
  EXPECT_EQ(csv[0].rfind("engine,method,qat,dtype,", 0), 0u);

  // Micro-batches: warm-up + timed, the same for every run.
  auto bl = lines_of(read_file((out / "batches.jsonl").string()));
  ASSERT_EQ(bl.size(), size_t(warmup + steps));
  std::vector<json> batches;
  for (auto& l : bl) batches.push_back(json::parse(l));

  // The samples the default trains on: the embedded sample through the recipe, in BatchStream order.
  Tokenizer tok = load_tokenizer(s["data"]["tokenizer"] == "bytes" ? "bytes" : s["data"]["tokenizer"].get<std::string>(),
                                 "random:small");
  auto samples = lab::make_samples(tok, lab::embedded_sample(s["data"]["records"].get<size_t>()), lab::SampleLimits{});
  lab::BatchStream stream(samples, B, false, 0, s["options"]["seed"].get<uint64_t>());
  const ModelConfig cfg = ModelConfig::preset("small");

  auto sl = lines_of(read_file((out / "steps.jsonl").string()));
  ASSERT_EQ(sl.size(), s["runs"].size() * size_t(steps));
  std::map<std::string, std::vector<json>> by_run;
  for (auto& l : sl) {
    json x = json::parse(l);
    by_run[x["method"].get<std::string>() + " " + x["dtype"].get<std::string>()].push_back(x);
    const double step = x["step_s"], fwd = x["forward_s"], bwd = x["backward_s"], opt = x["optimizer_s"];
    const double other = x["other_s"];
    // The split adds up to the step: forward + backward + optimizer + other (batch building) = step, other small.
    EXPECT_NEAR(fwd + bwd + opt + other, step, 1e-9 * step + 1e-12);
    EXPECT_GE(other, -1e-9);
    EXPECT_LT(other, 0.1 * step + 0.02) << l;
    EXPECT_NEAR(x["layers_forward_s"].get<double>() + x["head_forward_s"].get<double>(), fwd, 1e-9);
    EXPECT_NEAR(x["layers_backward_s"].get<double>() + x["head_backward_s"].get<double>(), bwd, 1e-9);
    // Tokens: the real (non-pad) tokens of the step's samples; labelled: their output tokens.
    const int64_t b = x["batch"];
    ASSERT_GE(b, warmup);
    ASSERT_LT(b, warmup + steps);
    EXPECT_EQ(x["step"].get<int64_t>(), b - warmup + 1);
    int64_t tokens = 0, labelled = 0;
    std::vector<int64_t> lengths;
    for (int64_t k = b * B; k < (b + 1) * B; ++k) {
      const auto& smp = samples[size_t(stream.sample_index(k))];
      tokens += int64_t(smp.ids.size());
      lengths.push_back(int64_t(smp.ids.size()));
      for (size_t t = 1; t < smp.labels.size(); ++t) labelled += smp.labels[t] != -100;
    }
    EXPECT_EQ(x["tokens"].get<int64_t>(), tokens);
    EXPECT_EQ(x["labelled_tokens"].get<int64_t>(), labelled);
    EXPECT_EQ(x["samples"].get<int64_t>(), B);
    int64_t valid = 0;
    for (int v : batches[size_t(b)]["valid"]) valid += v;
    EXPECT_EQ(valid, tokens);
    const int r = x["method"] == "lora" ? 8 : 256;
    const double ef = expected_flops(cfg, lengths, labelled, r, true), eb = expected_flops(cfg, lengths, labelled, r, false);
    EXPECT_NEAR(x["flops_forward"].get<double>(), ef, 1e-9 * ef);
    EXPECT_NEAR(x["flops_backward"].get<double>(), eb, 1e-9 * eb);
  }
  // Summary figures from the steps.
  for (const json& run : s["runs"]) {
    const auto& xs = by_run[run["method"].get<std::string>() + " " + run["dtype"].get<std::string>()];
    ASSERT_EQ(xs.size(), size_t(steps));
    double secs = 0, fwd = 0, bwd = 0, flops = 0;
    int64_t tokens = 0, nsamples = 0;
    for (const auto& x : xs) {
      secs += x["step_s"].get<double>();
      fwd += x["forward_s"].get<double>();
      bwd += x["backward_s"].get<double>();
      flops += x["flops_forward"].get<double>() + x["flops_backward"].get<double>();
      tokens += x["tokens"].get<int64_t>();
      nsamples += x["samples"].get<int64_t>();
    }
    EXPECT_EQ(run["tokens"].get<int64_t>(), tokens);
    EXPECT_NEAR(run["seconds"].get<double>(), secs, 1e-9 * secs);
    EXPECT_NEAR(run["samples_per_s"].get<double>(), nsamples / secs, 1e-9 * nsamples / secs);
    EXPECT_NEAR(run["tokens_per_s"].get<double>(), tokens / secs, 1e-9 * tokens / secs);
    EXPECT_NEAR(run["backward_over_forward"].get<double>(), bwd / fwd, 1e-9 * bwd / fwd);
    EXPECT_NEAR(run["gflops"].get<double>(), flops / secs / 1e9, 1e-9 * flops / secs / 1e9);
    // Against the peak of the unit the products run on: bf16 dot products for bf16 and int8 bases
    // (dequantized into bf16 tiles) where the CPU has them, else the fp32 FMA peak or the sgemm.
    // An int8 base on an AVX2 CPU without AVX512-VNNI: the AVX2 integer kernel's peak (it runs up to 32
    // rows; beyond, fp32 tiles, whose FMA peak is the lower of the two).
    const json& pr = s["probes"];
    const double bf16 = pr["bf16_dot_gflops"]["median"], fma = pr["fp32_fma_gflops"]["median"];
    const bool avx2_int8 = run["dtype"] == "int8" && pr["int8_unit"] == "AVX2";
    const double want = avx2_int8 ? pr["int8_dot_gops"]["median"].get<double>() : bf16 > 0 ? bf16 : fma > 0 ? fma : probe;
    EXPECT_DOUBLE_EQ(run["limit_gflops"].get<double>(), want);
    EXPECT_EQ(run["limit"], avx2_int8 ? std::string("int8 dot peak (AVX2)")
                            : bf16 > 0 ? "bf16 dot peak (" + pr["bf16_unit"].get<std::string>() + ")"
                            : fma > 0 ? "fp32 FMA peak" : "fp32 sgemm");
    EXPECT_NEAR(run["gflops_of_probe"].get<double>(), run["gflops"].get<double>() / want, 1e-9);
  }
}

// On the device-resident trainer (--engine device on the host device here; --device cuda on a GPU): the
// same loop, the host trainer's losses on the same back end and batches (within 1e-5), LoRA and VeRA.
TEST(BenchTrain, DeviceTrainerRunsTheSameStepsAsTheHostTrainer) {
  fs::path dir = test::temp_dir("bench-train-device");
  const std::string args = "bench train --model random:tiny --dtype fp32 --fp32-activations --tokenizer " +
                           test::tokenizer_path() +
                           " --records 6 --batch-size 2 --steps 2 --warmup-steps 1 --probe off --no-progress "
                           "--qat none --method lora,vera --out ";
  auto dev = test::run_cli(args + (dir / "dev").string() + " --engine device");
  ASSERT_EQ(dev.rc, 0) << dev.out;
  auto host = test::run_cli(args + (dir / "host").string() + " --engine host");
  ASSERT_EQ(host.rc, 0) << host.out;
  json d = json::parse(read_file((dir / "dev" / "summary.json").string()));
  json h = json::parse(read_file((dir / "host" / "summary.json").string()));
  ASSERT_EQ(d["runs"].size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_EQ(d["runs"][k]["method"], h["runs"][k]["method"]);
    EXPECT_GT(d["runs"][k]["samples_per_s"].get<double>(), 0);
    for (const char* key : {"loss_first", "loss_last"}) {
      const double want = h["runs"][k][key].get<double>();
      EXPECT_NEAR(d["runs"][k][key].get<double>(), want, 1e-5 * want) << key;
    }
  }
}

// ------------------------------------------------------------------------------------ the peer

TEST(BenchTrain, PeerRunsTheSameBatchesAndCompareReadsBoth) {
  fs::path dir = test::temp_dir("bench-train-peer");
  auto r = test::run_cli("bench train --model random:tiny --tokenizer " + test::tokenizer_path() +
                         " --records 6 --batch-size 2 --steps 2 --warmup-steps 1 --pack --probe off --no-progress "
                         "--method lora,vera --qat none,int8 --out " + (dir / "glm").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  std::string cmd = std::string(GLMLAB_PYTHON) + " " + GLMLAB_SOURCE_DIR + "/tools/reference/train_peer.py --from " +
                    (dir / "glm").string() + " --out " + (dir / "peer").string() + " --threads 1 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string log;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) log.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << log;

  json g = json::parse(read_file((dir / "glm" / "summary.json").string()));
  json q = json::parse(read_file((dir / "peer" / "summary.json").string()));
  json cfg = json::parse(read_file((dir / "glm" / "config.json").string()));
  EXPECT_EQ(q["schema"], "glmlab-bench-train/1");
  // The default peer is what users run: transformers' GlmForCausalLM, SDPA attention, bf16 autocast.
  EXPECT_EQ(q["engine"], "transformers+peft");
  EXPECT_EQ(q["impl"]["model"], "GlmForCausalLM");
  EXPECT_EQ(q["impl"]["attention"], "sdpa");
  ASSERT_EQ(q["runs"].size(), 2u);       // the QAT runs have no PyTorch peer here ...
  ASSERT_EQ(q["skipped"].size(), 2u);    // ... and say so
  for (size_t k = 0; k < 2; ++k) {
    const json &a = g["runs"][k], &b = q["runs"][k];
    EXPECT_EQ(a["method"], b["method"]);
    EXPECT_EQ(a["dtype"], b["dtype"]);
    EXPECT_TRUE(b["pack"].get<bool>());
    // The same micro-batches: the same real and labelled tokens, samples and FLOPs (the formula in both).
    for (const char* key : {"samples", "tokens", "labelled_tokens", "steps"}) EXPECT_EQ(a[key], b[key]) << key;
    EXPECT_NEAR(a["flops_per_step"].get<double>(), b["flops_per_step"].get<double>(),
                1e-9 * a["flops_per_step"].get<double>());
    EXPECT_EQ(b["autocast"], "bfloat16");
    // GLM has no fused QKV: glmlab's query_key_value adapter is three PEFT adapters (q, k, v_proj), which
    // train r·hidden (LoRA: two more A matrices) or 2·r (VeRA: two more λ_d) more parameters a layer.
    ASSERT_EQ(a["targets"], json::array({"query_key_value"}));
    EXPECT_EQ(b["peer_targets"], json::array({"q_proj", "k_proj", "v_proj"}));
    const int64_t L = cfg["num_layers"].get<int64_t>(), C = cfg["hidden_size"].get<int64_t>();
    const int64_t r = a["rank"].get<int64_t>();
    EXPECT_EQ(b["trainable_params"].get<int64_t>() - a["trainable_params"].get<int64_t>(),
              a["method"] == "lora" ? L * 2 * r * C : L * 2 * r);
    EXPECT_GT(b["samples_per_s"].get<double>(), 0);
  }
  auto c = test::run_cli("bench compare " + (dir / "glm").string() + " " + (dir / "peer").string());
  ASSERT_EQ(c.rc, 0) << c.out;
  EXPECT_CONTAINS(c.out, "| lora bf16 | samples/s |");
  EXPECT_CONTAINS(c.out, "| vera bf16 | bwd ÷ fwd |");
  EXPECT_CONTAINS(c.out, "unmatched runs: A lora int8 QAT; A vera int8 QAT;");
  EXPECT_CONTAINS(c.out, "B skipped lora int8 QAT");
  // An inference summary is not a training one.
  write_file_atomic((dir / "infer.json").string(), R"({"schema": "glmlab-bench-infer/1", "runs": []})");
  auto bad = test::run_cli("bench compare " + (dir / "glm").string() + " " + (dir / "infer.json").string());
  EXPECT_NE(bad.rc, 0);
  EXPECT_CONTAINS(bad.out, "cannot compare a training benchmark summary with an inference one");
}

// ------------------------------------------------------------------------------------ units

TEST(BenchTrain, PackedBatchesCountEverySample) {
  Tokenizer tok = Tokenizer::byte_fallback();
  auto samples = lab::make_samples(tok, lab::embedded_sample(5), lab::SampleLimits{});
  lab::BatchStream packed(samples, 3, true, 2000, 7), padded(samples, 3, false, 0, 7);
  TrainBatch pb = packed.batch(0), db = padded.batch(0);
  std::vector<int64_t> want;
  for (int k = 0; k < 3; ++k) want.push_back(int64_t(samples[size_t(packed.sample_index(k))].ids.size()));
  auto lp = lab::sample_lengths(pb), ld = lab::sample_lengths(db);
  std::sort(lp.begin(), lp.end());
  std::sort(ld.begin(), ld.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(lp, want);
  EXPECT_EQ(ld, want);
  // So packing does not change the useful FLOPs of the same samples.
  ModelConfig c = ModelConfig::preset("tiny");
  AdapterConfig ac = AdapterConfig::lora_defaults();
  Adapter a = Adapter::create(c, ac);
  auto fp = lab::train_step_flops(c, a, pb), fd = lab::train_step_flops(c, a, db);
  EXPECT_DOUBLE_EQ(fp.forward, fd.forward);
  EXPECT_DOUBLE_EQ(fp.backward, fd.backward);
  EXPECT_GT(fp.backward, fp.forward);
  // Adapting only the top layer: no backward through the layers below it.
  ac.targets = {"dense"};
  Adapter a2 = Adapter::create(c, ac);
  EXPECT_LT(lab::train_step_flops(c, a2, db).backward, fd.backward);
}

// padded_tokens(i) (what sizes the device trainer, from the samples' lengths) is B·T of batch(i), padded
// and packed (rows of first fit: 1 to B of them), over several epochs' shuffles.
TEST(BenchTrain, PaddedTokensAreTheBatchesSize) {
  Tokenizer tok = Tokenizer::byte_fallback();
  auto samples = lab::make_samples(tok, lab::embedded_sample(9), lab::SampleLimits{});
  std::set<int> packed_rows;
  for (bool pack : {false, true})
    for (int pack_len : {0, 1100, 2600}) {
      lab::BatchStream st(samples, 4, pack, pack_len, 11);
      for (int64_t i = 0; i < 12; ++i) {
        const TrainBatch b = st.batch(i);
        EXPECT_EQ(st.padded_tokens(i), int64_t(b.in.B) * b.in.T) << "pack " << pack << " length " << pack_len << " batch " << i;
        if (pack) packed_rows.insert(b.in.B);
      }
    }
  EXPECT_GT(packed_rows.size(), 1u);  // both several rows and a single one occur
}

TEST(BenchTrain, PlanDeduplicatesBasesAndRejectsBadOptions) {
  lab::BenchTrainOptions o;
  auto plan = lab::plan_train_runs(o);
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_EQ(plan[0].method, "lora");
  EXPECT_EQ(plan[2].qat, "int8");
  o.dtypes = {"int8", "bf16"};
  o.qats = {"none", "int8"};
  o.methods = {"vera"};
  plan = lab::plan_train_runs(o);  // int8 reached twice: once
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].dtype, "int8");
  EXPECT_EQ(plan[0].qat, "int8");
  EXPECT_EQ(plan[1].dtype, "bf16");

  auto err = [](auto change) {
    lab::BenchTrainOptions b;
    change(b);
    return test::error_of([&] { lab::plan_train_runs(b); });
  };
  EXPECT_CONTAINS(err([](auto& b) { b.methods = {"lora", "dora"}; }), "unknown --method \"dora\" (expected lora or vera)");
  EXPECT_CONTAINS(err([](auto& b) { b.qats = {"int3"}; }), "unknown --qat \"int3\" (expected none, int8 or int4)");
  EXPECT_CONTAINS(err([](auto& b) { b.steps = 0; }), "--steps must be at least 1, got 0");
  EXPECT_CONTAINS(err([](auto& b) { b.warmup_steps = -1; }), "--warmup-steps must be at least 0");
  EXPECT_CONTAINS(err([](auto& b) { b.train.batch_size = 0; }), "--batch-size must be at least 1");
  EXPECT_CONTAINS(err([](auto& b) { b.dtypes = {"fp8"}; }), "--dtype \"fp8\" is not a weight dtype");
  EXPECT_CONTAINS(err([](auto& b) { b.methods.clear(); }), "--method needs at least one");
}

TEST(BenchTrain, CliRejectsBadOptionsBeforeLoading) {
  struct Case {
    const char* args;
    const char* message;
  } cases[] = {{"--method lora,dora", "unknown --method \"dora\""},
               {"--qat int2", "unknown --qat \"int2\""},
               {"--steps 0", "--steps must be at least 1"},
               {"--batch-size 0", "--batch-size must be at least 1"},
               {"--rank 0", "rank"},
               {"--adapter /nonexistent", "--adapter is for inference"},
               {"--data /nonexistent/tiny.json", "/nonexistent/tiny.json"}};
  for (const auto& c : cases) {
    auto r = test::run_cli(std::string("bench train --probe off --no-progress --out ") +
                           test::temp_dir("bench-train-bad").string() + " " + c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_CONTAINS(r.out, c.message);
  }
}

}  // namespace
}  // namespace glmlab

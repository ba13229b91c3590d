// Fine-tuning against the oracle (tools/reference/train_golden.py: PyTorch autograd + PEFT on the
// tiny-f32 checkpoint): loss, logits and every adapter gradient for LoRA and VeRA on all four linears,
// with padding and with packing, on both back ends; adapters moving between PEFT and glmlab both ways;
// bad adapter files.
//
// Tolerances (fp32 throughout; observed values in docs/FINETUNE.md): loss relative 1e-5; logits
// atol 5e-5 (as the forward golden tests); gradients normalized max error (max|Δ| / max|oracle|) 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "model/backward.h"
#include "model/loader.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "test_numeric.h"
#include "test_util.h"
#include "train_test_data.h"
#include "util/error.h"

namespace glmlab {
namespace {

using test::train_golden_path;

using test::copy_adapter;

using test::nerr;

using test::golden_path;
namespace fs = std::filesystem;

constexpr double kLossRtol = 1e-5, kLogitsAtol = 5e-5, kGradTol = 1e-4;



TrainBatch golden_batch(const SafetensorsFile& g, const std::string& kind) { return test::golden_train_batch(g, kind); }

struct FinetuneCase {
  const char* method;
  const char* kind;
  Backend backend;
};

class FinetuneOracle : public ::testing::TestWithParam<FinetuneCase> {};

TEST_P(FinetuneOracle, LossLogitsAndEveryAdapterGradientMatch) {
  const FinetuneCase c = GetParam();
  SafetensorsFile g(train_golden_path(std::string(c.method) + "/golden.safetensors"));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter adapter = load_adapter(train_golden_path(c.method), model.config());  // PEFT's own save_pretrained
  model.set_adapter(&adapter);
  auto ops = make_ops(c.backend, false);
  TrainBatch batch = golden_batch(g, c.kind);

  // Logits with the adapter, at real positions.
  KVCache cache(model.config(), batch.in.B, batch.in.T);
  std::vector<float> logits;
  model.forward(*ops, batch.in, cache, Logits::All, logits);
  auto want_logits = test::golden_floats(g, std::string(c.kind) + ".logits");
  const int64_t V = model.config().vocab_size;
  double worst = 0;
  for (size_t n = 0; n < batch.in.valid.size(); ++n)
    if (batch.in.valid[n])
      for (int64_t v = 0; v < V; ++v)
        worst = std::max(worst, double(std::fabs(logits[n * V + v] - want_logits[n * V + v])));
  EXPECT_LT(worst, kLogitsAtol) << "logits";

  // Loss and gradients.
  adapter.zero_grad();
  LossResult r = loss_and_backward(*ops, model, adapter, batch, 1.0 / double(batch.label_count()));
  const double want_loss = test::golden_floats(g, std::string(c.kind) + ".loss")[0];
  EXPECT_NEAR(r.mean(), want_loss, kLossRtol * want_loss);
  std::set<std::string> oracle_grads;
  const std::string prefix = std::string(c.kind) + ".grad.";
  for (auto& [name, info] : g.tensors())
    if (name.rfind(prefix, 0) == 0) oracle_grads.insert(name.substr(prefix.size()));
  std::set<std::string> ours;
  double worst_grad = 0;
  for (auto& p : adapter.params()) {
    if (!p.trainable) continue;
    ours.insert(p.name);
    double e = nerr(p.grad, test::golden_floats(g, prefix + p.name));
    worst_grad = std::max(worst_grad, e);
    EXPECT_LT(e, kGradTol) << p.name;
  }
  EXPECT_EQ(ours, oracle_grads);
  RecordProperty("max_grad_nerr", std::to_string(worst_grad));
  std::printf("[ %s %s %s ] loss %.7f (oracle %.7f), max logits |diff| %.2e, max grad nerr %.2e\n", c.method,
              c.kind, std::string(ops->name()).c_str(), r.mean(), want_loss, worst, worst_grad);
}

INSTANTIATE_TEST_SUITE_P(Finetune, FinetuneOracle,
                         ::testing::Values(FinetuneCase{"lora", "pad", Backend::Cpu}, FinetuneCase{"lora", "pack", Backend::Cpu},
                                           FinetuneCase{"vera", "pad", Backend::Cpu}, FinetuneCase{"vera", "pack", Backend::Cpu},
                                           FinetuneCase{"lora", "pad", Backend::CpuRef}, FinetuneCase{"vera", "pack", Backend::CpuRef}),
                         [](const auto& info) {
                           return std::string(info.param.method) + "_" + info.param.kind +
                                  (info.param.backend == Backend::Cpu ? "_cpu" : "_ref");
                         });

TEST(FinetuneBatch, PackedAndPaddedGiveTheSameLossAndGradients) {
  SafetensorsFile g(train_golden_path("lora/golden.safetensors"));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter a = load_adapter(train_golden_path("lora"), model.config());
  model.set_adapter(&a);
  auto ops = make_ops(Backend::Cpu, false);
  LossResult r[2];
  std::vector<std::vector<float>> grads[2];
  int i = 0;
  for (const char* kind : {"pad", "pack"}) {
    TrainBatch b = golden_batch(g, kind);
    a.zero_grad();
    r[i] = loss_and_backward(*ops, model, a, b, 1.0 / double(b.label_count()));
    for (auto& p : a.params()) grads[i].push_back(p.grad);
    ++i;
  }
  EXPECT_EQ(r[0].tokens, r[1].tokens);
  EXPECT_NEAR(r[0].mean(), r[1].mean(), 1e-5 * r[0].mean());
  for (size_t k = 0; k < grads[0].size(); ++k) EXPECT_LT(nerr(grads[1][k], grads[0][k]), 1e-4);
  // Without the segment mask the packed row's second sample would see the first: the loss changes.
  TrainBatch b = golden_batch(g, "pack");
  b.in.segment.clear();
  EXPECT_GT(std::fabs(loss_only(*ops, model, b).mean() - r[1].mean()), 1e-3);
}

// A TrainWorkspace reused across micro-batches of other shapes (large, small, packed, large again), its
// buffers first filled with NaN beyond any batch's size, gives the bits of calls with their own buffers:
// nothing is read before this batch wrote it.
TEST(FinetuneBatch, AReusedWorkspaceGivesTheBitsOfFreshBuffers) {
  SafetensorsFile g(train_golden_path("lora/golden.safetensors"));
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter a = load_adapter(train_golden_path("lora"), model.config());
  model.set_adapter(&a);
  auto ops = make_ops(Backend::Cpu, false);
  const TrainBatch pad = golden_batch(g, "pad"), pack = golden_batch(g, "pack");
  TrainBatch one = pad;  // the padded batch's first row alone
  const size_t T = size_t(pad.in.T);
  one.in.B = 1;
  for (auto* v : {&one.in.ids, &one.in.pos, &one.labels}) v->resize(T);
  one.in.valid.resize(T);
  if (!one.in.segment.empty()) one.in.segment.resize(T);
  ASSERT_GT(pad.in.B, 1);

  TrainWorkspace ws;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (auto* v : {&ws.dx, &ws.dh, &ws.xl, &ws.inv, &ws.act, &ws.dact, &ws.du, &ws.dxl, &ws.dctx, &ws.dqkv, &ws.dk, &ws.dv,
                  &ws.tape.final_x, &ws.tape.final_inv_rms})
    v->assign(size_t(1) << 16, nan);
  ws.tape.layers.resize(size_t(model.config().num_layers));
  for (auto& l : ws.tape.layers)
    for (auto* v : {&l.x, &l.inv_rms1, &l.qkv, &l.ctx, &l.lse, &l.h, &l.inv_rms2, &l.u}) v->assign(size_t(1) << 16, nan);

  for (const TrainBatch* b : std::vector<const TrainBatch*>{&pad, &one, &pack, &pad}) {
    const double scale = 1.0 / double(b->label_count());
    a.zero_grad();
    const LossResult want = loss_and_backward(*ops, model, a, *b, scale);
    std::vector<std::vector<float>> want_grads;
    for (auto& p : a.params()) want_grads.push_back(p.grad);
    a.zero_grad();
    const LossResult got = loss_and_backward(*ops, model, a, *b, scale, nullptr, {}, &ws);
    EXPECT_EQ(got.loss_sum, want.loss_sum) << "B " << b->in.B << " T " << b->in.T;
    for (size_t k = 0; k < want_grads.size(); ++k) EXPECT_EQ(a.params()[k].grad, want_grads[k]) << "parameter " << k;
  }
}

TEST(FinetuneBatch, GradientMatchesFiniteDifferencesWithDropout) {
  // Dropout on the adapter input: the backward must use the forward's mask. Central differences of the
  // loss (same dropout key) on the largest gradient entries of a LoRA adapter on every linear.
  Model model = load_model(train_golden_path("tiny-f32"));
  AdapterConfig cfg;
  cfg.rank = 4;
  cfg.alpha = 8;
  cfg.dropout = 0.3f;
  cfg.targets = {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"};
  cfg.seed = 3;
  Adapter a = Adapter::create(model.config(), cfg);
  for (auto& p : a.params())  // B = 0 would leave dA = 0
    if (p.name.find("lora_B") != std::string::npos)
      for (size_t i = 0; i < p.value.size(); ++i) p.value[i] = 0.2f * std::sin(float(i) * 0.7f + 1.0f);
  a.set_training(true);
  a.set_dropout_key(12345);
  model.set_adapter(&a);
  SafetensorsFile g(train_golden_path("lora/golden.safetensors"));
  TrainBatch b = golden_batch(g, "pad");
  auto ops = make_ops(Backend::CpuRef);
  a.zero_grad();
  const LossResult base = loss_and_backward(*ops, model, a, b, 1.0);  // gradient of the loss sum
  a.set_dropout_key(999);
  EXPECT_GT(std::fabs(loss_only(*ops, model, b).loss_sum - base.loss_sum), 1e-4) << "dropout has no effect";
  a.set_dropout_key(12345);
  int checked = 0;
  for (auto& p : a.params()) {
    size_t k = 0;
    for (size_t i = 0; i < p.grad.size(); ++i)
      if (std::fabs(p.grad[i]) > std::fabs(p.grad[k])) k = i;
    const float h = 1e-2f, v0 = p.value[k];
    p.value[k] = v0 + h;
    const double lp = loss_only(*ops, model, b).loss_sum;
    p.value[k] = v0 - h;
    const double lm = loss_only(*ops, model, b).loss_sum;
    p.value[k] = v0;
    const double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(p.grad[k], fd, 2e-2 * std::fabs(fd) + 1e-3) << p.name << "[" << k << "]";
    ++checked;
  }
  EXPECT_EQ(checked, 2 * 4 * model.config().num_layers);
}

// ---------------------------------------------------------------- PEFT files

TEST(FinetunePeft, SaveThenLoadRoundTrips) {
  Model model = load_model(train_golden_path("tiny-f32"));
  for (const char* m : {"lora", "vera"}) {
    Adapter a = load_adapter(train_golden_path(m), model.config());
    auto dir = test::temp_dir(std::string("peft-roundtrip-") + m);
    save_adapter(dir.string(), a);
    Adapter b = load_adapter(dir.string(), model.config());
    ASSERT_EQ(a.params().size(), b.params().size());
    for (size_t i = 0; i < a.params().size(); ++i) {
      EXPECT_EQ(a.params()[i].name, b.params()[i].name);
      EXPECT_EQ(a.params()[i].value, b.params()[i].value);
    }
    EXPECT_EQ(b.config().rank, a.config().rank);
    EXPECT_EQ(b.config().targets, a.config().targets);
    EXPECT_EQ(b.config().scaling(), a.config().scaling());
  }
}

TEST(FinetunePeft, ParameterCountsAreThoseOfThePeftFile) {
  Model model = load_model(train_golden_path("tiny-f32"));
  const auto& c = model.config();
  Adapter lora = load_adapter(train_golden_path("lora"), c);
  // r·(in + out) summed over the four linears, per layer
  int64_t per_layer = 8 * ((64 + 128) + (64 + 64) + (64 + 192) + (96 + 64));
  EXPECT_EQ(lora.trainable_count(), per_layer * c.num_layers);
  Adapter vera = load_adapter(train_golden_path("vera"), c);
  EXPECT_EQ(vera.trainable_count(), (128 + 64 + 192 + 64 + 4 * 16) * c.num_layers);
  EXPECT_EQ(vera.params()[0].shape, (std::vector<int64_t>{16, 96}));   // vera_A [r, max_in]
  EXPECT_EQ(vera.params()[1].shape, (std::vector<int64_t>{192, 16}));  // vera_B [max_out, r]
}

// Runs the oracle's check_adapter.py: PEFT loads `adapter` and must reproduce `expect`'s logits.
int peft_check(const fs::path& adapter, const fs::path& expect, std::string& out) {
  std::string cmd = std::string(GLMLAB_PYTHON) + " " + GLMLAB_SOURCE_DIR + "/tools/reference/check_adapter.py --model " +
                    train_golden_path("tiny-f32") + " --adapter " + adapter.string() + " --expect " + expect.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(FinetunePeft, AdapterSavedByGlmlabLoadsIntoPeftWithTheSameLogits) {
  Model model = load_model(train_golden_path("tiny-f32"));
  SafetensorsFile g(train_golden_path("lora/golden.safetensors"));
  for (const char* m : {"lora", "vera"}) {
    // glmlab's own initialization (our RNG), with the zero-initialized parts made non-zero.
    AdapterConfig cfg = std::string(m) == "lora" ? AdapterConfig::lora_defaults() : AdapterConfig::vera_defaults();
    cfg.rank = std::string(m) == "lora" ? 4 : 8;
    cfg.targets = {"dense_4h_to_h", "query_key_value", "dense"};
    cfg.seed = 77;
    Adapter a = Adapter::create(model.config(), cfg);
    for (auto& p : a.params()) {
      if (p.name.find("lora_B") == std::string::npos && p.name.find("lambda_b") == std::string::npos) continue;
      for (size_t i = 0; i < p.value.size(); ++i) p.value[i] = 0.3f * std::cos(float(i) * 1.3f);
    }
    model.set_adapter(&a);
    TrainBatch b = golden_batch(g, "pad");
    auto ops = make_ops(Backend::Cpu, false);
    KVCache cache(model.config(), b.in.B, b.in.T);
    std::vector<float> logits;
    model.forward(*ops, b.in, cache, Logits::All, logits);
    auto dir = test::temp_dir(std::string("glmlab-to-peft-") + m);
    save_adapter((dir / "adapter").string(), a);
    std::vector<int64_t> ids(b.in.ids.begin(), b.in.ids.end()), pos(b.in.pos.begin(), b.in.pos.end()),
        mask(b.in.valid.begin(), b.in.valid.end());
    const std::vector<int64_t> shape = {b.in.B, b.in.T};
    write_safetensors((dir / "expect.safetensors").string(),
                      {{"input_ids", DType::I64, shape, ids.data(), ids.size() * 8},
                       {"position_ids", DType::I64, shape, pos.data(), pos.size() * 8},
                       {"attention_mask", DType::I64, shape, mask.data(), mask.size() * 8},
                       {"logits", DType::F32, {b.in.B, b.in.T, model.config().vocab_size}, logits.data(),
                        logits.size() * 4}});
    std::string out;
    EXPECT_EQ(peft_check(dir / "adapter", dir / "expect.safetensors", out), 0) << m << ": " << out;
    std::printf("[ %s ] %s", m, out.c_str());
    // The check would fail if the adapter were ignored: the base model's logits differ.
    model.set_adapter(nullptr);
    KVCache cache2(model.config(), b.in.B, b.in.T);
    std::vector<float> base;
    model.forward(*ops, b.in, cache2, Logits::All, base);
    EXPECT_GT(nerr(base, logits), 1e-2) << m;
  }
}

// ---------------------------------------------------------------- bad adapters

void edit_config(const fs::path& dir, const std::string& from, const std::string& to) {
  std::ifstream in(dir / "adapter_config.json");
  std::string s((std::istreambuf_iterator<char>(in)), {});
  auto at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
  std::ofstream(dir / "adapter_config.json") << s;
}

std::string adapter_load_error(const fs::path& dir, const ModelConfig& c) {
  try {
    load_adapter(dir.string(), c);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(FinetuneErrors, AdapterForOtherShapes) {
  ModelConfig c = load_model(train_golden_path("tiny-f32")).config();
  ModelConfig wider = c;
  wider.ffn_hidden_size = 128;
  EXPECT_NE(adapter_load_error(train_golden_path("lora"), wider).find("other shapes"), std::string::npos)
      << adapter_load_error(train_golden_path("lora"), wider);
  ModelConfig deeper = c;
  deeper.num_layers = 3;
  EXPECT_NE(adapter_load_error(train_golden_path("lora"), deeper).find("layers.2.self_attention.query_key_value.lora_A.weight is missing"),
            std::string::npos)
      << adapter_load_error(train_golden_path("lora"), deeper);
  ModelConfig shallower = c;
  shallower.num_layers = 1;
  EXPECT_NE(adapter_load_error(train_golden_path("vera"), shallower).find("unexpected tensor"), std::string::npos);
  // An adapter object made for one model refuses to run on another.
  Adapter a = load_adapter(train_golden_path("lora"), c);
  EXPECT_THROW(a.check_fits(wider), Error);
}

TEST(FinetuneErrors, UnknownTargetRankZeroAndUnsupportedFeatures) {
  ModelConfig c = load_model(train_golden_path("tiny-f32")).config();
  auto d = copy_adapter("lora", "bad-target");
  edit_config(d, "\"dense_4h_to_h\"", "\"q_proj\"");
  EXPECT_NE(adapter_load_error(d, c).find("unknown target module \"q_proj\""), std::string::npos) << adapter_load_error(d, c);
  d = copy_adapter("lora", "bad-rank");
  edit_config(d, "\"r\": 8", "\"r\": 0");
  EXPECT_NE(adapter_load_error(d, c).find("rank r must be positive"), std::string::npos) << adapter_load_error(d, c);
  d = copy_adapter("lora", "bad-dora");
  edit_config(d, "\"use_dora\": false", "\"use_dora\": true");
  EXPECT_NE(adapter_load_error(d, c).find("DoRA"), std::string::npos) << adapter_load_error(d, c);
  d = copy_adapter("vera", "bad-projection");
  edit_config(d, "\"save_projection\": true", "\"save_projection\": false");
  EXPECT_NE(adapter_load_error(d, c).find("save_projection"), std::string::npos) << adapter_load_error(d, c);
  d = copy_adapter("lora", "bad-type");
  edit_config(d, "\"LORA\"", "\"IA3\"");
  EXPECT_NE(adapter_load_error(d, c).find("IA3"), std::string::npos) << adapter_load_error(d, c);

  AdapterConfig cfg;
  cfg.rank = 0;
  EXPECT_THROW(Adapter::create(c, cfg), Error);
  cfg.rank = 4;
  cfg.targets = {"dense", "mlp"};
  EXPECT_THROW(Adapter::create(c, cfg), Error);
  cfg.targets = {"dense", "dense"};
  EXPECT_THROW(Adapter::create(c, cfg), Error);
}

}  // namespace
}  // namespace glmlab

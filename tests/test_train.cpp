// Optimizer and training loop: ten AdamW steps (warm-up, linear decay, clipping, weight decay) give the
// oracle's losses and parameters (tools/reference/train_golden.py, torch.optim.AdamW + LambdaLR); a
// resumed run equals an uninterrupted one; packing, accumulation, NaN stop, sample limits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "lab/train/train_loop.h"
#include "model/backward.h"
#include "model/loader.h"
#include "model/optimizer.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "test_util.h"
#include "train_test_data.h"
#include "util/error.h"

namespace glmlab {
namespace {

using test::train_golden_path;



TrainBatch pad_batch(const SafetensorsFile& g) { return test::golden_train_batch(g, "pad"); }

TEST(FinetuneTrain, LinearScheduleWithWarmup) {
  EXPECT_EQ(linear_schedule(0, 2, 10), 0.0);
  EXPECT_EQ(linear_schedule(1, 2, 10), 0.5);
  EXPECT_EQ(linear_schedule(2, 2, 10), 1.0);
  EXPECT_EQ(linear_schedule(6, 2, 10), 0.5);
  EXPECT_EQ(linear_schedule(10, 2, 10), 0.0);
  EXPECT_EQ(linear_schedule(0, 0, 4), 1.0);
}

// The oracle's ADAMW settings (train_golden.py).
constexpr double kLr = 1e-2, kWd = 0.01, kClip = 1.0;
constexpr int kWarmup = 2, kSteps = 10;

TEST(FinetuneTrain, TenAdamWStepsGiveTheOraclesLosses) {
  for (const char* m : {"lora", "vera"}) {
    SafetensorsFile g(train_golden_path(std::string(m) + "/golden.safetensors"));
    Model model = load_model(train_golden_path("tiny-f32"));
    Adapter a = load_adapter(train_golden_path(m), model.config());
    model.set_adapter(&a);
    auto ops = make_ops(Backend::Cpu, false);
    TrainBatch b = pad_batch(g);
    AdamWConfig oc;
    oc.lr = kLr;
    oc.weight_decay = kWd;
    AdamW opt(a, oc);
    auto want = test::golden_floats(g, "adamw.losses");
    ASSERT_EQ(want.size(), size_t(kSteps));
    double worst = 0;
    for (int s = 0; s < kSteps; ++s) {
      a.zero_grad();
      LossResult r = loss_and_backward(*ops, model, a, b, 1.0 / double(b.label_count()));
      clip_grad_norm(a, kClip);
      opt.step(a, kLr * linear_schedule(s, kWarmup, kSteps));
      const double rel = std::fabs(r.mean() - want[size_t(s)]) / want[size_t(s)];
      worst = std::max(worst, rel);
      EXPECT_LT(rel, 1e-4) << m << " step " << s << ": " << r.mean() << " vs " << want[size_t(s)];
    }
    double worst_p = 0;
    for (auto& p : a.params()) {
      if (!p.trainable) continue;
      auto w = test::golden_floats(g, "adamw.final." + p.name);
      double mx = 0, ref = 1e-30;
      for (size_t i = 0; i < w.size(); ++i) {
        mx = std::max(mx, double(std::fabs(p.value[i] - w[i])));
        ref = std::max(ref, double(std::fabs(w[i])));
      }
      worst_p = std::max(worst_p, mx / ref);
    }
    EXPECT_LT(worst_p, 1e-4) << m;
    std::printf("[ %s ] 10 AdamW steps: max rel loss diff %.2e, final params nerr %.2e\n", m, worst, worst_p);
  }
}

}  // namespace
}  // namespace glmlab

// ---------------------------------------------------------------- the training loop

namespace glmlab::train_loop_tests {

using test::synthetic_samples;

struct RunResult {
  lab::TrainReport rep;
  std::vector<std::vector<float>> params;
};

RunResult run(lab::TrainOptions o, const std::vector<lab::TrainSample>& samples) {
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter a = Adapter::create(model.config(), o.adapter);
  model.set_adapter(&a);
  auto ops = make_ops(Backend::Cpu, false);
  RunResult r;
  r.rep = lab::train(*ops, model, a, samples, o);
  for (auto& p : a.params()) r.params.push_back(p.value);
  return r;
}

lab::TrainOptions options(AdapterMethod m) { return test::train_options(m); }

TEST(FinetuneTrain, ResumedRunEqualsUninterruptedStepForStep) {
  auto samples = synthetic_samples(10, 1);  // 6 steps × 2 × 3 samples: crosses an epoch boundary
  for (AdapterMethod m : {AdapterMethod::Lora, AdapterMethod::Vera})
    for (bool pack : {false, true}) {
      auto o = options(m);
      o.pack = pack;
      o.out = test::temp_dir("resume-a").string();
      RunResult whole = run(o, samples);
      ASSERT_EQ(whole.rep.losses.size(), 6u);
      o.out = test::temp_dir("resume-b").string();
      o.stop_after = 2;
      RunResult first = run(o, samples);
      EXPECT_EQ(first.rep.steps_done, 2);
      o.stop_after = -1;
      o.resume = true;
      RunResult rest = run(o, samples);
      EXPECT_EQ(rest.rep.first_step, 2);
      EXPECT_EQ(rest.rep.losses, whole.rep.losses) << method_name(m) << (pack ? " packed" : " padded");
      EXPECT_EQ(rest.params, whole.params) << "adapters differ";
      // The saved PEFT adapter is the final one.
      Model model = load_model(train_golden_path("tiny-f32"));
      Adapter saved = load_adapter(o.out, model.config());
      for (size_t i = 0; i < saved.params().size(); ++i) EXPECT_EQ(saved.params()[i].value, whole.params[i]);
    }
}

TEST(FinetuneTrain, ResumeRefusesOtherOptions) {
  auto samples = synthetic_samples(6, 2);
  auto o = options(AdapterMethod::Lora);
  o.out = test::temp_dir("resume-other").string();
  o.stop_after = 1;
  run(o, samples);
  o.resume = true;
  o.adam.lr = 1e-3;
  EXPECT_THROW(run(o, samples), Error);
  o.adam.lr = options(AdapterMethod::Lora).adam.lr;
  auto other = samples;
  other[3].ids[5] ^= 1;  // same count, other data
  EXPECT_THROW(run(o, other), Error);
  EXPECT_NO_THROW(run(o, samples));
}

TEST(FinetuneTrain, PackedEqualsPaddedAndAccumulationEqualsABiggerBatch) {
  auto samples = synthetic_samples(12, 3);
  auto o = options(AdapterMethod::Lora);
  o.adapter.dropout = 0;
  RunResult padded = run(o, samples);
  o.pack = true;
  RunResult packed = run(o, samples);
  o.pack = false;
  o.batch_size = 6;  // same samples per step in one micro-batch
  o.grad_accum = 1;
  RunResult big = run(o, samples);
  for (size_t s = 0; s < padded.rep.losses.size(); ++s) {
    EXPECT_NEAR(packed.rep.losses[s], padded.rep.losses[s], 1e-5 * padded.rep.losses[s]) << s;
    EXPECT_NEAR(big.rep.losses[s], padded.rep.losses[s], 1e-5 * padded.rep.losses[s]) << s;
  }
}

TEST(FinetuneTrain, NonFiniteLossStopsAndKeepsTheLastGoodAdapter) {
  auto samples = synthetic_samples(8, 4);
  auto o = options(AdapterMethod::Lora);
  o.adapter.dropout = 0;
  o.warmup = 0;
  o.max_grad_norm = 0;
  o.steps = 8;
  o.grad_accum = 1;
  o.adam.lr = 1e-3;
  o.out = test::temp_dir("nan").string();
  RunResult good = run(o, samples);  // the same run with a sane learning rate never stops
  EXPECT_FALSE(good.rep.nan_stop);
  // Blow up after a few steps: a learning rate so large the adapter overflows.
  o.adam.lr = 1e36;
  o.warmup = 3;  // steps 1-3 at lr 0, 3.3e35, 6.7e35
  RunResult bad = run(o, samples);
  ASSERT_TRUE(bad.rep.nan_stop) << "losses: " << ::testing::PrintToString(bad.rep.losses);
  EXPECT_NE(bad.rep.message.find("stopping"), std::string::npos) << bad.rep.message;
  EXPECT_NE(bad.rep.message.find("last good adapter"), std::string::npos) << bad.rep.message;
  // What is saved has a finite loss and is the state before the update that broke it.
  Model model = load_model(train_golden_path("tiny-f32"));
  Adapter saved = load_adapter(o.out, model.config());
  model.set_adapter(&saved);
  auto ops = make_ops(Backend::Cpu, false);
  lab::BatchStream stream(samples, o.batch_size, false, 0, o.seed);
  const int64_t kept = int64_t(bad.rep.losses.size());  // steps whose loss is kept (the update count saved)
  double l = loss_only(*ops, model, stream.batch(kept)).mean();
  EXPECT_TRUE(std::isfinite(l));
  for (auto& p : saved.params())
    for (float v : p.value) ASSERT_TRUE(std::isfinite(v));
}

TEST(FinetuneTrain, SampleLongerThanTheLimitsIsAnError) {
  Tokenizer tok = Tokenizer::from_file(test::tokenizer_path());
  lab::Record r{"类型#裙*颜色#白色", std::string(300, 'a') + "很好看的裙子", "test.json", 7};
  lab::SampleLimits lim;
  lim.max_input = 16;
  lim.max_output = 32;
  try {
    lab::make_samples(tok, {r}, lim);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("test.json:7: the sample has"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--truncate"), std::string::npos) << e.what();
  }
  lim.truncate = true;
  auto s = lab::make_samples(tok, {r}, lim);
  EXPECT_EQ(s[0].ids.size(), size_t(16 + 32 + 1));
  // The loss mask: −100 on the input ([gMASK] sop <|user|> ...), labels on the output.
  EXPECT_EQ(s[0].labels[0], -100);
  EXPECT_EQ(s[0].labels.back(), s[0].ids.back());
}

}  // namespace glmlab::train_loop_tests

// Optimizer and training loop: ten AdamW steps (warm-up, linear decay, clipping, weight decay) give the
// oracle's losses and parameters (tools/reference/train_golden.py, torch.optim.AdamW + LambdaLR).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/backward.h"
#include "model/loader.h"
#include "model/optimizer.h"
#include "model/peft_io.h"
#include "model/safetensors.h"
#include "test_util.h"

namespace glmlab {
namespace {

std::string train_path(const std::string& rel) { return test::golden_path("train/" + rel); }

std::vector<float> floats(const SafetensorsFile& f, const std::string& name) {
  auto& t = f.tensors().at(name);
  std::vector<float> v(size_t(t.numel()));
  std::memcpy(v.data(), t.data, v.size() * 4);
  return v;
}
std::vector<int64_t> ints(const SafetensorsFile& f, const std::string& name, std::vector<int64_t>* shape = nullptr) {
  auto& t = f.tensors().at(name);
  if (shape) *shape = t.shape;
  std::vector<int64_t> v(size_t(t.numel()));
  std::memcpy(v.data(), t.data, v.size() * 8);
  return v;
}

TrainBatch pad_batch(const SafetensorsFile& g) {
  std::vector<int64_t> shape;
  auto ids = ints(g, "pad.input_ids", &shape);
  auto pos = ints(g, "pad.position_ids"), mask = ints(g, "pad.attention_mask"), labels = ints(g, "pad.labels");
  TrainBatch b;
  b.in.B = int(shape[0]);
  b.in.T = int(shape[1]);
  for (size_t i = 0; i < ids.size(); ++i) {
    b.in.ids.push_back(int32_t(ids[i]));
    b.in.pos.push_back(int32_t(pos[i]));
    b.in.valid.push_back(uint8_t(mask[i]));
    b.labels.push_back(int32_t(labels[i]));
  }
  return b;
}

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
    SafetensorsFile g(train_path(std::string(m) + "/golden.safetensors"));
    Model model = load_model(train_path("tiny-f32"));
    Adapter a = load_adapter(train_path(m), model.config());
    model.set_adapter(&a);
    auto ops = make_ops(Backend::Cpu, false);
    TrainBatch b = pad_batch(g);
    AdamWConfig oc;
    oc.lr = kLr;
    oc.weight_decay = kWd;
    AdamW opt(a, oc);
    auto want = floats(g, "adamw.losses");
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
      auto w = floats(g, "adamw.final." + p.name);
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

// glmlab merge: a checkpoint with the adapter folded in gives the logits of the base model running the
// adapter unmerged (fp32: to rounding; bf16: to the rounding of W + ΔW), for LoRA and VeRA.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "model/loader.h"
#include "model/merge.h"
#include "model/peft_io.h"
#include "test_util.h"
#include "train_test_data.h"
#include "util/error.h"

namespace glmlab {
namespace {

using test::train_golden_path;


std::vector<float> logits_of(const Model& m, const StepInput& in) {
  auto ops = make_ops(Backend::Cpu, false);
  KVCache cache(m.config(), in.B, in.T);
  std::vector<float> lg;
  m.forward(*ops, in, cache, Logits::All, lg);
  return lg;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

TEST(FinetuneMerge, MergedCheckpointEqualsTheUnmergedAdapter) {
  StepInput in = make_prefill({{5, 17, 300, 42, 7, 9, 11}, {8, 100, 2}});
  for (const char* m : {"lora", "vera"}) {
    auto out = test::temp_dir(std::string("merge-") + m);
    MergeReport r = merge_checkpoint(train_golden_path("tiny-f32"), train_golden_path(m), out.string());
    EXPECT_EQ(r.merged_matrices, 4 * 2);  // all four linears of both layers
    Model base = load_model(train_golden_path("tiny-f32"));
    Adapter a = load_adapter(train_golden_path(m), base.config());
    const auto plain = logits_of(base, in);
    base.set_adapter(&a);
    const auto unmerged = logits_of(base, in);
    const auto merged = logits_of(load_model(out.string()), in);
    EXPECT_LT(max_diff(merged, unmerged), 5e-5) << m;
    EXPECT_GT(max_diff(plain, unmerged), 0.1) << m << ": the adapter must matter for this test to mean anything";
    std::printf("[ %s ] merged vs unmerged max |diff| %.2e\n", m, max_diff(merged, unmerged));
  }
}

TEST(FinetuneMerge, Bf16CheckpointStaysBf16) {
  StepInput in = make_prefill({{5, 17, 300, 42, 7, 9, 11}});
  auto out = test::temp_dir("merge-bf16");
  MergeReport r = merge_checkpoint(test::golden_path("tiny-bf16"), train_golden_path("lora"), out.string());
  EXPECT_EQ(r.dtype, "bf16");
  Model base = load_model(test::golden_path("tiny-bf16"));
  Adapter a = load_adapter(train_golden_path("lora"), base.config());
  base.set_adapter(&a);
  const double d = max_diff(logits_of(load_model(out.string()), in), logits_of(base, in));
  EXPECT_LT(d, 0.1);  // bf16 rounding of W + ΔW (logits of magnitude ≈ 10)
}

TEST(FinetuneMerge, CliAndErrors) {
  auto out = test::temp_dir("merge-cli");
  auto r = test::run_cli("merge --model " + train_golden_path("tiny-f32") + " --adapter " + train_golden_path("vera") + " --out " +
                         out.string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("merged 8 fp32 matrices"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(out / "config.json"));
  r = test::run_cli("merge --model " + train_golden_path("tiny-f32") + " --adapter " + train_golden_path("lora") + " --out " +
                    train_golden_path("tiny-f32"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.out.find("is the model folder"), std::string::npos) << r.out;
  r = test::run_cli("merge --model " + test::golden_path("tiny-rope50-f32") + " --adapter " + train_golden_path("lora") +
                    " --out " + out.string());
  EXPECT_EQ(r.rc, 0) << "same shapes: allowed";
}

}  // namespace
}  // namespace glmlab

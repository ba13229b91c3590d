// glmlab train against hostile options and hostile training states (issue 14): every case ends in a
// clear error naming the option or the metadata field, never a crash, a wrapped number, a run that
// "succeeds" without training, or an adapter full of NaN.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/safetensors.h"
#include "test_util.h"

namespace glmlab {
namespace {

using test::run_cli;

std::string hardening_data() { return test::dev_json_head("train-hard-data", 6); }

// The test's options; `over` replaces the default learning rate or limits when it sets them.
std::string hardening_args(const std::string& data, const std::string& over = "") {
  std::string a = "train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " + data +
                  " --steps 4 -b 2 --truncate --threads 1 " + over;
  if (over.find("--lr") == std::string::npos) a += " --lr 1e-2";
  if (over.find("--max-input") == std::string::npos) a += " --max-input 48";
  if (over.find("--max-output") == std::string::npos) a += " --max-output 40";
  return a;
}

// Rewrites one metadata field of OUT/train_state.safetensors.
void set_state_metadata(const std::string& out, const std::string& key, const std::string& value) {
  const std::string path = out + "/train_state.safetensors";
  std::vector<std::vector<char>> keep;
  std::vector<TensorToWrite> t;
  std::map<std::string, std::string> md;
  {
    SafetensorsFile f(path);
    md = f.metadata();
    for (const auto& [name, info] : f.tensors()) {
      const size_t n = size_t(info.numel()) * 4;
      keep.emplace_back(reinterpret_cast<const char*>(info.data), reinterpret_cast<const char*>(info.data) + n);
    }
    size_t i = 0;
    for (const auto& [name, info] : f.tensors()) t.push_back({name, info.dtype, info.shape, keep[i++].data(), keep[i - 1].size()});
  }
  md[key] = value;
  write_safetensors(path, t, md);
}

TEST(TrainHardening, NonFiniteOrOutOfRangeOptionsAreRefusedBeforeTraining) {
  const std::string data = hardening_data();
  auto out = test::temp_dir("train-hard-opts");
  struct Case {
    std::string args, says;
  };
  const Case cases[] = {
      {"--lr nan", "--lr must be a finite number"},
      {"--lr inf", "--lr must be a finite number"},
      {"--lr -1", "--lr must be a finite number ≥ 0"},
      {"--weight-decay nan", "--weight-decay must be a finite number"},
      {"--max-grad-norm -1", "--max-grad-norm must be a finite number ≥ 0"},
      {"--max-grad-norm nan", "--max-grad-norm must be a finite number"},
      {"--save-every -2", "--save-every must be ≥ 0"},
      {"--stop-after -5", "--stop-after must be ≥ 0"},
      {"--max-input 2147483647", "--max-input must be an integer in [1, 1073741824], got 2147483647"},
      {"--max-output 2147483647", "--max-output must be an integer in [1, 1073741824], got 2147483647"},
      {"--max-input -1000", "--max-input must be an integer in [1, 1073741824], got -1000"},
      {"--grad-accum 2147483647", "--grad-accum: must be an integer in [1, 65536]"},  // hung in BatchStream
      {"--train-seed -1", "--train-seed: \"-1\" is not an integer >= 0"},             // was 2^64 - 1
      {"--warmup -3", "--warmup: must be an integer >= 0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    auto r = run_cli(hardening_args(data, c.args) + " --out " + (out / "x").string());
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_CONTAINS(r.out, c.says);
    EXPECT_EQ(r.out.find("adapter saved"), std::string::npos) << r.out;
    EXPECT_FALSE(std::filesystem::exists(out / "x" / "adapter_model.safetensors"));
  }
}

TEST(TrainHardening, HostileTrainingStatesAreRefused) {
  const std::string data = hardening_data();
  auto dir = test::temp_dir("train-hard-state");
  const std::string out = (dir / "run").string();
  auto r = run_cli(hardening_args(data) + " --out " + out + " --stop-after 2");
  ASSERT_EQ(r.rc, 0) << r.out;
  struct Case {
    std::string key, value, says;
  };
  const Case cases[] = {
      {"step", "-1", "metadata \"step\" is \"-1\", expected a whole number"},  // was a heap overflow
      {"step", "2abc", "metadata \"step\" is \"2abc\""},                       // was read as 2
      {"step", "99999999999999999999", "metadata \"step\""},                   // does not fit
      {"step", "7", "outside [0, --steps 4]"},                                 // was "adapter saved", no training
      {"step", "4", "already done all its 4 steps"},
      {"step", "3", "has 2 losses for 3 steps"},
      {"optimizer_steps", "-4", "metadata \"optimizer_steps\""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.key + "=" + c.value);
    std::filesystem::remove_all(dir / "copy");
    std::filesystem::copy(out, dir / "copy");
    set_state_metadata((dir / "copy").string(), c.key, c.value);
    r = run_cli(hardening_args(data) + " --out " + (dir / "copy").string() + " --resume");
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_CONTAINS(r.out, c.says);
    EXPECT_EQ(r.out.find("adapter saved"), std::string::npos) << r.out;
  }
  // The untouched state still resumes.
  r = run_cli(hardening_args(data) + " --out " + out + " --resume");
  EXPECT_EQ(r.rc, 0) << r.out;
}

TEST(TrainHardening, ResumeOnAnotherBaseIsRefused) {
  const std::string data = hardening_data();
  auto dir = test::temp_dir("train-hard-base");
  const std::string out = (dir / "run").string();
  auto r = run_cli(hardening_args(data) + " --out " + out + " --stop-after 1");
  ASSERT_EQ(r.rc, 0) << r.out;
  for (const std::string other : {"--dtype fp32", "--qat int8", "--seed 5", "--model random:small"}) {
    SCOPED_TRACE(other);
    std::string args = hardening_args(data) + " --out " + out + " --resume " + other;
    if (other.rfind("--model", 0) == 0) {
      args = "train " + other + " --tokenizer " + test::tokenizer_path() + " --data " + data +
             " --steps 4 -b 2 --lr 1e-2 --truncate --max-input 48 --max-output 40 --threads 1 --out " + out + " --resume";
    }
    r = run_cli(args);
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_CONTAINS(r.out, "other options than the saved run");
  }
  r = run_cli(hardening_args(data) + " --out " + out + " --resume");
  EXPECT_EQ(r.rc, 0) << r.out;
}

}  // namespace
}  // namespace glmlab

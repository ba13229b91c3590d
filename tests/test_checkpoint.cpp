// The output folder of `glmlab train` as one durable unit (lab/train/checkpoint.h, issue 14): a second
// train on a folder in use is refused; a save killed between its renames is repaired by --resume; the
// leftovers of a killed save are cleaned; and train killed with SIGKILL at arbitrary moments always
// leaves a folder that resumes to the very adapter of an uninterrupted run.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "lab/train/checkpoint.h"
#include "model/safetensors.h"
#include "test_util.h"

namespace glmlab {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

std::string checkpoint_data() { return test::dev_json_head("ckpt-data", 6); }

std::string args(const std::string& data, const std::string& out, int steps, const std::string& extra = "") {
  return "train --model random:tiny --tokenizer " + test::tokenizer_path() + " --data " + data + " --steps " +
         std::to_string(steps) + " -b 2 --lr 1e-2 --truncate --max-input 48 --max-output 40 --threads 1 --out " + out +
         " " + extra;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Checkpoint, SecondTrainOnAFolderInUseIsRefused) {
  const std::string data = checkpoint_data();
  auto out = test::temp_dir("ckpt-lock");
  {
    lab::OutLock held(out.string());  // as a running train holds it
    auto r = run_cli(args(data, out.string(), 2));
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_CONTAINS(r.out, "another glmlab train (pid " + std::to_string(::getpid()) + ") is writing to this folder");
    EXPECT_FALSE(fs::exists(out / "adapter_model.safetensors"));
  }
  auto r = run_cli(args(data, out.string(), 2));  // released: the folder is free again
  EXPECT_EQ(r.rc, 0) << r.out;
}

TEST(Checkpoint, ResumeRepairsAdapterFilesOfAnInterruptedSaveAndCleansLeftovers) {
  const std::string data = checkpoint_data();
  auto base = test::temp_dir("ckpt-repair");
  const fs::path full = base / "full", a = base / "a", newer = base / "newer";
  ASSERT_EQ(run_cli(args(data, full.string(), 4)).rc, 0);
  // A folder saved after step 2, then the adapter files of step 3 renamed in and the kill before the
  // state's rename: adapter one checkpoint newer than the state.
  ASSERT_EQ(run_cli(args(data, a.string(), 4, "--stop-after 2")).rc, 0);
  fs::copy(a, newer);
  ASSERT_EQ(run_cli(args(data, newer.string(), 4, "--stop-after 3 --resume")).rc, 0);
  for (const char* n : {"adapter_model.safetensors", "adapter_config.json"})
    fs::copy_file(newer / n, a / n, fs::copy_options::overwrite_existing);
  EXPECT_FALSE(lab::adapter_matches_state(a.string()));
  fs::create_directories(a / ".checkpoint-999999");  // leftovers of a killed save
  std::ofstream(a / ".checkpoint-999999" / "adapter_model.safetensors") << "partial";
  std::ofstream(a / "adapter_model.safetensors.tmp.Ab12Cd") << "partial";
  auto r = run_cli(args(data, a.string(), 4, "--resume"));
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "the adapter files were from an interrupted save; rewritten from the training state (step 2)");
  EXPECT_FALSE(fs::exists(a / ".checkpoint-999999"));
  EXPECT_FALSE(fs::exists(a / "adapter_model.safetensors.tmp.Ab12Cd"));
  EXPECT_TRUE(lab::adapter_matches_state(a.string()));
  EXPECT_EQ(bytes_of(a / "adapter_model.safetensors"), bytes_of(full / "adapter_model.safetensors"));
}

// SIGKILL at arbitrary moments of a run that saves every step: after each kill the folder is either
// empty of a state or resumable, and the resumed runs end on the uninterrupted run's adapter, byte for
// byte.
TEST(Checkpoint, KilledAnywhereTheFolderResumesToTheUninterruptedAdapter) {
  const std::string data = checkpoint_data();
  auto base = test::temp_dir("ckpt-kill");
  const fs::path full = base / "full", k = base / "k";
  const int steps = 40;
  ASSERT_EQ(run_cli(args(data, full.string(), steps, "--save-every 1")).rc, 0);
  int kills = 0;
  for (int round = 0; round < 12; ++round) {
    const bool resume = fs::exists(k / "train_state.safetensors");
    const std::string cmd = std::string(GLMLAB_CLI) + " " + args(data, k.string(), steps, "--save-every 1") +
                            (resume ? " --resume" : "");
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
      _exit(127);
    }
    // Kill at a different moment each round (loading, the first steps, in the middle of saves).
    std::this_thread::sleep_for(std::chrono::milliseconds(60 + 47 * round));
    const bool killed = kill(pid, SIGKILL) == 0;
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) break;  // it finished before the kill
    kills += killed && WIFSIGNALED(st);
    if (fs::exists(k / "train_state.safetensors")) {
      // What a kill leaves is complete: the state reads (the run fails loudly otherwise).
      EXPECT_NO_THROW(SafetensorsFile((k / "train_state.safetensors").string())) << "round " << round;
    }
  }
  EXPECT_GE(kills, 1);
  auto r = run_cli(args(data, k.string(), steps, "--save-every 1") +
                   (fs::exists(k / "train_state.safetensors") ? " --resume" : ""));
  if (r.rc != 0) EXPECT_CONTAINS(r.out, "already done all its 40 steps");  // the last round finished it
  EXPECT_EQ(bytes_of(k / "adapter_model.safetensors"), bytes_of(full / "adapter_model.safetensors"));
  EXPECT_EQ(bytes_of(k / "adapter_config.json"), bytes_of(full / "adapter_config.json"));
  for (const auto& e : fs::directory_iterator(k)) {
    const std::string n = e.path().filename().string();
    EXPECT_TRUE(n.rfind(".checkpoint-", 0) != 0 && n.find(".tmp.") == std::string::npos) << "left over: " << n;
  }
}

}  // namespace
}  // namespace glmlab

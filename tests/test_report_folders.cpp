// Report folders are published whole (issue 14): publish_folder (util/file.h) leaves a folder either as
// it was or complete, refuses a folder holding anything it did not write, replaces a previous report
// completely and removes the temporary siblings of dead processes; bench infer and bench train use it.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

namespace fs = std::filesystem;

// name -> contents of every entry of a folder ("<dir>" for a sub-folder).
std::map<std::string, std::string> folder_contents(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    out[e.path().filename().string()] = e.is_directory() ? "<dir>" : read_file(e.path().string());
  return out;
}

// The names whose contents differ between two folder_contents(), "" when none (a short message, not
// a dump of PNGs).
std::string changed_names(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  std::string out;
  for (const auto& [name, text] : a)
    if (!b.count(name) || b.at(name) != text) out += name + " ";
  for (const auto& [name, text] : b)
    if (!a.count(name)) out += name + " ";
  return out;
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

void make_folder(const fs::path& dir, const std::map<std::string, std::string>& files) {
  fs::create_directories(dir);
  for (const auto& [name, text] : files) write_file_atomic((dir / name).string(), text);
}

// A pid that no live process has: a child that has exited and been reaped.
pid_t dead_pid() {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

const std::vector<std::string> kOwned = {"a.txt", "b.txt", "c.txt"};

// ------------------------------------------------------------------------------------ the helper

TEST(PublishFolder, NewFolderAppearsWholeWithNoSiblingLeft) {
  fs::path root = test::temp_dir("publish-new");
  fs::path dir = root / "sub" / "report";
  publish_folder(dir.string(), kOwned, [&](const std::string& tmp) {
    EXPECT_FALSE(fs::exists(dir)) << "the folder appeared before it was complete";
    EXPECT_EQ(fs::path(tmp).parent_path(), dir.parent_path());  // a sibling: same file system
    write_file_atomic(tmp + "/a.txt", "A");
    write_file_atomic(tmp + "/b.txt", "B");
  });
  EXPECT_EQ(folder_contents(dir), (std::map<std::string, std::string>{{"a.txt", "A"}, {"b.txt", "B"}}));
  EXPECT_EQ(names_in(root / "sub"), std::vector<std::string>{"report"});
  // A trailing slash names the same folder.
  publish_folder(dir.string() + "/", kOwned, [&](const std::string& tmp) { write_file_atomic(tmp + "/c.txt", "C"); });
  EXPECT_EQ(names_in(dir), std::vector<std::string>{"c.txt"});
  EXPECT_EQ(names_in(root / "sub"), std::vector<std::string>{"report"});
}

TEST(PublishFolder, WriterThatThrowsMidwayLeavesTheOldFolderAndNoTemporaryFolder) {
  fs::path root = test::temp_dir("publish-throw");
  fs::path dir = root / "report";
  make_folder(dir, {{"a.txt", "old A"}, {"b.txt", "old B"}});
  auto before = folder_contents(dir);
  std::string msg = test::error_of([&] {
    publish_folder(dir.string(), kOwned, [&](const std::string& tmp) {
      write_file_atomic(tmp + "/a.txt", "new A");
      fail("disk full while writing b.txt");
    });
  });
  EXPECT_EQ(msg, "disk full while writing b.txt");
  EXPECT_EQ(folder_contents(dir), before);
  EXPECT_EQ(names_in(root), std::vector<std::string>{"report"});
  // The same when there was no folder: none afterwards either.
  fs::path fresh = root / "fresh";
  EXPECT_THROW(publish_folder(fresh.string(), kOwned, [](const std::string&) { fail("no"); }), Error);
  EXPECT_EQ(names_in(root), std::vector<std::string>{"report"});
}

TEST(PublishFolder, FolderWithAForeignFileIsRefusedAndTheFileKept) {
  fs::path root = test::temp_dir("publish-foreign");
  fs::path dir = root / "report";
  make_folder(dir, {{"a.txt", "old A"}, {"notes.md", "mine"}, {"zz.txt", "mine too"}});
  bool filled = false;
  std::string msg = test::error_of([&] {
    publish_folder(dir.string(), kOwned, [&](const std::string& tmp) {
      filled = true;
      write_file_atomic(tmp + "/a.txt", "new A");
    });
  });
  EXPECT_CONTAINS(msg, dir.string());
  EXPECT_CONTAINS(msg, "notes.md");  // the first foreign entry in name order
  EXPECT_FALSE(filled) << "refused only after the work";
  EXPECT_EQ(folder_contents(dir),
            (std::map<std::string, std::string>{{"a.txt", "old A"}, {"notes.md", "mine"}, {"zz.txt", "mine too"}}));
  EXPECT_EQ(names_in(root), std::vector<std::string>{"report"});
  EXPECT_CONTAINS(test::error_of([&] { check_folder_publishable(dir.string(), kOwned); }), "notes.md");

  // A sub-folder, even one with an owned name, is foreign; so is a file where the folder should be.
  fs::path dir2 = root / "report2";
  fs::create_directories(dir2 / "b.txt");
  EXPECT_CONTAINS(test::error_of([&] { publish_folder(dir2.string(), kOwned, [](const std::string&) {}); }),
                  "b.txt");
  EXPECT_TRUE(fs::is_directory(dir2 / "b.txt"));
  write_file_atomic((root / "file").string(), "x");
  EXPECT_CONTAINS(test::error_of([&] { publish_folder((root / "file").string(), kOwned, [](const std::string&) {}); }),
                  "is not a folder");
  EXPECT_EQ(read_file((root / "file").string()), "x");
}

// Each test of the swap runs twice: with renameat2(RENAME_EXCHANGE), and with the two renames a file
// system without it gets.
struct WithoutExchange {
  explicit WithoutExchange(bool on) { detail::publish_without_exchange = on; }
  ~WithoutExchange() { detail::publish_without_exchange = false; }
};

class PublishSwap : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(PublishFolder, PublishSwap, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "TwoRenames" : "Exchange"; });

TEST_P(PublishSwap, RerunReplacesThePreviousReportCompletely) {
  WithoutExchange mode(GetParam());
  // One folder per parameter: ctest -j runs the two instances at once, in two processes.
  fs::path root = test::temp_dir(std::string("publish-replace-") + (GetParam() ? "renames" : "exchange"));
  fs::path dir = root / "report";
  // The previous report had c.txt and a temporary file a crashed atomic write left; the new one has neither.
  make_folder(dir, {{"a.txt", "old A"}, {"b.txt", "old B"}, {"c.txt", "old C"}, {"a.txt.tmp.Xy12Zq", "half"}});
  publish_folder(dir.string(), kOwned, [&](const std::string& tmp) {
    EXPECT_EQ(folder_contents(dir).at("a.txt"), "old A") << "the old report is kept while the new one is written";
    write_file_atomic(tmp + "/a.txt", "new A");
    write_file_atomic(tmp + "/b.txt", "new B");
  });
  EXPECT_EQ(folder_contents(dir), (std::map<std::string, std::string>{{"a.txt", "new A"}, {"b.txt", "new B"}}));
  EXPECT_EQ(names_in(root), std::vector<std::string>{"report"});
  // An empty folder is replaced too.
  fs::path empty = root / "empty";
  fs::create_directories(empty);
  publish_folder(empty.string(), kOwned, [&](const std::string& tmp) { write_file_atomic(tmp + "/a.txt", "A"); });
  EXPECT_EQ(names_in(empty), std::vector<std::string>{"a.txt"});
}

TEST_P(PublishSwap, AForeignFileAddedWhileFillingIsKeptAndTheSwapUndone) {
  WithoutExchange mode(GetParam());
  fs::path root = test::temp_dir(std::string("publish-late-foreign-") + (GetParam() ? "renames" : "exchange"));
  fs::path dir = root / "report";
  make_folder(dir, {{"a.txt", "old A"}});
  std::string msg = test::error_of([&] {
    publish_folder(dir.string(), kOwned, [&](const std::string& tmp) {
      write_file_atomic(tmp + "/a.txt", "new A");
      write_file_atomic((dir / "notes.md").string(), "written by a user during the run");
    });
  });
  EXPECT_CONTAINS(msg, "refusing to replace the folder " + dir.string());
  EXPECT_CONTAINS(msg, "notes.md");
  EXPECT_EQ(changed_names(folder_contents(dir), {{"a.txt", "old A"}, {"notes.md", "written by a user during the run"}}),
            "");
  EXPECT_EQ(names_in(root), std::vector<std::string>{"report"});
}

TEST(PublishFolder, StaleSiblingsOfDeadProcessesAreRemovedOthersKept) {
  fs::path root = test::temp_dir("publish-stale");
  fs::path dir = root / "report";
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(::getppid());
  make_folder(root / ("report.partial-" + dead), {{"a.txt", "half"}});
  make_folder(root / ("report.old-" + dead), {{"a.txt", "old"}});
  make_folder(root / ("report.partial-" + live), {{"a.txt", "another process is writing"}});
  make_folder(root / "report.partial-notapid", {{"x", "user"}});
  make_folder(root / ("report.old-" + std::to_string(dead_pid())), {{"notes.md", "a user's, after a failed undo"}});
  make_folder(root / ("other.partial-" + dead), {{"x", "another folder's"}});
  publish_folder(dir.string(), kOwned, [&](const std::string& tmp) { write_file_atomic(tmp + "/a.txt", "A"); });
  auto left = names_in(root);
  ASSERT_EQ(left.size(), 5u);
  EXPECT_EQ(left[0], "other.partial-" + dead);
  EXPECT_EQ(left[1], "report");
  EXPECT_EQ(left[2].rfind("report.old-", 0), 0u) << left[2];  // the one with a foreign file
  EXPECT_EQ(left[3], "report.partial-" + live);
  EXPECT_EQ(left[4], "report.partial-notapid");
  EXPECT_EQ(folder_contents(dir), (std::map<std::string, std::string>{{"a.txt", "A"}}));
}

TEST(PublishFolder, SymlinkToAFolderIsFollowedAndKept) {
  fs::path root = test::temp_dir("publish-symlink");
  make_folder(root / "real", {{"a.txt", "old"}});
  fs::create_directory_symlink("real", root / "link");
  publish_folder((root / "link").string(), kOwned, [&](const std::string& tmp) { write_file_atomic(tmp + "/b.txt", "B"); });
  EXPECT_TRUE(fs::is_symlink(root / "link"));
  EXPECT_EQ(names_in(root / "real"), std::vector<std::string>{"b.txt"});
  EXPECT_EQ(names_in(root), (std::vector<std::string>{"link", "real"}));
}

// ------------------------------------------------------------------------------------ the writers

// Runs `ENV glmlab ARGS` through the shell, capturing stdout and stderr through a pipe; with
// `max_file_bytes`, under RLIMIT_FSIZE = max_file_bytes (SIGXFSZ ignored, so a write past it fails
// with EFBIG, like a full disk).
test::CliResult run_cli_with(const std::string& env, const std::string& args, rlim_t max_file_bytes = 0) {
  int fds[2];
  if (::pipe(fds) != 0) return {-1, "pipe failed"};
  std::string cmd = env + " " + std::string(GLMLAB_CLI) + " " + args;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    if (max_file_bytes) {
      ::signal(SIGXFSZ, SIG_IGN);
      struct rlimit lim{max_file_bytes, max_file_bytes};
      ::setrlimit(RLIMIT_FSIZE, &lim);
    }
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  test::CliResult r{0, {}};
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) r.out.append(buf, size_t(n));
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

const std::string kInfer =
    "bench infer --model random:tiny --tokenizer bytes --records 2 --dtype fp32 --batch 1 --max-new-tokens 4 "
    "--probe off --no-progress --out ";

TEST(ReportFolders, BenchInferFailingMidwayLeavesThePreviousReportWhole) {
  fs::path root = test::temp_dir("report-infer-midway");
  fs::path out = root / "out";
  auto r = test::run_cli(kInfer + out.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  auto before = folder_contents(out);
  // A file-size limit that summary.json (written first) fits under with room to spare but a later data
  // file does not: the second run fails part of the way through writing its report.
  const size_t summary = before.at("summary.json").size();
  const rlim_t limit = rlim_t(summary + 2048);
  size_t largest_later = 0;
  for (const char* f : {"records.jsonl", "records.csv", "prompts.jsonl", "config.json", "scatter3d.html"})
    largest_later = std::max(largest_later, before.at(f).size());
  ASSERT_GT(largest_later, limit + 2048) << "no later file big enough to fail on";
  r = run_cli_with("", kInfer + out.string(), limit);
  ASSERT_NE(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "cannot write");
  EXPECT_EQ(changed_names(folder_contents(out), before), "") << "the previous report was changed by a failed run";
  EXPECT_EQ(names_in(root), std::vector<std::string>{"out"});
}

TEST(ReportFolders, BenchInferRefusesAFolderWithAForeignFileBeforeRunning) {
  fs::path root = test::temp_dir("report-infer-foreign");
  fs::path out = root / "out";
  make_folder(out, {{"notes.md", "my notes"}});
  auto r = test::run_cli(kInfer + out.string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "refusing to replace the folder " + out.string());
  EXPECT_CONTAINS(r.out, "notes.md");
  EXPECT_EQ(r.out.find("tok/s"), std::string::npos) << "the benchmark ran before the refusal:\n" << r.out;
  EXPECT_EQ(changed_names(folder_contents(out), {{"notes.md", "my notes"}}), "");
  EXPECT_EQ(names_in(root), std::vector<std::string>{"out"});
}

TEST(ReportFolders, BenchInferRerunReplacesThePreviousReportAndCleansStaleFolders) {
  fs::path root = test::temp_dir("report-infer-rerun");
  fs::path out = root / "out";
  auto r = test::run_cli(kInfer + out.string());
  ASSERT_EQ(r.rc, 0) << r.out;
  if (!fs::exists(out / "tokens_per_s.png")) GTEST_SKIP() << "no gnuplot here: the first run drew no chart";
  const std::string dead = std::to_string(dead_pid());
  make_folder(root / ("out.partial-" + dead), {{"summary.json", "{}"}});
  make_folder(root / ("out.old-" + dead), {{"summary.json", "{}"}});
  // Without gnuplot the charts are warnings, the data files are still written, and the old report's
  // charts (of another run) must not survive beside them.
  r = run_cli_with("PATH=/nonexistent", kInfer + out.string());  // no gnuplot
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "warning");
  EXPECT_EQ(names_in(out), (std::vector<std::string>{"config.json", "prompts.jsonl", "records.csv", "records.jsonl",
                                                     "scatter3d.html", "summary.csv", "summary.json"}));
  EXPECT_EQ(names_in(root), std::vector<std::string>{"out"});
}

const std::string kTrain =
    "bench train --model random:tiny --tokenizer bytes --records 4 --truncate --method lora --qat none --dtype fp32 "
    "--batch-size 2 --steps 1 --warmup-steps 0 --probe off --no-progress --out ";

TEST(ReportFolders, BenchTrainRefusesAForeignFileAndReplacesItsOwnReport) {
  fs::path root = test::temp_dir("report-train");
  fs::path out = root / "out";
  make_folder(out, {{"summary.json", "{}"}, {"checkpoint.safetensors", "weights"}});
  auto r = test::run_cli(kTrain + out.string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "checkpoint.safetensors");
  EXPECT_EQ(changed_names(folder_contents(out), {{"summary.json", "{}"}, {"checkpoint.safetensors", "weights"}}), "");

  // A bench infer report is not a bench train report: refused as well.
  fs::path infer = root / "infer";
  make_folder(infer, {{"summary.json", "{}"}, {"records.jsonl", "{}\n"}});
  r = test::run_cli(kTrain + infer.string());
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "records.jsonl");

  // Its own previous report (with a chart this run cannot draw) is replaced completely.
  fs::path own = root / "own";
  make_folder(own, {{"summary.json", "{}"}, {"steps.jsonl", "old"}, {"training.png", "old chart"}});
  r = run_cli_with("PATH=/nonexistent", kTrain + own.string());  // no gnuplot
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(names_in(own),
            (std::vector<std::string>{"batches.jsonl", "config.json", "steps.jsonl", "summary.csv", "summary.json"}));
  EXPECT_NE(read_file((own / "summary.json").string()), "{}");
  EXPECT_EQ(names_in(root), (std::vector<std::string>{"infer", "out", "own"}));
}

}  // namespace
}  // namespace glmlab

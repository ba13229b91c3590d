// tiny.json (lab/tiny.h): the index rule, a hand-made data set with ties, dev.json against the
// oracle's selection and bytes, determinism, and atomic output.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lab/data/tiny.h"
#include "test_data_util.h"

using namespace glmlab;
using namespace glmlab::lab;
using namespace glmlab::test;

TEST(DataTiny, EvenIndexRule) {
  EXPECT_EQ(even_indices(10, 4), (std::vector<size_t>{0, 3, 6, 9}));
  EXPECT_EQ(even_indices(5, 3), (std::vector<size_t>{0, 2, 4}));
  EXPECT_EQ(even_indices(6, 4), (std::vector<size_t>{0, 2, 3, 5}));     // 5/3, 10/3 rounded
  EXPECT_EQ(even_indices(7, 5), (std::vector<size_t>{0, 2, 3, 5, 6}));  // 1.5 and 4.5 round up
  EXPECT_EQ(even_indices(2, 2), (std::vector<size_t>{0, 1}));
  EXPECT_EQ(even_indices(3, 5), (std::vector<size_t>{0, 1, 2}));        // fewer records than n: all
  EXPECT_THROW(even_indices(10, 1), Error);
  auto big = even_indices(114599 + 1070, 100);
  ASSERT_EQ(big.size(), 100u);
  EXPECT_EQ(big.front(), 0u);
  EXPECT_EQ(big.back(), 114599u + 1070u - 1u);
  for (size_t i = 1; i < big.size(); ++i) EXPECT_LT(big[i - 1], big[i]);
}

TEST(DataTiny, HandMadeWithTiesAcrossFiles) {
  // Byte tokenizer: total = 7 + bytes(content) + bytes(summary); summaries "s" -> total = 8 + c.
  auto dir = temp_dir("data_tiny_hand");
  auto c = [](int n) { return std::string(size_t(n), 'c'); };
  // A: L1 total 20, L2 10, L3 15, L4 10.  B: L1 30, L2 15, L3 25.
  auto a = write_text(dir / "a.json", jline(c(12), "s") + jline(c(2), "s") + jline(c(7), "s") + jline(c(2), "s"));
  auto b = write_text(dir / "b.json", jline(c(22), "s") + jline(c(7), "s") + jline(c(17), "s"));
  auto tok = Tokenizer::byte_fallback();
  auto scan = scan_files({a, b}, tok, {});
  // Sorted (stable): A2 10, A4 10, A3 15, B2 15, A1 20, B3 25, B1 30.
  auto pos = [](const MeasuredRecord& r) { return std::make_pair(r.file, r.line); };
  using P = std::pair<uint32_t, size_t>;
  auto sel3 = select_tiny(scan, 3);  // indices 0 3 6
  ASSERT_EQ(sel3.picks.size(), 3u);
  EXPECT_EQ(pos(sel3.picks[0]), (P{0, 2}));
  EXPECT_EQ(pos(sel3.picks[1]), (P{1, 2}));
  EXPECT_EQ(pos(sel3.picks[2]), (P{1, 1}));
  EXPECT_EQ(sel3.min_total, 10);
  EXPECT_EQ(sel3.max_total, 30);
  auto sel5 = select_tiny(scan, 5);  // indices 0 2 3 5 6
  std::vector<P> got;
  for (const auto& p : sel5.picks) got.push_back(pos(p));
  EXPECT_EQ(got, (std::vector<P>{{0, 2}, {0, 3}, {1, 2}, {1, 3}, {1, 1}}));

  auto out = (dir / "tiny.json").string();
  write_tiny(scan, sel3, out, {});
  EXPECT_EQ(read_text(out), jline(c(2), "s") + jline(c(7), "s") + jline(c(22), "s"));
  auto all = select_tiny(scan, 100);  // N < n: everything, sorted
  EXPECT_EQ(all.picks.size(), 7u);
  EXPECT_EQ(pos(all.picks[1]), (P{0, 4}));
}

TEST(DataTiny, DevJsonMatchesOracleAndIsDeterministic) {
  auto golden = nlohmann::json::parse(read_text(golden_path("data_stats_dev.json")));
  auto tok = Tokenizer::from_file(tokenizer_path());
  auto scan = scan_files({dev_json_path()}, tok, {});
  auto sel = select_tiny(scan, 100);
  ASSERT_EQ(sel.picks.size(), 100u);
  std::vector<size_t> lines;
  std::vector<int32_t> totals;
  for (const auto& p : sel.picks) {
    lines.push_back(p.line);
    totals.push_back(p.len.total_tokens());
  }
  EXPECT_EQ(lines, golden["tiny_lines"].get<std::vector<size_t>>());
  EXPECT_EQ(totals, golden["tiny_totals"].get<std::vector<int32_t>>());
  EXPECT_EQ(totals.front(), golden["metrics"]["total_tokens"]["min"].get<int32_t>());
  EXPECT_EQ(totals.back(), golden["metrics"]["total_tokens"]["max"].get<int32_t>());
  auto dir = temp_dir("data_tiny_dev");
  auto first = (dir / "tiny1.json").string(), second = (dir / "tiny2.json").string();
  write_tiny(scan, sel, first, {});
  auto r = run_cli("data tiny " + dev_json_path() + " -o " + second + " --tokenizer " + tokenizer_path());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("100 of 1070 records"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("total tokens " + std::to_string(totals.front()) + ".." + std::to_string(totals.back())),
            std::string::npos)
      << r.out;
  auto bytes = read_text(first);
  EXPECT_EQ(bytes, read_text(second));
  EXPECT_EQ(bytes, read_text(golden_path("tiny_dev_100.json")));  // Python json.dumps(ensure_ascii=False)
  // The output reads back as 100 valid records.
  EXPECT_EQ(read_records({first}, {}).size(), 100u);
}

TEST(DataTiny, FailureKeepsTheOldOutput) {
  auto dir = temp_dir("data_tiny_atomic");
  auto out = write_text(dir / "tiny.json", "old contents\n");
  auto bad = write_text(dir / "bad.json", jline("a", "b") + "{broken\n");
  auto r = run_cli("data tiny " + bad + " -o " + out + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("bad.json:2: invalid JSON"), std::string::npos) << r.out;
  EXPECT_EQ(read_text(out), "old contents\n");
  r = run_cli("data tiny " + bad + " -o " + (dir / "no" / "such" / "dir.json").string() + " --tokenizer bytes --skip-bad");
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("temporary file"), std::string::npos) << r.out;
  size_t files = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 2u);  // tiny.json and bad.json only: nothing half-written
  r = run_cli("data tiny " + bad + " -o " + out + " --tokenizer bytes --skip-bad");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("skipped 1 bad record(s)"), std::string::npos) << r.out;
  EXPECT_EQ(read_text(out), jline("a", "b"));
}

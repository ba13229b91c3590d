// Data statistics (lab/data_stats.h, lab/data_scan.h, lab/stats_text.h, lab/histogram_png.h): the
// percentile rule on known lists, a hand-made file whose answers are worked out by hand, and
// dev.json against the Python oracle (golden data_stats_dev.json) for every statistic and record.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lab/data/data_scan.h"
#include "lab/data/data_stats.h"
#include "lab/plots/histogram_png.h"
#include "lab/data/stats_text.h"
#include "test_data_util.h"

using namespace glmlab;
using namespace glmlab::lab;
using namespace glmlab::test;
using nlohmann::json;

namespace {

json load_golden() {
  auto text = read_text(golden_path("data_stats_dev.json"));
  EXPECT_NE(text, "<missing>") << "run tools/reference/data_golden.py (the oracle_data_golden CTest fixture)";
  return json::parse(text);
}

const Summary& metric(const DataStats& st, const std::string& name) {
  for (const auto& [n, s] : st.metrics)
    if (n == name) return s;
  throw std::runtime_error("no metric " + name);
}

void expect_summary_eq(const Summary& s, const json& g, const std::string& what) {
  // Same formula, same double arithmetic: equal to the last bit.
  EXPECT_EQ(s.min, g["min"].get<double>()) << what;
  EXPECT_EQ(s.mean, g["mean"].get<double>()) << what;
  EXPECT_EQ(s.median, g["median"].get<double>()) << what;
  EXPECT_EQ(s.p90, g["p90"].get<double>()) << what;
  EXPECT_EQ(s.p95, g["p95"].get<double>()) << what;
  EXPECT_EQ(s.p99, g["p99"].get<double>()) << what;
  EXPECT_EQ(s.max, g["max"].get<double>()) << what;
}

}  // namespace

TEST(DataStats, PercentileLinearLikeNumpy) {
  std::vector<int32_t> v = {6, 7, 8, 9, 15};
  EXPECT_DOUBLE_EQ(percentile_linear(v, 0), 6);
  EXPECT_DOUBLE_EQ(percentile_linear(v, 50), 8);
  EXPECT_DOUBLE_EQ(percentile_linear(v, 90), 12.6);   // h = 3.6: 9 + 0.6 * 6
  EXPECT_DOUBLE_EQ(percentile_linear(v, 95), 13.8);   // h = 3.8
  EXPECT_DOUBLE_EQ(percentile_linear(v, 99), 14.76);  // h = 3.96
  EXPECT_DOUBLE_EQ(percentile_linear(v, 100), 15);
  EXPECT_DOUBLE_EQ(percentile_linear({1, 2, 3, 4}, 50), 2.5);  // even count: mean of the middle two
  EXPECT_DOUBLE_EQ(percentile_linear({5}, 99), 5);
  EXPECT_THROW(percentile_linear({}, 50), Error);
  auto s = summarize({15, 6, 9, 8, 7});
  EXPECT_EQ(s.min, 6);
  EXPECT_EQ(s.max, 15);
  EXPECT_DOUBLE_EQ(s.mean, 9);
  EXPECT_DOUBLE_EQ(s.median, 8);
}

TEST(DataStats, HistogramBins) {
  auto h = make_histogram({1, 2, 3, 10}, 4);  // span 10 -> width 3, bins [1,4) [4,7) [7,10) [10,13)
  EXPECT_EQ(h.lo, 1);
  EXPECT_EQ(h.width, 3);
  EXPECT_EQ(h.counts, (std::vector<size_t>{3, 0, 0, 1}));
  auto one = make_histogram({7, 7, 7}, 20);
  EXPECT_EQ(one.width, 1);
  EXPECT_EQ(one.counts, (std::vector<size_t>{3}));
  auto text = format_histogram("t", h, 10);
  EXPECT_NE(text.find("##########"), std::string::npos) << text;
}

TEST(DataStats, HandMadeFileKnownAnswers) {
  // Byte tokenizer: input = 5 + bytes(content), output = 2 + bytes(summary).
  auto dir = temp_dir("data_stats_hand");
  auto a = write_text(dir / "a.json", jline("a", "bbbbb") + jline("aa", "bbbbb") + jline("aaa", "bbbbb"));
  auto b = write_text(dir / "b.json", jline("aaaa", "bbbbb") + "\n" + jline("aaaaaaaaaa", "bbbbb"));
  auto tok = Tokenizer::byte_fallback();
  ScanOptions so;
  so.batch_lines = 2;
  auto scan = scan_files({a, b}, tok, so);
  ASSERT_EQ(scan.records.size(), 5u);
  EXPECT_EQ(scan.records[3].file, 1u);
  EXPECT_EQ(scan.records[4].line, 3u);
  auto st = compute_stats(scan);
  EXPECT_EQ(st.count, 5u);
  const auto& in = metric(st, "input_tokens");  // 6 7 8 9 15
  EXPECT_EQ(in.min, 6);
  EXPECT_DOUBLE_EQ(in.mean, 9);
  EXPECT_DOUBLE_EQ(in.median, 8);
  EXPECT_DOUBLE_EQ(in.p90, 12.6);
  EXPECT_DOUBLE_EQ(in.p95, 13.8);
  EXPECT_DOUBLE_EQ(in.p99, 14.76);
  EXPECT_EQ(in.max, 15);
  const auto& out = metric(st, "output_tokens");  // all 7
  EXPECT_EQ(out.min, 7);
  EXPECT_EQ(out.max, 7);
  EXPECT_DOUBLE_EQ(out.p99, 7);
  const auto& total = metric(st, "total_tokens");  // 13 14 15 16 22
  EXPECT_DOUBLE_EQ(total.mean, 16);
  EXPECT_DOUBLE_EQ(total.p90, 19.6);
  EXPECT_DOUBLE_EQ(metric(st, "content_tokens").median, 3);
  EXPECT_DOUBLE_EQ(metric(st, "summary_tokens").median, 5);
  EXPECT_DOUBLE_EQ(metric(st, "input_chars").max, 10);
  EXPECT_DOUBLE_EQ(metric(st, "total_chars").min, 6);
  ASSERT_EQ(st.histograms.size(), 3u);
  EXPECT_EQ(st.histograms[0].second.lo, 6);
  EXPECT_EQ(st.histograms[0].second.counts.size(), 10u);  // 6..15, width 1
  auto text = format_stats_text(st);
  EXPECT_NE(text.find("records: 5 from 2 file(s)"), std::string::npos) << text;
  EXPECT_NE(text.find("12.60"), std::string::npos) << text;
}

TEST(DataStats, DevJsonMatchesOracleEveryStatistic) {
  json g = load_golden();
  auto tok = Tokenizer::from_file(tokenizer_path());
  auto scan = scan_files({dev_json_path()}, tok, {});
  auto st = compute_stats(scan);
  EXPECT_EQ(st.count, g["count"].get<size_t>());
  EXPECT_EQ(st.count, 1070u);
  ASSERT_EQ(st.metrics.size(), g["metrics"].size());
  for (const auto& [name, s] : st.metrics) expect_summary_eq(s, g["metrics"][name], name);
  for (const auto& [name, h] : st.histograms) {
    EXPECT_EQ(h.lo, g["histograms"][name]["lo"].get<int64_t>()) << name;
    EXPECT_EQ(h.width, g["histograms"][name]["width"].get<int64_t>()) << name;
    EXPECT_EQ(h.counts, g["histograms"][name]["counts"].get<std::vector<size_t>>()) << name;
  }
  // Record by record: line, input, output, content, summary tokens, content and summary chars.
  const auto& rows = g["records"];
  ASSERT_EQ(rows.size(), scan.records.size());
  int mismatches = 0;
  for (size_t i = 0; i < rows.size() && mismatches < 5; ++i) {
    const auto& r = scan.records[i];
    std::vector<int64_t> got = {int64_t(r.line), r.len.input_tokens, r.len.output_tokens, r.len.content_tokens,
                                r.len.summary_tokens, r.len.content_chars, r.len.summary_chars};
    if (got != rows[i].get<std::vector<int64_t>>()) {
      ++mismatches;
      ADD_FAILURE() << "record " << i << ": " << json(got).dump() << " vs oracle " << rows[i].dump();
    }
  }
  // The whole id sequences of the first records (the first is the 95-id example of the facts page).
  auto recs = read_records({dev_json_path()}, {});
  for (const auto& f : g["first_ids"]) {
    const auto& rec = recs.at(f["line"].get<size_t>() - 1);
    auto ids = sample_ids(tok, rec.content, rec.summary);
    EXPECT_EQ(ids.input, f["input"].get<std::vector<int32_t>>()) << "line " << f["line"];
    EXPECT_EQ(ids.output, f["output"].get<std::vector<int32_t>>()) << "line " << f["line"];
  }
  EXPECT_EQ(sample_ids(tok, recs[0].content, recs[0].summary).input.size() +
                sample_ids(tok, recs[0].content, recs[0].summary).output.size(),
            95u);
}

TEST(DataStats, ThreadsAndBatchesDoNotChangeResults) {
  auto tok = Tokenizer::from_file(tokenizer_path());
  ScanOptions one;
  one.threads = 1;
  ScanOptions many;
  many.threads = 2;
  many.batch_lines = 37;
  auto a = scan_files({dev_json_path()}, tok, one);
  auto b = scan_files({dev_json_path()}, tok, many);
  ASSERT_EQ(a.records.size(), b.records.size());
  for (size_t i = 0; i < a.records.size(); ++i) {
    EXPECT_EQ(a.records[i].line, b.records[i].line);
    EXPECT_EQ(a.records[i].len.total_tokens(), b.records[i].len.total_tokens());
    EXPECT_EQ(a.records[i].len.content_tokens, b.records[i].len.content_tokens);
  }
}

TEST(DataCli, StatsJsonMatchesOracleAndWritesPng) {
  json g = load_golden();
  auto dir = temp_dir("data_cli_stats");
  auto png = (dir / "hist.png").string();
  auto r = run_cli("data stats " + dev_json_path() + " --tokenizer " + tokenizer_path() + " --json --png " + png);
  ASSERT_EQ(r.rc, 0) << r.out;
  json j = json::parse(r.out);
  EXPECT_EQ(j["count"], g["count"]);
  EXPECT_EQ(j["skipped"], 0);
  for (auto& [name, m] : g["metrics"].items())
    for (auto& [k, v] : m.items()) EXPECT_EQ(j["metrics"][name][k].get<double>(), v.get<double>()) << name << "." << k;
  EXPECT_EQ(j["histograms"], g["histograms"]);
  auto bytes = read_text(png);
  ASSERT_GT(bytes.size(), 1000u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  for (auto& e : std::filesystem::directory_iterator(dir))  // no temporary files left behind
    EXPECT_EQ(e.path().filename(), "hist.png");

  r = run_cli("data stats " + dev_json_path() + " --tokenizer " + tokenizer_path());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("records: 1070 from 1 file(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("total_tokens (bin width"), std::string::npos) << r.out;
}

TEST(DataStats, PngFailureLeavesNoFile) {
  auto dir = temp_dir("data_png_fail");
  auto target = (dir / "h.png").string();
  Histogram h = make_histogram({1, 2, 3});
  expect_error([&] { write_histograms_png(target, {{"x", h}}, "t", "/nonexistent/gnuplot"); }, {target, "not found"});
  EXPECT_FALSE(std::filesystem::exists(target));
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

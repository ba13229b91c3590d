// The embedded sample (lab/sample.h): deterministic, prefix-stable, valid AdvertiseGen records whose
// length distribution lies in the stated ranges.
#include <gtest/gtest.h>

#include <algorithm>

#include "lab/data/sample.h"
#include "test_data_util.h"
#include "util/utf8.h"

using namespace glmlab;
using namespace glmlab::lab;
using namespace glmlab::test;

namespace {
size_t median(std::vector<size_t> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

TEST(DataSample, DeterministicAndPrefixStable) {
  auto a = embedded_sample(300, 0), b = embedded_sample(300, 0), p = embedded_sample(20, 0);
  auto c = embedded_sample(300, 1);
  ASSERT_EQ(a.size(), 300u);
  size_t same_as_other_seed = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].content, b[i].content);
    EXPECT_EQ(a[i].summary, b[i].summary);
    EXPECT_EQ(a[i].line, i + 1);
    same_as_other_seed += a[i].summary == c[i].summary;
    if (i < p.size()) EXPECT_EQ(a[i].summary, p[i].summary);
  }
  EXPECT_EQ(same_as_other_seed, 0u);
  EXPECT_EQ(embedded_sample().size(), 100u);
}

TEST(DataSample, LengthsInTheStatedRanges) {
  auto recs = embedded_sample(2000, 0);
  std::vector<size_t> content, summary;
  for (const auto& r : recs) {
    ASSERT_FALSE(utf8::first_invalid(r.content).has_value());
    ASSERT_FALSE(utf8::first_invalid(r.summary).has_value());
    EXPECT_TRUE(r.content.starts_with("类型#")) << r.content;
    content.push_back(utf8::count_code_points(r.content));
    summary.push_back(utf8::count_code_points(r.summary));
  }
  auto [cmin, cmax] = std::minmax_element(content.begin(), content.end());
  auto [smin, smax] = std::minmax_element(summary.begin(), summary.end());
  EXPECT_GE(*cmin, kSampleContentMinChars);
  EXPECT_LE(*cmax, kSampleContentMaxChars);
  EXPECT_GE(*smin, kSampleSummaryMinChars);
  EXPECT_LE(*smax, kSampleSummaryMaxChars);
  EXPECT_NEAR(double(median(content)), 44.0, 5.0);
  EXPECT_NEAR(double(median(summary)), 109.0, 8.0);
  // Spread like the real data: a good share of short and of long records.
  EXPECT_LT(*cmin, 20u);
  EXPECT_GT(*cmax, 85u);
  EXPECT_LT(*smin, 75u);
  EXPECT_GT(*smax, 160u);
}

TEST(DataSample, AttributeListsAreWellFormed) {
  for (const auto& r : embedded_sample(200, 3)) {
    size_t start = 0;
    while (start <= r.content.size()) {
      size_t end = r.content.find('*', start);
      if (end == std::string::npos) end = r.content.size();
      auto pair = r.content.substr(start, end - start);
      auto hash = pair.find('#');
      ASSERT_NE(hash, std::string::npos) << r.content;
      EXPECT_GT(hash, 0u) << r.content;
      EXPECT_LT(hash + 1, pair.size()) << r.content;
      start = end + 1;
    }
    EXPECT_TRUE(r.summary.ends_with("。")) << r.summary;
  }
}

TEST(DataCli, SampleWritesReadableJsonLines) {
  auto dir = temp_dir("data_cli_sample");
  auto out = (dir / "s.json").string();
  auto r = run_cli("data sample -n 25 --seed 5 -o " + out);
  ASSERT_EQ(r.rc, 0) << r.out;
  auto recs = read_records({out}, {});
  auto expect = embedded_sample(25, 5);
  ASSERT_EQ(recs.size(), 25u);
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(recs[i].content, expect[i].content);
    EXPECT_EQ(recs[i].summary, expect[i].summary);
  }
  auto stdout_run = run_cli("data sample -n 25 --seed 5");
  EXPECT_EQ(stdout_run.out, read_text(out));
  r = run_cli("data stats " + out + " --tokenizer bytes");
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("records: 25"), std::string::npos) << r.out;
}

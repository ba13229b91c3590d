// glmlab bench infer / bench compare (issue 4 §3): a tiny run (random:tiny, 3 records, fp32 and bf16,
// batch 1 and 2) writes every output, well-formed and consistent (forced lengths, tokens/s =
// tokens / time, counts); the PNGs are images; the HTML page renders in headless Chromium with no
// script error; plus the summary arithmetic, prompt lengths, the comparison table and the plot writer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <map>
#include <string>
#include <vector>

#include "lab/bench/bench_compare.h"
#include "lab/bench/bench_infer.h"
#include "lab/bench/bench_summary.h"
#include "lab/data/advertisegen.h"
#include "lab/data/sample.h"
#include "lab/plots/gnuplot.h"
#include "lab/progress.h"
#include "model/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab {
namespace {

using test::is_png;
using test::lines_of;

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> csv_fields(const std::string& line) {  // our CSV has no quoted fields here
  std::vector<std::string> out;
  std::string f;
  std::istringstream in(line);
  while (std::getline(in, f, ',')) out.push_back(f);
  return out;
}

// Standard output of a shell command.
std::string shell_output(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

constexpr int kCap = 8;  // forced lengths are min(reference, kCap)

// The tiny run of the brief: 3 records of the embedded sample, byte tokenizer, fp32 and bf16, batch 1
// and 2, quick probes. Returns the output folder.
fs::path tiny_run(const std::string& name, const std::string& extra = "") {
  fs::path dir = test::temp_dir(name);
  auto r = test::run_cli("bench infer --model random:tiny --tokenizer bytes --records 3 --dtype fp32,bf16 "
                         "--batch 1,2 --max-new-tokens " + std::to_string(kCap) +
                         " --probe quick --no-progress --out " + (dir / "out").string() + " " + extra);
  EXPECT_EQ(r.rc, 0) << r.out;
  return dir / "out";
}

// ------------------------------------------------------------------------------------------ outputs

TEST(BenchInfer, TinyRunWritesWellFormedConsistentOutputs) {
  fs::path out = tiny_run("bench-tiny");
  for (const char* f : {"summary.json", "summary.csv", "records.jsonl", "records.csv", "prompts.jsonl", "config.json",
                        "scatter3d.html", "scatter3d.png", "tokens_per_s.png"})
    ASSERT_TRUE(fs::exists(out / f)) << f;
  // No temporary files left behind by the atomic writes.
  for (const auto& e : fs::directory_iterator(out)) EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);

  // The prompts are exactly lab::sample_ids of the embedded sample's first records.
  Tokenizer tok = Tokenizer::byte_fallback();
  auto recs = lab::embedded_sample(3);
  auto prompts = lines_of(read_file((out / "prompts.jsonl").string()));
  ASSERT_EQ(prompts.size(), 3u);
  std::vector<int> target(3), input(3);
  int64_t target_sum = 0, input_sum = 0;
  for (size_t i = 0; i < 3; ++i) {
    json p = json::parse(prompts[i]);
    auto ids = lab::sample_ids(tok, recs[i].content, recs[i].summary);
    EXPECT_EQ(p["index"], i);
    EXPECT_EQ(p["input_ids"].get<std::vector<int32_t>>(), ids.input);
    EXPECT_EQ(p["reference_tokens"], int(ids.output.size()));
    EXPECT_EQ(p["target_tokens"], std::min<int>(int(ids.output.size()), kCap));
    target[i] = p["target_tokens"];
    input[i] = int(ids.input.size());
    target_sum += target[i];
    input_sum += input[i];
  }

  // Per record: 2 dtypes x 2 batch sizes x 3 records, outputs equal to the forced lengths.
  auto recl = lines_of(read_file((out / "records.jsonl").string()));
  ASSERT_EQ(recl.size(), 12u);
  for (const auto& line : recl) {
    json r = json::parse(line);
    size_t i = r["index"];
    ASSERT_LT(i, 3u);
    EXPECT_EQ(r["output_tokens"], target[i]) << line;
    EXPECT_EQ(r["target_tokens"], target[i]);
    EXPECT_EQ(r["input_tokens"], input[i]);
    EXPECT_EQ(r["total_tokens"], input[i] + target[i]);
    EXPECT_TRUE(r["forced"].get<bool>());
    double pre = r["prefill_s"], dec = r["decode_s"], tot = r["total_s"];
    EXPECT_GT(pre, 0);
    EXPECT_GE(dec, 0);
    EXPECT_NEAR(pre + dec, tot, 1e-9 + 1e-9 * tot);
    EXPECT_NEAR(r["tokens_per_s"].get<double>(), target[i] / tot, 1e-6 * target[i] / tot);
    EXPECT_TRUE(r["dtype"] == "fp32" || r["dtype"] == "bf16") << line;
    EXPECT_TRUE(r["batch"] == 1 || r["batch"] == 2) << line;
  }

  json s = json::parse(read_file((out / "summary.json").string()));
  EXPECT_EQ(s["engine"], "glmlab");
  EXPECT_EQ(s["model"]["spec"], "random:tiny");
  EXPECT_EQ(s["data"]["records"], 3);
  EXPECT_EQ(s["data"]["tokenizer"], "bytes");
  EXPECT_TRUE(s["data"]["forced"].get<bool>());
  ASSERT_TRUE(s["probes"].is_object());
  double probe_gbs = s["probes"]["memory_gbs"]["median"], probe_gflops = s["probes"]["gemm_gflops"]["median"];
  EXPECT_GT(probe_gbs, 0);
  EXPECT_GT(probe_gflops, 0);
  EXPECT_FALSE(s["machine"]["cpu"].get<std::string>().empty());
  EXPECT_GT(s["machine"]["cores"].get<int>(), 0);
  ASSERT_EQ(s["runs"].size(), 4u);
  const char* expect[4][2] = {{"fp32", "1"}, {"fp32", "2"}, {"bf16", "1"}, {"bf16", "2"}};
  for (size_t k = 0; k < 4; ++k) {
    const json& r = s["runs"][k];
    EXPECT_EQ(r["dtype"], expect[k][0]);
    EXPECT_EQ(r["batch"], std::stoi(expect[k][1]));
    EXPECT_EQ(r["records"], 3);
    EXPECT_EQ(r["output_tokens"], target_sum);
    EXPECT_EQ(r["input_tokens"], input_sum);
    double wall = r["wall_s"]["median"], tps = r["throughput_tps"]["median"];
    EXPECT_GT(wall, 0);
    EXPECT_NEAR(tps, double(target_sum) / wall, 1e-9 * tps) << "tokens/s must be tokens / wall time";
    for (const char* key : {"prefill_tps", "decode_tps", "latency_p50_s", "latency_p90_s", "ttft_p50_s",
                            "decode_gbs", "prefill_gflops"}) {
      EXPECT_GT(r[key]["median"].get<double>(), 0) << key;
      EXPECT_LE(r[key]["min"].get<double>(), r[key]["median"].get<double>()) << key;
      EXPECT_GE(r[key]["max"].get<double>(), r[key]["median"].get<double>()) << key;
    }
    EXPECT_LE(r["latency_p50_s"]["median"].get<double>(), r["latency_p90_s"]["median"].get<double>());
    // Each run is set against its own limits: the read bandwidth of a buffer of its decode bytes (a tiny
    // model's weights are far below the 256 MiB main probe) and the peak of the instruction its prefill uses.
    const double dlim = r["decode_limit_gbs"], plim = r["prefill_limit_gflops"];
    EXPECT_GT(dlim, 0);
    EXPECT_NE(r["decode_limit"].get<std::string>().find("the decode's bytes per step"), std::string::npos);
    EXPECT_NEAR(r["decode_gbs_of_probe"].get<double>(), r["decode_gbs"]["median"].get<double>() / dlim, 1e-9);
    EXPECT_NEAR(r["prefill_gflops_of_probe"].get<double>(), r["prefill_gflops"]["median"].get<double>() / plim, 1e-9);
    const json& pr = s["probes"];
    const bool bf16_unit = r["dtype"] == "bf16" && pr["bf16_dot_gflops"]["median"].get<double>() > 0;
    const std::string want_limit = bf16_unit ? "bf16 dot peak (" + pr["bf16_unit"].get<std::string>() + ")"
                                   : pr["fp32_fma_gflops"]["median"].get<double>() > 0 ? "fp32 FMA peak"
                                                                                      : "fp32 sgemm";
    EXPECT_EQ(r["prefill_limit"], want_limit);
    EXPECT_DOUBLE_EQ(plim, bf16_unit                                   ? pr["bf16_dot_gflops"]["median"].get<double>()
                           : want_limit == "fp32 FMA peak" ? pr["fp32_fma_gflops"]["median"].get<double>()
                                                           : probe_gflops);
    EXPECT_GT(r["weight_bytes"].get<uint64_t>(), r["decode_bytes_per_step"].get<uint64_t>());
    EXPECT_GT(r["peak_rss_bytes"].get<uint64_t>(), r["weight_bytes"].get<uint64_t>());
    EXPECT_GT(r["kv_cache_bytes"].get<uint64_t>(), 0u);
    if (r["batch"] == 1) EXPECT_DOUBLE_EQ(r["batch_gain"].get<double>(), 1.0);
  }
  // fp32 matrices take twice the bytes of bf16 ones.
  EXPECT_EQ(s["runs"][0]["weight_bytes"].get<uint64_t>(), 2 * s["runs"][2]["weight_bytes"].get<uint64_t>());

  auto rcsv = lines_of(read_file((out / "records.csv").string()));
  ASSERT_EQ(rcsv.size(), 13u);
  size_t cols = csv_fields(rcsv[0]).size();
  EXPECT_EQ(cols, 15u);  // ... tokens_per_s, schedule
  for (const auto& l : rcsv) EXPECT_EQ(csv_fields(l).size(), cols) << l;
  auto scsv = lines_of(read_file((out / "summary.csv").string()));
  ASSERT_EQ(scsv.size(), 5u);
  for (const auto& l : scsv) EXPECT_EQ(csv_fields(l).size(), csv_fields(scsv[0]).size()) << l;

  json cfg = json::parse(read_file((out / "config.json").string()));
  EXPECT_EQ(cfg["num_layers"], 2);

  EXPECT_TRUE(is_png((out / "scatter3d.png").string(), 5000));
  EXPECT_TRUE(is_png((out / "tokens_per_s.png").string(), 3000));

  // The page is self-contained: no external script, style, image or font.
  std::string html = read_file((out / "scatter3d.html").string());
  EXPECT_NE(html.find("<canvas"), std::string::npos);
  for (const char* bad : {"src=\"http", "href=\"http", "<link", "@import", "url("})
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
}

TEST(BenchInfer, JsonFlagPrintsTheSummaryAndStopAtEosRunsFree) {
  fs::path dir = test::temp_dir("bench-free");
  std::string out = shell_output(std::string(GLMLAB_CLI) +
                                 " bench infer --model random:tiny --tokenizer bytes --records 2 "
                                 "--dtype bf16 --max-new-tokens 5 "
                                 "--stop-at-eos --probe off --warmup 0 --no-progress --json --out " +
                                 (dir / "o").string() + " 2>/dev/null");
  json s = json::parse(out);  // stdout holds nothing but the summary
  EXPECT_FALSE(s["data"]["forced"].get<bool>());
  EXPECT_TRUE(s["probes"].is_null());
  for (const auto& line : lines_of(read_file((dir / "o" / "records.jsonl").string()))) {
    json x = json::parse(line);
    EXPECT_FALSE(x["forced"].get<bool>());
    EXPECT_EQ(x["target_tokens"], 5);  // free-running: the cap is the most
    EXPECT_LE(x["output_tokens"].get<int>(), 5);
    EXPECT_GE(x["output_tokens"].get<int>(), x["stopped"].get<bool>() ? 0 : 5);
  }
}

TEST(BenchInfer, ContinuousScheduleGivesEveryRecordItsStaticTokens) {
  // Static and continuous at batch 4 over 9 records with fp32 activations: the same tokens per record
  // (forced reference lengths), one run each in the summary with its schedule, every record once.
  fs::path dir = test::temp_dir("bench-cont");
  auto r = test::run_cli("bench infer --model random:tiny --tokenizer bytes --records 9 "
                         "--dtype bf16 --max-new-tokens 24 --batch 4 "
                         "--schedule static,continuous --prefill-chunk 40 --fp32-activations --probe off --warmup 0 "
                         "--no-progress --out " + (dir / "o").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  json s = json::parse(read_file((dir / "o" / "summary.json").string()));
  ASSERT_EQ(s["runs"].size(), 2u);
  EXPECT_EQ(s["runs"][0]["schedule"], "static");
  EXPECT_EQ(s["runs"][1]["schedule"], "continuous");
  EXPECT_EQ(s["runs"][0]["output_tokens"], s["runs"][1]["output_tokens"]);
  EXPECT_EQ(s["options"]["prefill_chunk"], 40);
  std::map<std::string, std::map<int, std::vector<int>>> ids;
  for (const auto& line : lines_of(read_file((dir / "o" / "records.jsonl").string()))) {
    json x = json::parse(line);
    auto& m = ids[x["schedule"].get<std::string>()];
    EXPECT_EQ(m.count(x["index"].get<int>()), 0u);
    m[x["index"].get<int>()] = x["output_ids"].get<std::vector<int>>();
    EXPECT_EQ(x["output_tokens"], x["target_tokens"]);
  }
  ASSERT_EQ(ids["static"].size(), 9u);
  EXPECT_EQ(ids["continuous"], ids["static"]);
  EXPECT_NE(r.out.find("≤4 cont."), std::string::npos) << r.out;
  // bench compare matches runs by schedule too.
  auto c = test::run_cli("bench compare " + (dir / "o").string() + " " + (dir / "o").string());
  ASSERT_EQ(c.rc, 0) << c.out;
  EXPECT_NE(c.out.find("| 4 continuous | tok/s |"), std::string::npos) << c.out;
  EXPECT_EQ(c.out.find("unmatched"), std::string::npos) << c.out;
}

TEST(BenchInfer, BadOptionsAreErrors) {
  auto r = test::run_cli("bench infer --model random:tiny --tokenizer bytes --records 1 --batch 0 --probe off "
                         "--no-progress --out " + test::temp_dir("bench-bad").string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("--batch"), std::string::npos) << r.out;
  r = test::run_cli("bench infer --model random:tiny --data /nonexistent.json --probe off");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("/nonexistent.json"), std::string::npos) << r.out;
}

TEST(BenchInfer, EmbeddedDefaultSetsFourDtypesSideBySideAtReferenceLengths) {
  // The README's first command (`glmlab bench infer`, issue 16 §6): with no --data and no --dtype, fp16,
  // bf16, int8 and int4 side by side on 6 sample records, each forced to its full reference length (no
  // 32-token cap), so the 3-D plot shows the spread of output lengths. Here on random:tiny, probes and
  // warm-up off, 3 records; the dtypes and lengths are left to their defaults.
  fs::path dir = test::temp_dir("bench-default");
  auto r = test::run_cli("bench infer --model random:tiny --tokenizer bytes --records 3 --probe off --warmup 0 "
                         "--no-progress --out " + (dir / "o").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  json s = json::parse(read_file((dir / "o" / "summary.json").string()));
  const std::vector<std::string> dtypes = {"fp16", "bf16", "int8", "int4"};
  EXPECT_EQ(s["options"]["dtypes"].get<std::vector<std::string>>(), dtypes);
  ASSERT_EQ(s["runs"].size(), dtypes.size());
  for (size_t k = 0; k < dtypes.size(); ++k) EXPECT_EQ(s["runs"][k]["dtype"], dtypes[k]);
  EXPECT_EQ(s["data"]["max_new_tokens"], 0);
  EXPECT_TRUE(s["data"]["forced"].get<bool>());
  const int seq_length = json::parse(read_file((dir / "o" / "config.json").string()))["seq_length"];
  auto prompts = lines_of(read_file((dir / "o" / "prompts.jsonl").string()));
  ASSERT_EQ(prompts.size(), 3u);
  int lo = 1 << 30, hi = 0;
  int64_t targets = 0;
  for (const auto& line : prompts) {
    json p = json::parse(line);
    const int target = p["target_tokens"], reference = p["reference_tokens"];
    const int room = seq_length - int(p["input_ids"].size());  // the only cut: the model's context
    EXPECT_EQ(target, std::min(reference, room)) << line.substr(0, 200);
    EXPECT_GT(target, 32);
    lo = std::min(lo, target);
    hi = std::max(hi, target);
    targets += target;
  }
  EXPECT_GE(hi - lo, 100) << "the default records should spread their output lengths";
  for (const auto& run : s["runs"]) EXPECT_EQ(run["output_tokens"].get<int64_t>(), targets) << run["dtype"];
  for (const auto& line : lines_of(read_file((dir / "o" / "records.jsonl").string()))) {
    json x = json::parse(line);
    EXPECT_EQ(x["output_tokens"], x["target_tokens"]);
  }

  // Each default yields to its option: --dtype picks the dtypes, --max-new-tokens caps, --data keeps the
  // model's own dtype (bf16 for random models) and all of the file's records.
  fs::path data = dir / "two.json";
  write_file_atomic(data.string(), R"({"content": "类型#裙*颜色#白色", "summary": "这款白色的裙子很好看。"})" "\n"
                                   R"({"content": "类型#上衣", "summary": "简约的上衣。"})" "\n");
  const std::string base = "bench infer --model random:tiny --tokenizer bytes --probe off --warmup 0 --no-progress ";
  r = test::run_cli(base + "--dtype int8 --records 2 --max-new-tokens 8 --json --out " + (dir / "a").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  s = json::parse(read_file((dir / "a" / "summary.json").string()));
  EXPECT_EQ(s["options"]["dtypes"], json::array({"int8"}));
  EXPECT_EQ(s["runs"][0]["output_tokens"], 16);
  r = test::run_cli(base + "--data " + data.string() + " --out " + (dir / "b").string());
  ASSERT_EQ(r.rc, 0) << r.out;
  s = json::parse(read_file((dir / "b" / "summary.json").string()));
  ASSERT_EQ(s["runs"].size(), 1u);
  EXPECT_EQ(s["runs"][0]["dtype"], "bf16");
  EXPECT_EQ(s["runs"][0]["records"], 2);
}

// ------------------------------------------------------------------------------------- HTML in Chromium

std::string chromium() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    std::string path = shell_output(std::string("command -v ") + name + " 2>/dev/null");
    while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
    if (!path.empty() && path.front() == '/') return path;
  }
  return "";
}

// Runs headless Chromium on `url` (no network, throw-away profile) with `action` (--dump-dom or
// --screenshot=PATH); returns stdout.
std::string run_chromium(const std::string& exe, const fs::path& profile, const std::string& action,
                         const std::string& url) {
  std::string cmd = "timeout 180 " + exe +
                    " --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update"
                    " --disable-sync --no-first-run --disable-extensions --user-data-dir=" + profile.string() +
                    " --window-size=1000,800 " + action + " '" + url + "' 2>/dev/null";
  return shell_output(cmd);
}

// "rendered:N points;ink:K" -> (N, K); (-1, -1) when the title is something else.
std::pair<long, long> rendered(const std::string& dom) {
  auto a = dom.find("<title>rendered:");
  if (a == std::string::npos) return {-1, -1};
  long n = -1, k = -1;
  std::sscanf(dom.c_str() + a, "<title>rendered:%ld points;ink:%ld</title>", &n, &k);
  return {n, k};
}

TEST(BenchHtml, RendersInHeadlessChromiumWithoutScriptErrors) {
  std::string exe = chromium();
  ASSERT_FALSE(exe.empty()) << "headless Chromium is needed for this test: scripts/setup.sh --oracle installs it "
                               "(Debian package chromium)";
  fs::path out = tiny_run("bench-html");
  fs::path page = fs::absolute(out / "scatter3d.html");
  fs::path profile = test::temp_dir("bench-html-profile");

  std::string dom = run_chromium(exe, profile, "--dump-dom", "file://" + page.string());
  ASSERT_NE(dom.find("<canvas"), std::string::npos) << "no DOM from Chromium: " << dom.substr(0, 500);
  EXPECT_EQ(dom.find("id=\"error\""), std::string::npos) << dom.substr(0, 2000);
  auto [points, ink] = rendered(dom);
  EXPECT_EQ(points, 12) << "title: " << dom.substr(dom.find("<title>"), 80);  // 2 dtypes x 2 batches x 3 records
  EXPECT_GT(ink, 5000) << "the canvas is (nearly) blank";

  // The screenshot of the page is an image, not a blank page (a blank 1000x800 PNG is ~5 KB).
  fs::path shot = profile / "shot.png";
  run_chromium(exe, profile, "--screenshot=" + shot.string(), "file://" + page.string());
  EXPECT_TRUE(is_png(shot.string(), 20000)) << shot;

  // A view in the address rotates the plot: other pixels.
  std::string side = run_chromium(exe, profile, "--dump-dom", "file://" + page.string() + "#yaw=1.5708&pitch=0");
  auto [points2, ink2] = rendered(side);
  EXPECT_EQ(points2, 12);
  EXPECT_NE(ink2, ink);

  // The check catches a script error: the same page with a broken script reports it.
  std::string html = read_file(page.string());
  auto at = html.find("<script id=\"data\"");
  ASSERT_NE(at, std::string::npos);
  html.insert(at, "<script>no_such_function();</script>\n");
  fs::path broken = fs::absolute(profile / "broken.html");
  write_file_atomic(broken.string(), html);
  std::string bad = run_chromium(exe, profile, "--dump-dom", "file://" + broken.string());
  EXPECT_NE(bad.find("id=\"error\""), std::string::npos) << bad.substr(0, 1000);
}

// ----------------------------------------------------------------------------------- pieces

TEST(BenchSummary, SpreadAndPercentile) {
  auto s = lab::spread_of({3, 1, 2, 10});
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 10);
  EXPECT_DOUBLE_EQ(lab::spread_of({4, 9, 1}).median, 4);
  EXPECT_DOUBLE_EQ(lab::percentile({1, 2, 3, 4, 5}, 0.5), 3);
  EXPECT_DOUBLE_EQ(lab::percentile({1, 2, 3, 4, 5}, 0.9), 4.6);
  EXPECT_DOUBLE_EQ(lab::percentile({}, 0.9), 0);
}

TEST(BenchSummary, RatesFromKnownTimings) {
  // Two repetitions of two batch-1 groups; rep 1 is twice as slow.
  std::vector<lab::GroupResult> groups;
  std::vector<lab::RecordResult> records;
  for (int rep = 0; rep < 2; ++rep)
    for (int g = 0; g < 2; ++g) {
      double k = rep + 1.0;
      lab::GroupResult gr;
      gr.rep = rep;
      gr.group = g;
      gr.sequences = 1;
      gr.input_tokens = 100;
      gr.output_tokens = 11;
      gr.decode_steps = 10;
      gr.prefill_s = 0.1 * k;
      gr.decode_s = 1.0 * k;
      gr.wall_s = 1.1 * k;
      gr.prefill_flops = 2e9;
      groups.push_back(gr);
      lab::RecordResult r;
      r.rep = rep;
      r.index = size_t(g);
      r.input_tokens = 100;
      r.target_tokens = r.output_tokens = 11;
      r.prefill_s = gr.prefill_s;
      r.decode_s = gr.decode_s;
      r.total_s = gr.wall_s;
      records.push_back(r);
    }
  lab::ModelFacts f;
  f.dtype = "bf16";
  f.decode_bytes_per_step = 500'000'000;  // 0.5 GB per step
  auto s = lab::summarize_run(groups, records, f, 1, 2, /*probe_gbs=*/10, /*probe_gflops=*/100);
  EXPECT_EQ(s.records, 2u);
  EXPECT_EQ(s.output_tokens, 22);
  EXPECT_NEAR(s.throughput_tps.max, 22 / 2.2, 1e-9);
  EXPECT_NEAR(s.throughput_tps.min, 22 / 4.4, 1e-9);
  EXPECT_NEAR(s.throughput_tps.median, (22 / 2.2 + 22 / 4.4) / 2, 1e-9);
  EXPECT_NEAR(s.prefill_tps.max, 200 / 0.2, 1e-9);
  EXPECT_NEAR(s.decode_tps.max, 20 / 2.0, 1e-9);        // 10 decoded tokens per record
  EXPECT_NEAR(s.decode_gbs.max, 0.5 * 20 / 2.0, 1e-9);  // 20 steps of 0.5 GB in 2 s
  EXPECT_NEAR(s.prefill_gflops.max, 4.0 / 0.2, 1e-9);
  EXPECT_NEAR(s.decode_gbs_of_probe, s.decode_gbs.median / 10, 1e-12);
  EXPECT_NEAR(s.prefill_gflops_of_probe, s.prefill_gflops.median / 100, 1e-12);
  EXPECT_NEAR(s.latency_p50_s.min, 1.1, 1e-12);

  std::vector<lab::RunSummary> runs(2, s);
  runs[1].batch = 4;
  runs[1].throughput_tps.median = 3 * s.throughput_tps.median;
  lab::set_batch_gains(runs);
  EXPECT_DOUBLE_EQ(runs[0].batch_gain, 1.0);
  EXPECT_DOUBLE_EQ(runs[1].batch_gain, 3.0);
}

TEST(BenchSummary, PrefillFlopsCountMatricesAttentionAndOneOutputRow) {
  ModelConfig c = ModelConfig::preset("tiny");
  double C = c.hidden_size, F = c.ffn_hidden_size, V = c.vocab_size;
  double P = double(c.qkv_dim()) * C + C * c.q_dim() + 2 * F * C + C * F;
  double T = 10;
  double expect = c.num_layers * (2 * P * T + 2.0 * c.num_heads * c.kv_channels * T * (T + 1)) + 2 * V * C;
  EXPECT_DOUBLE_EQ(lab::prefill_flops(c, 10), expect);
}

TEST(BenchPrompts, ForcedCappedFreeAndTooLong) {
  Tokenizer tok = Tokenizer::byte_fallback();
  auto recs = lab::embedded_sample(2);
  auto ids0 = lab::sample_ids(tok, recs[0].content, recs[0].summary);
  int ref = int(ids0.output.size());
  auto forced = lab::make_prompts(recs, tok, 0, false, 4096);
  EXPECT_EQ(forced[0].target_tokens, ref);
  EXPECT_EQ(forced[0].input, ids0.input);
  EXPECT_EQ(forced[1].index, 1u);
  EXPECT_EQ(lab::make_prompts(recs, tok, 7, false, 4096)[0].target_tokens, 7);
  EXPECT_EQ(lab::make_prompts(recs, tok, 0, true, 4096)[0].target_tokens, 2 * ref);
  EXPECT_EQ(lab::make_prompts(recs, tok, 7, true, 4096)[0].target_tokens, 7);
  // Targets are cut to what fits seq_length; a prompt that does not fit by itself is an error.
  std::vector<lab::Record> first(recs.begin(), recs.begin() + 1);
  int room = 5;
  EXPECT_EQ(lab::make_prompts(first, tok, 0, false, int(ids0.input.size()) + room)[0].target_tokens, room);
  EXPECT_THROW(lab::make_prompts(first, tok, 0, false, int(ids0.input.size())), Error);
}

TEST(BenchCompare, RatiosMeanABetterAndUnmatchedRunsAreListed) {
  json a = {{"engine", "glmlab"},
            {"runs", {{{"dtype", "bf16"}, {"batch", 1}, {"throughput_tps", {{"median", 30.0}}},
                       {"latency_p50_s", {{"median", 1.0}}}, {"peak_rss_bytes", 1e9}},
                      {{"dtype", "int8"}, {"batch", 1}, {"throughput_tps", {{"median", 50.0}}}}}}};
  json b = {{"engine", "torch"},
            {"runs", {{{"dtype", "bf16"}, {"batch", 1}, {"throughput_tps", {{"median", 10.0}}},
                       {"latency_p50_s", {{"median", 4.0}}}, {"peak_rss_bytes", 2e9}}}}};
  std::string t = lab::compare_summaries(a, b);
  EXPECT_NE(t.find("| bf16 | 1 | tok/s | 30.0 | 10.0 | 3.00× |"), std::string::npos) << t;
  EXPECT_NE(t.find("| bf16 | 1 | latency p50 s | 1.00 | 4.00 | 4.00× |"), std::string::npos) << t;
  EXPECT_NE(t.find("| bf16 | 1 | peak RSS GB | 1.00 | 2.00 | 2.00× |"), std::string::npos) << t;
  EXPECT_NE(t.find("A int8 b1"), std::string::npos) << t;
  EXPECT_THROW(lab::compare_summaries(json::object(), b), Error);
}

TEST(BenchCompare, CliComparesTwoSummaries) {
  fs::path dir = test::temp_dir("bench-compare");
  json s = {{"engine", "glmlab"}, {"runs", {{{"dtype", "bf16"}, {"batch", 1}, {"throughput_tps", {{"median", 8.0}}}}}}};
  write_file_atomic((dir / "a.json").string(), s.dump());
  s["runs"][0]["throughput_tps"]["median"] = 4.0;
  write_file_atomic((dir / "b.json").string(), s.dump());
  auto r = test::run_cli("bench compare " + (dir / "a.json").string() + " " + (dir / "b.json").string());
  EXPECT_EQ(r.rc, 0) << r.out;
  EXPECT_NE(r.out.find("2.00×"), std::string::npos) << r.out;
  r = test::run_cli("bench compare " + (dir / "a.json").string() + " " + (dir / "missing.json").string());
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.out.find("missing.json"), std::string::npos) << r.out;
}

TEST(BenchPlot, FailedGnuplotLeavesNoFile) {
  fs::path dir = test::temp_dir("bench-plot");
  std::string target = (dir / "x.png").string();
  EXPECT_THROW(lab::write_gnuplot_image(target, "this is not gnuplot\n"), Error);
  EXPECT_FALSE(fs::exists(target));
  EXPECT_THROW(lab::write_gnuplot_image(target, "set terminal png\nplot x\n", "/nonexistent/gnuplot"), Error);
  EXPECT_FALSE(fs::exists(target));
  for (const auto& e : fs::directory_iterator(dir)) ADD_FAILURE() << "left behind: " << e.path();
}

TEST(BenchProgress, FormatsSeconds) {
  EXPECT_EQ(lab::Progress::format_seconds(0), "0:00");
  EXPECT_EQ(lab::Progress::format_seconds(65.4), "1:05");
  EXPECT_EQ(lab::Progress::format_seconds(3600 + 62), "1:01:02");
  EXPECT_EQ(lab::Progress::format_seconds(-1), "--:--");
}

}  // namespace
}  // namespace glmlab

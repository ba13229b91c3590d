// glmlab bench serve (issue 15 item 5): the SSE parser on chunks cut anywhere, the Poisson schedule, the
// request body against the server's own parser, and whole runs against a real `glmlab serve --model
// random:small --port 0` (started here, always killed): every request succeeds with its forced length,
// the totals agree with the server's /metrics, the summary agrees with requests.csv; a wrong --url and a
// server that answers 401 are reported, not crashed on.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "lab/bench/bench_compare.h"
#include "lab/bench/bench_serve.h"
#include "lab/bench/bench_summary.h"
#include "lab/data/sample.h"
#include "serve/http/openai_api.h"
#include "test_util.h"
#include "util/file.h"
#include "util/json.h"

namespace glmlab {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- SSE parser -------------------------------------------------------------------------------------

std::vector<std::string> events_of(const std::vector<std::string_view>& chunks) {
  lab::SseParser p;
  std::vector<std::string> out;
  for (auto c : chunks) p.feed(c, [&](const std::string& d) { out.push_back(d); });
  return out;
}

TEST(BenchServeSse, EventsAreTheSameWhereverTheChunksAreCut) {
  // Multi-byte UTF-8 content ("广告" = 6 bytes), CRLF line ends, a comment, a multi-line event, [DONE].
  const std::string stream =
      "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
      ": keep-alive comment\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"广告\"}}]}\r\n\r\n"
      "event: message\ndata: line one\ndata:line two\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"é\"}}]}\n\n"
      "data: [DONE]\n\n";
  const std::vector<std::string> want = {"{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
                                         "{\"choices\":[{\"delta\":{\"content\":\"广告\"}}]}", "line one\nline two",
                                         "{\"choices\":[{\"delta\":{\"content\":\"é\"}}]}", "[DONE]"};
  EXPECT_EQ(events_of({stream}), want);
  // Every cut into two pieces: in the middle of a line, of "\r\n", of an event, of a UTF-8 character.
  const std::string_view sv(stream);
  for (size_t k = 0; k <= stream.size(); ++k) EXPECT_EQ(events_of({sv.substr(0, k), sv.substr(k)}), want) << "cut at " << k;
  // Byte by byte, and a cut between the bytes of 广 in particular (checked above, named here).
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < sv.size(); ++i) bytes.push_back(sv.substr(i, 1));
  EXPECT_EQ(events_of(bytes), want);
  const size_t mid = stream.find("广") + 1;
  EXPECT_EQ(events_of({sv.substr(0, mid), sv.substr(mid)}), want);
  // An incomplete event stays buffered until its blank line.
  lab::SseParser p;
  int n = 0;
  p.feed("data: {\"a\":", [&](const std::string&) { ++n; });
  EXPECT_EQ(n, 0);
  EXPECT_GT(p.buffered(), 0u);
  p.feed("1}\n", [&](const std::string&) { ++n; });
  EXPECT_EQ(n, 0);
  p.feed("\n", [&](const std::string& d) {
    ++n;
    EXPECT_EQ(d, "{\"a\":1}");
  });
  EXPECT_EQ(n, 1);
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(BenchServeSse, ChatStreamTimesContentAndReadsUsage) {
  lab::ChatStream s;
  s.on_event(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})", 0.01);
  s.on_event(R"({"choices":[{"index":0,"delta":{"content":"广"},"finish_reason":null}]})", 0.10);
  s.on_event(R"({"choices":[{"index":0,"delta":{"content":"告"},"finish_reason":null}]})", 0.25);
  s.on_event(R"({"choices":[{"index":0,"delta":{},"finish_reason":"length"}]})", 0.26);
  auto early = s.finish();
  EXPECT_NE(early.error.find("[DONE]"), std::string::npos);  // not finished yet
  s.on_event(R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}})", 0.27);
  s.on_event("[DONE]", 0.28);
  lab::ChatReply r = s.finish();
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.text, "广告");
  EXPECT_EQ(r.content_chunks, 2);  // the role chunk's empty content is no content
  EXPECT_DOUBLE_EQ(r.first_content_s, 0.10);
  EXPECT_DOUBLE_EQ(r.last_content_s, 0.25);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.prompt_tokens, 12);
  EXPECT_EQ(r.completion_tokens, 3);
  // An error event, malformed JSON, and a stream without usage are errors.
  lab::ChatStream e;
  e.on_event(R"({"error":{"message":"generation failed: boom","type":"server_error"}})", 0.1);
  EXPECT_NE(e.finish().error.find("boom"), std::string::npos);
  lab::ChatStream m;
  m.on_event("{not json", 0.1);
  EXPECT_NE(m.finish().error.find("not a JSON object"), std::string::npos);
  lab::ChatStream u;
  u.on_event("[DONE]", 0.1);
  EXPECT_NE(u.finish().error.find("usage"), std::string::npos);
  // A whole reply.
  auto w = lab::parse_chat_completion(R"({"choices":[{"message":{"role":"assistant","content":"hi"},
      "finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":2}})");
  EXPECT_EQ(w.error, "");
  EXPECT_EQ(w.text, "hi");
  EXPECT_EQ(w.completion_tokens, 2);
  EXPECT_NE(lab::parse_chat_completion(R"({"error":{"message":"nope"}})").error.find("nope"), std::string::npos);
}

// ---- Poisson schedule, URL, request body ------------------------------------------------------------

TEST(BenchServeSchedule, PoissonArrivalsHaveTheRateAndRepeatWithTheSeed) {
  const double rate = 4;
  auto t = lab::poisson_arrivals(20001, rate, 7);
  ASSERT_EQ(t.size(), 20001u);
  EXPECT_EQ(t[0], 0);
  std::vector<double> gaps;
  for (size_t i = 1; i < t.size(); ++i) {
    ASSERT_GT(t[i], t[i - 1]);
    gaps.push_back(t[i] - t[i - 1]);
  }
  double mean = std::accumulate(gaps.begin(), gaps.end(), 0.0) / double(gaps.size());
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  double sd = std::sqrt(var / double(gaps.size()));
  EXPECT_NEAR(mean, 1 / rate, 0.03 / rate);  // 20000 gaps: the standard error is 0.7% of the mean
  EXPECT_NEAR(sd / mean, 1.0, 0.05);         // exponential: standard deviation = mean
  // The median gap of an exponential is ln 2 / rate.
  EXPECT_NEAR(lab::percentile(gaps, 0.5), std::log(2.0) / rate, 0.05 / rate);
  EXPECT_EQ(lab::poisson_arrivals(100, rate, 7), std::vector<double>(t.begin(), t.begin() + 100));
  EXPECT_NE(lab::poisson_arrivals(100, rate, 8), std::vector<double>(t.begin(), t.begin() + 100));
  EXPECT_THROW(lab::poisson_arrivals(3, 0, 1), Error);
}

TEST(BenchServeSchedule, ServerUrls) {
  auto u = lab::parse_server_url("http://127.0.0.1:8080");
  EXPECT_EQ(u.origin, "http://127.0.0.1:8080");
  EXPECT_EQ(u.api("/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(u.root("/metrics"), "/metrics");
  EXPECT_EQ(lab::parse_server_url("http://h:1/v1/").api("/models"), "/v1/models");  // an OpenAI base_url
  auto p = lab::parse_server_url("https://example.com/proxy/v1");
  EXPECT_EQ(p.origin, "https://example.com");
  EXPECT_EQ(p.api("/models"), "/proxy/v1/models");
  EXPECT_EQ(p.root("/metrics"), "/proxy/metrics");
  for (const char* bad : {"127.0.0.1:8080", "ftp://h:1", "http://", "http://h:1/?x=1"})
    EXPECT_NE(test::error_of([&] { lab::parse_server_url(bad); }).find(bad), std::string::npos) << bad;
}

TEST(BenchServeSchedule, RequestBodyIsWhatTheServerParsesAsBenchInfersPrompt) {
  const Tokenizer tok = Tokenizer::byte_fallback();
  auto records = lab::embedded_sample(3);
  auto prompts = lab::make_serve_prompts(records, tok, 8, /*stop_at_eos=*/false);
  ASSERT_EQ(prompts.size(), 3u);
  for (const auto& p : prompts) {
    EXPECT_EQ(p.target_tokens, 8);
    std::string body = lab::chat_request_body("m", p.content, p.target_tokens, /*forced=*/true, /*stream=*/true);
    auto parsed = serve::http::parse_request(serve::http::Endpoint::Chat, body, tok, 4096, 1);
    // The same ids as bench infer's prompt (sample_ids input), hence the same usage.prompt_tokens.
    EXPECT_EQ(parsed.request.prompt, lab::sample_ids(tok, records[p.index].content, "").input);
    EXPECT_EQ(int(parsed.request.prompt.size()), p.prompt_tokens);
    EXPECT_EQ(parsed.request.max_tokens, 8);
    EXPECT_EQ(parsed.request.min_tokens, 8);  // ignore_eos: forced to max_tokens
    EXPECT_TRUE(parsed.request.sampling.greedy);
    EXPECT_TRUE(parsed.stream);
    EXPECT_TRUE(parsed.include_usage);
    EXPECT_TRUE(parsed.stop.empty());
    auto free = serve::http::parse_request(
        serve::http::Endpoint::Chat, lab::chat_request_body("m", p.content, 8, false, false), tok, 4096, 1);
    EXPECT_EQ(free.request.min_tokens, 0);
    EXPECT_FALSE(free.stream);
  }
}

// ---- against a real server --------------------------------------------------------------------------

// `glmlab serve --port 0 ARGS` as a child process: waits (bounded) for its listening line; killed on
// destruction whatever happened.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& args) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 2);
      int null = open("/dev/null", O_RDWR);
      dup2(null, 0);
      dup2(null, 1);
      close(fds[0]);
      close(fds[1]);
      std::string cmd = "exec " + std::string(GLMLAB_CLI) + " serve --port 0 " + args;
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    std::regex listening("glmlab serve: listening on http://[^:]+:(\\d+)");
    while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[4096];
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) break;  // the server exited
      log_.append(buf, size_t(n));
      std::smatch m;
      if (std::regex_search(log_, m, listening)) port_ = std::stoi(m[1]);
    }
    // Keep reading its stderr so that it never blocks on a full pipe.
    reader_ = std::thread([this] {
      char buf[4096];
      while (read(fd_, buf, sizeof buf) > 0) {
      }
    });
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& log() const { return log_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int port_ = 0;
  std::string log_;
  std::thread reader_;
};

std::vector<std::map<std::string, std::string>> read_csv(const std::string& path) {
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::istringstream h(line);
    std::string f;
    while (std::getline(h, f, ',')) header.push_back(f);
  }
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    std::map<std::string, std::string> row;
    std::istringstream l(line);
    std::string f;
    for (size_t i = 0; i < header.size() && std::getline(l, f, ','); ++i) row[header[i]] = f;
    rows.push_back(row);
  }
  return rows;
}

double num(const std::string& s) { return s.empty() ? std::nan("") : std::stod(s); }

constexpr const char* kServerArgs = "--model random:small --tokenizer bytes --max-batch 4 --threads 1";

TEST(BenchServe, ReplaysRecordsAgainstARealServer) {
  ServerProcess server(kServerArgs);
  ASSERT_GT(server.port(), 0) << server.log();
  const fs::path dir = test::temp_dir("bench-serve") / "out";
  const int reps = 2;
  auto t0 = std::chrono::steady_clock::now();
  auto r = test::run_cli("bench serve --url " + server.url() +
                         " --tokenizer bytes --records 6 --concurrency 1,3 --rate 40 --max-new-tokens 8 --reps 2 "
                         "--warmup 1 --timeout 120 --no-progress --out " + dir.string());
  std::printf("bench serve took %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_CONTAINS(r.out, "| concurrency 3 |");
  EXPECT_CONTAINS(r.out, "| rate 40/s |");
  EXPECT_EQ(r.out.find("failed"), std::string::npos) << r.out;

  // The forced targets: min(8, the reference length) of each record under the same tokenizer.
  const Tokenizer tok = Tokenizer::byte_fallback();
  auto prompts = lab::make_serve_prompts(lab::embedded_sample(6), tok, 8, false);

  json s = read_json_file((dir / "summary.json").string());
  EXPECT_EQ(s["schema"], "glmlab-bench-serve/1");
  EXPECT_EQ(s["server"]["model"], "random:small");  // /v1/models
  EXPECT_TRUE(s["server"]["glmlab_metrics"].get<bool>());
  EXPECT_TRUE(s["machine"].contains("cpu"));
  EXPECT_NE(s["command"].get<std::string>().find("bench serve"), std::string::npos);
  ASSERT_EQ(s["runs"].size(), 3u);

  auto rows = read_csv((dir / "requests.csv").string());
  ASSERT_EQ(rows.size(), 3u * reps * 6) << "one line per request per rep";
  for (const auto& row : rows) {
    SCOPED_TRACE(row.at("run") + " rep " + row.at("rep") + " record " + row.at("index"));
    EXPECT_EQ(row.at("error_kind"), "");
    EXPECT_EQ(row.at("status"), "200");
    const size_t i = std::stoul(row.at("index"));
    ASSERT_LT(i, prompts.size());
    EXPECT_EQ(std::stol(row.at("completion_tokens")), prompts[i].target_tokens);  // forced
    EXPECT_EQ(std::stol(row.at("target_tokens")), prompts[i].target_tokens);
    EXPECT_EQ(std::stol(row.at("prompt_tokens")), prompts[i].prompt_tokens);
    EXPECT_EQ(row.at("finish_reason"), "length");
    EXPECT_GE(std::stol(row.at("content_chunks")), 1);
    const double ttft = num(row.at("ttft_s")), e2e = num(row.at("e2e_s")), tpot = num(row.at("tpot_s"));
    EXPECT_GT(ttft, 0);
    EXPECT_LE(ttft, e2e);
    if (!std::isnan(tpot)) EXPECT_LE(tpot * (prompts[i].target_tokens - 1), e2e - ttft + 1e-6);
    if (row.at("run") == "r40") {
      EXPECT_GE(num(row.at("start_s")) + 1e-3, num(row.at("scheduled_s")));  // never sent before its arrival
    }
  }
  // Poisson arrivals of the rate run: the seed's schedule.
  auto arrivals = lab::poisson_arrivals(6, 40, 0);
  for (const auto& row : rows)
    if (row.at("run") == "r40") EXPECT_NEAR(num(row.at("scheduled_s")), arrivals[std::stoul(row.at("seq"))], 1e-6);

  // Each run's numbers, recomputed from requests.csv, and its tokens against the server's counters.
  for (const auto& run : s["runs"]) {
    const std::string name = run["run"];
    SCOPED_TRACE(name);
    EXPECT_EQ(run["errors"], 0);
    EXPECT_EQ(run["ok"], 6 * reps);
    std::vector<double> tps, ttft50, e2e50, e2e99, tpot50;
    int64_t tokens = 0, prompt_tokens = 0;
    for (int rep = 0; rep < reps; ++rep) {
      std::vector<double> ttft, e2e, tpot;
      double first = 1e300, last = 0;
      int64_t out = 0;
      for (const auto& row : rows) {
        if (row.at("run") != name || std::stoi(row.at("rep")) != rep) continue;
        ttft.push_back(num(row.at("ttft_s")));
        e2e.push_back(num(row.at("e2e_s")));
        if (!row.at("tpot_s").empty()) tpot.push_back(num(row.at("tpot_s")));
        first = std::min(first, num(row.at("start_s")));
        last = std::max(last, num(row.at("start_s")) + num(row.at("e2e_s")));
        out += std::stol(row.at("completion_tokens"));
        prompt_tokens += std::stol(row.at("prompt_tokens"));
      }
      ASSERT_EQ(ttft.size(), 6u);
      tokens += out;
      tps.push_back(double(out) / (last - first));
      ttft50.push_back(lab::percentile(ttft, 0.5));
      e2e50.push_back(lab::percentile(e2e, 0.5));
      e2e99.push_back(lab::percentile(e2e, 0.99));
      if (!tpot.empty()) tpot50.push_back(lab::percentile(tpot, 0.5));
    }
    auto near = [](double got, double want) { EXPECT_NEAR(got, want, 1e-6 * std::max(1.0, std::fabs(want))); };
    near(run["output_tps"]["median"], lab::spread_of(tps).median);
    near(run["output_tps"]["min"], lab::spread_of(tps).min);
    near(run["ttft_p50_s"]["median"], lab::spread_of(ttft50).median);
    near(run["e2e_p50_s"]["median"], lab::spread_of(e2e50).median);
    near(run["e2e_p99_s"]["max"], lab::spread_of(e2e99).max);
    if (tpot50.size() == size_t(reps)) near(run["tpot_p50_s"]["median"], lab::spread_of(tpot50).median);
    EXPECT_EQ(run["output_tokens"], tokens);
    // The server generated and prefilled exactly these tokens during the run (warm-up excluded).
    const json& d = run["server_metrics"]["delta"];
    ASSERT_TRUE(d.is_object()) << run.dump();
    EXPECT_EQ(d["glmlab_generation_tokens_total"].get<double>(), double(tokens));
    EXPECT_EQ(d["glmlab_prompt_tokens_total"].get<double>(), double(prompt_tokens));
    EXPECT_EQ(d["glmlab_requests_finished_total{reason=\"length\"}"].get<double>(), 6.0 * reps);
  }
  // summary.csv: one line per run; the plot is a PNG.
  auto srows = read_csv((dir / "summary.csv").string());
  ASSERT_EQ(srows.size(), 3u);
  EXPECT_EQ(srows[1].at("run"), "c3");
  EXPECT_NEAR(num(srows[1].at("output_tps")), s["runs"][1]["output_tps"]["median"].get<double>(), 1e-6 * num(srows[1].at("output_tps")));
  std::string png = read_file((dir / "throughput_latency.png").string());
  EXPECT_GT(png.size(), 2000u);
  EXPECT_EQ(png.compare(0, 8, "\x89PNG\r\n\x1a\n"), 0);

  // bench compare reads the new schema (matched by run) and refuses to mix it with bench infer's.
  auto c = test::run_cli("bench compare " + dir.string() + " " + dir.string());
  EXPECT_EQ(c.rc, 0) << c.out;
  EXPECT_CONTAINS(c.out, "| c3 | output tok/s |");
  EXPECT_CONTAINS(c.out, "1.00×");
  json infer = {{"schema", "glmlab-bench-infer/1"}, {"runs", json::array()}};
  EXPECT_NE(test::error_of([&] { lab::compare_summaries(s, infer); }).find("serving benchmark"), std::string::npos);
}

TEST(BenchServe, AWrongUrlFailsFastNamingIt) {
  // A port nothing listens on: connection refused at once.
  const fs::path dir = test::temp_dir("bench-serve-nourl") / "out";
  auto t0 = std::chrono::steady_clock::now();
  auto r = test::run_cli("bench serve --url http://127.0.0.1:1 --records 2 --concurrency 1 --no-progress --out " +
                         dir.string());
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_CONTAINS(r.out, "http://127.0.0.1:1");
  EXPECT_CONTAINS(r.out, "cannot reach");
  EXPECT_LT(took, 10.0);
  EXPECT_FALSE(fs::exists(dir));
  // A malformed URL is refused before anything else.
  auto m = test::run_cli("bench serve --url 127.0.0.1:8080 --no-progress --out " + dir.string());
  EXPECT_EQ(m.rc, 1) << m.out;
  EXPECT_CONTAINS(m.out, "--url 127.0.0.1:8080");
}

TEST(BenchServe, A401IsReportedAsErrors) {
  ServerProcess server(std::string(kServerArgs) + " --api-key sekrit");
  ASSERT_GT(server.port(), 0) << server.log();
  const fs::path dir = test::temp_dir("bench-serve-401") / "out";
  // No key in the bench (nor in its environment).
  auto rr = test::run_shell("env -u GLMLAB_API_KEY " + std::string(GLMLAB_CLI) + " bench serve --url " + server.url() +
                            " --tokenizer bytes --records 3 --concurrency 2 --max-new-tokens 4 --warmup 0 "
                            "--no-progress --out " + dir.string());
  ASSERT_EQ(rr.rc, 0) << rr.out;
  EXPECT_CONTAINS(rr.out, "3 of 3 requests failed");
  EXPECT_CONTAINS(rr.out, "http_401");
  json s = read_json_file((dir / "summary.json").string());
  EXPECT_TRUE(s["server"]["model"].is_null());
  EXPECT_NE(s["server"]["model_error"].get<std::string>().find("401"), std::string::npos);
  ASSERT_EQ(s["runs"].size(), 1u);
  EXPECT_EQ(s["runs"][0]["errors"], 3);
  EXPECT_EQ(s["runs"][0]["ok"], 0);
  EXPECT_EQ(s["runs"][0]["errors_by_kind"]["http_401"], 3);
  EXPECT_TRUE(s["runs"][0]["output_tps"]["median"].is_number());
  EXPECT_TRUE(s["runs"][0]["ttft_p50_s"]["median"].is_null());  // no successful request: no percentile
  auto rows = read_csv((dir / "requests.csv").string());
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& row : rows) {
    EXPECT_EQ(row.at("status"), "401");
    EXPECT_EQ(row.at("error_kind"), "http_401");
  }
  // With the key, the same server answers.
  auto ok = test::run_cli("bench serve --url " + server.url() + " --api-key sekrit --tokenizer bytes --records 2 "
                          "--concurrency 1 --max-new-tokens 4 --warmup 0 --no-progress --json --out " +
                          (dir.parent_path() / "ok").string());
  ASSERT_EQ(ok.rc, 0) << ok.out;
  EXPECT_EQ(ok.out.find("failed"), std::string::npos) << ok.out;
}

}  // namespace
}  // namespace glmlab

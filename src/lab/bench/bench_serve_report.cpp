// The outputs of glmlab bench serve (see bench_serve_report.h).
#include "lab/bench/bench_serve_report.h"

#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "lab/bench/bench_report.h"
#include "lab/plots/gnuplot.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

using json = nlohmann::json;

namespace {

const char* kQ[3] = {"p50", "p90", "p99"};

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
json spread(const Spread& s) { return {{"median", num(s.median)}, {"min", num(s.min)}, {"max", num(s.max)}}; }
// A CSV number: empty when unknown (NaN, or a negative time that stands for "none").
std::string cnum(double v) { return std::isfinite(v) && v >= 0 ? fmt::format("{:.9g}", v) : ""; }

std::string mode_of(const ServeRunSummary& s) { return s.rate > 0 ? "rate" : "concurrency"; }

json options_json(const BenchServeMeta& meta) {
  const auto& o = meta.options;
  return {{"url", o.url},
          {"api_key", !o.api_key.empty()},
          {"concurrency", o.concurrency},
          {"rates", o.rates},
          {"max_concurrency", o.max_concurrency},
          {"forced", o.forced},
          {"stream", o.stream},
          {"reps", o.reps},
          {"warmup", o.warmup},
          {"timeout_s", o.timeout_s},
          {"seed", o.seed},
          {"max_new_tokens", meta.max_new_tokens}};
}

// "12.3 / 45.6 / 78.9" in milliseconds (–: none).
std::string ms3(const Spread (&s)[3]) {
  auto one = [](double v) { return std::isfinite(v) ? fmt_num(v * 1e3) : std::string("–"); };
  return fmt::format("{} / {} / {}", one(s[0].median), one(s[1].median), one(s[2].median));
}
std::string s3(const Spread (&s)[3]) {
  auto one = [](double v) { return std::isfinite(v) ? fmt_num(v) : std::string("–"); };
  return fmt::format("{} / {} / {}", one(s[0].median), one(s[1].median), one(s[2].median));
}

}  // namespace

json serve_run_json(const ServeRunSummary& s) {
  json j = {{"run", s.run},
            {"mode", mode_of(s)},
            {"concurrency", s.concurrency > 0 ? json(s.concurrency) : json(nullptr)},
            {"rate", s.rate > 0 ? json(s.rate) : json(nullptr)},
            {"reps", s.reps},
            {"requests", s.requests},
            {"ok", s.ok},
            {"errors", s.errors},
            {"errors_by_kind", s.errors_by_kind},
            {"output_tokens", s.output_tokens},
            {"wall_s", spread(s.wall_s)},
            {"output_tps", spread(s.output_tps)},
            {"requests_per_s", spread(s.requests_per_s)}};
  for (int q = 0; q < 3; ++q) {
    j[fmt::format("ttft_{}_s", kQ[q])] = spread(s.ttft_s[q]);
    j[fmt::format("tpot_{}_s", kQ[q])] = spread(s.tpot_s[q]);
    j[fmt::format("e2e_{}_s", kQ[q])] = spread(s.e2e_s[q]);
  }
  json reps = json::array();
  for (const auto& r : s.per_rep) {
    json x = {{"rep", r.rep},         {"wall_s", r.wall_s},       {"ok", r.ok},
              {"errors", r.errors},   {"output_tokens", r.output_tokens}, {"output_tps", r.output_tps},
              {"requests_per_s", r.requests_per_s}};
    for (int q = 0; q < 3; ++q) {
      x[fmt::format("ttft_{}_s", kQ[q])] = num(r.ttft_s[q]);
      x[fmt::format("tpot_{}_s", kQ[q])] = num(r.tpot_s[q]);
      x[fmt::format("e2e_{}_s", kQ[q])] = num(r.e2e_s[q]);
    }
    reps.push_back(x);
  }
  j["per_rep"] = reps;
  j["server_metrics"] = s.server_metrics;
  return j;
}

json serve_summary_json(const BenchServeReport& r, const BenchServeMeta& meta) {
  int64_t in_tok = 0, target = 0;
  for (const auto& p : r.prompts) {
    in_tok += p.prompt_tokens;
    target += p.target_tokens;
  }
  json runs = json::array();
  for (const auto& s : r.runs) runs.push_back(serve_run_json(s));
  return {{"schema", "glmlab-bench-serve/1"},
          {"engine", "glmlab bench serve"},
          {"created", utc_timestamp()},
          {"command", meta.command},
          {"server",
           {{"url", meta.options.url},
            {"model", r.model.empty() ? json(nullptr) : json(r.model)},
            {"model_error", r.model_error.empty() ? json(nullptr) : json(r.model_error)},
            {"glmlab_metrics", r.glmlab_metrics}}},
          {"data",
           {{"source", meta.data}, {"records", r.prompts.size()}, {"prompt_tokens", in_tok},
            {"target_tokens", target}, {"forced", meta.options.forced}, {"max_new_tokens", meta.max_new_tokens},
            {"tokenizer", meta.tokenizer}}},
          {"options", options_json(meta)},
          {"machine", to_json(r.machine)},
          {"runs", runs},
          {"wall_s", r.wall_s}};
}

std::string serve_summary_csv(const BenchServeReport& r) {
  std::string out = "run,mode,concurrency,rate,reps,requests,ok,errors,output_tokens,wall_s,output_tps,output_tps_min,"
                    "output_tps_max,requests_per_s";
  for (const char* m : {"ttft", "tpot", "e2e"})
    for (const char* q : kQ) out += fmt::format(",{}_{}_s", m, q);
  out += "\n";
  for (const auto& s : r.runs) {
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{}", s.run, mode_of(s), s.concurrency,
                       s.rate > 0 ? fmt::format("{:g}", s.rate) : "", s.reps, s.requests, s.ok, s.errors,
                       s.output_tokens, cnum(s.wall_s.median), cnum(s.output_tps.median), cnum(s.output_tps.min),
                       cnum(s.output_tps.max), cnum(s.requests_per_s.median));
    for (const Spread* m : {s.ttft_s, s.tpot_s, s.e2e_s})
      for (int q = 0; q < 3; ++q) out += "," + cnum(m[q].median);
    out += "\n";
  }
  return out;
}

std::string serve_requests_csv(const BenchServeReport& r) {
  std::string out = "run,concurrency,rate,rep,seq,index,scheduled_s,start_s,ttft_s,tpot_s,e2e_s,status,prompt_tokens,"
                    "expected_prompt_tokens,completion_tokens,target_tokens,content_chunks,finish_reason,error_kind,"
                    "error\n";
  for (const auto& x : r.requests)
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", x.run, x.concurrency,
                       x.rate > 0 ? fmt::format("{:g}", x.rate) : "", x.rep, x.seq, x.index, cnum(x.scheduled_s),
                       cnum(x.start_s), cnum(x.ttft_s), cnum(x.tpot_s), cnum(x.e2e_s), x.status,
                       x.prompt_tokens >= 0 ? std::to_string(x.prompt_tokens) : "", x.expected_prompt_tokens,
                       x.completion_tokens >= 0 ? std::to_string(x.completion_tokens) : "", x.target_tokens,
                       x.content_chunks, csv_field(x.finish_reason), x.error_kind, csv_field(x.error));
  return out;
}

std::string serve_markdown_table(const BenchServeReport& r) {
  std::string out = fmt::format("server {} ({}), {} records\n\n", r.url.origin + r.url.prefix,
                                r.model.empty() ? "model unknown" : r.model, r.prompts.size());
  out += "| run | requests | errors | out tok/s | req/s | TTFT p50/p90/p99 ms | TPOT p50/p90/p99 ms | e2e p50/p90/p99 s |\n"
         "|---|--:|--:|--:|--:|--:|--:|--:|\n";
  for (const auto& s : r.runs) {
    std::string errs = std::to_string(s.errors);
    if (s.errors) {
      errs += " (";
      bool first = true;
      for (const auto& [k, n] : s.errors_by_kind) {
        errs += fmt::format("{}{} {}", first ? "" : ", ", k, n);
        first = false;
      }
      errs += ")";
    }
    std::string name = s.rate > 0 ? fmt::format("rate {:g}/s", s.rate) : fmt::format("concurrency {}", s.concurrency);
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", name, s.requests * size_t(s.reps), errs,
                       s.ok ? fmt_spread(s.output_tps, s.reps) : "–", s.ok ? fmt_spread(s.requests_per_s, s.reps) : "–",
                       ms3(s.ttft_s), ms3(s.tpot_s), s3(s.e2e_s));
  }
  return out;
}

void write_throughput_latency_png(const std::string& path, const BenchServeReport& r, const std::string& title) {
  std::string s = "set terminal pngcairo size 900,560 font 'sans,10'\nset termoption noenhanced\n";
  s += fmt::format("set title {}\n", gnuplot_quoted(title));
  s += "set xlabel 'output tokens / s (all requests; median over reps)'\n"
       "set ylabel 'TTFT p50 (s)'\nset y2label 'end-to-end latency p50 (s)'\n"
       "set ytics nomirror\nset y2tics\nset xrange [0:*]\nset yrange [0:*]\nset y2range [0:*]\n"
       "set grid\nset key top left\nset datafile missing 'NaN'\n";
  s += "$d << EOD\n";
  for (const auto& x : r.runs) {
    auto v = [](double d) { return std::isfinite(d) ? fmt::format("{:.6g}", d) : std::string("NaN"); };
    s += fmt::format("\"{}\" {} {} {}\n", x.run, v(x.output_tps.median), v(x.ttft_s[0].median), v(x.e2e_s[0].median));
  }
  s += "EOD\n";
  s += "plot $d using 2:3 with linespoints pt 7 lc rgb '#1f77b4' title 'TTFT p50' axes x1y1, "
       "'' using 2:3:1 with labels offset 0,1 notitle axes x1y1, "
       "'' using 2:4 with linespoints pt 5 lc rgb '#d62728' title 'e2e p50' axes x1y2\n";
  write_gnuplot_image(path, s);
}

const std::vector<std::string>& bench_serve_output_names() {
  static const std::vector<std::string> names = {"summary.json", "summary.csv", "requests.csv",
                                                 "throughput_latency.png"};
  return names;
}

BenchServeOutputs write_bench_serve_outputs(const std::string& dir, const BenchServeReport& r,
                                            const BenchServeMeta& meta) {
  namespace fs = std::filesystem;
  BenchServeOutputs out;
  publish_folder(dir, bench_serve_output_names(), [&](const std::string& tmp) {
    out = {};
    auto put = [&](const std::string& name, const std::string& text) {
      write_file_atomic((fs::path(tmp) / name).string(), text);
      out.files.push_back((fs::path(dir) / name).string());
    };
    put("summary.json", serve_summary_json(r, meta).dump(2) + "\n");
    put("summary.csv", serve_summary_csv(r));
    put("requests.csv", serve_requests_csv(r));
    try {
      write_throughput_latency_png((fs::path(tmp) / "throughput_latency.png").string(), r,
                                   fmt::format("glmlab bench serve: {} at {}", r.model.empty() ? "?" : r.model,
                                               r.url.origin + r.url.prefix));
      out.files.push_back((fs::path(dir) / "throughput_latency.png").string());
    } catch (const Error& e) {
      out.warnings.push_back(e.what());  // no gnuplot: the data files are still the report
    }
  });
  return out;
}

}  // namespace glmlab::lab

// Ratio table of two benchmark summaries (see bench_compare.h).
#include "lab/bench/bench_compare.h"

#include <cmath>
#include <functional>
#include <vector>

#include <fmt/format.h>

#include "lab/bench/bench_report.h"
#include "util/error.h"

namespace glmlab::lab {

namespace {

std::string label(const nlohmann::json& s) {
  std::string engine = s.value("engine", std::string("?"));
  if (s.contains("model") && s["model"].is_object()) engine += " " + s["model"].value("spec", std::string());
  return engine;
}

// The median of a {"median","min","max"} field, or the number itself; NaN when absent or null.
double median_of(const nlohmann::json& run, const char* key) {
  if (!run.contains(key) || run[key].is_null()) return std::nan("");
  const auto& v = run[key];
  if (v.is_object()) return v.contains("median") && v["median"].is_number() ? v["median"].get<double>() : std::nan("");
  return v.is_number() ? v.get<double>() : std::nan("");
}

std::string cell(double v, double scale = 1) { return std::isnan(v) ? "–" : fmt_num(v / scale); }

std::string ratio(double a, double b) {
  if (std::isnan(a) || std::isnan(b) || a <= 0 || b <= 0) return "–";
  return fmt::format("{:.2f}×", a / b);
}

}  // namespace

namespace {

bool is_train(const nlohmann::json& s) { return s.value("schema", std::string()).rfind("glmlab-bench-train/", 0) == 0; }

// The ratio table of runs matched by `key`: `| run | metric | A | B | A vs B |` rows for every metric either
// side has, then a row naming the missing match (`what`: what runs must share), then the unmatched runs.
struct Metric {
  const char* key;
  const char* name;
  bool rate;          // higher is better (A/B); otherwise lower is better (B/A)
  double scale = 1;   // shown divided by this
};
std::string matched_table(const nlohmann::json& a, const nlohmann::json& b,
                          const std::function<std::string(const nlohmann::json&)>& key, const std::vector<Metric>& metrics,
                          const char* what) {
  std::string out = "| run | metric | A | B | A vs B |\n|---|---|--:|--:|--:|\n";
  size_t matched = 0;
  std::vector<std::string> unmatched;
  for (const auto& ra : a["runs"]) {
    const nlohmann::json* rb = nullptr;
    for (const auto& x : b["runs"])
      if (key(x) == key(ra)) rb = &x;
    if (!rb) {
      unmatched.push_back("A " + key(ra));
      continue;
    }
    ++matched;
    for (const auto& m : metrics) {
      double va = median_of(ra, m.key), vb = median_of(*rb, m.key);
      if (std::isnan(va) && std::isnan(vb)) continue;
      out += fmt::format("| {} | {} | {} | {} | {} |\n", key(ra), m.name, cell(va, m.scale), cell(vb, m.scale),
                         m.rate ? ratio(va, vb) : ratio(vb, va));
    }
  }
  for (const auto& x : b["runs"]) {
    bool found = false;
    for (const auto& ra : a["runs"]) found |= key(ra) == key(x);
    if (!found) unmatched.push_back("B " + key(x));
  }
  if (!matched) out += fmt::format("| – | no run of A matches a run of B ({}) | | | |\n", what);
  if (!unmatched.empty()) {
    out += "\nunmatched runs:";
    for (const auto& u : unmatched) out += " " + u + ";";
    out += "\n";
  }
  return out;
}

// bench train summaries: runs matched by (method, qat, dtype).
std::string compare_train(const nlohmann::json& a, const nlohmann::json& b) {
  const std::vector<Metric> metrics = {{"samples_per_s", "samples/s", true},     {"tokens_per_s", "tokens/s", true},
                                       {"step_s", "step s", false},              {"forward_s", "forward s", false},
                                       {"backward_s", "backward s", false},      {"optimizer_s", "optimizer s", false},
                                       {"backward_over_forward", "bwd ÷ fwd", false}, {"gflops", "GFLOP/s", true},
                                       {"peak_rss_bytes", "peak RSS GB", false, 1e9}};
  auto key = [](const nlohmann::json& r) {
    return fmt::format("{} {}{}", r.value("method", std::string("?")), r.value("dtype", std::string("?")),
                       r.value("qat", std::string("none")) != "none" ? " QAT" : "");
  };
  std::string out = fmt::format("A = {}\nB = {}\n(ratios: how many times A is better — A/B for rates, B/A for times, "
                                "ratios and memory)\n\n",
                                label(a), label(b));
  out += matched_table(a, b, key, metrics, "same method, dtype and QAT");
  for (const auto* s : {&a, &b})
    if (s->contains("skipped") && (*s)["skipped"].is_array())
      for (const auto& k : (*s)["skipped"])
        out += fmt::format("{} skipped {}: {}\n", s == &a ? "A" : "B", key(k), k.value("reason", std::string()));
  return out;
}

bool is_serve(const nlohmann::json& s) { return s.value("schema", std::string()).rfind("glmlab-bench-serve/", 0) == 0; }

// bench serve summaries: runs matched by their name (c4 = concurrency 4, r2.5 = 2.5 requests/s).
std::string compare_serve(const nlohmann::json& a, const nlohmann::json& b) {
  const std::vector<Metric> metrics = {{"output_tps", "output tok/s", true}, {"requests_per_s", "requests/s", true},
                                       {"ttft_p50_s", "TTFT p50 s", false},  {"ttft_p90_s", "TTFT p90 s", false},
                                       {"tpot_p50_s", "TPOT p50 s", false},  {"tpot_p90_s", "TPOT p90 s", false},
                                       {"e2e_p50_s", "e2e p50 s", false},    {"e2e_p90_s", "e2e p90 s", false},
                                       {"errors", "errors", false}};
  auto name = [](const nlohmann::json& s) {
    std::string out = "glmlab bench serve";
    if (s.contains("server") && s["server"].is_object()) {
      const auto& sv = s["server"];
      if (sv.contains("model") && sv["model"].is_string()) out += " " + sv["model"].get<std::string>();
      if (sv.contains("url") && sv["url"].is_string()) out += " at " + sv["url"].get<std::string>();
    }
    return out;
  };
  auto key = [](const nlohmann::json& r) { return r.value("run", std::string("?")); };
  std::string out = fmt::format("A = {}\nB = {}\n(ratios: how many times A is better — A/B for rates, B/A for times "
                                "and errors)\n\n",
                                name(a), name(b));
  out += matched_table(a, b, key, metrics, "same concurrency or rate");
  return out;
}

}  // namespace

std::string compare_summaries(const nlohmann::json& a, const nlohmann::json& b) {
  for (const auto* s : {&a, &b})
    if (!s->is_object() || !s->contains("runs") || !(*s)["runs"].is_array())
      fail("not a benchmark summary (no \"runs\" array)");
  if (is_train(a) != is_train(b))
    fail("cannot compare a training benchmark summary with an inference one (schemas {} and {})",
         a.value("schema", std::string("?")), b.value("schema", std::string("?")));
  if (is_serve(a) != is_serve(b))
    fail("cannot compare a serving benchmark summary (bench serve) with another kind (schemas {} and {})",
         a.value("schema", std::string("?")), b.value("schema", std::string("?")));
  if (is_serve(a)) return compare_serve(a, b);
  if (is_train(a)) return compare_train(a, b);
  struct Metric {
    const char* key;
    const char* name;
    bool rate;      // higher is better
    double scale;   // display unit
  };
  const Metric metrics[] = {{"throughput_tps", "tok/s", true, 1},        {"prefill_tps", "prefill tok/s", true, 1},
                            {"decode_tps", "decode tok/s", true, 1},     {"ttft_p50_s", "TTFT p50 s", false, 1},
                            {"latency_p50_s", "latency p50 s", false, 1}, {"latency_p90_s", "latency p90 s", false, 1},
                            {"peak_rss_bytes", "peak RSS GB", false, 1e9}};
  std::string out = fmt::format("A = {}\nB = {}\n(ratios: how many times A is better — A/B for rates, B/A for times and "
                                "memory)\n\n",
                                label(a), label(b));
  out += "| dtype | batch | metric | A | B | A vs B |\n|---|--:|---|--:|--:|--:|\n";
  size_t matched = 0;
  std::vector<std::string> unmatched;
  // Runs match by dtype, schedule (absent = static) and batch.
  auto key = [](const nlohmann::json& r) {
    const std::string sch = r.value("schedule", std::string("static"));
    return fmt::format("{}{}", r.value("batch", 1), sch == "static" ? "" : " " + sch);
  };
  for (const auto& ra : a["runs"]) {
    std::string dt = ra.value("dtype", std::string());
    const nlohmann::json* rb = nullptr;
    for (const auto& x : b["runs"])
      if (x.value("dtype", std::string()) == dt && key(x) == key(ra)) rb = &x;
    if (!rb) {
      unmatched.push_back(fmt::format("A {} b{}", dt, key(ra)));
      continue;
    }
    ++matched;
    for (const auto& m : metrics) {
      double va = median_of(ra, m.key), vb = median_of(*rb, m.key);
      if (std::isnan(va) && std::isnan(vb)) continue;
      out += fmt::format("| {} | {} | {} | {} | {} | {} |\n", dt, key(ra), m.name, cell(va, m.scale), cell(vb, m.scale),
                         m.rate ? ratio(va, vb) : ratio(vb, va));
    }
  }
  for (const auto& x : b["runs"]) {
    std::string dt = x.value("dtype", std::string());
    bool found = false;
    for (const auto& ra : a["runs"]) found |= ra.value("dtype", std::string()) == dt && key(ra) == key(x);
    if (!found) unmatched.push_back(fmt::format("B {} b{}", dt, key(x)));
  }
  if (!matched) out += "| – | – | no run of A matches a run of B (same dtype, schedule and batch) | | | |\n";
  if (!unmatched.empty()) {
    out += "\nunmatched runs:";
    for (const auto& u : unmatched) out += " " + u + ";";
    out += "\n";
  }
  return out;
}

}  // namespace glmlab::lab

// The inference benchmark's output folder (see bench_outputs.h).
#include "lab/bench/bench_outputs.h"

#include <filesystem>
#include <functional>

#include <fmt/format.h>

#include "lab/bench/bench_plots.h"
#include "lab/plots/scatter3d_html.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

const std::vector<std::string>& bench_output_names() {
  static const std::vector<std::string> names = {"summary.json",  "summary.csv",    "records.jsonl",
                                                 "records.csv",   "prompts.jsonl",  "config.json",
                                                 "scatter3d.html", "scatter3d.png", "tokens_per_s.png"};
  return names;
}

BenchOutputs write_bench_outputs(const std::string& dir, const BenchReport& r, const BenchMeta& meta) {
  namespace fs = std::filesystem;
  BenchOutputs out;
  // The files go into a temporary sibling folder that replaces `dir` only once all of them are written.
  publish_folder(dir, bench_output_names(), [&](const std::string& tmp) {
    out = {};
    auto put = [&](const std::string& name, const std::string& text) {
      write_file_atomic((fs::path(tmp) / name).string(), text);
      out.files.push_back((fs::path(dir) / name).string());
    };
    put("summary.json", summary_json(r, meta).dump(2) + "\n");
    put("summary.csv", summary_csv(r));
    put("records.jsonl", records_jsonl(r));
    put("records.csv", records_csv(r));
    put("prompts.jsonl", prompts_jsonl(r));
    put("config.json", r.config.to_json().dump(2) + "\n");

    auto points = scatter_points(r);
    std::string title = fmt::format("glmlab bench infer: {} on {} records", meta.model_spec, r.prompts.size());
    std::string subtitle =
        fmt::format("{}; {} lengths; time = prefill + decode of each record (median over {} rep{})",
                    one_line(r.machine), meta.options.stop_at_eos ? "free-running" : "forced output",
                    meta.options.reps, meta.options.reps > 1 ? "s" : "");
    put("scatter3d.html", scatter3d_html(points, title, subtitle));
    auto chart = [&](const std::string& name, const std::function<void(const std::string&)>& draw) {
      try {
        draw((fs::path(tmp) / name).string());
        out.files.push_back((fs::path(dir) / name).string());
      } catch (const Error& e) {
        out.warnings.push_back(e.what());  // a chart that cannot be drawn is a warning, not a failure
      }
    };
    chart("scatter3d.png", [&](const std::string& p) { write_scatter3d_png(p, points, title); });
    chart("tokens_per_s.png", [&](const std::string& p) {
      write_tokens_per_s_png(p, r,
                             fmt::format("generated tokens/s: {} ({})", meta.model_spec, r.machine.cpu_model));
    });
  });
  return out;
}

}  // namespace glmlab::lab

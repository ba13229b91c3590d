// The training benchmark's outputs (see bench_train_report.h).
#include "lab/bench/bench_train_report.h"

#include <filesystem>

#include <fmt/format.h>

#include "lab/bench/bench_plots.h"
#include "lab/bench/bench_report.h"
#include "lab/plots/gnuplot.h"
#include "util/error.h"
#include "util/file.h"

namespace glmlab::lab {

std::string run_label(const TrainRunSummary& s) {
  return fmt::format("{} {}{}", s.spec.method, s.dtype, s.spec.qat != "none" ? " QAT" : "");
}

nlohmann::json train_run_json(const TrainRunSummary& s) {
  return {{"method", s.spec.method},
          {"qat", s.spec.qat},
          {"dtype", s.dtype},
          {"rank", s.rank},
          {"alpha", s.alpha},
          {"dropout", s.dropout},
          {"rslora", s.rslora},
          {"targets", s.targets},
          {"trainable_params", s.trainable},
          {"batch_size", s.batch},
          {"steps", s.steps},
          {"warmup_steps", s.warmup_steps},
          {"pack", s.pack},
          {"samples", s.samples},
          {"tokens", s.tokens},
          {"labelled_tokens", s.labelled},
          {"seconds", s.seconds},
          {"samples_per_s", s.samples_per_s},
          {"tokens_per_s", s.tokens_per_s},
          {"step_s", spread_json(s.step_s)},
          {"forward_s", spread_json(s.forward_s)},
          {"backward_s", spread_json(s.backward_s)},
          {"optimizer_s", spread_json(s.optimizer_s)},
          {"other_s", spread_json(s.other_s)},
          {"backward_over_forward", s.backward_over_forward},
          {"flops_per_step", s.flops_per_step},
          {"gflops", s.gflops},
          {"gflops_of_probe", s.gflops_of_probe},
          {"limit", s.limit},
          {"limit_gflops", s.limit_gflops},
          {"loss_first", s.loss_first},
          {"loss_last", s.loss_last},
          {"weight_bytes", s.weight_bytes},
          {"peak_rss_bytes", s.peak_rss_bytes},
          {"peak_rss_is_phase", s.peak_rss_is_phase},
          {"load_s", s.load_s},
          {"distributed", s.ranks < 2 ? nlohmann::json(nullptr)
                                      : nlohmann::json{{"ranks", s.ranks},
                                                       {"rank_samples_per_s", s.rank_samples_per_s},
                                                       {"single_rank_samples_per_s", s.single_rank_samples_per_s},
                                                       {"scaling_efficiency", s.scaling_efficiency},
                                                       {"grad_bytes_per_step", s.grad_bytes},
                                                       {"grad_buckets", s.grad_buckets},
                                                       {"allreduce_s", s.allreduce_s},
                                                       {"comm_exposed_s", spread_json(s.comm_exposed_s)},
                                                       {"comm_exposed_share", s.comm_exposed_share},
                                                       {"imbalance_s", spread_json(s.imbalance_s)},
                                                       {"comm_only_s", spread_json(s.comm_only_s)},
                                                       {"comm_only_share", s.comm_only_share},
                                                       {"comm_hidden", s.comm_hidden}}}};
}

nlohmann::json train_summary_json(const BenchTrainReport& r, const BenchTrainMeta& meta) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& s : r.runs) runs.push_back(train_run_json(s));
  nlohmann::json probes = nullptr;
  if (r.probed)
    probes = {{"gemm_gflops", {{"median", r.gemm_gflops.median}, {"min", r.gemm_gflops.min}, {"max", r.gemm_gflops.max}}},
              {"fp32_fma_gflops", {{"median", r.compute.fp32_fma.median}, {"min", r.compute.fp32_fma.min}, {"max", r.compute.fp32_fma.max}}},
              {"bf16_dot_gflops", {{"median", r.compute.bf16_dot.median}, {"min", r.compute.bf16_dot.min}, {"max", r.compute.bf16_dot.max}}},
              {"int8_dot_gops", {{"median", r.compute.int8_dot.median}, {"min", r.compute.int8_dot.min}, {"max", r.compute.int8_dot.max}}},
              {"bf16_unit", r.compute.bf16_unit},
              {"int8_unit", r.compute.int8_unit},
              {"fma_unit", r.compute.fma_unit}};
  const ModelConfig& c = r.config;
  const auto& o = meta.options;
  const auto& t = o.train;
  return {{"schema", "glmlab-bench-train/1"},
          {"engine", "glmlab"},
          {"created", utc_timestamp()},
          {"command", meta.command},
          {"model",
           {{"spec", meta.model_spec}, {"name", c.name}, {"params", c.total_params()}, {"layers", c.num_layers},
            {"hidden", c.hidden_size}, {"vocab", c.vocab_size}}},
          {"data",
           {{"source", meta.data}, {"records", meta.records}, {"samples", r.samples_available},
            {"tokenizer", meta.tokenizer}, {"max_input", meta.limits.max_input},
            {"max_output", meta.limits.max_output}, {"truncate", meta.limits.truncate}}},
          {"options",
           {{"methods", o.methods}, {"qats", o.qats}, {"dtypes", o.dtypes}, {"batch_size", t.batch_size},
            {"steps", o.steps}, {"warmup_steps", o.warmup_steps}, {"pack", t.pack}, {"pack_length", t.pack_length},
            {"seed", t.seed}, {"lr", t.adam.lr}, {"weight_decay", t.adam.weight_decay},
            {"max_grad_norm", t.max_grad_norm}, {"device", o.device}, {"threads", meta.threads}}},
          {"flops",
           "per sample of n real tokens: forward L(2Pn + 2HDn(n+1)) + adapters 2r(in+out)n; backward "
           "L_b(2Pn + 4HDn(n+1)) - 2(QKV)Cn + adapters 4r(in+out)n; head 2VCM forward and backward (M labelled "
           "rows); see docs/FINETUNE.md"},
          {"machine", to_json(r.machine)},
          {"probes", probes},
          {"runs", runs},
          {"wall_s", r.wall_s}};
}

std::string train_steps_jsonl(const BenchTrainReport& r) {
  std::string out;
  for (const auto& x : r.steps) {
    const TrainRunSummary& s = r.runs[x.run];
    nlohmann::json j = {{"method", s.spec.method},
                        {"qat", s.spec.qat},
                        {"dtype", s.dtype},
                        {"step", x.step},
                        {"batch", x.batch_number},
                        {"loss", x.loss},
                        {"grad_norm", x.grad_norm},
                        {"lr", x.lr},
                        {"samples", x.samples},
                        {"tokens", x.tokens},
                        {"labelled_tokens", x.labelled},
                        {"step_s", x.step_s},
                        {"forward_s", x.forward_s},
                        {"backward_s", x.backward_s},
                        {"optimizer_s", x.optimizer_s},
                        {"other_s", x.other_s},
                        {"layers_forward_s", x.layers_forward_s},
                        {"head_forward_s", x.head_forward_s},
                        {"head_backward_s", x.head_backward_s},
                        {"layers_backward_s", x.layers_backward_s},
                        {"flops_forward", x.flops.forward},
                        {"flops_backward", x.flops.backward}};
    out += j.dump() + "\n";
  }
  return out;
}

std::string train_summary_csv(const BenchTrainReport& r) {
  std::string out =
      "engine,method,qat,dtype,rank,trainable_params,batch_size,steps,warmup_steps,pack,samples,tokens,"
      "labelled_tokens,seconds,samples_per_s,tokens_per_s,step_s,step_s_min,step_s_max,forward_s,backward_s,"
      "optimizer_s,other_s,backward_over_forward,flops_per_step,gflops,gflops_of_probe,loss_first,loss_last,"
      "weight_bytes,peak_rss_bytes,load_s\n";
  for (const auto& s : r.runs)
    out += fmt::format("glmlab,{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                       csv_field(s.spec.method), csv_field(s.spec.qat), csv_field(s.dtype), s.rank, s.trainable, s.batch,
                       s.steps, s.warmup_steps, s.pack ? 1 : 0, s.samples, s.tokens, s.labelled, fmt_g(s.seconds),
                       fmt_g(s.samples_per_s), fmt_g(s.tokens_per_s), fmt_g(s.step_s.median), fmt_g(s.step_s.min), fmt_g(s.step_s.max),
                       fmt_g(s.forward_s.median), fmt_g(s.backward_s.median), fmt_g(s.optimizer_s.median), fmt_g(s.other_s.median),
                       fmt_g(s.backward_over_forward), fmt_g(s.flops_per_step), fmt_g(s.gflops), fmt_g(s.gflops_of_probe),
                       fmt_g(s.loss_first), fmt_g(s.loss_last), s.weight_bytes, s.peak_rss_bytes, fmt_g(s.load_s));
  return out;
}

std::string train_batches_jsonl(const BenchTrainReport& r, int warmup_steps, int samples_per_batch) {
  std::string out;
  for (size_t i = 0; i < r.batches.size(); ++i) {
    const TrainBatch& b = r.batches[i];
    std::vector<int> valid(b.in.valid.begin(), b.in.valid.end());
    nlohmann::json j = {{"batch", i},
                        {"warmup", int(i) < warmup_steps},
                        {"samples", samples_per_batch},
                        {"B", b.in.B},
                        {"T", b.in.T},
                        {"input_ids", b.in.ids},
                        {"position_ids", b.in.pos},
                        {"valid", valid},
                        {"segment", b.in.segment.empty() ? nlohmann::json(nullptr) : nlohmann::json(b.in.segment)},
                        {"labels", b.labels}};
    out += j.dump() + "\n";
  }
  return out;
}

std::string train_table(const BenchTrainReport& r) {
  std::string out =
      "| run | trainable | samples/s | tokens/s | step s | forward s | backward s | optimizer s | bwd ÷ fwd | "
      "GFLOP/s (of peak) | peak RSS GB | loss first → last |\n"
      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  for (const auto& s : r.runs)
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {:.2f} | {}{} | {:.3f} | {:.4f} → {:.4f} |\n",
                       run_label(s), s.trainable, fmt_num(s.samples_per_s), fmt_num(s.tokens_per_s),
                       fmt_spread(s.step_s, s.steps), fmt_num(s.forward_s.median), fmt_num(s.backward_s.median),
                       fmt_num(s.optimizer_s.median), s.backward_over_forward, fmt_num(s.gflops),
                       r.probed ? fmt::format(" ({:.0f}%)", 100 * s.gflops_of_probe) : std::string(),
                       double(s.peak_rss_bytes) / 1e9, s.loss_first, s.loss_last);
  return out;
}

void write_training_png(const std::string& path, const BenchTrainReport& r, const std::string& title) {
  const size_t n = r.runs.size();
  std::string s = fmt::format("set terminal pngcairo size {},560 font 'sans,10'\nset termoption noenhanced\n",
                              std::max<size_t>(900, 180 * n + 300));
  s += "$d << EOD\n";
  for (size_t i = 0; i < n; ++i) {
    const auto& x = r.runs[i];
    s += fmt::format("{} \"{}\" {:.6g} {:.6g} {:.6g} {:.6g} {:.6g} {}\n", i, run_label(x), x.forward_s.median,
                     x.backward_s.median, x.optimizer_s.median, std::max(0.0, x.other_s.median), x.samples_per_s,
                     unsigned(std::stoul(dtype_colour(i).substr(1), nullptr, 16)));
  }
  s += "EOD\n";
  s += fmt::format("set multiplot layout 1,2 title {}\n", gnuplot_quoted(title));
  s += "set style fill solid 0.8 border -1\nset grid ytics\nset yrange [0:*]\nset xtics nomirror rotate by -25\n"
       "set offsets 0.5, 0.5, 0, 0\nset boxwidth 0.6\n";
  // Left: samples/s per run.
  s += "set title 'samples / s (timed steps)'\nset key off\n";
  s += "plot $d using 1:7:8:xtic(2) with boxes lc rgb variable, '' using 1:7:(sprintf('%.3g', $7)) with labels "
       "offset 0,0.8\n";
  // Right: the median step split into forward / backward / optimizer / other, stacked.
  s += "set title 'median step time split (s)'\nset key top left\nset style data histograms\n"
       "set style histogram rowstacked\nset boxwidth 0.6 relative\n";
  s += "plot $d using 3:xtic(2) title 'forward' lc rgb '#1f77b4', '' using 4 title 'backward' lc rgb '#d62728', "
       "'' using 5 title 'optimizer' lc rgb '#2ca02c', '' using 6 title 'other' lc rgb '#7f7f7f'\n";
  s += "unset multiplot\n";
  write_gnuplot_image(path, s);
}

const std::vector<std::string>& bench_train_output_names() {
  static const std::vector<std::string> names = {"summary.json", "summary.csv", "steps.jsonl",
                                                 "batches.jsonl", "config.json", "training.png"};
  return names;
}

BenchTrainOutputs write_bench_train_outputs(const std::string& dir, const BenchTrainReport& r,
                                            const BenchTrainMeta& meta) {
  namespace fs = std::filesystem;
  BenchTrainOutputs out;
  // The files go into a temporary sibling folder that replaces `dir` only once all of them are written.
  publish_folder(dir, bench_train_output_names(), [&](const std::string& tmp) {
    out = {};
    auto put = [&](const std::string& name, const std::string& text) {
      write_file_atomic((fs::path(tmp) / name).string(), text);
      out.files.push_back((fs::path(dir) / name).string());
    };
    put("summary.json", train_summary_json(r, meta).dump(2) + "\n");
    put("summary.csv", train_summary_csv(r));
    put("steps.jsonl", train_steps_jsonl(r));
    put("batches.jsonl", train_batches_jsonl(r, meta.options.warmup_steps, meta.options.train.batch_size));
    put("config.json", r.config.to_json().dump(2) + "\n");
    try {
      write_training_png((fs::path(tmp) / "training.png").string(), r,
                         fmt::format("glmlab bench train: {}, batch {}, {} timed steps ({})", meta.model_spec,
                                     meta.options.train.batch_size, meta.options.steps, r.machine.cpu_model));
      out.files.push_back((fs::path(dir) / "training.png").string());
    } catch (const Error& e) {
      out.warnings.push_back(e.what());  // a chart that cannot be drawn is a warning, not a failure
    }
  });
  return out;
}

}  // namespace glmlab::lab

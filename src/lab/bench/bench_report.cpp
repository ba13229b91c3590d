// Benchmark outputs as JSON, CSV and markdown (see bench_report.h).
#include "lab/bench/bench_report.h"

#include <chrono>
#include <cmath>
#include <ctime>

#include <fmt/format.h>

namespace glmlab::lab {

nlohmann::json spread_json(const Spread& s) { return {{"median", s.median}, {"min", s.min}, {"max", s.max}}; }

std::string fmt_g(double v) { return fmt::format("{:.6g}", v); }

std::string utc_timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string fmt_num(double v) {
  double a = std::fabs(v);
  if (a == 0) return "0";
  if (a >= 1000) return fmt::format("{:.0f}", v);
  if (a >= 100) return fmt::format("{:.1f}", v);
  if (a >= 10) return fmt::format("{:.1f}", v);
  if (a >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3g}", v);
}

std::string fmt_spread(const Spread& s, int reps) {
  if (reps <= 1) return fmt_num(s.median);
  return fmt::format("{} ({}–{})", fmt_num(s.median), fmt_num(s.min), fmt_num(s.max));
}

nlohmann::json run_json(const RunSummary& s) {
  const ModelFacts& f = s.facts;
  return {{"dtype", s.dtype},
          {"schedule", s.schedule},
          {"batch", s.batch},
          {"reps", s.reps},
          {"records", s.records},
          {"input_tokens", s.input_tokens},
          {"output_tokens", s.output_tokens},
          {"wall_s", spread_json(s.wall_s)},
          {"throughput_tps", spread_json(s.throughput_tps)},
          {"prefill_tps", spread_json(s.prefill_tps)},
          {"decode_tps", spread_json(s.decode_tps)},
          {"latency_p50_s", spread_json(s.latency_p50_s)},
          {"latency_p90_s", spread_json(s.latency_p90_s)},
          {"ttft_p50_s", spread_json(s.ttft_p50_s)},
          {"decode_gbs", spread_json(s.decode_gbs)},
          {"decode_gbs_of_probe", s.decode_gbs_of_probe},
          {"prefill_gflops", spread_json(s.prefill_gflops)},
          {"prefill_gflops_of_probe", s.prefill_gflops_of_probe},
          {"prefill_limit", s.prefill_limit},
          {"prefill_limit_gflops", s.prefill_limit_gflops},
          {"decode_limit", s.decode_limit},
          {"decode_limit_gbs", s.decode_limit_gbs},
          {"batch_gain", s.batch_gain},
          {"weight_bytes", f.weight_bytes},
          {"decode_bytes_per_step", f.decode_bytes_per_step},
          {"kv_cache_bytes", f.kv_cache_bytes},
          {"peak_rss_bytes", f.peak_rss_bytes},
          {"peak_rss_is_phase", f.peak_rss_is_phase},
          {"load_s", f.load_s},
          {"device_bytes", f.device_bytes}};
}

// null for one process; else the ranks and each rank's share of each run.
nlohmann::json distributed_json(const DistInfo& d) {
  if (d.ranks <= 1) return nullptr;
  nlohmann::json per = nlohmann::json::array();
  for (const auto& x : d.per_rank)
    per.push_back({{"rank", x.rank}, {"host", x.host}, {"dtype", x.dtype}, {"batch", x.batch}, {"records", x.records},
                   {"input_tokens", x.input_tokens}, {"output_tokens", x.output_tokens}, {"wall_s", x.wall_s},
                   {"tokens_per_s", x.tokens_per_s}});
  return {{"ranks", d.ranks},
          {"backend", d.backend},
          {"note", "runs: every rank's records; wall_s per repetition = the slowest rank's, throughput = all ranks' "
                   "output tokens / that wall"},
          {"per_rank", per}};
}

nlohmann::json summary_json(const BenchReport& r, const BenchMeta& meta) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& s : r.runs) runs.push_back(run_json(s));
  nlohmann::json probes = nullptr;
  if (r.probed)
    probes = {{"memory_gbs", {{"median", r.memory_gbs.median}, {"min", r.memory_gbs.min}, {"max", r.memory_gbs.max}}},
              {"gemm_gflops", {{"median", r.gemm_gflops.median}, {"min", r.gemm_gflops.min}, {"max", r.gemm_gflops.max}}},
              {"memory_pattern", r.memory_pattern},
              {"fp32_fma_gflops", {{"median", r.compute.fp32_fma.median}, {"min", r.compute.fp32_fma.min}, {"max", r.compute.fp32_fma.max}}},
              {"bf16_dot_gflops", {{"median", r.compute.bf16_dot.median}, {"min", r.compute.bf16_dot.min}, {"max", r.compute.bf16_dot.max}}},
              {"bf16_unit", r.compute.bf16_unit},
              {"int8_unit", r.compute.int8_unit},
              {"fma_unit", r.compute.fma_unit},
              {"int8_dot_gops", {{"median", r.compute.int8_dot.median}, {"min", r.compute.int8_dot.min}, {"max", r.compute.int8_dot.max}}},
              // device runs: memory_gbs is the device's copy probe (read + written bytes), no GEMM probe
              {"memory_kind", r.device_probe ? "device copy" : "host read"},
              {"device", r.device_name}};
  const ModelConfig& c = r.config;
  const auto& o = meta.options;
  return {{"schema", "glmlab-bench-infer/1"},
          {"engine", "glmlab"},
          {"created", utc_timestamp()},
          {"command", meta.command},
          {"model",
           {{"spec", meta.model_spec}, {"name", c.name}, {"params", c.total_params()}, {"layers", c.num_layers},
            {"hidden", c.hidden_size}, {"vocab", c.vocab_size},
            {"adapter", meta.adapter.empty() ? nlohmann::json() : nlohmann::json(meta.adapter)}}},
          {"data",
           {{"source", meta.data}, {"records", r.prompts.size()}, {"forced", !o.stop_at_eos},
            {"max_new_tokens", meta.max_new_tokens}, {"tokenizer", meta.tokenizer}}},
          {"options",
           {{"dtypes", o.dtypes}, {"batches", o.batches}, {"schedules", o.schedules}, {"static_groups", o.static_sorted ? "sorted" : "arrival"},
            {"prefill_chunk", o.prefill_chunk}, {"kv_dtype", kv_dtype_name(o.kv_dtype)}, {"reps", o.reps},
            {"warmup", o.warmup},
            {"stop_at_eos", o.stop_at_eos}, {"device", o.device}}},
          {"machine", to_json(r.machine)},
          {"probes", probes},
          {"runs", runs},
          {"distributed", distributed_json(r.dist)},
          {"wall_s", r.wall_s}};
}

std::string records_jsonl(const BenchReport& r) {
  std::string out;
  for (const auto& x : r.records) {
    nlohmann::json j = {{"dtype", x.dtype},         {"schedule", x.schedule}, {"batch", x.batch},
                        {"rep", x.rep},             {"group", x.group},
                        {"index", x.index},         {"input_tokens", x.input_tokens},
                        {"target_tokens", x.target_tokens}, {"output_tokens", x.output_tokens},
                        {"total_tokens", x.input_tokens + x.output_tokens},
                        {"forced", x.forced},       {"stopped", x.stopped},
                        {"prefill_s", x.prefill_s}, {"decode_s", x.decode_s},
                        {"total_s", x.total_s},     {"tokens_per_s", x.tokens_per_s()},
                        {"output_ids", x.output_ids}};
    out += j.dump() + "\n";
  }
  return out;
}

std::string records_csv(const BenchReport& r) {
  std::string out =
      "dtype,batch,rep,group,index,input_tokens,target_tokens,output_tokens,forced,stopped,prefill_s,decode_s,total_s,"
      "tokens_per_s,schedule\n";
  for (const auto& x : r.records)
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", csv_field(x.dtype), x.batch, x.rep, x.group, x.index,
                       x.input_tokens, x.target_tokens, x.output_tokens, x.forced ? 1 : 0, x.stopped ? 1 : 0,
                       fmt_g(x.prefill_s), fmt_g(x.decode_s), fmt_g(x.total_s), fmt_g(x.tokens_per_s()), x.schedule);
  return out;
}

std::string summary_csv(const BenchReport& r) {
  std::string out =
      "engine,dtype,batch,reps,records,input_tokens,output_tokens,wall_s,wall_s_min,wall_s_max,throughput_tps,"
      "throughput_tps_min,throughput_tps_max,prefill_tps,decode_tps,latency_p50_s,latency_p90_s,ttft_p50_s,"
      "decode_gbs,decode_gbs_of_probe,prefill_gflops,prefill_gflops_of_probe,batch_gain,weight_bytes,"
      "decode_bytes_per_step,kv_cache_bytes,peak_rss_bytes,load_s,schedule\n";
  for (const auto& s : r.runs) {
    const auto& f = s.facts;
    out += fmt::format("glmlab,{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                       csv_field(s.dtype), s.batch, s.reps, s.records, s.input_tokens, s.output_tokens, fmt_g(s.wall_s.median),
                       fmt_g(s.wall_s.min), fmt_g(s.wall_s.max), fmt_g(s.throughput_tps.median), fmt_g(s.throughput_tps.min),
                       fmt_g(s.throughput_tps.max), fmt_g(s.prefill_tps.median), fmt_g(s.decode_tps.median),
                       fmt_g(s.latency_p50_s.median), fmt_g(s.latency_p90_s.median), fmt_g(s.ttft_p50_s.median),
                       fmt_g(s.decode_gbs.median), fmt_g(s.decode_gbs_of_probe), fmt_g(s.prefill_gflops.median),
                       fmt_g(s.prefill_gflops_of_probe), fmt_g(s.batch_gain), f.weight_bytes, f.decode_bytes_per_step,
                       f.kv_cache_bytes, f.peak_rss_bytes, fmt_g(f.load_s), s.schedule);
  }
  return out;
}

std::string prompts_jsonl(const BenchReport& r) {
  std::string out;
  for (const auto& p : r.prompts)
    out += nlohmann::json({{"index", p.index},
                           {"input_ids", p.input},
                           {"reference_tokens", p.reference_tokens},
                           {"target_tokens", p.target_tokens}})
               .dump() +
           "\n";
  return out;
}

static std::string batch_label(int batch, const std::string& schedule) {
  return schedule == "continuous" ? fmt::format("≤{} cont.", batch) : fmt::format("{}", batch);
}

std::string markdown_table(const BenchReport& r, const std::string& model_spec) {
  std::string out =
      "| model | dtype | batch | records | tokens | tok/s | prefill tok/s | decode tok/s | p50 s | p90 s | weights GB | "
      "peak RSS GB | decode GB/s (of probe) | prefill GFLOP/s (of peak) | ×batch 1 | ×first |\n"
      "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
  double first = r.runs.empty() ? 0 : r.runs.front().throughput_tps.median;
  auto pct = [&](double frac) { return r.probed ? fmt::format(" ({:.0f}%)", 100 * frac) : std::string(); };
  // A device run has no GEMM probe: its prefill GFLOP/s stand alone.
  auto pct_gemm = [&](double frac) { return r.device_probe ? std::string(" (no probe)") : pct(frac); };
  for (const auto& s : r.runs) {
    out += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3f} | {:.3f} | {}{} | {}{} | {} | {} |\n",
                       model_spec, s.dtype, batch_label(s.batch, s.schedule), s.records, s.output_tokens, fmt_spread(s.throughput_tps, s.reps),
                       fmt_spread(s.prefill_tps, s.reps), fmt_spread(s.decode_tps, s.reps),
                       fmt_num(s.latency_p50_s.median), fmt_num(s.latency_p90_s.median),
                       double(s.facts.weight_bytes) / 1e9, double(s.facts.peak_rss_bytes) / 1e9,
                       fmt_num(s.decode_gbs.median), pct(s.decode_gbs_of_probe), fmt_num(s.prefill_gflops.median),
                       pct_gemm(s.prefill_gflops_of_probe), s.batch_gain > 0 ? fmt::format("{:.2f}", s.batch_gain) : "–",
                       first > 0 ? fmt::format("{:.2f}", s.throughput_tps.median / first) : "–");
  }
  return out;
}

}  // namespace glmlab::lab

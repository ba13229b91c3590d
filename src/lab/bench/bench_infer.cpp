// The inference benchmark's measuring loop (see bench_infer.h).
#include "lab/bench/bench_infer.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>

#include <fmt/format.h>

#include "lab/bench/bench_summary.h"
#include "lab/peak_memory.h"
#include "lab/progress.h"
#include "model/generate.h"
#include "serve/scheduler.h"
#include "util/dtype.h"
#include "util/error.h"

namespace glmlab::lab {

namespace {
using clock = std::chrono::steady_clock;
double seconds_since(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }
}  // namespace

std::vector<BenchPrompt> make_prompts(const std::vector<Record>& records, const Tokenizer& tok, int max_new_tokens,
                                      bool stop_at_eos, int seq_length) {
  std::vector<BenchPrompt> out;
  out.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    SampleIds ids = sample_ids(tok, r.content, r.summary);
    BenchPrompt p;
    p.index = i;
    p.input = std::move(ids.input);
    p.reference_tokens = int32_t(ids.output.size());
    int64_t target = stop_at_eos ? 2 * int64_t(p.reference_tokens) : p.reference_tokens;
    if (max_new_tokens > 0) target = stop_at_eos ? max_new_tokens : std::min<int64_t>(target, max_new_tokens);
    int64_t room = int64_t(seq_length) - int64_t(p.input.size());
    if (room < 1)
      fail("{}:{}: the prompt has {} tokens, the model's seq_length is {}: no room to generate", r.file, r.line,
           p.input.size(), seq_length);
    p.target_tokens = int32_t(std::max<int64_t>(1, std::min(target, room)));
    out.push_back(std::move(p));
  }
  return out;
}

double prefill_flops(const ModelConfig& c, int64_t T) {
  double C = c.hidden_size, F = c.ffn_hidden_size, Q = c.q_dim(), QKV = c.qkv_dim(), V = c.vocab_size;
  double layer_params = QKV * C + C * Q + 2 * F * C + C * F;
  double t = double(T);
  return c.num_layers * (2 * layer_params * t + 2.0 * c.num_heads * c.kv_channels * t * (t + 1)) + 2 * V * C;
}

namespace {

// The groups of one batch size: indices into prompts.
std::vector<std::vector<size_t>> make_groups(const std::vector<BenchPrompt>& prompts, int batch, bool sorted) {
  std::vector<size_t> order(prompts.size());
  std::iota(order.begin(), order.end(), size_t(0));
  if (batch > 1 && sorted)
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const auto &pa = prompts[a], &pb = prompts[b];
      if (pa.target_tokens != pb.target_tokens) return pa.target_tokens < pb.target_tokens;
      return pa.input.size() < pb.input.size();
    });
  std::vector<std::vector<size_t>> groups;
  for (size_t i = 0; i < order.size(); i += size_t(batch))
    groups.emplace_back(order.begin() + long(i), order.begin() + long(std::min(order.size(), i + size_t(batch))));
  return groups;
}

// One record's result: its counted ids, and its first-token and last-token times since its start.
// A forced run that did not produce exactly the target is an error.
RecordResult record_of(const BenchPrompt& p, std::vector<int32_t> ids, bool stop_at_eos, bool stopped, double prefill_s,
                       double total_s) {
  RecordResult r;
  r.index = p.index;
  r.input_tokens = int32_t(p.input.size());
  r.target_tokens = p.target_tokens;
  r.output_tokens = int32_t(ids.size());
  r.output_ids = std::move(ids);
  r.forced = !stop_at_eos;
  r.stopped = stopped;
  r.prefill_s = prefill_s;
  r.total_s = total_s;
  r.decode_s = std::max(0.0, total_s - prefill_s);
  if (!stop_at_eos && r.output_tokens != r.target_tokens)
    fail("bench: record {} generated {} tokens, forced length {}", p.index, r.output_tokens, r.target_tokens);
  return r;
}

struct GroupRun {
  GroupResult group;
  std::vector<RecordResult> records;
};

// One generate() call over a group; per-record end times from the token callback.
GroupRun run_group(Engine& engine, const std::vector<BenchPrompt>& prompts,
                   const std::vector<size_t>& members, bool stop_at_eos, Progress* progress) {
  const size_t B = members.size();
  std::vector<std::vector<int32_t>> inputs;
  int32_t longest = 0;
  for (size_t m : members) {
    inputs.push_back(prompts[m].input);
    longest = std::max(longest, prompts[m].target_tokens);
  }
  GenerateOptions opt;
  opt.max_new_tokens = longest;
  opt.min_new_tokens = stop_at_eos ? 0 : longest;
  std::vector<int32_t> count(B, 0);
  std::vector<std::vector<int32_t>> ids(B);
  std::vector<clock::time_point> last(B);
  opt.on_token = [&](int b, int32_t id) {
    size_t ub = size_t(b);
    if (count[ub] >= prompts[members[ub]].target_tokens) return;  // beyond its own target: not counted
    ++count[ub];
    ids[ub].push_back(id);
    last[ub] = clock::now();
    if (progress) progress->add(1);
  };
  auto t0 = clock::now();
  GenerateResult res = generate(engine, inputs, opt);
  double wall = seconds_since(t0);

  GroupRun run;
  GroupResult& g = run.group;
  g.sequences = int(B);
  g.prefill_s = res.prefill_seconds;
  g.decode_s = res.decode_seconds;
  g.wall_s = wall;
  g.decode_steps = res.decode_steps;
  g.input_tokens = res.prefill_tokens;
  for (size_t b = 0; b < B; ++b) {
    const BenchPrompt& p = prompts[members[b]];
    const double total = count[b] > 0 ? std::chrono::duration<double>(last[b] - t0).count() : res.prefill_seconds;
    RecordResult r = record_of(p, std::move(ids[b]), stop_at_eos, res.stopped[b] && count[b] < p.target_tokens,
                               res.prefill_seconds, total);
    g.output_tokens += r.output_tokens;
    run.records.push_back(std::move(r));
  }
  return run;
}

// One repetition of the continuous schedule: every prompt queued at once (data order), `batch` rows.
GroupRun run_continuous(const Model& model, Ops& ops, const std::vector<BenchPrompt>& prompts,
                        const std::vector<size_t>& members, int batch, int prefill_chunk, KvDtype kv_dtype,
                        bool stop_at_eos, Progress* progress) {
  int context = 1;
  for (size_t m : members) context = std::max(context, int(prompts[m].input.size()) + prompts[m].target_tokens);
  serve::Scheduler sched(model, ops,
                         serve::SchedulerOptions{batch, int(members.size()), prefill_chunk, context, kv_dtype});
  const size_t n = members.size();
  std::vector<std::vector<int32_t>> ids(n);
  std::vector<clock::time_point> first(n), last(n);
  std::vector<bool> stopped(n, false);
  std::vector<std::string> errors;
  const auto t0 = clock::now();
  for (size_t i = 0; i < n; ++i) {
    const BenchPrompt& p = prompts[members[i]];
    serve::Request r;
    r.prompt = p.input;
    r.max_tokens = p.target_tokens;
    r.min_tokens = stop_at_eos ? 0 : p.target_tokens;
    serve::SequenceEvents ev;
    ev.on_token = [&, i](int32_t id) {
      if (ids[i].empty()) first[i] = clock::now();
      ids[i].push_back(id);
      last[i] = clock::now();
      if (progress) progress->add(1);
      return true;
    };
    ev.on_finish = [&, i](serve::FinishReason why, const std::string& e) {
      stopped[i] = why == serve::FinishReason::Stop;
      if (why == serve::FinishReason::Error) errors.push_back(fmt::format("record {}: {}", prompts[members[i]].index, e));
    };
    if (!sched.submit(std::move(r), std::move(ev))) fail("bench: the scheduler refused record {}", p.index);
  }
  GroupRun run;
  GroupResult& g = run.group;
  g.decode_tokens = 0;
  for (;;) {
    const serve::SchedulerStats before = sched.stats();
    const auto ts = clock::now();
    if (!sched.step()) break;
    const double dt = seconds_since(ts);
    const serve::SchedulerStats after = sched.stats();
    if (after.prompt_tokens > before.prompt_tokens) {
      g.prefill_s += dt;
    } else {
      g.decode_s += dt;
      ++g.decode_steps;
      g.decode_tokens += after.generated_tokens - before.generated_tokens;
    }
    if (after.queued == 0 && after.running == 0) break;
  }
  g.wall_s = seconds_since(t0);
  if (!errors.empty()) fail("bench: {}", errors.front());
  g.sequences = int(n);
  for (size_t i = 0; i < n; ++i) {
    const BenchPrompt& p = prompts[members[i]];
    const bool any = !ids[i].empty();
    RecordResult r = record_of(p, std::move(ids[i]), stop_at_eos, stopped[i],
                               any ? std::chrono::duration<double>(first[i] - t0).count() : g.wall_s,
                               any ? std::chrono::duration<double>(last[i] - t0).count() : g.wall_s);
    g.input_tokens += r.input_tokens;
    g.output_tokens += r.output_tokens;
    run.records.push_back(std::move(r));
  }
  return run;
}

// The longest prompt and the most new tokens of a group (its left-padded prefill and decode length).
std::pair<int, int> group_extent(const std::vector<BenchPrompt>& prompts, const std::vector<size_t>& grp) {
  int T = 0, N = 0;
  for (size_t m : grp) {
    T = std::max(T, int(prompts[m].input.size()));
    N = std::max(N, prompts[m].target_tokens);
  }
  return {T, N};
}

ModelFacts model_facts(const BenchModel& bm, const std::vector<BenchPrompt>& prompts, const std::vector<int>& batches,
                       bool sorted) {
  ModelFacts f;
  const ModelWeights& w = bm.model->weights();
  f.dtype = std::string(dtype_name(w.dtype));
  f.weight_bytes = w.matrix_bytes();
  f.decode_bytes_per_step = f.weight_bytes - w.embedding.nbytes();
  f.load_s = bm.load_seconds;
  for (int batch : batches)
    for (const auto& grp : make_groups(prompts, batch, sorted)) {
      const auto [T, N] = group_extent(prompts, grp);
      f.kv_cache_bytes = std::max(f.kv_cache_bytes, KVCache::bytes_needed(bm.model->config(), int(grp.size()), T + N));
    }
  return f;
}

}  // namespace

EngineLimits bench_limits(const std::vector<BenchPrompt>& prompts, const std::vector<int>& batches, bool sorted) {
  EngineLimits l;
  l.capacity = 1;
  l.step_tokens = 1;
  for (int batch : batches)
    for (const auto& grp : make_groups(prompts, batch, sorted)) {
      const auto [T, N] = group_extent(prompts, grp);
      l.batch = std::max(l.batch, int(grp.size()));
      l.capacity = std::max(l.capacity, T + N);
      l.step_tokens = std::max(l.step_tokens, int(grp.size()) * T);
    }
  l.step_tokens = std::max(l.step_tokens, l.batch);
  return l;
}

BenchReport run_bench_infer(std::vector<BenchPrompt> prompts, const BenchLoader& load, const BenchInferOptions& o) {
  if (prompts.empty()) fail("bench: no records to run");
  if (o.reps < 1) fail("bench: --reps must be at least 1");
  if (o.warmup < 0) fail("bench: --warmup must be at least 0");
  for (int b : o.batches)
    if (b < 1) fail("bench: --batch sizes must be at least 1 (got {})", b);
  if (o.schedules.empty()) fail("bench: no --schedule");
  for (const auto& sch : o.schedules)
    if (sch != "static" && sch != "continuous") fail("bench: --schedule {}: expected static or continuous", sch);
  if (o.prefill_chunk < 1) fail("bench: --prefill-chunk must be at least 1");
  auto t_start = clock::now();
  BenchReport rep;
  rep.machine = describe_machine(o.device);
  if (o.probe != ProbeLevel::Off && !o.device_engine) {
    if (o.progress) std::fprintf(stderr, "bench: probing memory bandwidth and GEMM throughput...\n");
    bool quick = o.probe == ProbeLevel::Quick;
    const MemoryProbe mem = quick ? probe_memory(256ull << 20, 3, 1) : probe_memory();
    rep.memory_gbs = mem.best;
    rep.memory_pattern = mem.best_pattern;
    rep.compute = probe_compute(quick ? 3 : 5);
    rep.gemm_gflops = quick ? probe_gemm(1024, 3) : probe_gemm();
    rep.probed = true;
  }
  if (o.after_probe) o.after_probe();

  // Work for the progress bar: counted tokens of warm-up groups and of every repetition.
  int64_t total = 0, all_tokens = 0;
  for (const auto& p : prompts) all_tokens += p.target_tokens;
  for (int batch : o.batches)
    for (const auto& sch : o.schedules) {
      if (sch == "continuous") {
        for (size_t m = 0; m < prompts.size() && m < size_t(o.warmup) * size_t(batch); ++m) total += prompts[m].target_tokens;
      } else {
        auto groups = make_groups(prompts, batch, o.static_sorted);
        for (int w = 0; w < o.warmup && w < int(groups.size()); ++w)
          for (size_t m : groups[size_t(w)]) total += prompts[m].target_tokens;
      }
      total += int64_t(o.reps) * all_tokens;
    }
  total *= int64_t(o.dtypes.size());
  Progress progress(total, "tok", o.progress);
  progress.pause();  // probes are done; loading is not generation

  // Read bandwidth probed on buffers of each model's decode bytes per step, where they are smaller than
  // the main probe's: a working set that partly fits the caches reads faster than main memory.
  std::map<uint64_t, ProbeResult> small_probes;
  for (const std::string& dtype : o.dtypes) {
    progress.pause();
    bool phase_rss = reset_peak_rss();
    BenchModel bm = load(dtype, bench_limits(prompts, o.batches, o.static_sorted));
    if (!bm.model || (!bm.ops && !bm.engine)) fail("bench: the loader returned no model for dtype \"{}\"", dtype);
    std::unique_ptr<Engine> host_engine;
    if (!bm.engine) host_engine = std::make_unique<HostEngine>(*bm.model, *bm.ops);
    Engine& engine = bm.engine ? *bm.engine : *host_engine;
    if (bm.device && rep.device_name.empty()) {
      rep.device_name = std::string(bm.device->name());
      rep.machine.device = fmt::format("{} ({})", o.device, rep.device_name);
      if (o.probe != ProbeLevel::Off) {
        if (o.progress) std::fprintf(stderr, "bench: probing the memory bandwidth of %s...\n", rep.device_name.c_str());
        std::vector<double> g;
        for (int i = 0; i < (o.probe == ProbeLevel::Quick ? 3 : 5); ++i) g.push_back(bm.device->bandwidth_probe_gbs());
        std::sort(g.begin(), g.end());
        rep.memory_gbs.median = g.size() % 2 ? g[g.size() / 2] : 0.5 * (g[g.size() / 2 - 1] + g[g.size() / 2]);
        rep.memory_gbs.min = g.front();
        rep.memory_gbs.max = g.back();
        rep.probed = rep.device_probe = true;
      }
    }
    progress.resume();
    if (rep.config.name.empty()) rep.config = bm.model->config();
    ModelFacts facts = model_facts(bm, prompts, o.batches, o.static_sorted);
    facts.peak_rss_is_phase = phase_rss;
    if (auto* de = dynamic_cast<DeviceEngine*>(bm.engine.get())) facts.device_bytes = de->plan().total();
    struct {
      double gbs = 0;
      std::string name;
    } decode_limit;
    if (rep.probed) {
      decode_limit = {rep.memory_gbs.median,
                      rep.device_probe ? "device copy" : fmt::format("memory read ({})", rep.memory_pattern)};
      const uint64_t main_bytes = o.probe == ProbeLevel::Quick ? 256ull << 20 : 1ull << 30;
      const uint64_t ws = (facts.decode_bytes_per_step + (1u << 20) - 1) >> 20 << 20;  // whole MiB
      if (!rep.device_probe && ws > 0 && ws < main_bytes) {
        auto it = small_probes.find(ws);
        if (it == small_probes.end()) {
          if (o.progress) std::fprintf(stderr, "bench: probing the read bandwidth of %llu MiB...\n", (unsigned long long)(ws >> 20));
          it = small_probes.emplace(ws, probe_memory(ws, 5, 1).best).first;
        }
        decode_limit = {it->second.median, fmt::format("memory read of {} MiB (the decode's bytes per step)", ws >> 20)};
      }
    }
    std::vector<size_t> run_index;
    for (int batch : o.batches)
      for (const std::string& schedule : o.schedules) {
        const bool continuous = schedule == "continuous";
        auto groups = continuous ? std::vector<std::vector<size_t>>{} : make_groups(prompts, batch, o.static_sorted);
        std::vector<size_t> all(prompts.size());
        std::iota(all.begin(), all.end(), size_t(0));
        if (continuous) {
          if (!bm.ops) fail("bench: --schedule continuous runs on the host engine (--device cpu or cpu-ref)");
          uint64_t kv = serve::Scheduler::kv_bytes(bm.model->config(), serve::SchedulerOptions{batch, 1, 1, bench_limits(prompts, {1}).capacity, o.kv_dtype});
          facts.kv_cache_bytes = std::max(facts.kv_cache_bytes, kv);
        }
        auto run_one = [&](const std::vector<size_t>& members) {
          return continuous ? run_continuous(*bm.model, *bm.ops, prompts, members, batch, o.prefill_chunk,
                                             o.kv_dtype, o.stop_at_eos, &progress)
                            : run_group(engine, prompts, members, o.stop_at_eos, &progress);
        };
        // Warm-up: the first `warmup` groups (continuous: as many records as `warmup` groups would hold).
        progress.set_label(fmt::format("{} b{}{} warm-up", facts.dtype, batch, continuous ? "c" : ""));
        if (continuous) {
          const size_t w = std::min(prompts.size(), size_t(o.warmup) * size_t(batch));
          if (w > 0) run_one(std::vector<size_t>(all.begin(), all.begin() + long(w)));
        } else {
          for (int w = 0; w < o.warmup && w < int(groups.size()); ++w) run_one(groups[size_t(w)]);
        }
        if (continuous) groups = {all};
        std::vector<GroupResult> gs;
        std::vector<RecordResult> rs;
        for (int r = 0; r < o.reps; ++r) {
          progress.set_label(fmt::format("{} b{}{} rep {}/{}", facts.dtype, batch, continuous ? "c" : "", r + 1, o.reps));
          for (size_t gi = 0; gi < groups.size(); ++gi) {
            GroupRun run = run_one(groups[gi]);
            run.group.dtype = facts.dtype;
            run.group.schedule = schedule;
            run.group.batch = batch;
            run.group.rep = r;
            run.group.group = int(gi);
            for (size_t m : groups[gi]) run.group.prefill_flops += prefill_flops(bm.model->config(), int64_t(prompts[m].input.size()));
            for (auto& rr : run.records) {
              rr.dtype = facts.dtype;
              rr.schedule = schedule;
              rr.batch = batch;
              rr.rep = r;
              rr.group = int(gi);
            }
            gs.push_back(run.group);
            rs.insert(rs.end(), run.records.begin(), run.records.end());
          }
        }
        // Records in data order within each repetition (batched runs ran them sorted).
        std::stable_sort(rs.begin(), rs.end(), [](const RecordResult& a, const RecordResult& b) {
          return a.rep != b.rep ? a.rep < b.rep : a.index < b.index;
        });
        const ComputeLimit limit = compute_limit(rep.compute, rep.gemm_gflops,
                                                 bm.ops ? bm.ops->matmul_unit(bm.model->weights().layers.at(0).h_to_4h) : "");
        RunSummary s = summarize_run(gs, rs, facts, batch, o.reps, rep.probed ? decode_limit.gbs : 0,
                                     rep.probed && !rep.device_probe ? limit.gflops : 0);
        s.decode_limit = decode_limit.name;
        s.decode_limit_gbs = decode_limit.gbs;
        s.prefill_limit = limit.name;
        s.prefill_limit_gflops = limit.gflops;
        s.schedule = schedule;
        run_index.push_back(rep.runs.size());
        rep.runs.push_back(std::move(s));
        rep.groups.insert(rep.groups.end(), gs.begin(), gs.end());
        rep.records.insert(rep.records.end(), rs.begin(), rs.end());
      }
    // Peak memory covers this dtype's load and all its runs.
    uint64_t peak = phase_peak_rss_bytes();
    for (size_t i : run_index) rep.runs[i].facts.peak_rss_bytes = peak;
  }
  progress.finish();
  set_batch_gains(rep.runs);
  rep.prompts = std::move(prompts);
  rep.machine.load_end = load_average();
  rep.wall_s = seconds_since(t_start);
  return rep;
}

}  // namespace glmlab::lab

// The training benchmark's measuring loop (see bench_train.h).
#include "lab/bench/bench_train.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "lab/bench/bench_summary.h"
#include "lab/train/grad_sync.h"
#include "lab/peak_memory.h"
#include "lab/progress.h"
#include "util/dtype.h"
#include "util/error.h"

namespace glmlab::lab {

namespace {
using clock = std::chrono::steady_clock;
double seconds_since(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }

// The dtype a base is loaded in, as a canonical name ("" stays "": the model's default).
std::string canonical_dtype(const std::string& d) {
  if (d.empty()) return d;
  try {
    return std::string(dtype_name(weight_dtype_from_name(d)));
  } catch (const Error&) {
    fail("bench train: --dtype \"{}\" is not a weight dtype (expected fp32, fp16, bf16, int8 or int4)", d);
  }
}
}  // namespace

std::vector<TrainRunSpec> plan_train_runs(const BenchTrainOptions& o) {
  if (o.methods.empty()) fail("bench train: --method needs at least one of lora, vera");
  if (o.qats.empty()) fail("bench train: --qat needs at least one of none, int8, int4");
  if (o.dtypes.empty()) fail("bench train: --dtype needs at least one dtype");
  for (const auto& m : o.methods)
    if (m != "lora" && m != "vera") fail("bench train: unknown --method \"{}\" (expected lora or vera)", m);
  for (const auto& q : o.qats)
    if (q != "none" && q != "int8" && q != "int4")
      fail("bench train: unknown --qat \"{}\" (expected none, int8 or int4)", q);
  if (o.steps < 1) fail("bench train: --steps must be at least 1, got {}", o.steps);
  if (o.warmup_steps < 0) fail("bench train: --warmup-steps must be at least 0, got {}", o.warmup_steps);
  if (o.train.batch_size < 1) fail("bench train: --batch-size must be at least 1, got {}", o.train.batch_size);
  // Bases in order: each dtype without QAT, then each QAT level; a base reached twice runs once.
  std::vector<std::pair<std::string, std::string>> bases;  // (qat, dtype)
  auto add = [&](const std::string& qat, const std::string& dtype) {
    for (const auto& b : bases)
      if (b.second == dtype) return;
    bases.emplace_back(qat, dtype);
  };
  for (const auto& d : o.dtypes) {
    std::string cd = canonical_dtype(d);
    for (const auto& q : o.qats) {
      if (q == "none") add(cd == "int8" || cd == "int4" ? cd : "none", cd);
    }
  }
  for (const auto& q : o.qats)
    if (q != "none") add(q, q);
  if (bases.empty()) fail("bench train: no run: --qat lists no level that applies");
  std::vector<TrainRunSpec> runs;
  for (const auto& [qat, dtype] : bases)
    for (const auto& m : o.methods)
      if (std::find_if(runs.begin(), runs.end(), [&, &dtype = dtype](const TrainRunSpec& r) { return r.method == m && r.dtype == dtype; }) ==
          runs.end())
        runs.push_back({m, qat, dtype});
  return runs;
}

std::vector<int64_t> sample_lengths(const TrainBatch& b) {
  std::vector<int64_t> out;
  const int B = b.in.B, T = b.in.T;
  for (int r = 0; r < B; ++r) {
    int64_t n = 0;
    int32_t seg = 0;
    for (int t = 0; t < T; ++t) {
      const size_t i = size_t(r) * T + t;
      if (!b.in.valid[i]) continue;
      const int32_t s = b.in.segment.empty() ? 0 : b.in.segment[i];
      if (n > 0 && s != seg) {
        out.push_back(n);
        n = 0;
      }
      seg = s;
      ++n;
    }
    if (n > 0) out.push_back(n);
  }
  return out;
}

TrainFlops train_step_flops(const ModelConfig& c, const Adapter& adapter, const TrainBatch& batch) {
  const double C = c.hidden_size, F = c.ffn_hidden_size, Q = c.q_dim(), QKV = c.qkv_dim(), V = c.vocab_size;
  const double H = c.num_heads, D = c.kv_channels;
  const double P = QKV * C + C * Q + 2 * F * C + C * F;
  const int L = c.num_layers;
  const int lowest = std::min(adapter.lowest_adapted_layer(), L);
  const double Lb = double(L - lowest);
  const double r = adapter.config().rank;
  // Σ over adapted linears of 2·r·(in + out), per token.
  double adapter_per_token = 0;
  for (int l = 0; l < L; ++l)
    for (Target t : kTargets)
      if (adapter.adapts(l, t)) {
        LinearDims d = adapter.dims(t);
        adapter_per_token += 2 * r * double(d.in + d.out);
      }
  TrainFlops f;
  for (int64_t len : sample_lengths(batch)) {
    const double n = double(len);
    const double attn = 2 * H * D * n * (n + 1);
    f.forward += L * (2 * P * n + attn) + adapter_per_token * n;
    f.backward += Lb * (2 * P * n + 2 * attn) + 2 * adapter_per_token * n;
    if (lowest < L) f.backward -= 2 * QKV * C * n;  // no input gradient below the lowest adapted layer
  }
  const double M = double(batch.label_count());
  f.forward += 2 * V * C * M;
  f.backward += 2 * V * C * M;
  return f;
}

BenchTrainReport run_bench_train(const std::vector<TrainSample>& samples, const TrainLoader& load,
                                 const AdapterConfigFn& adapter_config, const BenchTrainOptions& o) {
  std::vector<TrainRunSpec> plan = plan_train_runs(o);
  if (samples.empty()) fail("bench train: no samples to train on");
  auto t_start = clock::now();
  BenchTrainReport rep;
  rep.samples_available = samples.size();
  rep.machine = describe_machine(o.device);
  dist::Communicator* comm = o.train.comm && o.train.comm->size() > 1 ? o.train.comm : nullptr;
  const int R = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  if (o.probe != ProbeLevel::Off && rank == 0 && !o.make_device) {  // with several ranks, rank 0 probes alone
    if (o.progress) std::fprintf(stderr, "bench train: probing instruction peaks and fp32 GEMM throughput...\n");
    rep.compute = probe_compute(o.probe == ProbeLevel::Quick ? 3 : 5);
    rep.gemm_gflops = o.probe == ProbeLevel::Quick ? probe_gemm(1024, 3) : probe_gemm();
    rep.probed = true;
  }
  if (comm) comm->barrier();

  TrainOptions topt = o.train;
  topt.steps = o.warmup_steps + o.steps;
  topt.warmup = 0;  // no learning-rate warm-up: the benchmark's warm-up steps are its own
  topt.out.clear();
  topt.save_every = 0;
  topt.resume = false;
  topt.stop_after = -1;
  topt.grad_accum = 1;
  // This rank's micro-batches (all of them in one process): the FLOPs of the work it does.
  BatchStream stream(samples, topt.batch_size, topt.pack, topt.pack_length, topt.seed, rank, R);
  for (int64_t i = 0; i < topt.steps; ++i) rep.batches.push_back(stream.batch(i));

  Progress progress(int64_t(plan.size()) * topt.steps, "steps", o.progress);
  std::string current;  // one base at a time: released before the next dtype loads
  BenchModel bm;
  for (const TrainRunSpec& spec : plan) {
    if (!bm.model || spec.dtype != current) {
      progress.pause();
      bm = BenchModel{};  // free the previous base first (a 6B model fits once)
      bm = load(spec.dtype);
      if (!bm.model || !bm.ops) fail("bench train: the loader returned no model for dtype \"{}\"", spec.dtype);
      current = spec.dtype;
      if (rep.config.name.empty()) rep.config = bm.model->config();
      progress.resume();
    }
    Model& model = *bm.model;
    const ModelConfig& c = model.config();
    TrainRunSummary s;
    s.spec = spec;
    s.dtype = std::string(dtype_name(model.weights().dtype));
    s.weight_bytes = model.weights().matrix_bytes();
    s.load_s = bm.load_seconds;
    s.batch = topt.batch_size;
    s.steps = o.steps;
    s.warmup_steps = o.warmup_steps;
    s.pack = topt.pack;

    TrainOptions run_opt = topt;
    run_opt.adapter = adapter_config(spec.method);
    run_opt.adapter.seed = topt.seed;
    Adapter adapter = Adapter::create(c, run_opt.adapter);
    s.rank = adapter.config().rank;
    s.alpha = adapter.config().alpha;
    s.dropout = adapter.config().dropout;
    s.rslora = adapter.config().rslora;
    s.targets = adapter.config().targets;
    s.trainable = adapter.trainable_count();
    model.set_adapter(&adapter);
    std::vector<TrainFlops> flops;
    for (const auto& b : rep.batches) flops.push_back(train_step_flops(c, adapter, b));

    const size_t run_index = rep.runs.size();
    progress.set_label(fmt::format("{} {}{} warm-up", spec.method, s.dtype, spec.qat != "none" ? " QAT" : ""));
    s.peak_rss_is_phase = reset_peak_rss();
    std::vector<TrainStepRecord> recs;
    TrainReport tr = train(*bm.ops, model, adapter, samples, run_opt, [&](const StepLog& log) {
      progress.add(1);
      if (log.step >= o.warmup_steps)
        progress.set_label(fmt::format("{} {}{} step {}/{}", spec.method, s.dtype, spec.qat != "none" ? " QAT" : "",
                                       std::min<int64_t>(log.step - o.warmup_steps + 1, o.steps), o.steps));
      if (log.step <= o.warmup_steps) return;
      TrainStepRecord x;
      x.run = run_index;
      x.step = log.step - o.warmup_steps;
      x.batch_number = log.step - 1;
      x.loss = log.loss;
      x.grad_norm = log.grad_norm;
      x.lr = log.lr;
      x.samples = log.samples;
      x.tokens = log.tokens;
      x.labelled = log.labelled;
      x.step_s = log.seconds;
      x.layers_forward_s = log.times.forward_s;
      x.head_backward_s = log.times.head_backward_s;
      x.head_forward_s = log.times.head_s - log.times.head_backward_s;
      x.layers_backward_s = log.times.backward_s;
      x.forward_s = x.layers_forward_s + x.head_forward_s;
      x.backward_s = x.layers_backward_s + x.head_backward_s;
      x.optimizer_s = log.optimizer_s;
      x.other_s = x.step_s - x.forward_s - x.backward_s - x.optimizer_s;
      x.flops = flops[size_t(x.batch_number)];
      x.comm_s = log.comm_exposed_s;
      x.imbalance_s = log.imbalance_s;
      recs.push_back(x);
    }, o.make_device ? o.make_device() : nullptr);
    model.set_adapter(nullptr);
    if (tr.nan_stop) fail("bench train: {} on {}: {}", spec.method, s.dtype, tr.message);
    s.peak_rss_bytes = phase_peak_rss_bytes();

    std::vector<double> step, fwd, bwd, opt, other;
    double fwd_sum = 0, bwd_sum = 0, flop_sum = 0;
    for (const auto& x : recs) {
      s.samples += x.samples;
      s.tokens += x.tokens;
      s.labelled += x.labelled;
      s.seconds += x.step_s;
      step.push_back(x.step_s);
      fwd.push_back(x.forward_s);
      bwd.push_back(x.backward_s);
      opt.push_back(x.optimizer_s);
      other.push_back(x.other_s);
      fwd_sum += x.forward_s;
      bwd_sum += x.backward_s;
      flop_sum += x.flops.total();
    }
    if (comm) {
      // The job's FLOPs are every rank's; each rank's own rate, then what the communication cost.
      flop_sum = comm->sum(flop_sum);
      s.ranks = R;
      double local = 0, secs = 0, exposed = 0, only = 0;
      std::vector<double> ex, im, co;
      for (const auto& x : recs) {
        local += double(x.samples) / R;
        secs += x.step_s;
        exposed += x.comm_s;
        ex.push_back(x.comm_s);
        im.push_back(x.imbalance_s);
        co.push_back(std::max(0.0, x.comm_s - x.imbalance_s));
        only += co.back();
      }
      s.imbalance_s = spread_of(im);
      s.comm_only_s = spread_of(co);
      s.comm_only_share = secs > 0 ? only / secs : 0;
      auto per = comm->all_gather(fmt::format("{}", secs > 0 ? local / secs : 0.0));
      for (const auto& v : per) s.rank_samples_per_s.push_back(std::stod(v));
      s.comm_exposed_s = spread_of(ex);
      s.comm_exposed_share = secs > 0 ? exposed / secs : 0;
      GradSync gs(*comm, adapter, run_opt.bucket_bytes);
      s.grad_bytes = gs.bytes();
      s.grad_buckets = gs.buckets();
      std::vector<double> ar;
      for (int i = 0; i < 5; ++i) ar.push_back(gs.blocking_all_reduce_s());
      s.allreduce_s = spread_of(ar).median;
      s.comm_hidden = s.allreduce_s > 0 ? std::clamp(1.0 - s.comm_only_s.median / s.allreduce_s, 0.0, 1.0) : 0;
      // The scaling baseline: rank 0 alone, the same per-rank batch and steps, while the others wait.
      comm->barrier();
      double single = 0;
      if (rank == 0) {
        TrainOptions solo = run_opt;
        solo.comm = nullptr;
        Adapter alone = Adapter::create(c, solo.adapter);
        model.set_adapter(&alone);
        double n = 0, t = 0;
        progress.set_label(fmt::format("{} {} one rank alone", spec.method, s.dtype));
        train(*bm.ops, model, alone, samples, solo, [&](const StepLog& log) {
          if (log.step <= o.warmup_steps) return;
          n += double(log.samples);
          t += log.seconds;
        }, o.make_device ? o.make_device() : nullptr);
        model.set_adapter(nullptr);
        single = t > 0 ? n / t : 0;
      }
      comm->broadcast(&single, sizeof single, 0);
      s.single_rank_samples_per_s = single;
    }
    s.step_s = spread_of(step);
    s.forward_s = spread_of(fwd);
    s.backward_s = spread_of(bwd);
    s.optimizer_s = spread_of(opt);
    s.other_s = spread_of(other);
    if (s.seconds > 0) {
      s.samples_per_s = double(s.samples) / s.seconds;
      if (s.single_rank_samples_per_s > 0) s.scaling_efficiency = s.samples_per_s / (R * s.single_rank_samples_per_s);
      s.tokens_per_s = double(s.tokens) / s.seconds;
      s.gflops = flop_sum / s.seconds / 1e9;
    }
    s.backward_over_forward = fwd_sum > 0 ? bwd_sum / fwd_sum : 0;
    s.flops_per_step = recs.empty() ? 0 : flop_sum / double(recs.size());
    if (rep.probed) {
      const ComputeLimit lim = compute_limit(rep.compute, rep.gemm_gflops, bm.ops->matmul_unit(bm.model->weights().layers.at(0).h_to_4h));
      s.limit = lim.name;
      s.limit_gflops = lim.gflops;
      s.gflops_of_probe = lim.gflops > 0 ? s.gflops / lim.gflops : 0;
    }
    if (!recs.empty()) {
      s.loss_first = recs.front().loss;
      s.loss_last = recs.back().loss;
    }
    rep.runs.push_back(std::move(s));
    rep.steps.insert(rep.steps.end(), recs.begin(), recs.end());
  }
  progress.finish();
  rep.machine.load_end = load_average();
  rep.wall_s = seconds_since(t_start);
  return rep;
}

}  // namespace glmlab::lab

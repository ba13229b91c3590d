// The training loop (see train_loop.h).
#include "lab/train/train_loop.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "lab/train/checkpoint.h"
#include "lab/train/grad_sync.h"
#include "lab/train/train_state.h"
#include "dist/nccl_comm.h"
#include "model/device_trainer.h"
#include "model/peft_io.h"
#include "util/error.h"

namespace glmlab::lab {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void save_all(const TrainOptions& o, dist::Communicator& comm, const Adapter& a, const AdamW& opt,
              const TrainState& st) {
  if (o.out.empty() || comm.rank() != 0) return;  // rank 0 alone writes
  save_checkpoint(o.out, a, opt, st);  // adapter and state as one unit (lab/train/checkpoint.h)
}

void check_options(const TrainOptions& o) {
  if (o.steps < 1) fail("--steps must be at least 1, got {}", o.steps);
  if (o.grad_accum < 1) fail("--grad-accum must be at least 1, got {}", o.grad_accum);
  if (o.batch_size < 1) fail("--batch-size must be at least 1, got {}", o.batch_size);
  if (o.warmup < 0 || o.warmup > o.steps) fail("--warmup must be in [0, steps], got {}", o.warmup);
  // (A finite but huge rate is allowed: an update that overflows stops the run, naming the tensor.)
  if (!std::isfinite(o.adam.lr) || o.adam.lr < 0) fail("--lr must be a finite number ≥ 0, got {}", o.adam.lr);
  if (!std::isfinite(o.adam.weight_decay) || o.adam.weight_decay < 0)
    fail("--weight-decay must be a finite number ≥ 0, got {}", o.adam.weight_decay);
  if (!std::isfinite(o.max_grad_norm) || o.max_grad_norm < 0)
    fail("--max-grad-norm must be a finite number ≥ 0 (0 = no clipping), got {}", o.max_grad_norm);
  if (o.save_every < 0) fail("--save-every must be ≥ 0 (0 = at the end only), got {}", o.save_every);
  if (o.stop_after < -1) fail("--stop-after must be ≥ 0, got {}", o.stop_after);
  if (o.pack_length < 0) fail("--pack-length must be ≥ 0, got {}", o.pack_length);
}

// GLMLAB_FAULT=train:RANK:STEP makes rank RANK fail at the start of step STEP (1-based) while the
// other ranks go on into the step's collectives: the test of "a failure on one rank ends every rank"
// (tests/test_dist.cpp). Unset (the normal case): no fault.
struct Fault {
  int rank = -1;
  int64_t step = -1;
};
Fault fault_from_env() {
  Fault f;
  const char* v = std::getenv("GLMLAB_FAULT");
  if (!v || !*v) return f;
  long long r = -1, st = -1;
  char tail = 0;
  if (std::sscanf(v, "train:%lld:%lld%c", &r, &st, &tail) != 2 || r < 0 || st < 1 || r > 1 << 24)
    fail("GLMLAB_FAULT=\"{}\": expected train:RANK:STEP", v);
  f.rank = int(r);
  f.step = st;
  return f;
}

// Every rank starts from rank 0's adapter values and optimizer state.
void broadcast_state(dist::Communicator& comm, Adapter& adapter, AdamW& opt, TrainState& st) {
  if (comm.size() == 1) return;
  size_t k = 0;
  for (auto& p : adapter.params()) {
    comm.broadcast(p.value.data(), p.value.size() * sizeof(float), 0);
    if (!p.trainable) continue;
    comm.broadcast(opt.m()[k].data(), opt.m()[k].size() * sizeof(float), 0);
    comm.broadcast(opt.v()[k].data(), opt.v()[k].size() * sizeof(float), 0);
    ++k;
  }
  int64_t t[2] = {st.step, opt.steps()};
  comm.broadcast(t, sizeof t, 0);
  st.step = t[0];
  opt.set_steps(t[1]);
  comm.broadcast_vector(st.losses, 0);
}

// The first trainable parameter that is not finite after an update (name and element), or "".
std::string non_finite_param(const Adapter& a) {
  for (const auto& p : a.params()) {
    if (!p.trainable) continue;
    for (size_t i = 0; i < p.value.size(); ++i)
      if (!std::isfinite(p.value[i])) return fmt::format("{} (element {} is {})", p.name, i, p.value[i]);
  }
  return {};
}

}  // namespace

std::string run_fingerprint(const TrainOptions& o, const std::vector<TrainSample>& samples) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over every sample's ids and labels: the same data
  for (auto& s : samples) {
    for (int32_t v : s.ids) h = (h ^ uint32_t(v)) * 1099511628211ULL;
    for (int32_t v : s.labels) h = (h ^ uint32_t(v)) * 1099511628211ULL;
    h = (h ^ 0xFFFFFFFFu) * 1099511628211ULL;
  }
  nlohmann::json j = {{"method", std::string(method_name(o.adapter.method))},
                      {"rank", o.adapter.rank},
                      {"alpha", o.adapter.alpha},
                      {"dropout", o.adapter.dropout},
                      {"rslora", o.adapter.rslora},
                      {"targets", o.adapter.targets},
                      {"lr", o.adam.lr},
                      {"weight_decay", o.adam.weight_decay},
                      {"steps", o.steps},
                      {"warmup", o.warmup},
                      {"global_batch", int64_t(o.batch_size) * o.grad_accum * (o.comm ? o.comm->size() : 1)},
                      {"max_grad_norm", o.max_grad_norm},
                      {"pack", o.pack},
                      {"pack_length", o.pack_length},
                      {"seed", o.seed},
                      {"samples", samples.size()},
                      {"data_hash", fmt::format("{:016x}", h)},
                      {"base", o.base}};
  return j.dump();
}

TrainReport train(Ops& ops, Model& model, Adapter& adapter, const std::vector<TrainSample>& samples,
                  const TrainOptions& o, const std::function<void(const StepLog&)>& on_step,
                  std::unique_ptr<Device> device) {
  if (model.adapter() != &adapter) fail("train: the model must have the adapter set");
  check_options(o);
  std::unique_ptr<dist::Communicator> single;
  if (!o.comm) single = dist::make_single();
  dist::Communicator& comm = o.comm ? *o.comm : *single;
  const int R = comm.size();
  BatchStream stream(samples, o.batch_size, o.pack, o.pack_length, o.seed, comm.rank(), R);
  AdamW opt(adapter, o.adam);
  TrainState st;
  st.run = run_fingerprint(o, samples);
  TrainReport rep;
  if (o.resume && o.out.empty()) fail("--resume needs --out DIR (the run to continue)");
  // Rank 0 owns OUT for the whole run: a second train on it is refused; a killed save's leftovers go.
  std::unique_ptr<OutLock> lock;
  if (!o.out.empty())
    dist::run_on_root(comm, 0, [&] {
      lock = std::make_unique<OutLock>(o.out);
      clean_stale_temporaries(o.out);
    });
  if (o.resume) {
    dist::run_on_root(comm, 0, [&] {
      TrainState saved = load_train_state(o.out, adapter, opt, &st.run);
      if (saved.run != st.run)
        fail("{}: --resume with other options than the saved run:\n  saved: {}\n  now:   {}", o.out, saved.run, st.run);
      if (saved.step < 0 || saved.step > o.steps)
        fail("{}: the saved run is at step {}, outside [0, --steps {}]", o.out, saved.step, o.steps);
      if (saved.step == o.steps) fail("{}: the saved run has already done all its {} steps: nothing to resume", o.out, o.steps);
      if (int64_t(saved.losses.size()) != saved.step)
        fail("{}: the saved state has {} losses for {} steps", o.out, saved.losses.size(), saved.step);
      st.step = saved.step;
      st.losses = saved.losses;
      if (!adapter_matches_state(o.out)) {
        // Killed between the renames of a save: the adapter files are a newer save's; make them the state's.
        save_adapter(o.out, adapter);
        std::fprintf(stderr, "glmlab: %s: the adapter files were from an interrupted save; rewritten from the "
                     "training state (step %lld)\n", o.out.c_str(), (long long)saved.step);
      }
    });
  }
  broadcast_state(comm, adapter, opt, st);
  rep.first_step = st.step;
  rep.losses = st.losses;
  adapter.set_training(true);
  // The host trainer's gradients are summed in buckets as the backward finishes layers; a device trainer
  // sums its flat gradient buffer in one all-reduce (so no GradSync and none of its bucket buffers).
  std::unique_ptr<GradSync> sync;
  if (!device) sync = std::make_unique<GradSync>(comm, adapter, o.bucket_bytes);
  rep.grad_bytes = R > 1 ? (device ? size_t(adapter.trainable_count()) * 4 : sync->bytes()) : 0;
  rep.grad_buckets = R > 1 ? (device ? 1 : sync->buckets()) : 0;

  const int64_t end = o.stop_after >= 0 ? std::min(o.steps, o.stop_after) : o.steps;

  // On a device: the trainer holds the adapter, its gradients and the moments; the host copies are
  // refreshed (to_host) before every save and at the end.
  std::unique_ptr<DeviceTrainer> dt;
  std::unique_ptr<dist::Communicator> nccl;  // a GPU trainer's gradients are summed by NCCL
  dist::Communicator* grad_comm = &comm;
  if (device) {
    if (R > 1 && !device->host_memory()) {
      if (!dist::nccl_available())
        fail("train on {} over {} ranks: the gradients live in GPU memory and this build has no NCCL to sum "
             "them (scripts/setup.sh installs the nvidia-nccl wheel)", device->name(), R);
      nccl = dist::make_nccl(comm);
      grad_comm = nccl.get();
    }
    int64_t rows = 1;  // the largest micro-batch this invocation will run
    for (int64_t s = st.step; s < end; ++s)
      for (int j = 0; j < o.grad_accum; ++j) rows = std::max(rows, stream.padded_tokens(s * o.grad_accum + j));
    dt = std::make_unique<DeviceTrainer>(std::move(device), model, adapter, TrainerLimits{rows});
    dt->upload(adapter, &opt.m(), &opt.v(), opt.steps());
  }
  auto to_host = [&] {
    if (!dt) return;
    dt->download(adapter, &opt.m(), &opt.v());
    opt.set_steps(dt->steps());
  };

  // Snapshot before each update, to keep the last good adapter when a step goes non-finite.
  std::vector<std::vector<float>> keep_p, keep_m, keep_v;
  int64_t keep_t = 0;
  double keep_loss = 0;
  bool kept = false;
  auto snapshot = [&] {
    kept = true;
    if (dt) return dt->snapshot();
    keep_p.clear();
    keep_m = opt.m();
    keep_v = opt.v();
    keep_t = opt.steps();
    for (auto& p : adapter.params()) keep_p.push_back(p.value);
  };
  // Puts back the parameters and moments from before the last update.
  auto restore_last_good = [&] {
    if (dt) {
      dt->restore();
      return to_host();
    }
    size_t k = 0;
    for (size_t i = 0; i < adapter.params().size(); ++i) {
      auto& p = adapter.params()[i];
      p.value = keep_p[i];
      if (p.trainable) opt.m()[k] = keep_m[k], opt.v()[k] = keep_v[k], ++k;
    }
    opt.set_steps(keep_t);
  };
  const Fault fault = fault_from_env();
  TrainWorkspace ws;  // the host trainer's tape and gradient buffers, reused by every micro-batch
  for (int64_t s = st.step; s < end; ++s) {
    const double t0 = now_s();
    std::vector<TrainBatch> micro;
    int64_t local[2] = {0, 0};  // labelled tokens, real tokens of this rank's micro-batches
    for (int j = 0; j < o.grad_accum; ++j) {
      micro.push_back(stream.batch(s * o.grad_accum + j));
      local[0] += micro.back().label_count();
      for (auto v : micro.back().in.valid) local[1] += v;
    }
    int64_t global[2] = {local[0], local[1]};
    double comm_s = 0;
    {
      const double tc = now_s();
      comm.all_reduce_sum(global, 2);
      comm_s += now_s() - tc;
    }
    const int64_t labelled = global[0], tokens = global[1];
    if (fault.rank == comm.rank() && fault.step == s + 1)  // tests of a failure on one rank (see below)
      fail("fault injected by GLMLAB_FAULT at step {} on rank {}", s + 1, comm.rank());
    if (dt)
      dt->zero_grad();
    else
      adapter.zero_grad();
    double loss_sum = 0;
    StepLog log{s + 1, 0, 0, 0, int64_t(o.batch_size) * o.grad_accum * R, tokens, 0, {}, 0, labelled};
    log.local_samples = int64_t(o.batch_size) * o.grad_accum;
    log.local_tokens = local[1];
    for (int j = 0; j < o.grad_accum; ++j) {
      // A dropout key per (micro-batch, rank): one process reproduces the masks of rank 0 only.
      uint64_t key = mix(o.seed ^ mix(uint64_t(s * o.grad_accum + j)));
      if (R > 1) key = mix(key ^ uint64_t(comm.rank() + 1));
      adapter.set_dropout_key(key);
      if (dt) dt->set_dropout_key(key);
      StepTimes t;
      const bool last = j + 1 == o.grad_accum;
      if (last && sync) sync->begin();
      std::function<void(int)> layer_done;
      if (last && sync && sync->active()) layer_done = [&](int l) { sync->layer_done(l); };
      const double scale = labelled ? 1.0 / double(labelled) : 0.0;
      loss_sum += dt ? dt->loss_and_backward(micro[size_t(j)], scale, &t).loss_sum
                     : loss_and_backward(ops, model, adapter, micro[size_t(j)], scale, &t, layer_done, &ws).loss_sum;
      log.times.forward_s += t.forward_s;
      log.times.head_s += t.head_s;
      log.times.backward_s += t.backward_s;
      log.times.head_backward_s += t.head_backward_s;
    }
    if (dt) {  // one blocking all-reduce of the flat gradient buffer (no overlap with the backward yet)
      const double tc = now_s();
      dt->all_reduce_grads(*grad_comm);
      comm_s += now_s() - tc;
    } else {
      sync->finish();
      comm_s += sync->exposed_s();
    }
    {
      const double tc = now_s();
      loss_sum = comm.sum(loss_sum);
      comm_s += now_s() - tc;
    }
    log.comm_exposed_s = comm_s;
    if (R > 1) {
      // How long this rank waited for slower ones: the ranks' compute differs (their micro-batches have
      // other lengths), and that wait shows up inside the communication calls.
      const double mine = log.times.forward_s + log.times.head_s + log.times.backward_s;
      double slowest = mine;
      comm.all_reduce_max(&slowest, 1);
      log.imbalance_s = slowest - mine;
    }
    log.loss = labelled ? loss_sum / double(labelled) : 0.0;
    const double t_opt = now_s();
    log.grad_norm = dt ? dt->clip_grad_norm(o.max_grad_norm) : clip_grad_norm(adapter, o.max_grad_norm);
    if (!std::isfinite(log.loss) || !std::isfinite(log.grad_norm)) {
      // The parameters of this step are bad. Restore those from before the previous update (their loss
      // was finite) and save them as the state "after step s − 1": a resume redoes that step.
      // Every rank sees the same (all-reduced) loss and gradients, so all stop here together.
      rep.nan_stop = true;
      const bool have = kept;
      if (have) {
        restore_last_good();
        st.step = s - 1;
        st.losses.resize(size_t(s - 1));
        rep.losses.resize(size_t(s - 1));
        save_all(o, comm, adapter, opt, st);
      }
      rep.message = fmt::format(
          "step {}: the loss is {} (gradient norm {}); stopping. {}", s + 1, log.loss, log.grad_norm,
          have ? fmt::format("The last good adapter (after {} steps, loss {:.6g} at step {}) is kept{}", s - 1,
                             keep_loss, s, o.out.empty() ? "" : " in " + o.out)
               : std::string("No earlier adapter of this run to restore"));
      break;
    }
    log.lr = o.adam.lr * linear_schedule(s, o.warmup, o.steps);
    snapshot();
    keep_loss = log.loss;
    std::string bad;
    if (dt) {
      dt->adamw_step(o.adam, log.lr);
      if (!dt->values_finite()) {
        to_host();
        bad = non_finite_param(adapter);
      }
    } else {
      opt.step(adapter, log.lr);
      bad = non_finite_param(adapter);
    }
    if (!bad.empty()) {
      // A finite gradient can still give a non-finite update (a huge learning rate): keep the last good
      // adapter as above and name the tensor.
      restore_last_good();
      rep.nan_stop = true;
      rep.message = fmt::format("step {}: the AdamW update made {} non-finite (learning rate {}); stopping. The "
                                "adapter after {} steps is kept{}",
                                s + 1, bad, log.lr, s, o.out.empty() ? "" : " in " + o.out);
      save_all(o, comm, adapter, opt, st);
      break;
    }
    const double t1 = now_s();
    log.optimizer_s = t1 - t_opt;
    rep.optimizer_seconds += log.optimizer_s;
    st.step = s + 1;
    st.losses.push_back(log.loss);
    rep.losses.push_back(log.loss);
    log.seconds = t1 - t0;
    rep.seconds += log.seconds;
    rep.samples += log.samples;
    rep.tokens += tokens;
    rep.comm_exposed_seconds += log.comm_exposed_s;
    rep.imbalance_seconds += log.imbalance_s;
    rep.times.forward_s += log.times.forward_s;
    rep.times.head_s += log.times.head_s;
    rep.times.backward_s += log.times.backward_s;
    rep.times.head_backward_s += log.times.head_backward_s;
    ++rep.steps_done;
    if (on_step) on_step(log);
    if (st.step == end || (o.save_every > 0 && st.step % o.save_every == 0)) {
      if (!o.out.empty()) to_host();
      save_all(o, comm, adapter, opt, st);
    }
  }
  to_host();
  adapter.set_training(false);
  return rep;
}

}  // namespace glmlab::lab

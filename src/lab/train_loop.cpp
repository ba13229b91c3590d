// The training loop (see train_loop.h).
#include "lab/train_loop.h"

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "lab/train_state.h"
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

void save_all(const TrainOptions& o, const Adapter& a, const AdamW& opt, const TrainState& st) {
  if (o.out.empty()) return;
  save_train_state(o.out, a, opt, st);  // the resumable state first: one atomic file
  save_adapter(o.out, a);
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
                      {"grad_accum", o.grad_accum},
                      {"batch_size", o.batch_size},
                      {"max_grad_norm", o.max_grad_norm},
                      {"pack", o.pack},
                      {"pack_length", o.pack_length},
                      {"seed", o.seed},
                      {"samples", samples.size()},
                      {"data_hash", fmt::format("{:016x}", h)}};
  return j.dump();
}

TrainReport train(Ops& ops, Model& model, Adapter& adapter, const std::vector<TrainSample>& samples,
                  const TrainOptions& o, const std::function<void(const StepLog&)>& on_step) {
  if (model.adapter() != &adapter) fail("train: the model must have the adapter set");
  if (o.steps < 1) fail("--steps must be at least 1, got {}", o.steps);
  if (o.grad_accum < 1) fail("--grad-accum must be at least 1, got {}", o.grad_accum);
  if (o.warmup < 0 || o.warmup > o.steps) fail("--warmup must be in [0, steps], got {}", o.warmup);
  BatchStream stream(samples, o.batch_size, o.pack, o.pack_length, o.seed);
  AdamW opt(adapter, o.adam);
  TrainState st;
  st.run = run_fingerprint(o, samples);
  TrainReport rep;
  if (o.resume) {
    if (o.out.empty()) fail("--resume needs --out DIR (the run to continue)");
    TrainState saved = load_train_state(o.out, adapter, opt);
    if (saved.run != st.run)
      fail("{}: --resume with other options than the saved run:\n  saved: {}\n  now:   {}", o.out, saved.run, st.run);
    st.step = saved.step;
    st.losses = saved.losses;
  }
  rep.first_step = st.step;
  rep.losses = st.losses;
  adapter.set_training(true);

  // Snapshot before each update, to keep the last good adapter when a step goes non-finite.
  std::vector<std::vector<float>> keep_p, keep_m, keep_v;
  int64_t keep_t = 0;
  double keep_loss = 0;
  const int64_t end = o.stop_after >= 0 ? std::min(o.steps, o.stop_after) : o.steps;
  for (int64_t s = st.step; s < end; ++s) {
    const double t0 = now_s();
    std::vector<TrainBatch> micro;
    int64_t labelled = 0, tokens = 0;
    for (int j = 0; j < o.grad_accum; ++j) {
      micro.push_back(stream.batch(s * o.grad_accum + j));
      labelled += micro.back().label_count();
      for (auto v : micro.back().in.valid) tokens += v;
    }
    adapter.zero_grad();
    double loss_sum = 0;
    StepLog log{s + 1, 0, 0, 0, int64_t(o.batch_size) * o.grad_accum, tokens, 0, {}, 0, labelled};
    for (int j = 0; j < o.grad_accum; ++j) {
      adapter.set_dropout_key(mix(o.seed ^ mix(uint64_t(s * o.grad_accum + j))));
      StepTimes t;
      loss_sum += loss_and_backward(ops, model, adapter, micro[size_t(j)], labelled ? 1.0 / double(labelled) : 0.0, &t)
                      .loss_sum;
      log.times.forward_s += t.forward_s;
      log.times.head_s += t.head_s;
      log.times.backward_s += t.backward_s;
      log.times.head_backward_s += t.head_backward_s;
    }
    log.loss = labelled ? loss_sum / double(labelled) : 0.0;
    const double t_opt = now_s();
    log.grad_norm = clip_grad_norm(adapter, o.max_grad_norm);
    if (!std::isfinite(log.loss) || !std::isfinite(log.grad_norm)) {
      // The parameters of this step are bad. Restore those from before the previous update (their loss
      // was finite) and save them as the state "after step s − 1": a resume redoes that step.
      rep.nan_stop = true;
      const bool have = !keep_p.empty();
      if (have) {
        size_t k = 0;
        for (size_t i = 0; i < adapter.params().size(); ++i) {
          auto& p = adapter.params()[i];
          p.value = keep_p[i];
          if (p.trainable) opt.m()[k] = keep_m[k], opt.v()[k] = keep_v[k], ++k;
        }
        opt.set_steps(keep_t);
        st.step = s - 1;
        st.losses.resize(size_t(s - 1));
        rep.losses.resize(size_t(s - 1));
        save_all(o, adapter, opt, st);
      }
      rep.message = fmt::format(
          "step {}: the loss is {} (gradient norm {}); stopping. {}", s + 1, log.loss, log.grad_norm,
          have ? fmt::format("The last good adapter (after {} steps, loss {:.6g} at step {}) is kept{}", s - 1,
                             keep_loss, s, o.out.empty() ? "" : " in " + o.out)
               : std::string("No earlier adapter of this run to restore"));
      break;
    }
    log.lr = o.adam.lr * linear_schedule(s, o.warmup, o.steps);
    keep_p.clear();
    keep_m = opt.m();
    keep_v = opt.v();
    keep_t = opt.steps();
    keep_loss = log.loss;
    for (auto& p : adapter.params()) keep_p.push_back(p.value);
    opt.step(adapter, log.lr);
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
    rep.times.forward_s += log.times.forward_s;
    rep.times.head_s += log.times.head_s;
    rep.times.backward_s += log.times.backward_s;
    rep.times.head_backward_s += log.times.head_backward_s;
    ++rep.steps_done;
    if (on_step) on_step(log);
    if (st.step == end || (o.save_every > 0 && st.step % o.save_every == 0)) save_all(o, adapter, opt, st);
  }
  adapter.set_training(false);
  return rep;
}

}  // namespace glmlab::lab

#include "model/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <cmath>
#include <numeric>

#include "util/error.h"
#include "util/parse.h"

namespace glmlab {

int32_t sample_token(std::vector<float> logits, const SamplingParams& p, std::mt19937_64& rng) {
  const int V = int(logits.size());
  bool bad = false;
  for (float v : logits) bad |= !std::isfinite(v);
  if (bad) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    if (V > 5) logits[5] = 5e4f;
  }
  if (p.greedy || p.temperature <= 0.0f)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates sorted by logit; top-k, then top-p over the temperature-scaled softmax.
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  int k = p.top_k > 0 ? std::min(p.top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  idx.resize(size_t(k));
  const float mx = logits[size_t(idx[0])];
  std::vector<double> prob(idx.size());
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) sum += prob[i] = std::exp(double(logits[size_t(idx[i])] - mx) / p.temperature);
  // Keep the smallest prefix whose mass reaches top_p (at least one token).
  size_t keep = idx.size();
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < idx.size(); ++i) {
      cum += prob[i] / sum;
      if (cum >= p.top_p) { keep = i + 1; break; }
    }
  }
  double kept = std::accumulate(prob.begin(), prob.begin() + long(keep), 0.0);
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng);
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r <= 0) return idx[i];
  }
  return idx[keep - 1];
}

GenerateResult generate(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& opt) {
  using clock = std::chrono::steady_clock;
  const ModelConfig& cfg = engine.config();
  if (prompts.empty()) fail("generate: no prompts");
  if (opt.max_new_tokens < 0 || opt.min_new_tokens < 0 || opt.min_new_tokens > opt.max_new_tokens)
    fail("generate: need 0 <= min_new_tokens ({}) <= max_new_tokens ({})", opt.min_new_tokens, opt.max_new_tokens);
  if (!opt.sampling.greedy) {  // NaN or a negative value would make the sampler's arithmetic meaningless
    check_finite_range(opt.sampling.temperature, "temperature", 0, std::numeric_limits<float>::max());
    check_finite_range(opt.sampling.top_p, "top_p", 0, 1);
    check_int_range(opt.sampling.top_k, "top_k", 0, std::numeric_limits<int>::max());
  }
  StepInput in = make_prefill(prompts);
  const int B = in.B, V = cfg.vocab_size;
  for (int b = 0; b < B; ++b)
    if (int64_t(prompts[size_t(b)].size()) + opt.max_new_tokens > cfg.seq_length)  // int64: never wraps
      fail("prompt {} has {} tokens; with {} new tokens it exceeds the model's seq_length {}", b,
           prompts[size_t(b)].size(), opt.max_new_tokens, cfg.seq_length);
  std::mt19937_64 rng(opt.sampling.seed);
  const bool greedy = opt.sampling.greedy || opt.sampling.temperature <= 0.0f;

  GenerateResult res;
  res.tokens.assign(size_t(B), {});
  res.stopped.assign(size_t(B), false);
  for (auto& p : prompts) res.prefill_tokens += int64_t(p.size());
  if (opt.max_new_tokens == 0) return res;
  engine.reset(B, in.T + opt.max_new_tokens);

  std::vector<float> logits;
  std::vector<int32_t> next;
  auto forward = [&](const StepInput& s) {
    if (greedy)
      engine.step_greedy(s, next);
    else
      engine.step(s, Logits::Last, logits);
  };
  auto t0 = clock::now();
  forward(in);
  res.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();

  std::vector<int32_t> next_pos(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) next_pos[size_t(b)] = int32_t(prompts[size_t(b)].size());
  std::vector<bool> done(size_t(B), false);
  auto t1 = clock::now();
  for (int step = 0;; ++step) {
    StepInput d;
    d.B = B;
    d.T = 1;
    int active = 0;
    for (int b = 0; b < B; ++b) {
      int32_t id = cfg.eos_token_id;
      if (!done[size_t(b)]) {
        if (greedy) {
          id = next[size_t(b)];
        } else {
          std::vector<float> row(logits.begin() + int64_t(b) * V, logits.begin() + int64_t(b + 1) * V);
          check_logits_finite(row.data(), 1, V);
          id = sample_token(std::move(row), opt.sampling, rng);
        }
        int n = int(res.tokens[size_t(b)].size());
        bool is_stop = std::find(opt.stop_ids.begin(), opt.stop_ids.end(), id) != opt.stop_ids.end();
        if (is_stop && n >= opt.min_new_tokens) {
          done[size_t(b)] = true;
          res.stopped[size_t(b)] = true;
        } else {
          res.tokens[size_t(b)].push_back(id);
          if (opt.on_token) opt.on_token(b, id);
          if (n + 1 >= opt.max_new_tokens) done[size_t(b)] = true;
        }
      }
      if (!done[size_t(b)]) ++active;
      d.ids.push_back(id);
      d.pos.push_back(next_pos[size_t(b)]++);
      d.valid.push_back(1);
    }
    if (active == 0) break;
    // Finished sequences keep a slot (their outputs are ignored) so the batch stays aligned.
    forward(d);
    ++res.decode_steps;
  }
  res.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  for (auto& t : res.tokens) res.generated_tokens += int64_t(t.size());
  return res;
}

GenerateResult generate(const Model& model, Ops& ops, const std::vector<std::vector<int32_t>>& prompts,
                        const GenerateOptions& opt) {
  HostEngine engine(model, ops);
  return generate(engine, prompts, opt);
}

}  // namespace glmlab

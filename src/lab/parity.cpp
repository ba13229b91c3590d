#include "lab/parity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "model/safetensors.h"
#include "util/error.h"

namespace glmlab {

namespace {

std::vector<int64_t> read_i64(const SafetensorsSet& g, const std::string& name, const std::string& path) {
  const TensorInfo& t = g.get(name);
  if (t.dtype != DType::I64) fail("{}: tensor {} must be I64", path, name);
  std::vector<int64_t> v(size_t(t.numel()));
  if (v.size() * sizeof(int64_t) != t.nbytes) fail("{}: tensor {} holds {} bytes, not {} I64 values", path, name, t.nbytes, v.size());
  if (!v.empty()) std::memcpy(v.data(), t.data, t.nbytes);  // never memcpy to/from the null data of an empty tensor
  return v;
}

// A token id or position of the golden as the int32_t the engine takes (never wrapped).
int32_t to_i32(int64_t v, const char* what, const std::string& path) {
  if (v < 0 || v > INT32_MAX) fail("{}: {} {} is outside [0, {}]", path, what, v, INT32_MAX);
  return int32_t(v);
}

// [B, T] of input_ids: both at least 1 (an empty batch compares nothing and cannot fill a KV cache).
std::pair<int, int> batch_shape(const TensorInfo& ids_t, const std::string& path) {
  if (ids_t.shape.size() != 2) fail("{}: input_ids must be [B, T], got {}", path, ids_t.shape_str());
  if (ids_t.shape[0] < 1 || ids_t.shape[1] < 1)
    fail("{}: input_ids {} is empty: the golden batch needs at least one sequence of at least one token", path,
         ids_t.shape_str());
  if (ids_t.shape[0] > INT32_MAX || ids_t.shape[1] > INT32_MAX || ids_t.shape[0] * ids_t.shape[1] > INT32_MAX)
    fail("{}: input_ids {} is too large", path, ids_t.shape_str());
  return {int(ids_t.shape[0]), int(ids_t.shape[1])};
}

const float* read_f32(const SafetensorsSet& g, const std::string& name, int64_t numel, const std::string& path) {
  const TensorInfo& t = g.get(name);
  if (t.dtype != DType::F32 || t.numel() != numel)
    fail("{}: tensor {} must be F32 with {} values, got {} {}", path, name, numel, dtype_name(t.dtype), t.shape_str());
  return reinterpret_cast<const float*>(t.data);
}

ParityRow compare_row(const float* got, const float* ref, int V) {
  ParityRow r;
  for (int i = 0; i < V; ++i) {
    r.max_abs = std::max(r.max_abs, double(std::fabs(got[i] - ref[i])));
    r.max_ref = std::max(r.max_ref, double(std::fabs(ref[i])));
  }
  r.rel = r.max_abs / std::max(r.max_ref, 1e-30);
  const int64_t best = std::max_element(ref, ref + V) - ref;
  r.top1 = std::max_element(got, got + V) - got == best;
  double second = -INFINITY;
  for (int i = 0; i < V; ++i)
    if (i != best) second = std::max(second, double(ref[i]));
  r.ref_margin = double(ref[best]) - second;
  return r;
}

}  // namespace

GoldenShape golden_shape(const std::string& path) {
  SafetensorsSet g = SafetensorsSet::open(path);
  auto [B, T] = batch_shape(g.get("input_ids"), path);
  GoldenShape s{B, T, 0};
  while (g.find(fmt::format("step{}_ids", s.steps + 1))) ++s.steps;
  return s;
}

ParityReport run_parity(const Model& model, Ops& ops, const std::string& path, const ParityOptions& opt) {
  HostEngine engine(model, ops);
  return run_parity(engine, path, opt);
}

ParityReport run_parity(Engine& engine, const std::string& path, const ParityOptions& opt) {
  SafetensorsSet g = SafetensorsSet::open(path);
  const auto [B, T] = batch_shape(g.get("input_ids"), path);
  const int V = engine.config().vocab_size;
  auto ids = read_i64(g, "input_ids", path), mask = read_i64(g, "attention_mask", path),
       pos = read_i64(g, "position_ids", path);
  if (mask.size() != ids.size() || pos.size() != ids.size())
    fail("{}: attention_mask and position_ids must have the shape of input_ids", path);
  int steps = 0;
  while (g.find(fmt::format("step{}_ids", steps + 1))) ++steps;

  StepInput in;
  in.B = B;
  in.T = T;
  for (size_t i = 0; i < ids.size(); ++i) {
    in.ids.push_back(to_i32(ids[i], "input_ids value", path));
    in.pos.push_back(to_i32(pos[i], "position_ids value", path));
    in.valid.push_back(mask[i] != 0);
  }
  engine.reset(B, T + steps);
  std::vector<float> logits;
  engine.step(in, Logits::All, logits);

  ParityReport rep;
  const float* ref = read_f32(g, "prefill_logits" + opt.suffix, int64_t(B) * T * V, path);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      if (!in.valid[size_t(b) * T + t]) continue;  // padded positions have no meaning
      ParityRow r = compare_row(logits.data() + (int64_t(b) * T + t) * V, ref + (int64_t(b) * T + t) * V, V);
      r.phase = "prefill";
      r.batch = b;
      r.pos = in.pos[size_t(b) * T + t];
      rep.rows.push_back(r);
    }
  std::vector<int32_t> next_pos(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) next_pos[size_t(b)] = in.pos[size_t(b) * T + T - 1] + 1;
  for (int s = 1; s <= steps; ++s) {
    auto sid = read_i64(g, fmt::format("step{}_ids", s), path);
    if (int(sid.size()) != B) fail("{}: step{}_ids must have {} entries", path, s, B);
    StepInput d;
    d.B = B;
    d.T = 1;
    for (int b = 0; b < B; ++b) {
      d.ids.push_back(to_i32(sid[size_t(b)], "step ids value", path));
      d.pos.push_back(next_pos[size_t(b)]++);
      d.valid.push_back(1);
    }
    engine.step(d, Logits::Last, logits);
    const float* sref = read_f32(g, fmt::format("step{}_logits{}", s, opt.suffix), int64_t(B) * V, path);
    for (int b = 0; b < B; ++b) {
      ParityRow r = compare_row(logits.data() + int64_t(b) * V, sref + int64_t(b) * V, V);
      r.phase = fmt::format("step{}", s);
      r.batch = b;
      r.pos = d.pos[size_t(b)];
      rep.rows.push_back(r);
    }
  }
  int agree = 0;
  bool within = true;
  for (auto& r : rep.rows) {
    rep.max_abs = std::max(rep.max_abs, r.max_abs);
    rep.max_rel = std::max(rep.max_rel, r.rel);
    agree += r.top1 || r.near_tie();
    within &= r.max_abs <= opt.atol + opt.rtol * r.max_ref;
  }
  rep.top1_rate = rep.rows.empty() ? 1.0 : double(agree) / double(rep.rows.size());
  rep.pass = within && rep.top1_rate >= opt.min_top1 && !rep.rows.empty();
  return rep;
}

std::string parity_table(const ParityReport& r, bool all_rows) {
  std::string s = fmt::format("{:<8} {:>5} {:>5} {:>12} {:>12} {:>5}\n", "phase", "seq", "pos", "max_abs", "rel", "top1");
  for (auto& row : r.rows)
    if (all_rows || !row.top1 || row.max_abs == r.max_abs)
      s += fmt::format("{:<8} {:>5} {:>5} {:>12.3e} {:>12.3e} {:>5}\n", row.phase, row.batch, row.pos, row.max_abs, row.rel,
                       row.top1       ? "yes"
                       : row.near_tie() ? fmt::format("tie (reference margin {:.3g} ≤ 2·max_abs)", row.ref_margin)
                                        : fmt::format("NO (reference margin {:.3g})", row.ref_margin));
  s += fmt::format("rows {}  max_abs {:.3e}  max_rel {:.3e}  top-1 agreement {:.1f}%  → {}\n", r.rows.size(), r.max_abs,
                   r.max_rel, 100.0 * r.top1_rate, r.pass ? "PASS" : "FAIL");
  return s;
}

}  // namespace glmlab

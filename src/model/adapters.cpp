// LoRA / VeRA adapters: creation with PEFT's initialization, the unmerged forward delta and its
// backward (see adapters.h for the formulas, names and the RNG).
#include "model/adapters.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "util/error.h"
#include "util/file.h"

namespace glmlab {

std::string_view method_name(AdapterMethod m) { return m == AdapterMethod::Lora ? "lora" : "vera"; }
AdapterMethod method_from_name(std::string_view s) {
  if (s == "lora") return AdapterMethod::Lora;
  if (s == "vera") return AdapterMethod::Vera;
  fail("unknown adapter method \"{}\" (expected lora or vera)", s);
}

std::string_view target_name(Target t) {
  switch (t) {
    case Target::Qkv: return "query_key_value";
    case Target::Dense: return "dense";
    case Target::HTo4H: return "dense_h_to_4h";
    case Target::FourHToH: return "dense_4h_to_h";
  }
  return "?";
}

Target target_from_name(std::string_view s) {
  for (Target t : kTargets)
    if (target_name(t) == s) return t;
  fail("unknown target module \"{}\" (expected query_key_value, dense, dense_h_to_4h or dense_4h_to_h)", s);
}

std::string target_path(int layer, Target t) {
  const char* block = (t == Target::Qkv || t == Target::Dense) ? "self_attention" : "mlp";
  return fmt::format("transformer.encoder.layers.{}.{}.{}", layer, block, target_name(t));
}

LinearDims target_dims(const ModelConfig& c, Target t) {
  switch (t) {
    case Target::Qkv: return {c.hidden_size, c.qkv_dim()};
    case Target::Dense: return {c.q_dim(), c.hidden_size};
    case Target::HTo4H: return {c.hidden_size, 2 * int64_t(c.ffn_hidden_size)};
    case Target::FourHToH: return {c.ffn_hidden_size, c.hidden_size};
  }
  return {0, 0};
}

AdapterConfig AdapterConfig::lora_defaults() { return AdapterConfig{}; }
AdapterConfig AdapterConfig::vera_defaults() {
  AdapterConfig c;
  c.method = AdapterMethod::Vera;
  c.rank = 256;
  return c;
}
float AdapterConfig::scaling() const {
  if (method == AdapterMethod::Vera) return 1.0f;
  return rslora ? alpha / std::sqrt(float(rank)) : alpha / float(rank);
}

int64_t AdapterParam::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {

// Uniform in [−b, b) from the top 53 bits of a 64-bit draw (the same on every platform).
void fill_uniform(std::vector<float>& v, float b, std::mt19937_64& rng) {
  for (auto& x : v) x = float((double(rng() >> 11) * 0x1.0p-53 * 2.0 - 1.0) * b);
}


Matrix f32_matrix(const float* data, int64_t rows, int64_t cols) { return Matrix{DType::F32, rows, cols, data}; }

}  // namespace

Adapter Adapter::create(const ModelConfig& model, const AdapterConfig& cfg, uint64_t max_values,
                        std::string_view source) {
  if (cfg.rank <= 0) fail("{} rank must be positive, got {}", method_name(cfg.method), cfg.rank);
  if (!(cfg.dropout >= 0 && cfg.dropout < 1)) fail("adapter dropout must be in [0, 1), got {}", cfg.dropout);
  if (cfg.targets.empty()) fail("an adapter needs at least one target module");
  bool on[kNumTargets] = {};
  for (auto& name : cfg.targets) {
    Target t = target_from_name(name);
    if (on[int(t)]) fail("target module \"{}\" is listed twice", name);
    on[int(t)] = true;
  }
  Adapter a;
  a.cfg_ = cfg;
  a.L_ = model.num_layers;
  for (Target t : kTargets) {
    a.dims_.push_back(target_dims(model, t));
    if (on[int(t)]) {
      a.max_in_ = std::max(a.max_in_, a.dims_.back().in);
      a.max_out_ = std::max(a.max_out_, a.dims_.back().out);
    }
  }
  {  // memory before anything is allocated: every value, plus a gradient for the trainable ones
    using u128 = unsigned __int128;
    const u128 r = u128(cfg.rank), L = u128(std::max(a.L_, 0));
    u128 per_layer = 0;
    for (Target t : kTargets)
      if (on[int(t)]) {
        const LinearDims d = a.dims_[size_t(t)];
        per_layer += cfg.method == AdapterMethod::Lora ? 2 * r * u128(d.in + d.out) : 2 * (u128(d.out) + r);
      }
    u128 floats = L * per_layer;  // values and their gradients
    const u128 shared = cfg.method == AdapterMethod::Vera ? r * u128(a.max_in_) + u128(a.max_out_) * r : 0;
    floats += shared;
    const u128 bytes = floats * 4 + L * kNumTargets * sizeof(int);
    const std::string what = fmt::format("a {} adapter of rank {} on {} layers", method_name(cfg.method), cfg.rank, a.L_);
    if (bytes > u128(1) << 62) fail("{} is too large: it would need more memory than any machine has", what);
    check_memory(uint64_t(bytes), what);
    const u128 values = L * per_layer / 2 + shared;  // the gradients are not read from anywhere
    if (values > max_values)
      fail("{} has {} values, far more than {} holds: it was not written for this configuration", what,
           uint64_t(values), source.empty() ? std::string_view("the source") : source);
  }
  a.slots_.assign(size_t(a.L_) * kNumTargets, -1);
  const int64_t r = cfg.rank;
  std::mt19937_64 rng(cfg.seed);
  auto add = [&](std::string name, std::vector<int64_t> shape, bool trainable) {
    AdapterParam p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.value.assign(size_t(p.numel()), 0.0f);
    if (trainable) p.grad.assign(p.value.size(), 0.0f);
    p.trainable = trainable;
    a.params_.push_back(std::move(p));
    return &a.params_.back();
  };
  if (cfg.method == AdapterMethod::Vera) {
    a.vera_a_ = 0;
    fill_uniform(add("base_model.vera_A", {r, a.max_in_}, false)->value, std::sqrt(6.0f / float(a.max_in_)), rng);
    a.vera_b_ = 1;
    fill_uniform(add("base_model.vera_B", {a.max_out_, r}, false)->value, std::sqrt(6.0f / float(r)), rng);
  }
  for (int l = 0; l < a.L_; ++l)
    for (Target t : kTargets) {
      if (!on[int(t)]) continue;
      const LinearDims d = a.dims_[size_t(t)];
      const std::string base = "base_model.model." + target_path(l, t);
      a.slots_[size_t(l) * kNumTargets + size_t(t)] = int(a.params_.size());
      if (cfg.method == AdapterMethod::Lora) {
        fill_uniform(add(base + ".lora_A.weight", {r, d.in}, true)->value, 1.0f / std::sqrt(float(d.in)), rng);
        add(base + ".lora_B.weight", {d.out, r}, true);  // zeros
      } else {
        add(base + ".vera_lambda_b", {d.out}, true);  // zeros
        auto* ld = add(base + ".vera_lambda_d", {r}, true);
        std::fill(ld->value.begin(), ld->value.end(), cfg.d_initial);
      }
      for (size_t i = size_t(a.slots_[size_t(l) * kNumTargets + size_t(t)]); i < a.params_.size(); ++i)
        a.params_[i].layer = l;
    }
  return a;
}

void Adapter::check_fits(const ModelConfig& model) const {
  if (model.num_layers != L_)
    fail("the adapter was made for a model with {} layers, this model has {}", L_, model.num_layers);
  for (Target t : kTargets) {
    const LinearDims want = target_dims(model, t), have = dims_[size_t(t)];
    if (want.in != have.in || want.out != have.out)
      fail("the adapter was made for {} of shape [{}, {}] (out, in), this model's is [{}, {}]", target_name(t),
           have.out, have.in, want.out, want.in);
  }
}

int Adapter::lowest_adapted_layer() const {
  for (int l = 0; l < L_; ++l)
    for (Target t : kTargets)
      if (adapts(l, t)) return l;
  return L_;
}

AdapterParam* Adapter::find(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

void Adapter::zero_grad() {
  for (auto& p : params_) std::fill(p.grad.begin(), p.grad.end(), 0.0f);
}

int64_t Adapter::trainable_count() const {
  int64_t n = 0;
  for (auto& p : params_)
    if (p.trainable) n += p.numel();
  return n;
}

const float* Adapter::dropped(int layer, Target t, const float* x, int64_t N, int64_t in,
                              std::vector<float>& buf) const {
  const float p = cfg_.dropout;
  if (!training_ || p == 0) return x;
  buf.resize(size_t(N * in));
  const float keep = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < N * in; ++i) buf[size_t(i)] = kept(layer, t, i) ? x[i] * keep : 0.0f;
  return buf.data();
}

uint64_t Adapter::dropout_stream(uint64_t dropout_key, int layer, Target t) {
  return splitmix64(dropout_key ^ splitmix64(uint64_t(layer) * kNumTargets + uint64_t(t)));
}

bool Adapter::kept(int layer, Target t, int64_t i) const {
  // element i survives when its hash, as a uniform in [0, 1), is ≥ p (zeroed with probability p)
  return dropout_kept(dropout_stream(dropout_key_, layer, t), i, cfg_.dropout);
}

void Adapter::forward(Ops& ops, int layer, Target t, const float* x, int64_t N, float* y) const {
  const int s = slot(layer, t);
  if (s < 0 || N == 0) return;
  const LinearDims d = dims_[size_t(t)];
  const int64_t r = cfg_.rank;
  std::vector<float> xbuf, z(size_t(N * r)), w(size_t(N * d.out));
  const float* xd = dropped(layer, t, x, N, d.in, xbuf);
  if (cfg_.method == AdapterMethod::Lora) {
    const auto &A = params_[size_t(s)].value, &B = params_[size_t(s + 1)].value;
    ops.matmul(xd, N, f32_matrix(A.data(), r, d.in), nullptr, z.data());    // z = A·x   [N, r]
    ops.matmul(z.data(), N, f32_matrix(B.data(), d.out, r), nullptr, w.data());  // w = B·z   [N, out]
    const float sc = cfg_.scaling();
    for (int64_t i = 0; i < N * d.out; ++i) y[i] += sc * w[size_t(i)];
    return;
  }
  const auto &lb = params_[size_t(s)].value, &ld = params_[size_t(s + 1)].value;
  std::vector<float> a_sl;
  const float* A = params_[size_t(vera_a_)].value.data();
  if (d.in != max_in_) {  // vera_A[:, :in] as a contiguous [r, in]
    a_sl.resize(size_t(r * d.in));
    for (int64_t k = 0; k < r; ++k) std::copy(A + k * max_in_, A + k * max_in_ + d.in, a_sl.begin() + k * d.in);
    A = a_sl.data();
  }
  ops.matmul(xd, N, f32_matrix(A, r, d.in), nullptr, z.data());  // z = A_sl·x  [N, r]
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < r; ++k) z[size_t(n * r + k)] *= ld[size_t(k)];
  const float* Bv = params_[size_t(vera_b_)].value.data();  // vera_B[:out, :] is its first out rows
  ops.matmul(z.data(), N, f32_matrix(Bv, d.out, r), nullptr, w.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < d.out; ++o) y[n * d.out + o] += lb[size_t(o)] * w[size_t(n * d.out + o)];
}

void Adapter::backward(Ops& ops, int layer, Target t, const float* x, const float* dy, int64_t N, float* dx) {
  const int s = slot(layer, t);
  if (s < 0 || N == 0) return;
  const LinearDims d = dims_[size_t(t)];
  const int64_t r = cfg_.rank;
  std::vector<float> xbuf, z(size_t(N * r)), dz(size_t(N * r), 0.0f);
  const float* xd = dropped(layer, t, x, N, d.in, xbuf);
  const float* A;  // [r, in]
  std::vector<float> a_sl;
  if (cfg_.method == AdapterMethod::Lora) {
    auto &PA = params_[size_t(s)], &PB = params_[size_t(s + 1)];
    A = PA.value.data();
    const float sc = cfg_.scaling();
    std::vector<float> dys(dy, dy + N * d.out);  // s · dy
    for (auto& v : dys) v *= sc;
    ops.matmul(xd, N, f32_matrix(A, r, d.in), nullptr, z.data());                      // z = A·x
    ops.matmul_backward_weight(dys.data(), z.data(), N, d.out, r, PB.grad.data());     // dB += (s·dy)ᵀ z
    ops.matmul_backward_input(dys.data(), N, f32_matrix(PB.value.data(), d.out, r), dz.data());  // dz = s·dy·B
    ops.matmul_backward_weight(dz.data(), xd, N, r, d.in, PA.grad.data());             // dA += dzᵀ x
  } else {
    auto &Pb = params_[size_t(s)], &Pd = params_[size_t(s + 1)];
    A = params_[size_t(vera_a_)].value.data();
    if (d.in != max_in_) {
      a_sl.resize(size_t(r * d.in));
      for (int64_t k = 0; k < r; ++k) std::copy(A + k * max_in_, A + k * max_in_ + d.in, a_sl.begin() + k * d.in);
      A = a_sl.data();
    }
    const Matrix B = f32_matrix(params_[size_t(vera_b_)].value.data(), d.out, r);
    ops.matmul(xd, N, f32_matrix(A, r, d.in), nullptr, z.data());  // z = A_sl·x
    std::vector<float> zd(z.size()), w(size_t(N * d.out)), dw(size_t(N * d.out));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < r; ++k) zd[size_t(n * r + k)] = z[size_t(n * r + k)] * Pd.value[size_t(k)];
    ops.matmul(zd.data(), N, B, nullptr, w.data());  // w = B_sl·(λd ⊙ z)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < d.out; ++o) {
        const int64_t i = n * d.out + o;
        Pb.grad[size_t(o)] += dy[i] * w[size_t(i)];        // dλb += Σ_n dy ⊙ w
        dw[size_t(i)] = dy[i] * Pb.value[size_t(o)];       // dw = λb ⊙ dy
      }
    std::vector<float> dzd(size_t(N * r), 0.0f);
    ops.matmul_backward_input(dw.data(), N, B, dzd.data());  // d(λd ⊙ z) = dw·B_sl
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < r; ++k) {
        const size_t i = size_t(n * r + k);
        Pd.grad[size_t(k)] += dzd[i] * z[i];               // dλd += Σ_n dzd ⊙ z
        dz[i] = dzd[i] * Pd.value[size_t(k)];
      }
  }
  if (!dx) return;
  // dx += dropout'(dz·A)
  if (xd == x) {
    ops.matmul_backward_input(dz.data(), N, f32_matrix(A, r, d.in), dx);
    return;
  }
  std::vector<float> dxd(size_t(N * d.in), 0.0f);
  ops.matmul_backward_input(dz.data(), N, f32_matrix(A, r, d.in), dxd.data());
  const float keep = 1.0f / (1.0f - cfg_.dropout);
  for (int64_t i = 0; i < N * d.in; ++i)
    if (kept(layer, t, i)) dx[i] += dxd[size_t(i)] * keep;
}

}  // namespace glmlab

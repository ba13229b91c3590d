// The one op interface between the model and the kernels. The model calls only these; a back end
// (cpu reference, cpu SIMD, later cuda) implements them. Activations are fp32 row-major buffers;
// matrices are Matrix views in their storage dtype.
//
// Shape vocabulary: N rows of activations (= batch × new tokens), C hidden, Q = H·D query width,
// KV = G·D key/value width, F ffn width, V vocab, B batch, T new tokens per sequence, P tokens already
// in the cache, S cache capacity, H query heads, G key/value groups, D head dim, R rotary dims (= D/2).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "util/matrix.h"
#include "util/large_pages.h"

namespace glmlab {

// A matrix repacked for one back end's inference kernels (Ops::pack_weights); data and scales own its bytes.
struct PackedWeights {
  Matrix m;
  WeightBytes data, scales;
};

// Where attention reads its keys and values: one layer of a KV cache.
// k and v are [B, S, G, D]; key_valid is [B, S] (1 = a real token, 0 = padding or empty).
// segment [B, S] (optional): packed sequences; a query at slot i sees key j only when
// segment[b, j] == segment[b, i] (block-diagonal causal mask). nullptr = one segment per row.
// A bf16 cache (inference only) sets k16/v16 instead of k/v, same layout; the forward attention of the
// host back ends reads it, the backward and the CUDA ops refuse it.
struct KVView {
  const float* k;
  const float* v;
  const uint8_t* key_valid;
  int S;
  const int32_t* segment = nullptr;
  const uint16_t* k16 = nullptr;
  const uint16_t* v16 = nullptr;
  bool bf16() const { return k16 != nullptr; }
};

// One sequence of Ops::attention_seqs: T new queries in rows first .. first + T − 1 of q, out and lse,
// at slots P .. P + T − 1 of row `row` of the cache.
struct AttnSeq {
  int row = 0, P = 0, T = 0;
  int64_t first = 0;
};

// The scalars of one AdamW step (model/optimizer.h's adamw_step computes them in double and rounds
// each to fp32 once, as torch does), for Ops::adamw.
struct AdamWStep {
  float decay, w1, b2, w2, step_size, bc2_sqrt, eps;
};
// The AdamW update of n values on the host: value *= decay; m += w1·(g − m); v = v·b2 + w2·g·g;
// value −= step_size · m / (√v / bc2_sqrt + eps), in that order in fp32 (torch's single-tensor code).
void adamw_update(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s);

// Adapter dropout masks (model/adapters.h): element i of a stream with key `key` survives when its
// counter-based hash, as a uniform in [0, 1), is ≥ p. splitmix64's finalizer.
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
inline bool dropout_kept(uint64_t key, int64_t i, float p) {
  return double(splitmix64(key + uint64_t(i)) >> 11) * 0x1.0p-53 >= p;
}

// The one row b of a cache view, as a view of batch 1 (G groups of D dims per slot).
KVView kv_row(const KVView& kv, int b, int G, int D);

class Ops {
 public:
  virtual ~Ops() = default;
  virtual std::string_view name() const = 0;

  // out[N, C] = rows `ids[N]` of the embedding [V, C] (ids already range-checked).
  virtual void embedding(const Matrix& table, const int32_t* ids, int64_t N, float* out) = 0;

  // y[N, C] = x / sqrt(mean(x²) + eps) · w; inv_rms[N] (optional) keeps 1/rms for the backward pass.
  virtual void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y,
                       float* inv_rms) = 0;

  // y[N, W.rows] = x[N, W.cols] · Wᵀ (+ bias[W.rows] when bias != nullptr).
  virtual void matmul(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) = 0;
  // The instruction family a matmul of many rows (a prefill) of W runs on, so that a benchmark sets it
  // against the right peak (lab/probe.h): "bf16" (bf16 dot products: AVX512-BF16 or AMX), "int8"
  // (integer dot products) or "fp32" (fp32 FMA), "" where no host peak applies.
  virtual std::string_view matmul_unit(const Matrix& W) const { return "fp32"; }
  // Repacks W for this back end's forward matmul where it has a faster layout (the fast CPU back end:
  // Q8/Q4 for the VNNI kernels, kernels/cpu/vnni_packed.h) and returns true; false leaves W as it is.
  // Inference only: the backward ops, the CUDA back end and the checkpoint writers refuse packed matrices.
  virtual bool pack_weights(const Matrix& W, PackedWeights& out) const { return false; }

  // Rotary embedding in place on the first `nheads` heads of each row of x (row stride `stride`, head
  // dim D): the first R = D/2 dims of a head, interleaved pairs (2i, 2i+1) rotated by
  // pos[n] · base^(−2i/R); dims R..D−1 unchanged.
  virtual void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) = 0;

  // Causal grouped-query attention of T new queries per sequence against the cache.
  // q: row (b·T + t) at q + (b·T + t)·q_stride, head h at offset h·D. Query t of sequence b sits at
  // cache slot P + t and attends to slots j ≤ P + t whose key_valid[b, j] is 1; head h reads group
  // h / (H / G). out[B·T, H·D]; lse[B·T, H] (optional) keeps each row's log-sum-exp of the scaled
  // scores for the backward pass. A row with no valid key gets zeros. Scale 1/√D.
  virtual void attention(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                         int D, float* out, float* lse) = 0;

  // attention() for sequences of different lengths in one call (continuous batching): sequence i is
  // attention(q + first·q_stride, q_stride, kv_row(kv, row), 1, T, P, …) with out and lse at row first.
  // Default: one attention() call per sequence; the fast CPU back end runs them as one parallel job list.
  virtual void attention_seqs(const float* q, int64_t q_stride, const KVView& kv, const AttnSeq* seqs, int n, int H,
                              int G, int D, float* out, float* lse);

  // out[N, F] = silu(u[:, :F]) · u[:, F:], u[N, 2F] (gate first, as ChatGLM3's torch.chunk).
  virtual void swiglu(const float* u, int64_t N, int64_t F, float* out) = 0;

  // y[n] += x[n] for n < count.
  virtual void add(float* y, const float* x, int64_t count) = 0;

  // ---- Backward passes (fine-tuning). Gradients ACCUMULATE (+=) into their outputs unless stated;
  // base weights are frozen: only input gradients flow through them.

  // dx[N, W.cols] += dy[N, W.rows] · W, for W of any stored dtype (the input gradient of matmul).
  virtual void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) = 0;
  // dW[M, K] += dyᵀ · x for dy[N, M], x[N, K]: the weight gradient of an fp32 adapter matrix.
  virtual void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K,
                                      float* dW) = 0;
  // dx[N, C] += backward of rmsnorm (frozen w[C]) given dy[N, C], its input x and inv_rms[N].
  virtual void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N,
                                int64_t C, float eps, float* dx) = 0;
  // In place on dx (same layout as rope's x): the transpose of rope's rotation (rotation by −angle).
  virtual void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos,
                             float base) = 0;
  // du[N, 2F] += backward of swiglu given dout[N, F] and its input u[N, 2F].
  virtual void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) = 0;
  // Backward of attention() with the same q, kv, shapes, its out[B·T, H·D] and lse[B·T, H]:
  // dq += (row stride dq_stride, head h at h·D, like q); dk, dv [B, S, G, D] += (like kv.k, summed
  // over the H/G heads of each group). Rows whose lse is −inf (no visible key) give nothing.
  virtual void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H,
                                  int G, int D, const float* out, const float* lse, const float* dout, float* dq,
                                  int64_t dq_stride, float* dk, float* dv) = 0;
  // Fused softmax cross-entropy over N rows of logits z[N, V] with labels[N] (−100 = ignored).
  // Returns Σ over labelled rows of (logsumexp(z[n]) − z[n, label]) and OVERWRITES z with the
  // gradient scale · (softmax(z[n]) − onehot(label[n])); ignored rows become 0. Called on chunks of
  // rows, so the whole [tokens, V] logits matrix never has to exist.
  virtual double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) = 0;

  // ---- Optimizer (fine-tuning), in the back end's memory: a trainer whose adapter lives on a device
  // updates it there. Default: host implementations (ops.cpp).

  // adamw_update() of n values (value, grad, m, v all n floats).
  virtual void adamw(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s);
  // Σ x[i]² in double (the squared gradient norm that clipping needs).
  virtual double sum_squares(const float* x, int64_t n);
  // x[i] = float(double(x[i]) · c) for i < n (one rounding: for a float c, the fp32 product).
  virtual void scale(float* x, int64_t n, double c);

  // ---- Adapters on a device trainer (model/device_trainer.h). Default: host implementations (ops.cpp).

  // out[i] = dropout_kept(key, i, p) ? x[i] · (1 / (1 − p)) : 0 for i < n (out may be x).
  virtual void dropout(const float* x, int64_t n, uint64_t key, float p, float* out);
  // x[n, m] *= v[m] for x [N, M] (VeRA's λ scalings).
  virtual void mul_cols(float* x, int64_t N, int64_t M, const float* v);
  // out[m] += Σ_n a[n, m] · b[n, m], summed in n order in fp32 (VeRA's λ gradients).
  virtual void col_dot(const float* a, const float* b, int64_t N, int64_t M, float* out);

  // ---- Inference engine helpers (model/device_engine.h). Default: host implementations (ops.cpp).

  // KV cache write: for b < B, t < T: dst[(b·S + start[0] + t)·W .. +W) = src[(b·T + t)·stride + offset .. +W).
  // `start` is one int32 in the back end's memory (not a host value), so that a recorded graph can
  // replay the step with a new slot.
  virtual void kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst,
                        int S, const int32_t* start);
  // out[r] = index of the largest value of row r of x[rows, V] (the first of equal maxima; a row with
  // a NaN or Inf gives 5, as the reference's InvalidScoreLogitsProcessor does). out in the back end's memory.
  virtual void argmax(const float* x, int64_t rows, int64_t V, int32_t* out);
};

// Cuda: kernels in GPU memory; its Ops are driven by the DeviceEngine (ops/device.h), not Model::forward.
enum class Backend { CpuRef, Cpu, Cuda };
Backend backend_from_name(std::string_view s);  // "cpu" | "cpu-ref" | "cuda"; Error otherwise
bool cuda_built();                              // true when this build has the CUDA back end
// bf16_activations: the fast back end may round activations to bf16 where that is much faster (AMX
// tiles for bf16 weights, from 8 rows on; int8/int4 weights: int8 activations per 32 inputs on VNNI for
// decode, bf16 on AMX for prefill); false keeps every activation fp32 (exact parity checks).
std::unique_ptr<Ops> make_ops(Backend b, bool bf16_activations = true);

// Deliberate bugs for tests that prove the golden comparison catches them (reference back end only).
enum class RefMutation { None, RopeHalfSplit, GateUpSwapped, KvGroupModulo };
std::unique_ptr<Ops> make_ref_ops(RefMutation mutation = RefMutation::None);

}  // namespace glmlab

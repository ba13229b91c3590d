// CudaOps (cuda_ops.h): the CUDA back end's Ops. Picks a kernel per call (the Auto paths below), owns the
// scratch buffer and the cuBLAS handle, and turns every bad shape into an Error. Plain C++; the kernels
// are in the .cu files (kernels.h).
//
// Matmul, Auto:
//   N ≤ 8 rows                        gemv (weights read once in their stored dtype)
//   Q8/Q4, N ≤ 32                     gemv in groups of 8 rows (reads the small weights N/8 times, still
//                                     less than dequantizing them to bf16 for a GEMM)
//   otherwise, cuBLAS built           cublasGemmEx, fp32 accumulation: bf16 activations → bf16 (fp16 for
//                                     F16 weights) inputs, Q8/Q4 dequantized to bf16 a block of rows at a
//                                     time; fp32 activations (bf16_activations false) → fp32 inputs, weights
//                                     widened to fp32 the same way (the CPU back end's exact sgemm path)
//   otherwise                         WMMA (bf16 activations, 16-bit weights) or the simple kernel
#include "kernels/cuda/cuda_ops.h"

#include <algorithm>
#include <climits>

#ifdef GLMLAB_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

#include "kernels/cuda/cuda_check.h"
#include "ops/device.h"
#include "util/error.h"
#include "util/units.h"

namespace glmlab::cuda {
namespace {

constexpr int64_t kGemvQuantMaxRows = 32;
constexpr size_t kCublasWorkspace = 32ull << 20;
constexpr size_t kDequantTileBytes = 64ull << 20;  // a block of widened weight rows for cuBLAS


const char* path_name(MatmulPath p) {
  switch (p) {
    case MatmulPath::Auto: return "auto";
    case MatmulPath::Gemv: return "gemv";
    case MatmulPath::Simple: return "simple";
    case MatmulPath::Wmma: return "wmma";
    case MatmulPath::Cublas: return "cublas";
  }
  return "?";
}

#ifdef GLMLAB_HAVE_CUBLAS
void check_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) fail("cuBLAS {} failed: {}", what, cublasGetStatusString(st));
}
#endif

// The kernels' view of one attention call (ops.h's attention / attention_backward arguments).
k::AttnArgs attn_args(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                      const float* out, const float* lse) {
  k::AttnArgs a;
  a.q = q;
  a.q_stride = q_stride;
  a.k = kv.k;
  a.v = kv.v;
  a.key_valid = kv.key_valid;
  a.segment = kv.segment;
  a.S = kv.S;
  a.B = B;
  a.T = T;
  a.P = P;
  a.H = H;
  a.G = G;
  a.D = D;
  a.out = const_cast<float*>(out);  // the forward writes them, the backward reads them
  a.lse = const_cast<float*>(lse);
  return a;
}

}  // namespace

k::WView view_of(const Matrix& W) {
  k::WView v;
  switch (W.dtype) {
    case DType::F32: v.type = k::WType::F32; break;
    case DType::F16: v.type = k::WType::F16; break;
    case DType::BF16: v.type = k::WType::BF16; break;
    case DType::Q8: v.type = k::WType::Q8; break;
    case DType::Q4: v.type = k::WType::Q4; break;
    default:
      fail("cuda: a [{}, {}] matrix of dtype {} cannot be read by the CUDA kernels (expected fp32, fp16, bf16, int8 "
           "or int4)",
           W.rows, W.cols, dtype_name(W.dtype));
  }
  if (W.layout != MatrixLayout::RowMajor)
    fail("cuda: a [{}, {}] {} matrix repacked for the CPU's kernels (the CUDA back end reads row-major weights)",
         W.rows, W.cols, dtype_name(W.dtype));
  if (W.quantized() && (!W.scales || W.group_size <= 0))
    fail("cuda: a [{}, {}] {} matrix without scales or with group size {} (expected fp16 scales and a positive "
         "group size)",
         W.rows, W.cols, dtype_name(W.dtype), W.group_size);
  v.rows = W.rows;
  v.cols = W.cols;
  v.data = W.data;
  v.scales = W.scales;
  v.group_size = W.group_size;
  v.groups = W.groups();
  v.row_bytes = W.row_bytes();
  return v;
}

bool is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  GLMLAB_CUDA_CHECK(cudaStreamIsCapturing(stream, &st));
  return st != cudaStreamCaptureStatusNone;
}

void abort_capture(cudaStream_t stream) {
  cudaGraph_t g = nullptr;
  cudaStreamEndCapture(stream, &g);  // an invalidated capture reports an error here: expected
  if (g) cudaGraphDestroy(g);
  cudaGetLastError();  // clears the capture's error so that later calls do not report it
}

CudaOps::CudaOps(cudaStream_t stream, bool bf16_activations) : stream_(stream), bf16_activations_(bf16_activations) {
  int dev = 0;
  GLMLAB_CUDA_CHECK(cudaGetDevice(&dev));
  GLMLAB_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, dev));
#ifdef GLMLAB_HAVE_CUBLAS
  cublasHandle_t h = nullptr;
  const cublasStatus_t st = cublasCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublas_status_ = fmt::format("cuBLAS not used: cublasCreate failed ({}); own WMMA GEMM", cublasGetStatusString(st));
    return;
  }
  cublas_ = h;
  check_cublas(cublasSetStream(h, stream_), "cublasSetStream");
  // A workspace of our own, so that cuBLAS allocates nothing while a graph is being captured.
  GLMLAB_CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspace));
  check_cublas(cublasSetWorkspace(h, cublas_workspace_, kCublasWorkspace), "cublasSetWorkspace");
  int version = 0;
  check_cublas(cublasGetVersion(h, &version), "cublasGetVersion");
  cublas_status_ = fmt::format("cuBLAS {}", version);
#else
  cublas_status_ = "this build has no cuBLAS (CMake found no cublas_v2.h): own WMMA GEMM";
#endif
}

CudaOps::~CudaOps() {
#ifdef GLMLAB_HAVE_CUBLAS
  if (cublas_) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
#endif
  if (cublas_workspace_) cudaFree(cublas_workspace_);
  if (scratch_) cudaFree(scratch_);
  for (void* p : retired_) cudaFree(p);
}

void* CudaOps::scratch(size_t bytes, const char* what) {
  if (bytes <= scratch_bytes_) return scratch_;
  if (is_capturing(stream_)) {
    abort_capture(stream_);
    fail("cuda: {} needs {:.2f} MiB of scratch but {:.2f} MiB are held, during a graph capture (the memory of a "
         "captured graph is fixed: run the step once eagerly before capturing it); the capture was discarded",
         what, mib(bytes), mib(scratch_bytes_));
  }
  const size_t n = device_aligned(std::max({bytes, 2 * scratch_bytes_, size_t(1) << 20}));
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    fail("cuda: could not allocate {:.2f} MiB of scratch for {} ({}); {:.2f} MiB free", mib(n), what,
         cudaGetErrorString(e), mib(free));
  }
  if (scratch_) retired_.push_back(scratch_);  // graphs captured earlier may still point into it
  scratch_ = p;
  scratch_bytes_ = n;
  return p;
}

void CudaOps::embedding(const Matrix& table, const int32_t* ids, int64_t N, float* out) {
  k::embedding(view_of(table), ids, N, out, stream_);
}

void CudaOps::rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms) {
  k::rmsnorm(x, w, N, C, eps, y, inv_rms, stream_);
}

void CudaOps::matmul(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) {
  matmul_with(MatmulPath::Auto, x, N, W, bias, y);
}

void CudaOps::matmul_with(MatmulPath path, const float* x, int64_t N, const Matrix& W, const float* bias, float* y) {
  if (N <= 0 || W.rows == 0) return;
  const k::WView v = view_of(W);
  auto refuse = [&](const char* why) {
    fail("cuda matmul: the {} path cannot take x [{}, {}] · {} [{}, {}]ᵀ: {}", path_name(path), N, W.cols,
         dtype_name(W.dtype), W.rows, W.cols, why);
  };
  switch (path) {
    case MatmulPath::Auto:
      if (N <= k::kGemvMaxRows && k::gemv_supported(v, x, N)) {
        k::gemv(x, N, v, bias, y, stream_);
      } else if (W.quantized() && N <= kGemvQuantMaxRows && k::gemv_supported(v, x, k::kGemvMaxRows)) {
        for (int64_t n0 = 0; n0 < N; n0 += k::kGemvMaxRows) {  // 8 rows at a time; x rows stay 16-byte aligned
          const int64_t n = std::min(k::kGemvMaxRows, N - n0);
          k::gemv(x + n0 * W.cols, n, v, bias, y + n0 * W.rows, stream_);
        }
      } else if (cublas_) {
        gemm_cublas(x, N, W, bias, y);
      } else if (bf16_activations_ && k::wmma_supported(v)) {
        k::matmul_wmma(x, N, v, bias, y, stream_);
      } else {
        k::matmul_simple(x, N, v, bias, y, stream_);
      }
      return;
    case MatmulPath::Gemv:
      if (!k::gemv_supported(v, x, N))
        refuse("gemv needs N ≤ 8, K a multiple of the elements in 16 bytes (4 fp32, 8 fp16/bf16, 16 int8, 32 int4), "
               "16-byte aligned rows and x, and a group size that is a multiple of the same");
      k::gemv(x, N, v, bias, y, stream_);
      return;
    case MatmulPath::Simple: k::matmul_simple(x, N, v, bias, y, stream_); return;
    case MatmulPath::Wmma:
      if (!k::wmma_supported(v)) refuse("the WMMA kernel reads 16-bit and quantized weights only");
      k::matmul_wmma(x, N, v, bias, y, stream_);
      return;
    case MatmulPath::Cublas:
      if (!cublas_) refuse(cublas_status_.c_str());
      gemm_cublas(x, N, W, bias, y);
      return;
  }
}

#ifdef GLMLAB_HAVE_CUBLAS
void CudaOps::gemm_cublas(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) {
  const int64_t M = W.rows, K = W.cols;
  if (M > INT_MAX || N > INT_MAX || K > INT_MAX) fail("cuda matmul: [{}, {}] · [{}, {}]ᵀ is beyond cuBLAS's int sizes", N, K, M, K);
  auto h = static_cast<cublasHandle_t>(cublas_);
  const k::WView v = view_of(W);
  const float one = 1.0f, zero = 0.0f;
  // Row-major y[N, M] = x[N, K] · W[M, K]ᵀ is column-major yᵀ[M, N] = W · xᵀ: A = W (op T, lda K),
  // B = x (op N, ldb K), C = y (ldc M). A block of rows r0.. of W writes columns r0.. of y's rows.
  auto gemm = [&](int64_t rows, const void* A, cudaDataType_t at, const void* B, cudaDataType_t bt, float* C) {
    check_cublas(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(N), int(K), &one, A, at, int(K), B, bt,
                              int(K), &zero, C, CUDA_R_32F, int(M), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  };
  const bool exact = W.dtype == DType::F32 || !bf16_activations_;
  const size_t es = exact ? 4 : 2;
  const bool widen = exact ? W.dtype != DType::F32 : W.quantized();  // weights need a converted copy
  const int64_t tile = std::clamp<int64_t>(int64_t(kDequantTileBytes / (size_t(K) * es)), 1, M);
  const size_t x_bytes = exact ? 0 : device_aligned(size_t(N * K) * 2);
  const size_t w_bytes = widen ? size_t(tile * K) * es : 0;
  uint8_t* s = (x_bytes + w_bytes) ? static_cast<uint8_t*>(scratch(x_bytes + w_bytes, "cuBLAS operands")) : nullptr;
  if (exact) {
    if (!widen) {
      gemm(M, W.data, CUDA_R_32F, x, CUDA_R_32F, y);
    } else {
      float* wt = reinterpret_cast<float*>(s);
      for (int64_t r0 = 0; r0 < M; r0 += tile) {
        const int64_t rows = std::min(tile, M - r0);
        k::dequant_f32(v, r0, rows, wt, stream_);
        gemm(rows, wt, CUDA_R_32F, x, CUDA_R_32F, y + r0);
      }
    }
  } else {
    const bool f16 = W.dtype == DType::F16;
    const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
    uint16_t* xh = reinterpret_cast<uint16_t*>(s);
    k::to_half(x, N * K, !f16, xh, stream_);
    if (!widen) {
      gemm(M, W.data, t, xh, t, y);
    } else {
      uint16_t* wt = reinterpret_cast<uint16_t*>(s + x_bytes);
      for (int64_t r0 = 0; r0 < M; r0 += tile) {
        const int64_t rows = std::min(tile, M - r0);
        k::dequant_bf16(v, r0, rows, wt, stream_);
        gemm(rows, wt, CUDA_R_16BF, xh, CUDA_R_16BF, y + r0);
      }
    }
  }
  if (bias) k::add_bias(y, bias, N, M, stream_);
}
#else
void CudaOps::gemm_cublas(const float*, int64_t, const Matrix&, const float*, float*) {
  fail("cuda matmul: {}", cublas_status_);
}
#endif

void CudaOps::rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) {
  k::rope(x, N, stride, nheads, D, pos, base, stream_);
}

void CudaOps::attention(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                        float* out, float* lse) {
  if (kv.bf16()) fail("cuda attention: the device engine keeps its own fp32 KV cache; a bf16 host cache is not read here");
  attention_with(AttentionPath::Auto, 0, q, q_stride, kv, B, T, P, H, G, D, out, lse);
}

void CudaOps::attention_with(AttentionPath path, int splits, const float* q, int64_t q_stride, const KVView& kv, int B,
                             int T, int P, int H, int G, int D, float* out, float* lse) {
  const k::AttnArgs a = attn_args(q, q_stride, kv, B, T, P, H, G, D, out, lse);
  if (B == 0 || T == 0) return;
  if (path == AttentionPath::Naive || (path == AttentionPath::Auto && !k::flash_supported(a))) {
    k::attention_naive(a, stream_);
    return;
  }
  if (splits <= 0) splits = k::attention_splits(a, sm_count_);
  const size_t n = k::attention_scratch_floats(a, splits);
  float* part = n ? static_cast<float*>(scratch(n * sizeof(float), "split-K attention")) : nullptr;
  k::attention_flash(a, splits, part, stream_);
}

void CudaOps::swiglu(const float* u, int64_t N, int64_t F, float* out) { k::swiglu(u, N, F, out, stream_); }

void CudaOps::add(float* y, const float* x, int64_t count) { k::add(y, x, count, stream_); }

void CudaOps::kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst, int S,
                       const int32_t* start) {
  k::kv_store(src, stride, offset, B, T, W, dst, S, start, stream_);
}

void CudaOps::argmax(const float* x, int64_t rows, int64_t V, int32_t* out) { k::argmax(x, rows, V, out, stream_); }

// ---- backward passes

void CudaOps::matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) {
  matmul_backward_input_with(BackwardPath::Auto, dy, N, W, dx);
}

void CudaOps::matmul_backward_input_with(BackwardPath path, const float* dy, int64_t N, const Matrix& W, float* dx) {
  if (N <= 0 || W.rows == 0 || W.cols == 0) return;
  const k::WView v = view_of(W);
  if (path == BackwardPath::Cublas && !cublas_) fail("cuda matmul input gradient: {}", cublas_status_);
  if (path == BackwardPath::Simple || !cublas_) {
    k::matmul_backward_input_simple(dy, N, v, dx, stream_);
    return;
  }
  backward_input_cublas(dy, N, W, dx);
}

void CudaOps::matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) {
  matmul_backward_weight_with(BackwardPath::Auto, dy, x, N, M, K, dW);
}

void CudaOps::matmul_backward_weight_with(BackwardPath path, const float* dy, const float* x, int64_t N, int64_t M,
                                          int64_t K, float* dW) {
  if (N <= 0 || M == 0 || K == 0) return;
  if (path == BackwardPath::Cublas && !cublas_) fail("cuda matmul weight gradient: {}", cublas_status_);
  if (path == BackwardPath::Simple || !cublas_) {
    k::matmul_backward_weight_simple(dy, x, N, M, K, dW, stream_);
    return;
  }
  backward_weight_cublas(dy, x, N, M, K, dW);
}

#ifdef GLMLAB_HAVE_CUBLAS
void CudaOps::backward_input_cublas(const float* dy, int64_t N, const Matrix& W, float* dx) {
  const int64_t M = W.rows, K = W.cols;
  if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
    fail("cuda matmul input gradient: [{}, {}] · [{}, {}] is beyond cuBLAS's int sizes", N, M, M, K);
  auto h = static_cast<cublasHandle_t>(cublas_);
  const k::WView v = view_of(W);
  const float one = 1.0f;
  // Row-major dx[N, K] += dy[N, M] · W[M, K] is column-major dxᵀ[K, N] += Wᵀ[K, M] · dyᵀ[M, N], where W
  // read column-major (lda K) is Wᵀ and dy read column-major (ldb M) is dyᵀ: no transposes. A block of
  // rows r0.. of W is the columns r0.. of Wᵀ and the rows r0.. of dyᵀ (pointer dy + r0, same ldb).
  auto gemm = [&](int64_t rows, const void* A, cudaDataType_t t, const void* B) {
    check_cublas(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(K), int(N), int(rows), &one, A, t, int(K), B, t,
                              int(M), &one, dx, CUDA_R_32F, int(K), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx (input gradient)");
  };
  // As the CPU back end: fp32 adapter matrices (or fp32 activations) exact, every other dtype with dy and
  // W rounded to bf16 (F16/Q8/Q4 rows converted a block at a time), fp32 accumulation.
  const bool exact = W.dtype == DType::F32 || !bf16_activations_;
  const size_t es = exact ? 4 : 2;
  const bool widen = exact ? W.dtype != DType::F32 : W.dtype != DType::BF16;
  const int64_t tile = std::clamp<int64_t>(int64_t(kDequantTileBytes / (size_t(K) * es)), 1, M);
  const size_t g_bytes = exact ? 0 : device_aligned(size_t(N * M) * 2);
  const size_t w_bytes = widen ? size_t(tile * K) * es : 0;
  uint8_t* s = (g_bytes + w_bytes) ? static_cast<uint8_t*>(scratch(g_bytes + w_bytes, "cuBLAS gradient operands"))
                                   : nullptr;
  if (exact) {
    if (!widen) {
      gemm(M, W.data, CUDA_R_32F, dy);
    } else {
      float* wt = reinterpret_cast<float*>(s);
      for (int64_t r0 = 0; r0 < M; r0 += tile) {
        const int64_t rows = std::min(tile, M - r0);
        k::dequant_f32(v, r0, rows, wt, stream_);
        gemm(rows, wt, CUDA_R_32F, dy + r0);
      }
    }
    return;
  }
  uint16_t* gh = reinterpret_cast<uint16_t*>(s);
  k::to_half(dy, N * M, true, gh, stream_);
  if (!widen) {
    gemm(M, W.data, CUDA_R_16BF, gh);
    return;
  }
  uint16_t* wt = reinterpret_cast<uint16_t*>(s + g_bytes);
  for (int64_t r0 = 0; r0 < M; r0 += tile) {
    const int64_t rows = std::min(tile, M - r0);
    k::dequant_bf16(v, r0, rows, wt, stream_);
    gemm(rows, wt, CUDA_R_16BF, gh + r0);
  }
}

void CudaOps::backward_weight_cublas(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) {
  if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
    fail("cuda matmul weight gradient: [{}, {}]ᵀ · [{}, {}] is beyond cuBLAS's int sizes", N, M, N, K);
  auto h = static_cast<cublasHandle_t>(cublas_);
  const float one = 1.0f;
  // Row-major dW[M, K] += dyᵀ · x is column-major dWᵀ[K, M] += xᵀ[K, N] · dy[N, M]: x read column-major
  // (lda K) is xᵀ, dy read column-major (ldb M) is dyᵀ, transposed by the op. fp32 throughout (the
  // adapter matrices are fp32; cuBLAS's default math mode does not use TF32).
  check_cublas(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, int(K), int(M), int(N), &one, x, CUDA_R_32F, int(K), dy,
                            CUDA_R_32F, int(M), &one, dW, CUDA_R_32F, int(K), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (weight gradient)");
}
#else
void CudaOps::backward_input_cublas(const float*, int64_t, const Matrix&, float*) {
  fail("cuda matmul input gradient: {}", cublas_status_);
}
void CudaOps::backward_weight_cublas(const float*, const float*, int64_t, int64_t, int64_t, float*) {
  fail("cuda matmul weight gradient: {}", cublas_status_);
}
#endif

void CudaOps::rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N,
                               int64_t C, float, float* dx) {
  k::rmsnorm_backward(dy, x, w, inv_rms, N, C, dx, stream_);
}

void CudaOps::rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) {
  k::rope_backward(dx, N, stride, nheads, D, pos, base, stream_);
}

void CudaOps::swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) {
  k::swiglu_backward(dout, u, N, F, du, stream_);
}

void CudaOps::attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G,
                                 int D, const float* out, const float* lse, const float* dout, float* dq,
                                 int64_t dq_stride, float* dk, float* dv) {
  if (kv.bf16()) fail("attention backward: the KV cache must be fp32 (a bf16 cache is for inference)");
  if (B == 0 || T == 0) return;
  if (!lse || !out) fail("cuda attention backward: needs the forward's out and lse (the forward was run without lse)");
  k::AttnBwdArgs a;
  static_cast<k::AttnArgs&>(a) = attn_args(q, q_stride, kv, B, T, P, H, G, D, out, lse);
  a.dout = dout;
  a.dq = dq;
  a.dq_stride = dq_stride;
  a.dk = dk;
  a.dv = dv;
  if (!k::attention_backward_supported(a))
    fail("cuda attention backward: head dim {} (the kernels take up to {})", D, k::kAttnMaxD);
  if (P + T > kv.S) fail("cuda attention backward: {} cached + {} new tokens exceed the cache's {} slots", P, T, kv.S);
  float* delta = static_cast<float*>(scratch(size_t(B) * T * H * sizeof(float), "attention backward"));
  k::attention_backward(a, delta, stream_);
}

double CudaOps::cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) {
  if (N <= 0) return 0.0;
  if (V > INT_MAX || N > INT_MAX) fail("cuda cross-entropy: {} rows of {} logits is beyond the kernel's int sizes", N, V);
  const size_t loss_bytes = device_aligned(size_t(N) * sizeof(double));
  uint8_t* s = static_cast<uint8_t*>(scratch(loss_bytes + sizeof(int), "cross-entropy losses"));
  double* loss = reinterpret_cast<double*>(s);
  int* bad = reinterpret_cast<int*>(s + loss_bytes);
  const int none = INT_MAX;
  GLMLAB_CUDA_CHECK(cudaMemcpyAsync(bad, &none, sizeof(int), cudaMemcpyHostToDevice, stream_));
  k::cross_entropy(z, labels, N, V, scale, loss, bad, stream_);
  std::vector<double> host(static_cast<size_t>(N));
  int bad_row = INT_MAX;
  GLMLAB_CUDA_CHECK(cudaMemcpyAsync(host.data(), loss, size_t(N) * sizeof(double), cudaMemcpyDeviceToHost, stream_));
  GLMLAB_CUDA_CHECK(cudaMemcpyAsync(&bad_row, bad, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (bad_row != INT_MAX) {
    int32_t y = 0;
    GLMLAB_CUDA_CHECK(cudaMemcpy(&y, labels + bad_row, sizeof(y), cudaMemcpyDeviceToHost));
    fail("cross-entropy: label {} of row {} is outside the vocabulary [0, {})", y, bad_row, V);
  }
  double total = 0;
  for (double l : host) total += l;  // in row order, as the reference sums
  return total;
}

void CudaOps::adamw(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s) {
  const k::AdamWStep ks{s.decay, s.w1, s.b2, s.w2, s.step_size, s.bc2_sqrt, s.eps};
  k::adamw(value, grad, m, v, n, ks, stream_);
}

double CudaOps::sum_squares(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  double* s = static_cast<double*>(scratch((k::kSumSquaresBlocks + 1) * sizeof(double), "gradient norm"));
  double* out = s + k::kSumSquaresBlocks;
  GLMLAB_CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(double), stream_));
  k::sum_squares(x, n, s, out, stream_);
  double r = 0;
  GLMLAB_CUDA_CHECK(cudaMemcpyAsync(&r, out, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  GLMLAB_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return r;
}

void CudaOps::scale(float* x, int64_t n, double c) { k::scale(x, n, c, stream_); }

void CudaOps::dropout(const float* x, int64_t n, uint64_t key, float p, float* out) {
  k::dropout(x, n, key, p, out, stream_);
}

void CudaOps::mul_cols(float* x, int64_t N, int64_t M, const float* v) { k::mul_cols(x, N, M, v, stream_); }

void CudaOps::col_dot(const float* a, const float* b, int64_t N, int64_t M, float* out) {
  k::col_dot(a, b, N, M, out, stream_);
}

}  // namespace glmlab::cuda

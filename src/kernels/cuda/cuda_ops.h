// CudaOps: the Ops of the CUDA back end (every pointer a device pointer, every kernel on one stream),
// and the hooks the tests use to run one particular path (the fast kernel or its simple twin).
// Plain C++ (cuda_ops.cpp); the kernels are in the .cu files (kernels.h).
//
// Scratch contract: matmul and its input gradient (16-bit copies of activations, dequantized weight
// blocks for cuBLAS), split-K attention (partial results) and the backward ops' small buffers use a
// scratch buffer that CudaOps grows on demand. It must never grow while a graph is being captured (the
// memory of a captured graph is fixed), so the engine runs each shape once eagerly before capturing it;
// growth during capture ends the capture and throws an Error saying so. A grown-out buffer is kept until
// the ops are destroyed, because graphs recorded earlier still point into it.
#pragma once
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "kernels/cuda/kernels.h"
#include "ops/ops.h"

namespace glmlab::cuda {

enum class MatmulPath { Auto, Gemv, Simple, Wmma, Cublas };
enum class AttentionPath { Auto, Flash, Naive };
enum class BackwardPath { Auto, Simple, Cublas };  // the matrix-product gradients

k::WView view_of(const Matrix& W);  // Error on dtypes the kernels do not read

class CudaOps final : public Ops {
 public:
  CudaOps(cudaStream_t stream, bool bf16_activations);
  ~CudaOps() override;
  std::string_view name() const override { return "cuda"; }
  std::string_view matmul_unit(const Matrix&) const override { return ""; }  // no host peak applies

  void embedding(const Matrix& table, const int32_t* ids, int64_t N, float* out) override;
  void rmsnorm(const float* x, const float* w, int64_t N, int64_t C, float eps, float* y, float* inv_rms) override;
  void matmul(const float* x, int64_t N, const Matrix& W, const float* bias, float* y) override;
  void rope(float* x, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) override;
  void attention(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                 float* out, float* lse) override;
  void swiglu(const float* u, int64_t N, int64_t F, float* out) override;
  void add(float* y, const float* x, int64_t count) override;
  void kv_store(const float* src, int64_t stride, int64_t offset, int B, int T, int64_t W, float* dst, int S,
                const int32_t* start) override;
  void argmax(const float* x, int64_t rows, int64_t V, int32_t* out) override;

  // Backward passes (fine-tuning), gradients accumulate as ops.h says. cross_entropy and sum_squares
  // return a host value, so they wait for the stream.
  void matmul_backward_input(const float* dy, int64_t N, const Matrix& W, float* dx) override;
  void matmul_backward_weight(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW) override;
  void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* inv_rms, int64_t N, int64_t C,
                        float eps, float* dx) override;
  void rope_backward(float* dx, int64_t N, int64_t stride, int nheads, int D, const int32_t* pos, float base) override;
  void swiglu_backward(const float* dout, const float* u, int64_t N, int64_t F, float* du) override;
  void attention_backward(const float* q, int64_t q_stride, const KVView& kv, int B, int T, int P, int H, int G, int D,
                          const float* out, const float* lse, const float* dout, float* dq, int64_t dq_stride,
                          float* dk, float* dv) override;
  double cross_entropy(float* z, const int32_t* labels, int64_t N, int64_t V, float scale) override;
  void adamw(float* value, const float* grad, float* m, float* v, int64_t n, const AdamWStep& s) override;
  double sum_squares(const float* x, int64_t n) override;
  void scale(float* x, int64_t n, double c) override;
  void dropout(const float* x, int64_t n, uint64_t key, float p, float* out) override;
  void mul_cols(float* x, int64_t N, int64_t M, const float* v) override;
  void col_dot(const float* a, const float* b, int64_t N, int64_t M, float* out) override;

  // ---- for tests and the docs: one path explicitly (an Error when that path cannot take the shape).
  void matmul_with(MatmulPath path, const float* x, int64_t N, const Matrix& W, const float* bias, float* y);
  void attention_with(AttentionPath path, int splits, const float* q, int64_t q_stride, const KVView& kv, int B,
                      int T, int P, int H, int G, int D, float* out, float* lse);
  void matmul_backward_input_with(BackwardPath path, const float* dy, int64_t N, const Matrix& W, float* dx);
  void matmul_backward_weight_with(BackwardPath path, const float* dy, const float* x, int64_t N, int64_t M, int64_t K,
                                   float* dW);
  bool has_cublas() const { return cublas_ != nullptr; }
  const std::string& cublas_status() const { return cublas_status_; }  // why cuBLAS is (not) used
  cudaStream_t stream() const { return stream_; }

 private:
  void* scratch(size_t bytes, const char* what);  // see the scratch contract above
  void gemm_cublas(const float* x, int64_t N, const Matrix& W, const float* bias, float* y);
  void backward_input_cublas(const float* dy, int64_t N, const Matrix& W, float* dx);
  void backward_weight_cublas(const float* dy, const float* x, int64_t N, int64_t M, int64_t K, float* dW);

  cudaStream_t stream_;
  bool bf16_activations_;
  int sm_count_ = 1;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  std::vector<void*> retired_;  // outgrown scratch buffers that captured graphs may still use
  void* cublas_ = nullptr;      // cublasHandle_t when cuBLAS is built and initialised
  void* cublas_workspace_ = nullptr;
  std::string cublas_status_;
};

// Stream capture state of `stream`; capturing → the capture is ended and discarded, so the stream is
// usable again before an Error is thrown.
bool is_capturing(cudaStream_t stream);
void abort_capture(cudaStream_t stream);

}  // namespace glmlab::cuda

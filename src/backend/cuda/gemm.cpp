#include "backend/cuda/gemm.hpp"

#include <limits>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {

void check_dims(int64_t m, int64_t k, int64_t n, int64_t ldy) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (m > kMax || k > kMax || n > kMax || ldy > kMax) {
    fail(KILN_ERR_UNSUPPORTED, "matrix product of " + std::to_string(m) + " × " +
                                   std::to_string(k) + " by " + std::to_string(k) + " × " +
                                   std::to_string(n) + " exceeds cuBLAS's 32-bit dimensions");
  }
}

void gemm(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t m, int64_t k,
          int64_t n, int64_t ldy, float beta) {
  const float alpha = 1.0f;
  // cuBLAS is column-major: the row-major y[m × n] is the column-major yᵀ [n × m] = W·xᵀ, where
  // the row-major W [n × k] read column-major is Wᵀ [k × n] (so op T) and x likewise xᵀ [k × m].
  KILN_CUDA_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                               static_cast<int>(m), static_cast<int>(k), &alpha, w, CUDA_R_16BF,
                               static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &beta, y,
                               CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void linear_bf16(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t m,
                 int64_t k, int64_t n, float beta) {
  check_dims(m, k, n, n);
  if (m == 0) return;
  if (m == 1) {
    cudaStream_t stream = nullptr;
    KILN_CUDA_CHECK(cublasGetStream(handle, &stream));
    gemv_bf16(x, w, y, k, n, beta, stream);
    return;
  }
  gemm(handle, x, w, y, m, k, n, n, beta);
}

void linear_bf16_strided(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t m,
                         int64_t k, int64_t n, int64_t ldy, float beta) {
  check_dims(m, k, n, ldy);
  if (m == 0 || n == 0) return;
  gemm(handle, x, w, y, m, k, n, ldy, beta);
}

void linear_f32(cublasHandle_t handle, const float* x, const float* w, float* y, int64_t m,
                int64_t k, int64_t n, int64_t ldy, float beta) {
  check_dims(m, k, n, ldy);
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f;
  // The layout of gemm() above, with float32 operands.
  KILN_CUDA_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                               static_cast<int>(m), static_cast<int>(k), &alpha, w, CUDA_R_32F,
                               static_cast<int>(k), x, CUDA_R_32F, static_cast<int>(k), &beta, y,
                               CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F_PEDANTIC,
                               CUBLAS_GEMM_DEFAULT));
}

void add_f32(cublasHandle_t handle, const float* x, float* y, int64_t count) {
  check_dims(count, 1, 1, 1);
  const float one = 1.0f;
  KILN_CUDA_CHECK(cublasSaxpy(handle, static_cast<int>(count), &one, x, 1, y, 1));
}

}  // namespace kiln::cuda

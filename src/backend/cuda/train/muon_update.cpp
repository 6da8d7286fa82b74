#include "backend/cuda/train/muon_update.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace kiln::cuda::train {

namespace {

// The quintic's coefficients, muon.hpp (nanochat / Keller Jordan's Muon).
constexpr float kA = 3.4445f, kB = -4.7750f, kC = 2.0315f;

size_t aligned_bytes(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

MuonUpdater::MuonUpdater(DeviceAllocator& allocator, int64_t max_numel, int64_t max_short,
                         cudaStream_t stream)
    : stream_(stream),
      blas_(stream),
      max_numel_(std::max<int64_t>(max_numel, 1)),
      max_short_(std::max<int64_t>(max_short, 1)) {
  // Pedantic math: no TF32 tensor cores and no reduced-precision split-K, whatever the
  // environment (NVIDIA_TF32_OVERRIDE) says, so the products are float32 like the CPU's.
  KILN_CUDA_CHECK(cublasSetMathMode(blas_.get(), CUBLAS_PEDANTIC_MATH));
  const size_t mat = aligned_bytes(static_cast<size_t>(max_numel_) * sizeof(float));
  const size_t sq = aligned_bytes(static_cast<size_t>(max_short_ * max_short_) * sizeof(float));
  const size_t ws = aligned_bytes(sum_squares_workspace_doubles(max_numel_) * sizeof(double));
  scratch_ = allocator.allocate(
      3 * mat + 2 * sq + aligned_bytes(sizeof(double)) + ws,
      "Muon scratch (float32, " + std::to_string(max_numel_) + "-element matrices)");
  char* base = static_cast<char*>(scratch_.get());
  u_ = reinterpret_cast<float*>(base);
  x_ = reinterpret_cast<float*>(base + mat);
  y_ = reinterpret_cast<float*>(base + 2 * mat);
  a_ = reinterpret_cast<float*>(base + 3 * mat);
  b_ = reinterpret_cast<float*>(base + 3 * mat + sq);
  sum_squares_ = reinterpret_cast<double*>(base + 3 * mat + 2 * sq);
  sum_squares_ws_ = reinterpret_cast<double*>(base + 3 * mat + 2 * sq + aligned_bytes(8));
}

void MuonUpdater::check_shape(int64_t rows, int64_t cols) const {
  if (rows < 1 || cols < 1 || rows * cols > max_numel_ || std::min(rows, cols) > max_short_ ||
      std::max(rows, cols) > INT32_MAX) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "Muon on the GPU: a " + std::to_string(rows) + " × " + std::to_string(cols) +
             " matrix does not fit the scratch sized for " + std::to_string(max_numel_) +
             " elements with the shorter side at most " + std::to_string(max_short_));
  }
}

void MuonUpdater::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                       float* c, int64_t ldc) {
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: swap the operands.
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  KILN_CUDA_CHECK(cublasSgemm(blas_.get(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                              trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, i(n), i(m), i(k), &alpha, b,
                              i(ldb), a, i(lda), &beta, c, i(ldc)));
}

float* MuonUpdater::orthogonalise(const float* u, int64_t rows, int64_t cols, int steps) {
  const bool tall = rows > cols;
  const int64_t r = tall ? cols : rows;  // X is r × c with r <= c
  const int64_t c = tall ? rows : cols;
  sum_squares(u, rows * cols, sum_squares_ws_, sum_squares_, stream_);
  muon_normalise(u, sum_squares_, x_, rows, cols, tall, stream_);
  float* x = x_;
  float* y = y_;
  for (int it = 0; it < steps; ++it) {
    gemm(false, true, r, r, c, 1.0f, x, c, x, c, 0.0f, a_, r);  // A = X Xᵀ
    // B = b A + c A A: A copied into B, then B = c · A A + b · B.
    KILN_CUDA_CHECK(cudaMemcpyAsync(b_, a_, static_cast<size_t>(r * r) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream_));
    gemm(false, false, r, r, r, kC, a_, r, a_, r, kB, b_, r);
    // X' = a X + B X, into the other buffer (X is read by the product).
    KILN_CUDA_CHECK(cudaMemcpyAsync(y, x, static_cast<size_t>(r * c) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream_));
    gemm(false, false, r, c, r, 1.0f, b_, r, x, c, kA, y, c);
    std::swap(x, y);
  }
  return x;
}

void MuonUpdater::newton_schulz5(const float* g, float* out, int64_t rows, int64_t cols,
                                 int steps) {
  check_shape(rows, cols);
  const float* x = orthogonalise(g, rows, cols, steps);
  if (rows > cols) {
    transpose(x, out, cols, rows, stream_);
  } else {
    KILN_CUDA_CHECK(cudaMemcpyAsync(out, x, static_cast<size_t>(rows * cols) * sizeof(float),
                                    cudaMemcpyDeviceToDevice, stream_));
  }
}

void MuonUpdater::update(float* p, bf16* p_bf16, const float* grad, const float* grad_scale,
                         float* buf, int64_t rows, int64_t cols, const MuonStep& step) {
  check_shape(rows, cols);
  muon_momentum(grad, grad_scale, buf, u_, rows * cols, static_cast<float>(step.momentum),
                step.nesterov, stream_);
  const float* x = orthogonalise(u_, rows, cols, step.ns_steps);
  const double scale =
      std::sqrt(std::max(1.0, static_cast<double>(rows) / static_cast<double>(cols)));
  const auto alpha = static_cast<float>(step.lr * scale);
  const auto decay = static_cast<float>(1.0 - step.lr * step.weight_decay);
  muon_apply(p, p_bf16, x, rows, cols, rows > cols, alpha, decay, step.weight_decay != 0.0,
             stream_);
}

}  // namespace kiln::cuda::train

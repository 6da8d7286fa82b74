// Muon's elementwise steps on the device (train/optimizer/muon.hpp gives the update; the matrix
// products of the Newton-Schulz iteration are cuBLAS, src/backend/cuda/train/muon_update.cpp):
// the momentum / Nesterov lerps, the Frobenius normalisation into the wide orientation, the
// transposition back, and the parameter update that also refreshes the BF16 compute copy.
// Every output element is written by one thread from its own inputs, so the results do not
// depend on the launch shape.
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"

namespace kiln::cuda::train {

namespace {

constexpr int kThreads = 256;
constexpr double kNormEps = 1e-7;  // muon.hpp: X / (||X||_F + 1e-7)

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void muon_momentum_kernel(const float* grad, const float* grad_scale, float* buf,
                                     float* u, int64_t n, float mu, float one_minus_mu,
                                     bool nesterov) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
  const float g = grad[i] * scale;
  // torch's lerp_(end, w) = self + w * (end - self), as the CPU optimizer writes it.
  const float b = buf[i] + one_minus_mu * (g - buf[i]);
  buf[i] = b;
  u[i] = nesterov ? g + mu * (b - g) : b;
}

// x = u · inv, inv = 1 / (sqrt(*sum_squares) + eps) rounded to float32 once (as the CPU does);
// transposed: u [rows × cols] lands as x [cols × rows].
__global__ void muon_normalise_kernel(const float* u, const double* sum_squares, float* x,
                                      int64_t rows, int64_t cols, bool transpose) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const float inv = static_cast<float>(1.0 / (sqrt(*sum_squares) + kNormEps));
  const int64_t r = i / cols, c = i % cols;
  x[transpose ? c * rows + r : i] = u[i] * inv;
}

// dst [cols × rows] = srcᵀ, src [rows × cols].
__global__ void transpose_kernel(const float* src, float* dst, int64_t rows, int64_t cols) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  dst[c * rows + r] = src[i];
}

// p [rows × cols] = (decays ? p · decay : p) - alpha · X[r, c], X read from x [rows × cols], or
// from x [cols × rows] at [c, r] when transposed.
__global__ void muon_apply_kernel(float* p, bf16* p_bf16, const float* x, int64_t rows,
                                  int64_t cols, bool transposed, float alpha, float decay,
                                  bool decays) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  const float o = x[transposed ? c * rows + r : i];
  const float pi = decays ? p[i] * decay : p[i];
  const float out = pi - alpha * o;
  p[i] = out;
  if (p_bf16 != nullptr) p_bf16[i] = __float2bfloat16(out);
}

}  // namespace

void muon_momentum(const float* grad, const float* grad_scale, float* buf, float* u, int64_t n,
                   float momentum, bool nesterov, cudaStream_t stream) {
  if (n <= 0) return;
  const auto one_minus_mu = static_cast<float>(1.0 - static_cast<double>(momentum));
  muon_momentum_kernel<<<blocks_for(n), kThreads, 0, stream>>>(grad, grad_scale, buf, u, n,
                                                               momentum, one_minus_mu, nesterov);
  check_launch("muon_momentum_kernel");
}

void muon_normalise(const float* u, const double* sum_squares, float* x, int64_t rows, int64_t cols,
                    bool transpose, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  muon_normalise_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(u, sum_squares, x, rows,
                                                                          cols, transpose);
  check_launch("muon_normalise_kernel");
}

void transpose(const float* src, float* dst, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  transpose_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(src, dst, rows, cols);
  check_launch("transpose_kernel");
}

void muon_apply(float* p, bf16* p_bf16, const float* x, int64_t rows, int64_t cols, bool transposed,
                float alpha, float decay, bool decays, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  muon_apply_kernel<<<blocks_for(rows * cols), kThreads, 0, stream>>>(
      p, p_bf16, x, rows, cols, transposed, alpha, decay, decays);
  check_launch("muon_apply_kernel");
}

}  // namespace kiln::cuda::train

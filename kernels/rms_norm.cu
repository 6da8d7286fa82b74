// RMSNorm (HF LlamaRMSNorm: mean of squares in float32, normalise, then scale by the weight), with
// an optional fused residual add, writing BF16 (float32 in the F32 precision) for the matrix
// product that follows.
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "overlapped_launch.cuh"
#include "element.cuh"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void rms_norm_kernel(float* x, const float* residual, const float* weight, T* out,
                                int64_t dim, float eps) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  const int64_t row = blockIdx.x;
  float* xr = x + row * dim;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (residual != nullptr) {
      v += residual[row * dim + i];
      xr[i] = v;  // each element is read and written by the same thread: no barrier needed
    }
    sum_sq += v * v;
  }
  const float total = detail::block_sum(sum_sq);
  const float inv_rms = rsqrtf(total / static_cast<float>(dim) + eps);
  T* outr = out + row * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    detail::store_f(outr + i, weight[i] * (xr[i] * inv_rms));
  }
}

template <typename T>
void launch(float* x, const float* residual, const float* weight, T* out, int64_t rows, int64_t dim,
            float eps, cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_kernel<T>
      <<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, residual, weight, out, dim, eps);
  check_launch("rms_norm_kernel");
}

}  // namespace

void rms_norm(float* x, const float* residual, const float* weight, bf16* out, int64_t rows,
              int64_t dim, float eps, cudaStream_t stream) {
  launch(x, residual, weight, out, rows, dim, eps, stream);
}

void rms_norm(float* x, const float* residual, const float* weight, float* out, int64_t rows,
              int64_t dim, float eps, cudaStream_t stream) {
  launch(x, residual, weight, out, rows, dim, eps, stream);
}

}  // namespace kiln::cuda

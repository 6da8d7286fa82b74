// SwiGLU over the fused gate/up projection: out = silu(gate) · up, as BF16 (float32 in the F32
// precision) for down_proj.
#include <algorithm>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "element.cuh"

namespace kiln::cuda {

namespace {

template <typename T>
__global__ void swiglu_kernel(const float* gate_up, T* out, int64_t n, int64_t dim) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / dim, col = i % dim;
    const float g = gate_up[row * 2 * dim + col];
    const float u = gate_up[row * 2 * dim + dim + col];
    detail::store_f(out + i, g / (1.0f + expf(-g)) * u);
  }
}

template <typename T>
void launch(const float* gate_up, T* out, int64_t rows, int64_t dim, cudaStream_t stream) {
  const int64_t n = rows * dim;
  if (n == 0) return;
  const unsigned blocks = std::min<unsigned>(detail::grid_for(n, 256), 8192);
  swiglu_kernel<T><<<blocks, 256, 0, stream>>>(gate_up, out, n, dim);
  check_launch("swiglu_kernel");
}

}  // namespace

void swiglu(const float* gate_up, bf16* out, int64_t rows, int64_t dim, cudaStream_t stream) {
  launch(gate_up, out, rows, dim, stream);
}

void swiglu(const float* gate_up, float* out, int64_t rows, int64_t dim, cudaStream_t stream) {
  launch(gate_up, out, rows, dim, stream);
}

}  // namespace kiln::cuda

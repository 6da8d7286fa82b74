// Adds a per-column bias to every row (the o_proj bias, added onto the residual stream after the
// projection has been accumulated into it).
#include <algorithm>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"

namespace kiln::cuda {

namespace {

__global__ void bias_add_kernel(float* x, const float* bias, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] += bias[i % cols];
  }
}

}  // namespace

void bias_add(float* x, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const unsigned blocks = std::min<unsigned>(detail::grid_for(n, 256), 4096);
  bias_add_kernel<<<blocks, 256, 0, stream>>>(x, bias, n, cols);
  check_launch("bias_add_kernel");
}

}  // namespace kiln::cuda

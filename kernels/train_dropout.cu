// Residual dropout of the training graph: the counter-based mask of src/train/dropout_mask.hpp
// (so the CUDA engine drops exactly the elements the CPU engine does), fused with the residual
// add in the forward pass and with the BF16 copy the next matrix product reads in the backward.
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "train/dropout_mask.hpp"

namespace kiln::cuda::train {

namespace {

constexpr int kThreads = 256;

// One element per thread: the hash is a handful of integer multiplies, cheap next to the loads.
__global__ void dropout_kernel(DropoutSite site, const float* x, const float* residual, float* out,
                               bf16* out_bf16, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool keep =
      kiln::train::dropout_keep(site.key, site.index0 + static_cast<uint64_t>(i), site.threshold);
  // Explicit roundings: no fused multiply-add, so the values are the CPU engine's bit for bit.
  float v = keep ? __fmul_rn(x[i], site.scale) : 0.0f;
  if (residual != nullptr) v = __fadd_rn(residual[i], v);
  out[i] = v;
  if (out_bf16 != nullptr) out_bf16[i] = __float2bfloat16(v);
}

}  // namespace

void dropout_apply(const DropoutSite& site, const float* x, const float* residual, float* out,
                   bf16* out_bf16, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const auto blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  dropout_kernel<<<blocks, kThreads, 0, stream>>>(site, x, residual, out, out_bf16, n);
  check_launch("dropout_kernel");
}

}  // namespace kiln::cuda::train

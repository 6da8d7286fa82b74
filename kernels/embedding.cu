// Token embedding lookup: BF16 table rows gathered into float32 activations.
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"

namespace kiln::cuda {

namespace {

__global__ void embedding_gather_kernel(const int32_t* ids, const bf16* table, float* out,
                                        int64_t dim) {
  const int64_t t = blockIdx.x;
  const bf16* row = table + static_cast<int64_t>(ids[t]) * dim;
  float* dst = out + t * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = __bfloat162float(row[i]);
}

}  // namespace

void embedding_gather(const int32_t* ids, const bf16* table, float* out, int64_t n_tokens,
                      int64_t dim, cudaStream_t stream) {
  if (n_tokens == 0) return;
  embedding_gather_kernel<<<static_cast<unsigned>(n_tokens), 256, 0, stream>>>(ids, table, out,
                                                                               dim);
  check_launch("embedding_gather_kernel");
}

}  // namespace kiln::cuda

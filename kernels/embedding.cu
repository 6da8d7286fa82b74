// Token embedding lookup: BF16 (or, for the F32 precision, float32) table rows gathered into
// float32 activations.
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "element.cuh"

namespace kiln::cuda {

namespace {

template <typename T>
__global__ void embedding_gather_kernel(const int32_t* ids, const T* table, float* out,
                                        int64_t dim) {
  const int64_t t = blockIdx.x;
  const T* row = table + static_cast<int64_t>(ids[t]) * dim;
  float* dst = out + t * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = detail::load_f(row + i);
}

template <typename T>
void launch(const int32_t* ids, const T* table, float* out, int64_t n_tokens, int64_t dim,
            cudaStream_t stream) {
  if (n_tokens == 0) return;
  embedding_gather_kernel<T>
      <<<static_cast<unsigned>(n_tokens), 256, 0, stream>>>(ids, table, out, dim);
  check_launch("embedding_gather_kernel");
}

}  // namespace

void embedding_gather(const int32_t* ids, const bf16* table, float* out, int64_t n_tokens,
                      int64_t dim, cudaStream_t stream) {
  launch(ids, table, out, n_tokens, dim, stream);
}

void embedding_gather(const int32_t* ids, const float* table, float* out, int64_t n_tokens,
                      int64_t dim, cudaStream_t stream) {
  launch(ids, table, out, n_tokens, dim, stream);
}

}  // namespace kiln::cuda

// Matrix-vector product for one token (decode): y[n] = W[n × k] · x[k] (+ beta · y), BF16 W and x,
// float32 accumulation. cuBLAS's general product pads a single row into a tile; here one warp
// reads one weight row with 16-byte loads (eight BF16 per lane, several in flight), which is what
// a memory-bound decode step needs.
#include <cstdint>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"

namespace kiln::cuda {

namespace {

constexpr int kWarps = 8;

template <bool kVector>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_bf16_kernel(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n, float beta) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= n) return;
  const bf16* w_row = w + row * k;
  float acc = 0.0f;
  if constexpr (kVector) {
#pragma unroll 4
    for (int64_t i = lane * 8; i < k; i += 32 * 8) {
      const uint4 wv = *reinterpret_cast<const uint4*>(w_row + i);
      const uint4 xv = *reinterpret_cast<const uint4*>(x + i);
      const auto* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
      const auto* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(w2[j]);
        const float2 b = __bfloat1622float2(x2[j]);
        acc += a.x * b.x + a.y * b.y;
      }
    }
  } else {
    for (int64_t i = lane; i < k; i += 32) {
      acc += __bfloat162float(w_row[i]) * __bfloat162float(x[i]);
    }
  }
  acc = detail::warp_sum(acc);
  if (lane == 0) y[row] = beta == 0.0f ? acc : beta * y[row] + acc;  // y unread when beta = 0
}

}  // namespace

void gemv_bf16(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n, float beta,
               cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = detail::grid_for(n, kWarps);
  const bool vector = k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (vector) {
    gemv_bf16_kernel<true><<<blocks, kWarps * 32, 0, stream>>>(x, w, y, k, n, beta);
  } else {
    gemv_bf16_kernel<false><<<blocks, kWarps * 32, 0, stream>>>(x, w, y, k, n, beta);
  }
  check_launch("gemv_bf16_kernel");
}

}  // namespace kiln::cuda

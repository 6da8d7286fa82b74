// Matrix-vector product for one token (decode): y[n] = W[n × k] · x[k] (+ beta · y), BF16 W and x,
// float32 accumulation. cuBLAS's general product pads a single row into a tile; here one warp
// reads one weight row with 16-byte loads (eight BF16 per lane, several in flight), which is what
// a memory-bound decode step needs.
#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"

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

// The decode step's RMSNorm fused into the product that follows it: each block normalises x itself
// (the same arithmetic, reduction order and BF16 rounding as rms_norm_kernel, 256 threads) into
// shared memory, then each warp takes one output row. kSwiglu: the fused gate/up projection, rows
// i and inter + i, whose SwiGLU is written directly as BF16.
template <bool kSwiglu, bool kVector>
__global__ void __launch_bounds__(kWarps * 32)
    rms_norm_gemv_kernel(const float* x, const float* norm_w, float eps, const bf16* w, float* y,
                         bf16* act, int64_t k, int64_t n_rows, float beta) {
  extern __shared__ uint4 smem_raw[];
  bf16* xs = reinterpret_cast<bf16*>(smem_raw);
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) sum_sq += x[i] * x[i];
  const float inv_rms = rsqrtf(detail::block_sum(sum_sq) / static_cast<float>(k) + eps);
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    xs[i] = __float2bfloat16(norm_w[i] * (x[i] * inv_rms));
  }
  __syncthreads();

  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= n_rows) return;
  auto dot = [&](const bf16* w_row) {
    float acc = 0.0f;
    if constexpr (kVector) {
#pragma unroll 4
      for (int64_t i = lane * 8; i < k; i += 32 * 8) {
        const uint4 wv = *reinterpret_cast<const uint4*>(w_row + i);
        const uint4 xv = *reinterpret_cast<const uint4*>(xs + i);
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
        acc += __bfloat162float(w_row[i]) * __bfloat162float(xs[i]);
      }
    }
    return detail::warp_sum(acc);
  };
  if constexpr (kSwiglu) {
    const float g = dot(w + row * k);
    const float u = dot(w + (n_rows + row) * k);
    if (lane == 0) act[row] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  } else {
    const float acc = dot(w + row * k);
    if (lane == 0) y[row] = beta == 0.0f ? acc : beta * y[row] + acc;
  }
}

template <bool kSwiglu>
void launch_rms_norm_gemv(const float* x, const float* norm_w, float eps, const bf16* w, float* y,
                          bf16* act, int64_t k, int64_t n_rows, float beta, cudaStream_t stream) {
  if (!rms_norm_gemv_supported(k)) {
    fail(KILN_ERR_INTERNAL, "rms_norm_gemv: k = " + std::to_string(k) + " exceeds shared memory");
  }
  if (n_rows == 0) return;
  const unsigned blocks = detail::grid_for(n_rows, kWarps);
  const size_t smem = (static_cast<size_t>(k) * sizeof(bf16) + 15) / 16 * 16;
  if (k % 8 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0) {
    rms_norm_gemv_kernel<kSwiglu, true>
        <<<blocks, kWarps * 32, smem, stream>>>(x, norm_w, eps, w, y, act, k, n_rows, beta);
  } else {
    rms_norm_gemv_kernel<kSwiglu, false>
        <<<blocks, kWarps * 32, smem, stream>>>(x, norm_w, eps, w, y, act, k, n_rows, beta);
  }
  check_launch("rms_norm_gemv_kernel");
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

namespace kiln::cuda {

bool rms_norm_gemv_supported(int64_t k) { return k > 0 && k * 2 <= 48 * 1024; }

void rms_norm_gemv_bf16(const float* x, const float* norm_w, float eps, const bf16* w, float* y,
                        int64_t k, int64_t n, float beta, cudaStream_t stream) {
  launch_rms_norm_gemv<false>(x, norm_w, eps, w, y, nullptr, k, n, beta, stream);
}

void rms_norm_gemv_swiglu_bf16(const float* x, const float* norm_w, float eps,
                               const bf16* w_gate_up, bf16* out, int64_t k, int64_t inter,
                               cudaStream_t stream) {
  launch_rms_norm_gemv<true>(x, norm_w, eps, w_gate_up, nullptr, out, k, inter, 0.0f, stream);
}

}  // namespace kiln::cuda

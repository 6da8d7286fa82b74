// Matrix-vector product for one token (decode): y[n] = W[n × k] · x[k] (+ beta · y), BF16 W and x,
// float32 accumulation. A decode step is a chain of such products whose matrices are small (1.6 to
// 17 MB on a 0.5B model), so each one is bound by memory LATENCY more than bandwidth: what matters
// is how many bytes are in flight per SM. One warp takes one row (two for the SwiGLU form) and
// issues every 16-byte load of a chunk of kLoads·256 elements before using any of them, and
// blocks are sized so that even 896 rows spread over every SM. (ncu on the H100, 0.5B shape: the
// earlier loop with four loads in flight per lane reached 0.9–1.2 TB/s on these matrices;
// tools/gpu/NOTES.md has the figures.)
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "overlapped_launch.cuh"

namespace kiln::cuda {

namespace {

// Fewer warps per block when the rows are few, so that the blocks still cover the GPU's SMs.
int warps_per_block(int64_t rows) { return rows >= 2048 ? 8 : 4; }

__device__ __forceinline__ float dot8(const uint4& wv, const uint4& xv) {
  const auto* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
  const auto* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 a = __bfloat1622float2(w2[j]);
    const float2 b = __bfloat1622float2(x2[j]);
    acc += a.x * b.x + a.y * b.y;
  }
  return acc;
}

// kRows rows' loads for one chunk [base, base + kLoads·256) of k, held in registers.
template <int kRows, int kLoads>
struct RowChunk {
  uint4 w[kRows][kLoads];

  __device__ __forceinline__ void load(const bf16* const (&rows)[kRows], int64_t base, int64_t k,
                                       int lane) {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int64_t idx = base + (static_cast<int64_t>(i) * 32 + lane) * 8;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        w[r][i] = idx < k ? __ldg(reinterpret_cast<const uint4*>(rows[r] + idx)) : uint4{};
      }
    }
  }

  __device__ __forceinline__ void consume(const bf16* x, int64_t base, int64_t k, int lane,
                                          float (&acc)[kRows]) const {
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int64_t idx = base + (static_cast<int64_t>(i) * 32 + lane) * 8;
      if (idx < k) {
        const uint4 xv = *reinterpret_cast<const uint4*>(x + idx);
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r] += dot8(w[r][i], xv);
      }
    }
  }
};

// acc[r] = warp-wide dot(rows[r], x); `first` already holds the chunk at 0 (loaded early so that
// its latency overlaps whatever the caller did meanwhile).
template <int kRows, int kLoads>
__device__ __forceinline__ void dot_rows(const bf16* const (&rows)[kRows], const bf16* x, int64_t k,
                                         int lane, const RowChunk<kRows, kLoads>& first,
                                         float (&acc)[kRows]) {
  constexpr int64_t kChunk = static_cast<int64_t>(kLoads) * 256;
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  first.consume(x, 0, k, lane, acc);
  for (int64_t base = kChunk; base < k; base += kChunk) {
    RowChunk<kRows, kLoads> next;
    next.load(rows, base, k, lane);
    next.consume(x, base, k, lane, acc);
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = detail::warp_sum(acc[r]);
}

// The 16-byte path: k % 8 == 0, W and x 16-byte aligned.
template <int kLoads>
__global__ void __launch_bounds__(256)
    gemv_bf16_kernel(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n, float beta) {
  detail::allow_dependents();
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= n) return;  // no wait needed: this warp touches nothing
  const bf16* const rows[1] = {w + row * k};
  RowChunk<1, kLoads> first;
  first.load(rows, 0, k, lane);  // weights only: before the previous kernel has finished
  detail::wait_for_inputs();
  float acc[1];
  dot_rows(rows, x, k, lane, first, acc);
  if (lane == 0) y[row] = beta == 0.0f ? acc[0] : beta * y[row] + acc[0];  // y unread when beta = 0
}

// Long rows (k >= kSplitMinK): kSplit warps share a row, each taking a contiguous 1/kSplit of it
// in 8-load passes, and the partial sums are added in shared memory in warp order (deterministic).
// More warps per row means more bytes in flight per row without more registers per thread
// (tools/bench/gemv_variants.cu on the H100: 896 × 4864 9.1 → 6.8 µs with 4 warps per row,
// 3584 × 18944 69 → 52 µs with 8).
constexpr int64_t kSplitMinK = 2048;
constexpr int kSplitWarpsPerBlock = 8;
// gemv_swiglu_bf16 takes rows from this length (4 warps per row need a few 16-byte loads each);
// from kSplitMinK on its sums are gemv_bf16's, bit for bit.
constexpr int64_t kSwigluMinK = 256;

//
// kSwiglu: w is the fused gate/up matrix [2·n × k] and block i takes the pair of rows i (gate, the
// first kSplit warps) and n + i (up, the others); its first warp writes act[i] = bf16(silu(g) · u).
// Each row's sum is formed exactly as without kSwiglu and the SwiGLU is swiglu_kernel's
// expression, so the result is bit-identical to gemv_bf16 then swiglu, one kernel and one float32
// round trip of 2·n values fewer (the 7B step: 28 swiglu launches of ~4 µs each).
template <int kSplit, bool kSwiglu = false>
__global__ void __launch_bounds__(kSplitWarpsPerBlock * 32)
    gemv_bf16_split_kernel(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n, float beta,
                           bf16* act) {
  static_assert(!kSwiglu || 2 * kSplit == kSplitWarpsPerBlock, "a block holds one gate/up pair");
  constexpr int kLoads = 8;
  __shared__ float partial[kSplitWarpsPerBlock];
  detail::allow_dependents();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pair = blockIdx.x;  // kSwiglu: the output element
  const int64_t row =
      kSwiglu ? (warp < kSplit ? pair : n + pair)
              : static_cast<int64_t>(blockIdx.x) * (kSplitWarpsPerBlock / kSplit) + warp / kSplit;
  const int64_t rows = kSwiglu ? 2 * n : n;
  const int slice = warp % kSplit;
  const int64_t k16 = k / 8;  // 16-byte units
  const int64_t per = (k16 + kSplit - 1) / kSplit;
  const int64_t lo = slice * per, hi = min(k16, lo + per);
  const uint4* w_row = reinterpret_cast<const uint4*>(w + (row < rows ? row : 0) * k);
  const uint4* x16 = reinterpret_cast<const uint4*>(x);
  float acc = 0.0f;
  bool waited = false;
  for (int64_t base = lo; base < hi; base += 32 * kLoads) {
    uint4 wv[kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int64_t idx = base + i * 32 + lane;
      wv[i] = row < rows && idx < hi ? __ldg(w_row + idx) : uint4{};  // weights only
    }
    if (!waited) {  // x comes from the previous kernel
      detail::wait_for_inputs();
      waited = true;
    }
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int64_t idx = base + i * 32 + lane;
      if (row < rows && idx < hi) acc += dot8(wv[i], x16[idx]);
    }
  }
  if (!waited) detail::wait_for_inputs();
  acc = detail::warp_sum(acc);
  if (lane == 0) partial[warp] = acc;
  __syncthreads();
  if (slice != 0 || lane != 0 || row >= rows) return;
  if constexpr (kSwiglu) {
    if (warp != 0) return;
    float g = 0.0f, u = 0.0f;
#pragma unroll
    for (int j = 0; j < kSplit; ++j) {
      g += partial[j];
      u += partial[kSplit + j];
    }
    act[pair] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  } else {
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kSplit; ++j) sum += partial[warp + j];
    y[row] = beta == 0.0f ? sum : beta * y[row] + sum;  // y unread when beta = 0
  }
}

// Any k and alignment: one element per lane at a time.
__global__ void __launch_bounds__(256)
    gemv_bf16_scalar_kernel(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n,
                            float beta) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= n) return;
  const bf16* w_row = w + row * k;
  float acc = 0.0f;
  for (int64_t i = lane; i < k; i += 32) acc += __bfloat162float(w_row[i]) * __bfloat162float(x[i]);
  acc = detail::warp_sum(acc);
  if (lane == 0) y[row] = beta == 0.0f ? acc : beta * y[row] + acc;
}

// The decode step's RMSNorm fused into the product that follows it: each block normalises x itself
// (the same arithmetic, reduction order and BF16 rounding as rms_norm_kernel) into shared memory —
// after issuing its first chunk of weight loads, so the two latencies overlap — then each warp
// takes one output row. kSwiglu: the fused gate/up projection, rows i and inter + i, whose SwiGLU
// is written directly as BF16. Needs the 16-byte path (k % 8 == 0, W aligned).
// kStagedNorm (k <= kNormPerThread · blockDim.x): each thread's x and norm weights are loaded all
// at once into registers — the norm weights before the wait, as the product's — instead of one
// load per loop step, twice (H100, 0.5B shape: the fused norm + q/k/v product took 9.6 µs under
// ncu for 2 MB of weights, a chain of ~14 dependent loads per thread in front of its first FMA).
// The sums run in the same order either way: the bits do not change.
constexpr int kNormPerThread = 8;
template <bool kSwiglu, int kLoads, bool kStagedNorm>
__global__ void __launch_bounds__(256)
    rms_norm_gemv_kernel(const float* x, const float* norm_w, float eps, const bf16* w, float* y,
                         bf16* act, int64_t k, int64_t n_rows, float beta) {
  detail::allow_dependents();
  extern __shared__ uint4 smem_raw[];
  bf16* xs = reinterpret_cast<bf16*>(smem_raw);
  constexpr int kRows = kSwiglu ? 2 : 1;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const bool active = row < n_rows;
  const bf16* rows[kRows];
  rows[0] = w + (active ? row : 0) * k;
  if constexpr (kSwiglu) rows[1] = w + (active ? n_rows + row : 0) * k;
  RowChunk<kRows, kLoads> first;
  if (active) first.load(rows, 0, k, lane);  // weights only: before the previous kernel is done
  [[maybe_unused]] float nv[kNormPerThread], xv[kNormPerThread];
  if constexpr (kStagedNorm) {
#pragma unroll
    for (int j = 0; j < kNormPerThread; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
      nv[j] = i < k ? norm_w[i] : 0.0f;  // weights too
    }
  }
  detail::wait_for_inputs();

  // Every warp takes part in the norm (block-wide reduction), active or not.
  float sum_sq = 0.0f;
  if constexpr (kStagedNorm) {
#pragma unroll
    for (int j = 0; j < kNormPerThread; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
      xv[j] = i < k ? x[i] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kNormPerThread; ++j) {
      if (threadIdx.x + static_cast<int64_t>(j) * blockDim.x < k) sum_sq += xv[j] * xv[j];
    }
    const float inv_rms = rsqrtf(detail::block_sum(sum_sq) / static_cast<float>(k) + eps);
#pragma unroll
    for (int j = 0; j < kNormPerThread; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
      if (i < k) xs[i] = __float2bfloat16(nv[j] * (xv[j] * inv_rms));
    }
  } else {
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) sum_sq += x[i] * x[i];
    const float inv_rms = rsqrtf(detail::block_sum(sum_sq) / static_cast<float>(k) + eps);
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
      xs[i] = __float2bfloat16(norm_w[i] * (x[i] * inv_rms));
    }
  }
  __syncthreads();
  if (!active) return;

  float acc[kRows];
  dot_rows(rows, xs, k, lane, first, acc);
  if (lane != 0) return;
  if constexpr (kSwiglu) {
    const float g = acc[0], u = acc[1];
    act[row] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
  } else {
    y[row] = beta == 0.0f ? acc[0] : beta * y[row] + acc[0];
  }
}

// Calls f(std::integral_constant<int, kLoads>) with the chunk (in 16-byte loads per lane): 4 for
// rows of up to 1024 elements, else 8 with the rows taken in passes. Larger chunks (a whole
// 4864- or 18944-wide row in flight) were slower: their registers cut the warps per SM (H100, 7B
// shape under ncu: down 101 µs at 24 loads vs 52–69 µs for 8-load passes measured alone,
// tools/gpu/NOTES.md).
template <typename F>
void with_loads(int64_t k, F&& f) {
  if ((k + 255) / 256 <= 4) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 8>{});
  }
}

// KILN_CUDA_NORM_STAGED=0: the fused norm's loop form (A/B of kStagedNorm).
bool staged_norm() {
  const char* env = std::getenv("KILN_CUDA_NORM_STAGED");
  return env == nullptr || std::string(env) != "0";
}

template <bool kSwiglu>
void launch_rms_norm_gemv(const float* x, const float* norm_w, float eps, const bf16* w, float* y,
                          bf16* act, int64_t k, int64_t n_rows, float beta, cudaStream_t stream) {
  if (!rms_norm_gemv_supported(k)) {
    fail(KILN_ERR_INTERNAL, "rms_norm_gemv: k = " + std::to_string(k) + " exceeds shared memory");
  }
  if (n_rows == 0) return;
  if (k % 8 != 0 || reinterpret_cast<uintptr_t>(w) % 16 != 0) {
    fail(KILN_ERR_INTERNAL, "rms_norm_gemv: k = " + std::to_string(k) +
                                " is not a multiple of 8 or the weights are not 16-byte aligned");
  }
  const int warps = warps_per_block(n_rows);
  const unsigned blocks = detail::grid_for(n_rows, warps);
  const size_t smem = (static_cast<size_t>(k) * sizeof(bf16) + 15) / 16 * 16;
  const bool staged = k <= static_cast<int64_t>(kNormPerThread) * warps * 32 && staged_norm();
  with_loads(k, [&](auto loads) {
    constexpr int kL = decltype(loads)::value;
    detail::launch_overlapped(
        staged ? rms_norm_gemv_kernel<kSwiglu, kL, true> : rms_norm_gemv_kernel<kSwiglu, kL, false>,
        blocks, warps * 32, smem, stream, "rms_norm_gemv_kernel", x, norm_w, eps, w, y, act, k,
        n_rows, beta);
  });
}

}  // namespace

void gemv_bf16(const bf16* x, const bf16* w, float* y, int64_t k, int64_t n, float beta,
               cudaStream_t stream) {
  if (n == 0) return;
  const int warps = warps_per_block(n);
  const unsigned blocks = detail::grid_for(n, warps);
  const bool vector = k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (vector && k >= kSplitMinK) {
    constexpr int kRowsPer8 = kSplitWarpsPerBlock;
    if (k >= 4 * kSplitMinK) {  // 8 warps per row: one row per block
      detail::launch_overlapped(gemv_bf16_split_kernel<8>, detail::grid_for(n, kRowsPer8 / 8),
                                kSplitWarpsPerBlock * 32, 0, stream, "gemv_bf16_split_kernel", x, w,
                                y, k, n, beta, static_cast<bf16*>(nullptr));
    } else {  // 4 warps per row: two rows per block
      detail::launch_overlapped(gemv_bf16_split_kernel<4>, detail::grid_for(n, kRowsPer8 / 4),
                                kSplitWarpsPerBlock * 32, 0, stream, "gemv_bf16_split_kernel", x, w,
                                y, k, n, beta, static_cast<bf16*>(nullptr));
    }
  } else if (vector) {
    with_loads(k, [&](auto loads) {
      detail::launch_overlapped(gemv_bf16_kernel<decltype(loads)::value>, blocks, warps * 32, 0,
                                stream, "gemv_bf16_kernel", x, w, y, k, n, beta);
    });
  } else {
    detail::launch_overlapped(gemv_bf16_scalar_kernel, blocks, warps * 32, 0, stream,
                              "gemv_bf16_scalar_kernel", x, w, y, k, n, beta);
  }
}

bool gemv_swiglu_supported(const bf16* x, const bf16* w_gate_up, int64_t k) {
  return k >= kSwigluMinK && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w_gate_up) % 16 == 0;
}

void gemv_swiglu_bf16(const bf16* x, const bf16* w_gate_up, bf16* out, int64_t k, int64_t inter,
                      cudaStream_t stream) {
  if (!gemv_swiglu_supported(x, w_gate_up, k)) {
    fail(KILN_ERR_INTERNAL, "gemv_swiglu_bf16: k = " + std::to_string(k) +
                                " is below the split form's minimum (256), not a multiple of 8, "
                                "or the "
                                "operands are not 16-byte aligned");
  }
  if (inter == 0) return;
  constexpr int kSplit = kSplitWarpsPerBlock / 2;
  detail::launch_overlapped(gemv_bf16_split_kernel<kSplit, true>, static_cast<unsigned>(inter),
                            kSplitWarpsPerBlock * 32, 0, stream, "gemv_bf16_split_kernel<swiglu>",
                            x, w_gate_up, static_cast<float*>(nullptr), k, inter, 0.0f, out);
}

bool rms_norm_gemv_supported(int64_t k) { return k > 0 && k % 8 == 0 && k * 2 <= 48 * 1024; }

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

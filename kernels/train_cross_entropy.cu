// Cross-entropy over the BF16 logits, one block per row: one read pass keeps an online (max, sum
// of exp) per thread, merged across the block; with write_grad a second pass overwrites the logits
// with their gradient. Rows of up to kMaxStagedBytes are kept in shared memory by the first pass
// and the second reads them there: with 4 blocks of 100 KB rows per SM in flight the rows did not
// all stay in L2 (50 MB), so the second pass went back to DRAM. Optional tanh soft-cap (NanoChat).
#include <cmath>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

constexpr int kThreads = 512;
// Two blocks per SM (228 KB of shared memory, 1 KB of it reserved per block): vocab ≤ 57344.
constexpr size_t kMaxStagedBytes = size_t{112} << 10;

struct MaxSum {
  float max, sum;  // sum of exp(z - max)
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

__device__ __forceinline__ float cap(float x, float softcap) {
  return softcap > 0.0f ? softcap * tanhf(x / softcap) : x;
}

// Adds V values to a thread's running (max, sum): one rescale per group, not per element.
template <int V>
__device__ __forceinline__ void accumulate(MaxSum& acc, const float (&z)[V]) {
  float m = z[0];
#pragma unroll
  for (int k = 1; k < V; ++k) m = fmaxf(m, z[k]);
  const float new_max = fmaxf(acc.max, m);
  float s = acc.sum * __expf(acc.max - new_max);
#pragma unroll
  for (int k = 0; k < V; ++k) s += __expf(z[k] - new_max);
  acc = {new_max, s};
}

template <int V>
__device__ __forceinline__ void load_row(const bf16* p, float (&v)[V]) {
  if constexpr (V == 8) {
    detail::load8(p, v);
  } else {
    v[0] = __bfloat162float(*p);
  }
}
template <int V>
__device__ __forceinline__ void store_row(bf16* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    detail::store8(p, v);
  } else {
    *p = __float2bfloat16(v[0]);
  }
}

// kStaged (V == 8 only): the first pass copies the row into dynamic shared memory (vocab BF16
// values), which the second pass reads instead of the logits.
template <int V, bool kStaged>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(bf16* logits, const int32_t* targets, const float* scale, float softcap,
                         float* row_loss, int64_t vocab, bool write_grad) {
  extern __shared__ __align__(16) unsigned char staged_bytes[];
  bf16* staged = reinterpret_cast<bf16*>(staged_bytes);
  const int64_t row = blockIdx.x;
  bf16* x = logits + row * vocab;
  const int32_t target = targets[row];
  // Read before any thread of the block overwrites the row (the reductions below synchronise).
  const float z_target = target >= 0 ? cap(__bfloat162float(x[target]), softcap) : 0.0f;

  MaxSum acc{-INFINITY, 0.0f};
  // Unrolled so that several 16-byte loads per thread are in flight (2 blocks per SM when staged).
#pragma unroll 4
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < vocab; c += kThreads * V) {
    float z[V];
    if constexpr (kStaged) {
      const detail::Bf16x8 word = *reinterpret_cast<const detail::Bf16x8*>(x + c);
      *reinterpret_cast<detail::Bf16x8*>(staged + c) = word;
      detail::unpack8(word, z);
    } else {
      load_row<V>(x + c, z);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) z[k] = cap(z[k], softcap);
    accumulate<V>(acc, z);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.max, offset),
                       __shfl_xor_sync(0xffffffffu, acc.sum, offset)};
    acc = merge(acc, other);
  }
  __shared__ MaxSum warp_acc[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_acc[warp] = acc;
  __syncthreads();
  // Every thread merges the warps' results in the same order: identical, deterministic totals.
  MaxSum total = warp_acc[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) total = merge(total, warp_acc[w]);
  const float lse = total.max + logf(total.sum);
  if (threadIdx.x == 0) row_loss[row] = target >= 0 ? lse - z_target : 0.0f;
  if (!write_grad) return;

  const float s = scale[row];
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < vocab; c += kThreads * V) {
    float g[V];
    load_row<V>(kStaged ? staged + c : x + c, g);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float z = cap(g[k], softcap);
      float d = __expf(z - lse);
      if (c + k == target) d -= 1.0f;
      if (softcap > 0.0f) {
        const float t = z / softcap;
        d *= 1.0f - t * t;  // d(cap · tanh(x / cap)) / dx
      }
      g[k] = s * d;
    }
    store_row<V>(x + c, g);
  }
}

}  // namespace

void cross_entropy(bf16* logits, const int32_t* targets, const float* scale, float softcap,
                   float* row_loss, int64_t rows, int64_t vocab, bool write_grad,
                   cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0) return;
  const auto blocks = static_cast<unsigned>(rows);
  const size_t row_bytes = static_cast<size_t>(vocab) * sizeof(bf16);
  if (vocab % 8 == 0 && detail::aligned16(logits) && write_grad && row_bytes <= kMaxStagedBytes) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(cross_entropy_kernel<8, true>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kMaxStagedBytes)));
    cross_entropy_kernel<8, true><<<blocks, kThreads, row_bytes, stream>>>(
        logits, targets, scale, softcap, row_loss, vocab, write_grad);
  } else if (vocab % 8 == 0 && detail::aligned16(logits)) {
    cross_entropy_kernel<8, false><<<blocks, kThreads, 0, stream>>>(logits, targets, scale, softcap,
                                                                    row_loss, vocab, write_grad);
  } else {
    cross_entropy_kernel<1, false><<<blocks, kThreads, 0, stream>>>(logits, targets, scale, softcap,
                                                                    row_loss, vocab, write_grad);
  }
  check_launch("cross_entropy_kernel");
}

}  // namespace kiln::cuda::train

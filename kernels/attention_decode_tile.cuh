// The pieces both decode attention kernels share (attention_decode.cu: q prepared by qkv_rope;
// attention_decode_fused.cu: q/k/v prepared in the same kernel): how many key chunks a context
// has, the query·key dot product, one warp's online-softmax pass over 32-key tiles of the cache,
// and the merge of the block's warp states. One definition, so that the fused and unfused decode
// steps compute attention with the same arithmetic.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "element.cuh"

namespace kiln::cuda::detail {

// Key chunks of kDecodeSplitKeys (one block each) for a context of n_keys.
__host__ __device__ inline int64_t decode_splits(int64_t n_keys) {
  return (n_keys + kDecodeSplitKeys - 1) / kDecodeSplitKeys;
}

// Dot product of the pre-scaled query (shared) with one BF16 key row, 8 elements per load.
__device__ __forceinline__ float dot_key(const float* q_s, const __nv_bfloat16* key, int D) {
  float s = 0.0f;
  for (int d = 0; d < D; d += 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(key + d);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 k2 = __bfloat1622float2(pairs[i]);
      s += q_s[d + 2 * i] * k2.x + q_s[d + 2 * i + 1] * k2.y;
    }
  }
  return s;
}

// The same with a float32 key row (the F32 precision), 4 elements per load.
__device__ __forceinline__ float dot_key(const float* q_s, const float* key, int D) {
  float s = 0.0f;
  for (int d = 0; d < D; d += 4) {
    const float4 k4 = *reinterpret_cast<const float4*>(key + d);
    s += q_s[d] * k4.x + q_s[d + 1] * k4.y + q_s[d + 2] * k4.z + q_s[d + 3] * k4.w;
  }
  return s;
}

// One warp's online-softmax state: running max m (log2 domain), sum l, and the unnormalised
// output, element d = lane + 32·c in acc[c].
template <int kChunks>
struct WarpSoftmaxState {
  float m = -INFINITY, l = 0.0f, acc[kChunks];
  __device__ WarpSoftmaxState() {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc[c] = 0.0f;
  }
};

// Keys [begin, end) of one KV head, in tiles of 32 (one key per lane for the score), the warps
// of the block interleaved: warp w takes the tiles at begin + 32·w, begin + 32·(w + kWarps), ...
// q_s is pre-scaled by log2(e)/sqrt(D). T: the cache's element type.
template <int kChunks, int kWarps, typename T>
__device__ __forceinline__ void scan_cached_keys(WarpSoftmaxState<kChunks>& st, const float* q_s,
                                                 const T* k_cache, const T* v_cache,
                                                 int64_t kv_stride, int64_t head_offset, int D,
                                                 int begin, int end, int warp, int lane) {
  for (int tile = begin + warp * 32; tile < end; tile += kWarps * 32) {
    const int key = tile + lane;
    const float score =
        key < end ? dot_key(q_s, k_cache + key * kv_stride + head_offset, D) : -INFINITY;
    const float m_new = fmaxf(st.m, warp_max(score));  // finite: lane 0's key is valid
    const float p = exp2f(score - m_new);
    const float correction = exp2f(st.m - m_new);
    st.l = st.l * correction + warp_sum(p);
    st.m = m_new;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) st.acc[c] *= correction;
    const int n_valid = min(32, end - tile);
    for (int j = 0; j < n_valid; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      const T* v_row = v_cache + (tile + j) * kv_stride + head_offset;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const int d = lane + 32 * c;
        if (d < D) st.acc[c] += pj * load_f(v_row + d);
      }
    }
  }
}

// Shared memory the block's warps publish their states to.
template <int kWarps>
struct WarpStates {
  float m[kWarps], l[kWarps];
  float acc[kWarps][kMaxAttentionHeadDim];
};

// Every warp publishes its state; after the barrier every thread holds the block's merged max and
// sum (a warp that saw no key has m = -inf and weight exp2(-inf) = 0) and calls
// emit(d, Σ_w acc_w[d]·weight_w) for its elements d = threadIdx.x, threadIdx.x + blockDim.x, ...
// Returns {m_all, l_all}.
template <int kChunks, int kWarps, typename Emit>
__device__ __forceinline__ float2 merge_warp_states(const WarpSoftmaxState<kChunks>& st,
                                                    WarpStates<kWarps>& sh, int D, int warp,
                                                    int lane, Emit emit) {
  if (lane == 0) {
    sh.m[warp] = st.m;
    sh.l[warp] = st.l;
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int d = lane + 32 * c;
    if (d < D) sh.acc[warp][d] = st.acc[c];
  }
  __syncthreads();
  float m_all = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, sh.m[w]);
  float weight[kWarps], l_all = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = exp2f(sh.m[w] - m_all);
    l_all += sh.l[w] * weight[w];
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) a += sh.acc[w][d] * weight[w];
    emit(d, a, l_all);
  }
  return make_float2(m_all, l_all);
}

}  // namespace kiln::cuda::detail

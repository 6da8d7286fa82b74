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

// scan_cached_keys for a BF16 cache and a head size kD known at compile time (64, 96 or 128: the
// models people run), with the same arithmetic in the same order, but with each tile's loads
// issued all at once: lane i holds key i's K and V rows in registers (kD / 8 16-byte loads each,
// all in flight together), the V rows go through this warp's shared-memory tile to be read by
// dimension, and the next tile's rows are loaded while this one is accumulated. The generic loop
// waits for one load at a time (a key row in 16-byte steps, then V element by element): at batch
// 1 the decode step's attention is a few blocks per layer, each bound by that chain of latencies
// (ncu, 7B shape: 10.8 µs per layer on 28 blocks). The caller issues the first tile's loads
// (load) before anything else it does, so that they overlap its preparation of q.
template <int kD>
struct StagedKeyScan {
  static_assert(kD % 32 == 0 && kD <= kMaxAttentionHeadDim, "head size");
  static constexpr int kLoads = kD / 8;  // 16-byte loads per row
  // One warp's V tile: 32 rows of kD BF16 values, padded by 16 bytes so that the lanes' row
  // stores (lane stride kD·2 + 16 bytes) fall in different banks.
  using VTile = __nv_bfloat16[32][kD + 8];

  uint4 k_row[kLoads], v_row[kLoads];

  // Key `key` of this lane (nothing when key >= end).
  __device__ __forceinline__ void load(const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                                       int64_t kv_stride, int64_t head_offset, int key, int end) {
    if (key >= end) return;
    const auto* kp = reinterpret_cast<const uint4*>(k_cache + key * kv_stride + head_offset);
    const auto* vp = reinterpret_cast<const uint4*>(v_cache + key * kv_stride + head_offset);
#pragma unroll
    for (int i = 0; i < kLoads; ++i) k_row[i] = kp[i];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) v_row[i] = vp[i];
  }

  // dot_key's sum over the lane's K row, in dot_key's order.
  __device__ __forceinline__ float score(const float* q_s) const {
    float s = 0.0f;
#pragma unroll
    for (int r = 0; r < kLoads; ++r) {
      const auto* pairs = reinterpret_cast<const __nv_bfloat162*>(&k_row[r]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 k2 = __bfloat1622float2(pairs[i]);
        s += q_s[8 * r + 2 * i] * k2.x + q_s[8 * r + 2 * i + 1] * k2.y;
      }
    }
    return s;
  }

  // Keys [begin, end), warp w taking the tiles begin + 32·w, begin + 32·(w + kWarps), ... as
  // scan_cached_keys does; load() must have been called for the warp's first tile.
  template <int kWarps>
  __device__ __forceinline__ void scan(WarpSoftmaxState<kD / 32>& st, const float* q_s,
                                       const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                                       int64_t kv_stride, int64_t head_offset, int begin, int end,
                                       int warp, int lane, VTile& tile_v) {
    for (int tile = begin + warp * 32; tile < end; tile += kWarps * 32) {
      const int key = tile + lane;
      const float score_l = key < end ? score(q_s) : -INFINITY;
      const float m_new = fmaxf(st.m, warp_max(score_l));  // finite: lane 0's key is valid
      const float p = exp2f(score_l - m_new);
      const float correction = exp2f(st.m - m_new);
      st.l = st.l * correction + warp_sum(p);
      st.m = m_new;
#pragma unroll
      for (int c = 0; c < kD / 32; ++c) st.acc[c] *= correction;
      if (key < end) {
        auto* row = reinterpret_cast<uint4*>(&tile_v[lane][0]);
#pragma unroll
        for (int i = 0; i < kLoads; ++i) row[i] = v_row[i];
      }
      __syncwarp();
      // The next tile's rows come in while this one is summed.
      load(k_cache, v_cache, kv_stride, head_offset, key + kWarps * 32, end);
      const int n_valid = min(32, end - tile);
      for (int j = 0; j < n_valid; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < kD / 32; ++c) {
          st.acc[c] += pj * __bfloat162float(tile_v[j][lane + 32 * c]);
        }
      }
      __syncwarp();  // the tile is read before the next one overwrites it
    }
  }
};

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

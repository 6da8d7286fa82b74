// The decode step's attention for one new token with the q/k/v preparation fused in (BF16 KV
// cache): two kernels of the unfused path (qkv_rope, then attention_decode and its merge) become
// one, because at batch 1 each kernel costs a few microseconds of fixed latency whatever its work.
//
// Grid (head, key chunk of kDecodeSplitKeys), four warps. Every block prepares its head's q from
// the fused projection's output (bias, Qwen3 q-norm, RoPE — qkv_rope's arithmetic). The block that
// holds the newest key (the last chunk) also prepares that key and value itself (bias, k-norm,
// RoPE, rounded to BF16 exactly as the cache would hold them) and uses them from shared memory:
// blocks never read a cache row another block of this step writes. The first query head of each
// KV group writes the new row into the cache for the steps that follow. Chunks are merged by the
// last block of each head to finish (an atomic counter per head; the merge runs in chunk order, so
// the result does not depend on which block came last). With `out_q`, the block that writes a
// head's output also quantises it for a quantised o_proj (quant_gemv_prequant.cu): a head of a
// multiple of 32 values is whole int8 blocks, so no other block's values are needed, and o_proj
// needs neither a quantisation launch nor v12's per-block quantisation of x.
#include <cstdlib>
#include <string>

#include "attention_decode_tile.cuh"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "overlapped_launch.cuh"
#include "quant_dot_int8.cuh"

namespace kiln::cuda {

namespace {

constexpr int kWarps = 4;

using detail::decode_splits;

// One warp: out[d] = scale · (RoPE(norm(src + bias)))[d] for one head vector of the projection,
// as qkv_rope_kernel computes it; `round` rounds to BF16 first (the value a cache row holds).
// kD: the head size when known at compile time (its loops then unroll), else 0 and D_arg.
template <int kD>
__device__ void prepare_head(const float* src, const float* bias, const float* norm, float eps,
                             const float* inv_freq, int pos, int D_arg, int rot_dim, bool rotate,
                             bool round, float scale, float* work, float* out) {
  const int D = kD > 0 ? kD : D_arg;
  const int lane = threadIdx.x % 32;
  float sum_sq = 0.0f;
  for (int d = lane; d < D; d += 32) {
    float v = src[d];
    if (bias != nullptr) v += bias[d];
    work[d] = v;
    sum_sq += v * v;
  }
  if (norm != nullptr) {
    const float inv_rms = rsqrtf(detail::warp_sum(sum_sq) / static_cast<float>(D) + eps);
    for (int d = lane; d < D; d += 32) work[d] = norm[d] * (work[d] * inv_rms);
  }
  __syncwarp();  // RoPE reads the partner element, written by another lane
  const int half = rot_dim / 2;
  for (int d = lane; d < D; d += 32) {
    float o = work[d];
    if (rotate && d < rot_dim) {
      const int i = d < half ? d : d - half;
      const float angle = static_cast<float>(pos) * inv_freq[i];
      float sin_a, cos_a;
      sincosf(angle, &sin_a, &cos_a);
      o = d < half ? work[d] * cos_a - work[d + half] * sin_a
                   : work[d] * cos_a + work[d - half] * sin_a;
    }
    if (round) o = __bfloat162float(__float2bfloat16(o));
    out[d] = o * scale;
  }
}

// Warp 0 quantises head h's BF16 output (this block's own writes, made visible by the barrier)
// into out_q, laid out as quantize_x_int8 lays out the whole q_dim-long vector: lane i takes
// elements 8i .. 8i + 7 of the head (D / 8 <= 32 lanes), four lanes per 32-element block.
__device__ void quantize_head_output(const bf16* out, int h, int D, int q_dim, uint8_t* out_q) {
  __syncthreads();
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  quant_detail::quantize_bf16_8(out, static_cast<int64_t>(h) * D / 8 + lane, lane < D / 8,
                                quant_detail::int8_x_layout(out_q, q_dim));
}

// The staged scan's V tiles (kD > 0), none for the generic scan.
template <int kD>
struct StagedTiles {
  typename detail::StagedKeyScan<kD>::VTile v[kWarps];
};
template <>
struct StagedTiles<0> {};

// kD: 0 for the generic scan (any head size up to 32·kChunks), or the head size (64, 96, 128) for
// the staged one, whose first tile's K and V rows are requested before the kernel waits for the
// projection it follows (overlapped launch): cache rows before `pos` were written by earlier
// steps, and `position` by the step's first copy, before any kernel of the step started.
template <int kChunks, int kD>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_fused_kernel(const float* qkv, const float* bias, const float* q_norm,
                                  const float* k_norm, float eps, const float* inv_freq,
                                  const int32_t* position, QkvShape s, bf16* k_cache, bf16* v_cache,
                                  bf16* out, float* partials, unsigned* counters, float scale_log2,
                                  uint8_t* out_q) {
  __shared__ float q_s[kMaxAttentionHeadDim], k_new[kMaxAttentionHeadDim],
      v_new[kMaxAttentionHeadDim], work[3][kMaxAttentionHeadDim];
  __shared__ detail::WarpStates<kWarps> states;
  __shared__ StagedTiles<kD> tiles;
  __shared__ bool merges;
  detail::allow_dependents();

  const int h = blockIdx.x, split = blockIdx.y;
  const int D = kD > 0 ? kD : s.head_dim, group = s.n_heads / s.n_kv_heads, kv_head = h / group;
  const int64_t kv_stride = static_cast<int64_t>(s.n_kv_heads) * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int pos = *position, n_keys = pos + 1;
  const int n_splits = static_cast<int>(decode_splits(n_keys));
  if (split >= n_splits) return;  // the grid covers the whole context; these keys are not in use
  const bool newest = split == n_splits - 1;  // this chunk holds key `pos`
  const int key_begin = split * kDecodeSplitKeys;
  const int cached_end = newest ? pos : min(key_begin + kDecodeSplitKeys, n_keys);
  const int64_t head_offset = static_cast<int64_t>(kv_head) * D;
  [[maybe_unused]] detail::StagedKeyScan<kD == 0 ? 32 : kD> staged;
  if constexpr (kD > 0) {
    staged.load(k_cache, v_cache, kv_stride, head_offset, key_begin + warp * 32 + lane, cached_end);
  }
  detail::wait_for_inputs();

  const int q_dim = s.n_heads * D;
  const int64_t k_off = q_dim + static_cast<int64_t>(kv_head) * D;
  const int64_t v_off = q_dim + kv_stride + static_cast<int64_t>(kv_head) * D;
  if (warp == 0) {
    prepare_head<kD>(qkv + static_cast<int64_t>(h) * D,
                     bias ? bias + static_cast<int64_t>(h) * D : nullptr, q_norm, eps, inv_freq,
                     pos, D, s.rot_dim, true, false, scale_log2, work[0], q_s);
  } else if (warp == 1 && newest) {
    prepare_head<kD>(qkv + k_off, bias ? bias + k_off : nullptr, k_norm, eps, inv_freq, pos, D,
                     s.rot_dim, true, true, 1.0f, work[1], k_new);
  } else if (warp == 2 && newest) {
    prepare_head<kD>(qkv + v_off, bias ? bias + v_off : nullptr, nullptr, eps, inv_freq, pos, D,
                     s.rot_dim, false, true, 1.0f, work[2], v_new);
  }
  __syncthreads();
  if (newest && h % group == 0) {  // one writer per KV head: the row the next steps read
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      k_cache[static_cast<int64_t>(pos) * kv_stride + static_cast<int64_t>(kv_head) * D + d] =
          __float2bfloat16(k_new[d]);
      v_cache[static_cast<int64_t>(pos) * kv_stride + static_cast<int64_t>(kv_head) * D + d] =
          __float2bfloat16(v_new[d]);
    }
  }

  detail::WarpSoftmaxState<kChunks> st;
  if constexpr (kD > 0) {
    staged.template scan<kWarps>(st, q_s, k_cache, v_cache, kv_stride, head_offset, key_begin,
                                 cached_end, warp, lane, tiles.v[warp]);
  } else {
    detail::scan_cached_keys<kChunks, kWarps>(st, q_s, k_cache, v_cache, kv_stride, head_offset, D,
                                              key_begin, cached_end, warp, lane);
  }
  if (newest && warp == 0) {  // the new key, from shared memory
    float score = 0.0f;
    for (int d = lane; d < D; d += 32) score += q_s[d] * k_new[d];
    score = detail::warp_sum(score);
    const float m_new = fmaxf(st.m, score);
    const float p = exp2f(score - m_new);
    const float correction = exp2f(st.m - m_new);
    st.l = st.l * correction + p;
    st.m = m_new;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      st.acc[c] = st.acc[c] * correction + (d < D ? p * v_new[d] : 0.0f);
    }
  }

  float* state = partials + (static_cast<int64_t>(h) * n_splits + split) * (D + 2);
  const float2 ml =
      detail::merge_warp_states(st, states, D, warp, lane, [&](int d, float a, float l_all) {
        if (n_splits == 1) {
          out[h * D + d] = __float2bfloat16(a / l_all);
        } else {
          state[d] = a;
        }
      });
  if (n_splits == 1) {
    if (out_q != nullptr) quantize_head_output(out, h, D, q_dim, out_q);
    return;
  }
  if (threadIdx.x == 0) {
    state[D] = ml.x;
    state[D + 1] = ml.y;
  }

  // The last of the head's blocks to get here merges every chunk's state, in chunk order.
  __threadfence();  // this block's state is visible before it is counted
  __syncthreads();
  if (threadIdx.x == 0) merges = atomicAdd(&counters[h], 1u) == static_cast<unsigned>(n_splits - 1);
  __syncthreads();
  if (!merges) return;
  __threadfence();
  const float* base = partials + static_cast<int64_t>(h) * n_splits * (D + 2);
  float m_max = -INFINITY;
  for (int c = 0; c < n_splits; ++c) m_max = fmaxf(m_max, __ldcg(base + c * (D + 2) + D));
  float l_sum = 0.0f;
  for (int c = 0; c < n_splits; ++c) {
    l_sum += __ldcg(base + c * (D + 2) + D + 1) * exp2f(__ldcg(base + c * (D + 2) + D) - m_max);
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
    for (int c = 0; c < n_splits; ++c) {
      a += __ldcg(base + c * (D + 2) + d) * exp2f(__ldcg(base + c * (D + 2) + D) - m_max);
    }
    out[h * D + d] = __float2bfloat16(a / l_sum);
  }
  if (threadIdx.x == 0) counters[h] = 0;  // ready for the next layer and step
  if (out_q != nullptr) quantize_head_output(out, h, D, q_dim, out_q);
}

template <int kChunks, int kD = 0>
void launch(const float* qkv, const float* bias, const float* q_norm, const float* k_norm,
            float eps, const float* inv_freq, const int32_t* position, int64_t max_keys,
            QkvShape shape, bf16* k_cache, bf16* v_cache, bf16* out, float* partials,
            unsigned* counters, void* out_q, cudaStream_t stream) {
  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(shape.head_dim));
  const dim3 grid(static_cast<unsigned>(shape.n_heads),
                  static_cast<unsigned>(decode_splits(max_keys)));
  detail::launch_overlapped(attention_decode_fused_kernel<kChunks, kD>, grid, kWarps * 32, 0,
                            stream, "attention_decode_fused_kernel", qkv, bias, q_norm, k_norm, eps,
                            inv_freq, position, shape, k_cache, v_cache, out, partials, counters,
                            scale_log2, static_cast<uint8_t*>(out_q));
}

bool staged_scan_from_environment() {
  const char* env = std::getenv("KILN_CUDA_ATTN_STAGED");
  return env == nullptr || std::string(env) != "0";
}

}  // namespace

void attention_decode_fused(const float* qkv, const float* bias, const float* q_norm,
                            const float* k_norm, float eps, const float* inv_freq,
                            const int32_t* position, int64_t max_keys, QkvShape shape,
                            bf16* k_cache, bf16* v_cache, bf16* out, float* partials,
                            unsigned* counters, void* out_q, cudaStream_t stream) {
  const int D = shape.head_dim;
  if (D <= 0 || D % 8 != 0 || D > kMaxAttentionHeadDim || shape.n_kv_heads <= 0 ||
      shape.n_heads % shape.n_kv_heads != 0 || shape.rot_dim % 2 != 0 || shape.rot_dim > D) {
    fail(KILN_ERR_UNSUPPORTED, "CUDA fused decode attention: head_dim " + std::to_string(D) +
                                   " (a multiple of 8, at most " +
                                   std::to_string(kMaxAttentionHeadDim) + "), rotary dimension " +
                                   std::to_string(shape.rot_dim) + ", " +
                                   std::to_string(shape.n_heads) + " heads over " +
                                   std::to_string(shape.n_kv_heads) + " KV heads");
  }
  if (out_q != nullptr && (D % 32 != 0 || reinterpret_cast<uintptr_t>(out_q) % 16 != 0 ||
                           reinterpret_cast<uintptr_t>(out) % 16 != 0)) {
    fail(KILN_ERR_INTERNAL,
         "CUDA fused decode attention: a quantised output needs head_dim a "
         "multiple of 32 (got " +
             std::to_string(D) + ") and 16-byte aligned buffers");
  }
  if (max_keys <= 0) return;
  // The staged scan for the common head sizes (KILN_CUDA_ATTN_STAGED=0: the generic one, for A/B).
  if (D == 64 && staged_scan_from_environment()) {
    launch<2, 64>(qkv, bias, q_norm, k_norm, eps, inv_freq, position, max_keys, shape, k_cache,
                  v_cache, out, partials, counters, out_q, stream);
  } else if (D == 96 && staged_scan_from_environment()) {  // Phi-3
    launch<3, 96>(qkv, bias, q_norm, k_norm, eps, inv_freq, position, max_keys, shape, k_cache,
                  v_cache, out, partials, counters, out_q, stream);
  } else if (D == 128 && staged_scan_from_environment()) {
    launch<4, 128>(qkv, bias, q_norm, k_norm, eps, inv_freq, position, max_keys, shape, k_cache,
                   v_cache, out, partials, counters, out_q, stream);
  } else if (D <= 64) {
    launch<2>(qkv, bias, q_norm, k_norm, eps, inv_freq, position, max_keys, shape, k_cache, v_cache,
              out, partials, counters, out_q, stream);
  } else if (D <= 128) {
    launch<4>(qkv, bias, q_norm, k_norm, eps, inv_freq, position, max_keys, shape, k_cache, v_cache,
              out, partials, counters, out_q, stream);
  } else {
    launch<8>(qkv, bias, q_norm, k_norm, eps, inv_freq, position, max_keys, shape, k_cache, v_cache,
              out, partials, counters, out_q, stream);
  }
}

}  // namespace kiln::cuda

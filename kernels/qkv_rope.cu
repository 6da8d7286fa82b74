// The step from the fused q/k/v projection to attention, in one pass per head vector: bias, the
// Qwen3 per-head RMSNorm of q and k, RoPE (HF rotate_half layout, partial rotary), then q out in
// float32 and k/v into the BF16 (F32 precision: float32) KV cache at the token's position.
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "overlapped_launch.cuh"
#include "element.cuh"

namespace kiln::cuda {

namespace {

// One warp per (head vector, token). blockIdx.x: the head among q heads, then k heads, then v
// heads (the order of the fused projection's output row); blockIdx.y: the token.
template <typename T>
__global__ void qkv_rope_kernel(const float* qkv, const float* bias, const float* q_norm,
                                const float* k_norm, float eps, const float* inv_freq,
                                const int32_t* start_pos, QkvShape s, float* q_out, T* k_cache,
                                T* v_cache) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  __shared__ float vec[kMaxAttentionHeadDim];
  const int head = blockIdx.x;
  const int64_t t = blockIdx.y;
  const int lane = threadIdx.x;
  const int D = s.head_dim;
  const int64_t row_width = static_cast<int64_t>(s.n_heads + 2 * s.n_kv_heads) * D;
  const float* src = qkv + t * row_width + static_cast<int64_t>(head) * D;
  const int kind = head < s.n_heads ? 0 : head < s.n_heads + s.n_kv_heads ? 1 : 2;  // q, k, v

  float sum_sq = 0.0f;
  for (int d = lane; d < D; d += 32) {
    float v = src[d];
    if (bias != nullptr) v += bias[static_cast<int64_t>(head) * D + d];
    vec[d] = v;
    sum_sq += v * v;
  }
  const float* norm = kind == 0 ? q_norm : kind == 1 ? k_norm : nullptr;
  if (norm != nullptr) {
    // HF Qwen3RMSNorm over the head: normalise in float32, then scale by the weight.
    const float inv_rms = rsqrtf(detail::warp_sum(sum_sq) / static_cast<float>(D) + eps);
    for (int d = lane; d < D; d += 32) vec[d] = norm[d] * (vec[d] * inv_rms);
  }
  __syncwarp();  // RoPE reads the partner element, written by another lane

  const int32_t pos = *start_pos + static_cast<int32_t>(t);
  const int half = s.rot_dim / 2;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * D;
  for (int d = lane; d < D; d += 32) {
    float out = vec[d];
    if (kind != 2 && d < s.rot_dim) {
      const int i = d < half ? d : d - half;
      // HF: freqs = inv_freq ⊗ position in float32, then cos/sin of that float.
      const float angle = static_cast<float>(pos) * inv_freq[i];
      float sin_a, cos_a;
      sincosf(angle, &sin_a, &cos_a);
      out = d < half ? vec[d] * cos_a - vec[d + half] * sin_a
                     : vec[d] * cos_a + vec[d - half] * sin_a;
    }
    if (kind == 0) {
      q_out[t * s.n_heads * D + static_cast<int64_t>(head) * D + d] = out;
    } else if (kind == 1) {
      detail::store_f(k_cache + static_cast<int64_t>(pos) * kv_dim +
                          static_cast<int64_t>(head - s.n_heads) * D + d,
                      out);
    } else {
      detail::store_f(v_cache + static_cast<int64_t>(pos) * kv_dim +
                          static_cast<int64_t>(head - s.n_heads - s.n_kv_heads) * D + d,
                      out);
    }
  }
}

template <typename T>
void launch(const float* qkv, const float* bias, const float* q_norm, const float* k_norm,
            float eps, const float* inv_freq, const int32_t* start_pos, int64_t n_tokens,
            QkvShape shape, float* q_out, T* k_cache, T* v_cache, cudaStream_t stream) {
  if (shape.head_dim <= 0 || shape.head_dim > kMaxAttentionHeadDim || shape.rot_dim % 2 != 0 ||
      shape.rot_dim > shape.head_dim) {
    fail(KILN_ERR_UNSUPPORTED, "CUDA qkv/RoPE kernel: head_dim " + std::to_string(shape.head_dim) +
                                   " (at most " + std::to_string(kMaxAttentionHeadDim) +
                                   ") with rotary dimension " + std::to_string(shape.rot_dim));
  }
  if (n_tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(shape.n_heads + 2 * shape.n_kv_heads),
                  static_cast<unsigned>(n_tokens));
  qkv_rope_kernel<T><<<grid, 32, 0, stream>>>(qkv, bias, q_norm, k_norm, eps, inv_freq, start_pos,
                                              shape, q_out, k_cache, v_cache);
  check_launch("qkv_rope_kernel");
}

}  // namespace

void qkv_rope(const float* qkv, const float* bias, const float* q_norm, const float* k_norm,
              float eps, const float* inv_freq, const int32_t* start_pos, int64_t n_tokens,
              QkvShape shape, float* q_out, bf16* k_cache, bf16* v_cache, cudaStream_t stream) {
  launch(qkv, bias, q_norm, k_norm, eps, inv_freq, start_pos, n_tokens, shape, q_out, k_cache,
         v_cache, stream);
}

void qkv_rope(const float* qkv, const float* bias, const float* q_norm, const float* k_norm,
              float eps, const float* inv_freq, const int32_t* start_pos, int64_t n_tokens,
              QkvShape shape, float* q_out, float* k_cache, float* v_cache, cudaStream_t stream) {
  launch(qkv, bias, q_norm, k_norm, eps, inv_freq, start_pos, n_tokens, shape, q_out, k_cache,
         v_cache, stream);
}

}  // namespace kiln::cuda

// Attention for one new token (decode) over a long KV cache: the keys are split into chunks of
// kDecodeSplitKeys, one block per (head, chunk), so that even a single query fills the GPU. Each
// block's four warps take 32-key tiles of the chunk (one key per lane for the scores, 16-byte
// loads of the BF16 key rows), keep online-softmax states that the block merges, and either write
// the output (one chunk) or their partial state (running max, sum, unnormalised accumulator) for
// the merge kernel.
#include <string>

#include "attention_decode_tile.cuh"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "element.cuh"
#include "overlapped_launch.cuh"

namespace kiln::cuda {

namespace {

constexpr int kWarps = 4;

using detail::decode_splits;

// T: the element type of the KV cache and of the output (BF16, or float32 for F32).
template <int kChunks, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(const float* q, const T* k_cache, const T* v_cache, T* out,
                            float* partials, const int32_t* position, int n_heads, int group, int D,
                            float scale_log2) {
  __shared__ float q_s[kMaxAttentionHeadDim];
  __shared__ detail::WarpStates<kWarps> states;
  detail::allow_dependents();
  detail::wait_for_inputs();

  const int h = blockIdx.x, split = blockIdx.y;
  const int kv_head = h / group;
  const int64_t kv_stride = static_cast<int64_t>(n_heads / group) * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n_keys = *position + 1;
  const int n_splits = static_cast<int>(decode_splits(n_keys));
  if (split >= n_splits) return;  // the grid covers the whole context; these keys are not in use
  const int key_begin = split * kDecodeSplitKeys;
  const int key_end = min(key_begin + kDecodeSplitKeys, n_keys);

  for (int d = threadIdx.x; d < D; d += blockDim.x) q_s[d] = q[h * D + d] * scale_log2;
  __syncthreads();

  detail::WarpSoftmaxState<kChunks> st;
  detail::scan_cached_keys<kChunks, kWarps>(st, q_s, k_cache, v_cache, kv_stride,
                                            static_cast<int64_t>(kv_head) * D, D, key_begin,
                                            key_end, warp, lane);
  float* state = partials + (static_cast<int64_t>(h) * n_splits + split) * (D + 2);
  const float2 ml =
      detail::merge_warp_states(st, states, D, warp, lane, [&](int d, float a, float l_all) {
        if (n_splits == 1) {
          detail::store_f(out + h * D + d, a / l_all);
        } else {
          state[d] = a;
        }
      });
  if (n_splits > 1 && threadIdx.x == 0) {
    state[D] = ml.x;
    state[D + 1] = ml.y;
  }
}

// Merges the per-chunk states of each head: out = Σ a_s·2^(m_s − M) / Σ l_s·2^(m_s − M).
template <typename T>
__global__ void attention_decode_merge_kernel(const float* partials, T* out, int D,
                                              const int32_t* position) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  const int n_splits = static_cast<int>(decode_splits(*position + 1));
  if (n_splits == 1) return;  // the attention kernel wrote the output itself
  const int h = blockIdx.x;
  const float* base = partials + static_cast<int64_t>(h) * n_splits * (D + 2);
  float m_all = -INFINITY;
  for (int s = 0; s < n_splits; ++s) m_all = fmaxf(m_all, base[s * (D + 2) + D]);
  float l_all = 0.0f;
  for (int s = 0; s < n_splits; ++s) {
    l_all += base[s * (D + 2) + D + 1] * exp2f(base[s * (D + 2) + D] - m_all);
  }
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
      a += base[s * (D + 2) + d] * exp2f(base[s * (D + 2) + D] - m_all);
    }
    detail::store_f(out + h * D + d, a / l_all);
  }
}

template <int kChunks, typename T>
void launch(const float* q, const T* k_cache, const T* v_cache, T* out, const int32_t* position,
            int64_t max_keys, int n_heads, int group, int D, float* partials, cudaStream_t stream) {
  const auto max_splits = static_cast<unsigned>(decode_splits(max_keys));
  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(D));
  const dim3 grid(static_cast<unsigned>(n_heads), max_splits);
  attention_decode_kernel<kChunks, T><<<grid, kWarps * 32, 0, stream>>>(
      q, k_cache, v_cache, out, partials, position, n_heads, group, D, scale_log2);
  check_launch("attention_decode_kernel");
  if (max_splits > 1) {
    attention_decode_merge_kernel<T>
        <<<static_cast<unsigned>(n_heads), 128, 0, stream>>>(partials, out, D, position);
    check_launch("attention_decode_merge_kernel");
  }
}

template <typename T>
void dispatch(const float* q, const T* k_cache, const T* v_cache, T* out, const int32_t* position,
              int64_t max_keys, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim,
              float* partials, cudaStream_t stream) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > kMaxAttentionHeadDim || n_kv_heads <= 0 ||
      n_heads % n_kv_heads != 0) {
    fail(KILN_ERR_UNSUPPORTED,
         "CUDA decode attention: head_dim " + std::to_string(head_dim) +
             " (must be a multiple of 8, at most " + std::to_string(kMaxAttentionHeadDim) + "), " +
             std::to_string(n_heads) + " heads over " + std::to_string(n_kv_heads) + " KV heads");
  }
  if (max_keys <= 0) return;
  const int group = n_heads / n_kv_heads;
  if (head_dim <= 64) {
    launch<2>(q, k_cache, v_cache, out, position, max_keys, n_heads, group, head_dim, partials,
              stream);
  } else if (head_dim <= 128) {
    launch<4>(q, k_cache, v_cache, out, position, max_keys, n_heads, group, head_dim, partials,
              stream);
  } else {
    launch<8>(q, k_cache, v_cache, out, position, max_keys, n_heads, group, head_dim, partials,
              stream);
  }
}

}  // namespace

int64_t decode_partials_floats(int32_t n_heads, int32_t head_dim, int64_t max_keys) {
  return static_cast<int64_t>(n_heads) * decode_splits(max_keys) * (head_dim + 2);
}

void attention_decode(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                      const int32_t* position, int64_t max_keys, int32_t n_heads,
                      int32_t n_kv_heads, int32_t head_dim, float* partials, cudaStream_t stream) {
  dispatch(q, k_cache, v_cache, out, position, max_keys, n_heads, n_kv_heads, head_dim, partials,
           stream);
}

void attention_decode_f32(const float* q, const float* k_cache, const float* v_cache, float* out,
                          const int32_t* position, int64_t max_keys, int32_t n_heads,
                          int32_t n_kv_heads, int32_t head_dim, float* partials,
                          cudaStream_t stream) {
  dispatch(q, k_cache, v_cache, out, position, max_keys, n_heads, n_kv_heads, head_dim, partials,
           stream);
}

}  // namespace kiln::cuda

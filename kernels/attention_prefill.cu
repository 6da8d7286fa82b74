// Causal grouped-query attention for a batch of queries (prefill) on CUDA cores in float32 — the
// fallback of attention_prefill (which also dispatches here) where the tensor-core kernel
// (attention_prefill_mma.cu) does not apply, and the F32 checking precision's kernel (float32
// cache and output: attention_prefill_f32) — flash-attention style: each
// block takes 16 consecutive query rows of one head, streams the keys in tiles of 32 through shared
// memory and keeps an online softmax (running max, running sum, rescaled accumulator) per row, so
// no tokens × keys matrix exists anywhere. Scores are in log2 units (q pre-scaled by
// log2(e)/sqrt(head_dim)) so the exponentials are exp2f.
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"
#include "element.cuh"

namespace kiln::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kKeysPerTile = 32;  // one key per lane when scoring

size_t shared_bytes(int head_dim) {
  // q rows, K tile (rows padded by one float so lanes reading different keys hit different
  // banks), V tile.
  return sizeof(float) * (static_cast<size_t>(kRowsPerBlock) * head_dim +
                          static_cast<size_t>(kKeysPerTile) * (head_dim + 1) +
                          static_cast<size_t>(kKeysPerTile) * head_dim);
}

// kChunks: head_dim / 32 rounded up; each lane owns output dims lane + 32·c. T: the cache and
// output element (bf16, or float for the F32 precision).
template <int kChunks, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    attention_prefill_kernel(const float* q, const T* k_cache, const T* v_cache, T* out,
                             int n_tokens, int start_pos, int n_heads, int group, int D,
                             float scale_log2) {
  extern __shared__ float smem[];
  float* q_s = smem;
  float* k_s = q_s + kRowsPerBlock * D;
  float* v_s = k_s + kKeysPerTile * (D + 1);

  const int h = blockIdx.y;
  const int kv_head = h / group;
  const int64_t kv_stride = static_cast<int64_t>(n_heads / group) * D;
  const int64_t q_stride = static_cast<int64_t>(n_heads) * D;
  const int t0 = blockIdx.x * kRowsPerBlock;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int idx = threadIdx.x; idx < kRowsPerBlock * D; idx += blockDim.x) {
    const int t = t0 + idx / D;
    q_s[idx] = t < n_tokens ? q[t * q_stride + h * D + idx % D] * scale_log2 : 0.0f;
  }

  // Row r of this warp is token t0 + warp·kRowsPerWarp + r; it sees keys 0 .. start_pos + t.
  int last_key[kRowsPerWarp];
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kChunks];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int t = t0 + warp * kRowsPerWarp + r;
    last_key[r] = t < n_tokens ? start_pos + t : -1;
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc[r][c] = 0.0f;
  }
  int warp_last_key = -1;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) warp_last_key = max(warp_last_key, last_key[r]);
  const int n_keys = start_pos + min(t0 + kRowsPerBlock, n_tokens);

  for (int tile = 0; tile < n_keys; tile += kKeysPerTile) {
    __syncthreads();  // the previous tile is no longer read (and q_s is written, first time)
    for (int idx = threadIdx.x; idx < kKeysPerTile * D; idx += blockDim.x) {
      const int j = idx / D, d = idx % D;
      const int key = tile + j;
      float kv = 0.0f, vv = 0.0f;
      if (key < n_keys) {
        const int64_t at = key * kv_stride + kv_head * D + d;
        kv = detail::load_f(k_cache + at);
        vv = detail::load_f(v_cache + at);
      }
      k_s[j * (D + 1) + d] = kv;
      v_s[j * D + d] = vv;
    }
    __syncthreads();
    if (tile > warp_last_key) continue;  // causal: every row of this warp ends before the tile

    const int key = tile + lane;
    float s[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) s[r] = 0.0f;
    const float* k_row = k_s + lane * (D + 1);
    for (int d = 0; d < D; ++d) {
      const float kd = k_row[d];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) s[r] += q_s[(warp * kRowsPerWarp + r) * D + d] * kd;
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float score = key <= last_key[r] ? s[r] : -INFINITY;
      const float m_new = fmaxf(m[r], detail::warp_max(score));
      if (m_new == -INFINITY) continue;  // this row sees no key here (a row past n_tokens)
      const float p = exp2f(score - m_new);
      const float correction = exp2f(m[r] - m_new);
      l[r] = l[r] * correction + detail::warp_sum(p);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) acc[r][c] *= correction;
      for (int j = 0; j < kKeysPerTile; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          const int d = lane + 32 * c;
          if (d < D) acc[r][c] += pj * v_s[j * D + d];
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int t = t0 + warp * kRowsPerWarp + r;
    if (t >= n_tokens) continue;
    const float inv_l = 1.0f / l[r];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < D) detail::store_f(out + t * q_stride + h * D + d, acc[r][c] * inv_l);
    }
  }
}

template <int kChunks, typename T>
void launch(const float* q, const T* k_cache, const T* v_cache, T* out, int n_tokens, int start_pos,
            int n_heads, int group, int D, cudaStream_t stream) {
  const size_t smem = shared_bytes(D);
  if (smem > 48 * 1024) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_kernel<kChunks, T>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>((n_tokens + kRowsPerBlock - 1) / kRowsPerBlock),
                  static_cast<unsigned>(n_heads));
  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(D));
  attention_prefill_kernel<kChunks, T><<<grid, kWarps * 32, smem, stream>>>(
      q, k_cache, v_cache, out, n_tokens, start_pos, n_heads, group, D, scale_log2);
  check_launch("attention_prefill_kernel");
}

void check_prefill_shape(int32_t n_heads, int32_t n_kv_heads, int32_t head_dim) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > kMaxAttentionHeadDim || n_kv_heads <= 0 ||
      n_heads % n_kv_heads != 0) {
    fail(KILN_ERR_UNSUPPORTED,
         "CUDA prefill attention: head_dim " + std::to_string(head_dim) +
             " (must be a multiple of 8, at most " + std::to_string(kMaxAttentionHeadDim) + "), " +
             std::to_string(n_heads) + " heads over " + std::to_string(n_kv_heads) + " KV heads");
  }
}

template <typename T>
void run_cuda_cores(const float* q, const T* k_cache, const T* v_cache, T* out, int64_t n_tokens,
                    int64_t start_pos, int32_t n_heads, int32_t n_kv_heads, int32_t head_dim,
                    cudaStream_t stream) {
  check_prefill_shape(n_heads, n_kv_heads, head_dim);
  if (n_tokens == 0) return;
  const int group = n_heads / n_kv_heads;
  const auto n = static_cast<int>(n_tokens);
  const auto start = static_cast<int>(start_pos);
  if (head_dim <= 64) {
    launch<2>(q, k_cache, v_cache, out, n, start, n_heads, group, head_dim, stream);
  } else if (head_dim <= 128) {
    launch<4>(q, k_cache, v_cache, out, n, start, n_heads, group, head_dim, stream);
  } else {
    launch<8>(q, k_cache, v_cache, out, n, start, n_heads, group, head_dim, stream);
  }
}

}  // namespace

// Tensor cores where the shape and the GPU allow (kernels/attention_prefill_mma.cu), these CUDA
// cores otherwise.
void attention_prefill(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                       int64_t n_tokens, int64_t start_pos, int32_t n_heads, int32_t n_kv_heads,
                       int32_t head_dim, cudaStream_t stream) {
  check_prefill_shape(n_heads, n_kv_heads, head_dim);
  if (n_tokens == 0) return;
  if (attention_prefill_mma_supported(q, k_cache, v_cache, out, head_dim)) {
    attention_prefill_mma(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads, n_kv_heads,
                          head_dim, MmaPrecision::kBf16x2, 0, stream);
  } else {
    attention_prefill_cuda_cores(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads, n_kv_heads,
                                 head_dim, stream);
  }
}

void attention_prefill_cuda_cores(const float* q, const bf16* k_cache, const bf16* v_cache,
                                  bf16* out, int64_t n_tokens, int64_t start_pos, int32_t n_heads,
                                  int32_t n_kv_heads, int32_t head_dim, cudaStream_t stream) {
  run_cuda_cores(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads, n_kv_heads, head_dim,
                 stream);
}

void attention_prefill_f32(const float* q, const float* k_cache, const float* v_cache, float* out,
                           int64_t n_tokens, int64_t start_pos, int32_t n_heads, int32_t n_kv_heads,
                           int32_t head_dim, cudaStream_t stream) {
  run_cuda_cores(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads, n_kv_heads, head_dim,
                 stream);
}

}  // namespace kiln::cuda

// The decode step's transformer layers as one persistent kernel (kernels.hpp, MegakernelArgs).
//
// Why: on the 0.5B shape the per-kernel decode step is ~125 small kernels, each paying a fixed
// ~5 µs of launch, ramp-up and drain however few bytes it moves (tools/gpu/NOTES.md, "GEMV
// layouts"): ~40 µs per layer against ~10 µs of weight traffic. Here every block stays resident
// for all layers and the phases of a layer are separated by a grid-wide barrier (~1–2 µs) instead
// of a kernel boundary.
//
// Layout of the work: every phase's rows are dealt to the grid's blocks round-robin, a block's 8
// warps taking 8 / split consecutive rows (split warps per row, each a contiguous 1/split of the
// row, partial sums added in warp order in shared memory — as gemv_bf16_split_kernel). A warp
// issues all 8 of its 16-byte weight loads of a pass before using any (kernels/gemv.cu). With
// split = 1 a row's sum is formed in exactly gemv_bf16_kernel's order. Each block normalises x
// itself into shared memory (rms_norm_gemv_kernel's arithmetic) rather than meeting at another
// barrier. Attention splits each head's keys into chunks of kMegakernelSplitKeys (one block each);
// the chunks' softmax states go to `partials` and every block merges all heads itself, in chunk
// order, at the start of the o product (so no extra barrier and the same bits in every block).
#include <algorithm>

#include "attention_decode_tile.cuh"
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {

constexpr int kWarps = kMegakernelThreads / 32;
constexpr int kLoads = 8;  // 16-byte loads per lane in flight per pass

// What phase 2 keeps in shared memory; it shares the bytes of the phases' BF16 vector.
struct AttentionShared {
  float q[kMaxAttentionHeadDim], k_new[kMaxAttentionHeadDim], v_new[kMaxAttentionHeadDim];
  float src[3][kMaxAttentionHeadDim], work[3][kMaxAttentionHeadDim];
  detail::WarpStates<kWarps> states;
};

size_t dynamic_shared_bytes(int64_t hidden, int64_t intermediate, QkvShape s) {
  const int64_t widest = std::max({hidden, intermediate, int64_t{s.n_heads} * s.head_dim});
  const size_t vector = (static_cast<size_t>(widest) * sizeof(bf16) + 15) / 16 * 16;
  return std::max(vector, sizeof(AttentionShared));
}

// All blocks of the grid meet here (they are co-resident: a cooperative launch). barrier[0]
// counts arrivals and is back at 0 when the barrier opens; barrier[1] is a generation number the
// waiting blocks watch, so the pair needs no reset between barriers, launches or graph replays.
// The fences make every write before the barrier visible to every read after it (the pattern
// cooperative_groups' grid sync uses).
__device__ void grid_barrier(unsigned* barrier) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* generation = barrier + 1;
    const unsigned seen = *generation;
    __threadfence();
    if (atomicAdd(barrier, 1u) == gridDim.x - 1) {
      atomicExch(barrier, 0u);
      __threadfence();
      atomicAdd(barrier + 1, 1u);
    } else {
      while (*generation == seen) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

// acc[r] = this warp's slice [lo, hi) (16-byte units) of dot(rows[r], xs), summed over the warp.
template <int kRows>
__device__ __forceinline__ void slice_dot(const bf16* const (&rows)[kRows], const bf16* xs,
                                          int64_t lo, int64_t hi, int lane, float (&acc)[kRows]) {
  const uint4* x16 = reinterpret_cast<const uint4*>(xs);
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
  for (int64_t base = lo; base < hi; base += 32 * kLoads) {
    uint4 wv[kRows][kLoads];
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int64_t idx = base + i * 32 + lane;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        wv[r][i] = idx < hi ? __ldg(reinterpret_cast<const uint4*>(rows[r]) + idx) : uint4{};
      }
    }
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const int64_t idx = base + i * 32 + lane;
      if (idx < hi) {
        const uint4 xv = x16[idx];
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r] += detail::dot8(wv[r][i], xv);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = detail::warp_sum(acc[r]);
}

// The grid's share of y = W · xs for n_rows rows of k (xs in shared memory): the block takes rows
// in groups of kWarps / split; kRows = 2 pairs row i with row second + i (gate with up). Calls
// epilogue(row, sums) once per row, from one thread.
template <int kRows, typename Epilogue>
__device__ void grid_product(const bf16* w, int64_t n_rows, int64_t k, int64_t second,
                             const bf16* xs, int split, float (*partial)[2], Epilogue epilogue) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows_per_group = kWarps / split;
  const int slice = warp % split;
  const int64_t k16 = k / 8;
  const int64_t per = (k16 + split - 1) / split;
  const int64_t lo = min(k16, slice * per), hi = min(k16, lo + per);
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * rows_per_group; first < n_rows;
       first += static_cast<int64_t>(gridDim.x) * rows_per_group) {
    const int64_t row = first + warp / split;
    float acc[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[r] = 0.0f;
    if (row < n_rows) {
      const bf16* rows[kRows];
      rows[0] = w + row * k;
      if constexpr (kRows == 2) rows[1] = w + (second + row) * k;
      slice_dot(rows, xs, lo, hi, lane, acc);
    }
    if (split == 1) {  // the same for every block: no divergence around the barriers below
      if (lane == 0 && row < n_rows) epilogue(row, acc);
      continue;
    }
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) partial[warp][r] = acc[r];
    }
    __syncthreads();
    if (slice == 0 && lane == 0 && row < n_rows) {
      float sum[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) sum[r] = 0.0f;
      for (int j = 0; j < split; ++j) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) sum[r] += partial[warp + j][r];
      }
      epilogue(row, sum);
    }
    __syncthreads();  // `partial` is rewritten by the next group
  }
}

// Asks L2 to fetch the rows this block's warps will take in a later grid_product with the same
// arguments (each warp its slice of each of its rows, one 128-byte line per lane at a time), so
// that a phase with little work of its own (attention) streams the next phases' weights.
__device__ void prefetch_rows(const bf16* w, int64_t n_rows, int64_t k, int64_t second, int split,
                              int n_row_sets) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows_per_group = kWarps / split;
  const int64_t bytes = k * static_cast<int64_t>(sizeof(bf16));
  const int64_t per = (bytes + split - 1) / split;
  const int64_t lo = min(bytes, (warp % split) * per), hi = min(bytes, lo + per);
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * rows_per_group; first < n_rows;
       first += static_cast<int64_t>(gridDim.x) * rows_per_group) {
    const int64_t row = first + warp / split;
    if (row >= n_rows) continue;
    for (int set = 0; set < n_row_sets; ++set) {
      const char* base = reinterpret_cast<const char*>(w + (set * second + row) * k);
      for (int64_t off = lo + int64_t{lane} * 128; off < hi; off += 32 * 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(base + off));
      }
    }
  }
}

// xs = bf16(norm_w ⊙ x / rms(x)), as rms_norm_gemv_kernel computes it (x written by other blocks
// before the last barrier: read through L2).
__device__ void norm_into_shared(const float* x, const float* norm_w, float eps, int64_t k,
                                 bf16* xs) {
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = __ldcg(x + i);
    sum_sq += v * v;
  }
  const float inv_rms = rsqrtf(detail::block_sum(sum_sq) / static_cast<float>(k) + eps);
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    xs[i] = __float2bfloat16(norm_w[i] * (__ldcg(x + i) * inv_rms));
  }
  __syncthreads();
}

// Phase 2 for one (head, key chunk): q (and, in the chunk holding the new key, k and v) prepared
// as attention_decode_fused_kernel prepares them, the new row written to the cache by the first
// head of its KV group, the chunk's keys scanned, its softmax state written to `state`.
template <int kChunks>
__device__ void attention_chunk(const MegakernelArgs& a, const MegakernelLayer& L, int h, int split,
                                int n_splits, int pos, float scale_log2, AttentionShared& sh,
                                float* state) {
  const QkvShape s = a.shape;
  const int D = s.head_dim, group = s.n_heads / s.n_kv_heads, kv_head = h / group;
  const int64_t kv_stride = static_cast<int64_t>(s.n_kv_heads) * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool newest = split == n_splits - 1;
  const int key_begin = split * kMegakernelSplitKeys;
  const int cached_end = newest ? pos : min(key_begin + kMegakernelSplitKeys, pos + 1);
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * D;
  const int64_t k_off = q_dim + static_cast<int64_t>(kv_head) * D;
  const int64_t v_off = q_dim + kv_stride + static_cast<int64_t>(kv_head) * D;
  // The projection's head vectors (written by other blocks before the barrier: through L2).
  const int64_t src_off[3] = {static_cast<int64_t>(h) * D, k_off, v_off};
  if (warp < 3 && (warp == 0 || newest)) {
    for (int d = lane; d < D; d += 32) sh.src[warp][d] = __ldcg(a.qkv + src_off[warp] + d);
  }
  __syncwarp();
  const float* bias = L.bqkv;
  if (warp == 0) {
    detail::prepare_head(sh.src[0], bias ? bias + src_off[0] : nullptr, L.q_norm, a.eps, a.inv_freq,
                         pos, D, s.rot_dim, true, false, scale_log2, sh.work[0], sh.q);
  } else if (warp == 1 && newest) {
    detail::prepare_head(sh.src[1], bias ? bias + k_off : nullptr, L.k_norm, a.eps, a.inv_freq, pos,
                         D, s.rot_dim, true, true, 1.0f, sh.work[1], sh.k_new);
  } else if (warp == 2 && newest) {
    detail::prepare_head(sh.src[2], bias ? bias + v_off : nullptr, nullptr, a.eps, a.inv_freq, pos,
                         D, s.rot_dim, false, true, 1.0f, sh.work[2], sh.v_new);
  }
  __syncthreads();
  if (newest && h % group == 0) {  // one writer per KV head: the row later steps read
    const int64_t at = static_cast<int64_t>(pos) * kv_stride + static_cast<int64_t>(kv_head) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      L.k_cache[at + d] = __float2bfloat16(sh.k_new[d]);
      L.v_cache[at + d] = __float2bfloat16(sh.v_new[d]);
    }
  }
  detail::WarpSoftmaxState<kChunks> st;
  detail::scan_cached_keys<kChunks, kWarps>(st, sh.q, L.k_cache, L.v_cache, kv_stride,
                                            static_cast<int64_t>(kv_head) * D, D, key_begin,
                                            cached_end, warp, lane);
  if (newest && warp == 0) {  // the new key, from shared memory
    float score = 0.0f;
    for (int d = lane; d < D; d += 32) score += sh.q[d] * sh.k_new[d];
    score = detail::warp_sum(score);
    const float m_new = fmaxf(st.m, score);
    const float p = exp2f(score - m_new);
    const float correction = exp2f(st.m - m_new);
    st.l = st.l * correction + p;
    st.m = m_new;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      st.acc[c] = st.acc[c] * correction + (d < D ? p * sh.v_new[d] : 0.0f);
    }
  }
  const float2 ml = detail::merge_warp_states(st, sh.states, D, warp, lane,
                                              [&](int d, float acc, float) { state[d] = acc; });
  if (threadIdx.x == 0) {
    state[D] = ml.x;
    state[D + 1] = ml.y;
  }
  __syncthreads();  // `sh` is reused by this block's next chunk
}

// attn (shared, BF16 [q_dim]) = every head's chunks merged in chunk order, as
// attention_decode_fused_kernel's last block merges them.
__device__ void merge_attention(const float* partials, QkvShape s, int n_splits, int max_splits,
                                bf16* attn) {
  const int D = s.head_dim;
  const int q_dim = s.n_heads * D;
  for (int e = threadIdx.x; e < q_dim; e += blockDim.x) {
    const int h = e / D, d = e % D;
    const float* base = partials + static_cast<int64_t>(h) * max_splits * (D + 2);
    float m_max = -INFINITY;
    for (int c = 0; c < n_splits; ++c) m_max = fmaxf(m_max, __ldcg(base + c * (D + 2) + D));
    float l_sum = 0.0f, acc = 0.0f;
    for (int c = 0; c < n_splits; ++c) {
      const float weight = exp2f(__ldcg(base + c * (D + 2) + D) - m_max);
      l_sum += __ldcg(base + c * (D + 2) + D + 1) * weight;
      acc += __ldcg(base + c * (D + 2) + d) * weight;
    }
    attn[e] = __float2bfloat16(acc / l_sum);
  }
  __syncthreads();
}

template <int kChunks>
__global__ void __launch_bounds__(kMegakernelThreads, 2)
    decode_megakernel_kernel(const MegakernelArgs a) {
  extern __shared__ uint4 smem_raw[];
  __shared__ float partial[kWarps][2];
  bf16* xs = reinterpret_cast<bf16*>(smem_raw);
  AttentionShared& sh = *reinterpret_cast<AttentionShared*>(smem_raw);
  const QkvShape s = a.shape;
  const int64_t H = a.hidden, I = a.intermediate;
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * s.head_dim;
  const int64_t qkv_dim = q_dim + 2 * static_cast<int64_t>(s.n_kv_heads) * s.head_dim;
  const int pos = *a.position;
  const int n_splits = (pos + kMegakernelSplitKeys) / kMegakernelSplitKeys;  // keys 0 .. pos
  const int max_splits = (a.context_length + kMegakernelSplitKeys - 1) / kMegakernelSplitKeys;
  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(s.head_dim));
  float* x = a.x;

  for (int li = 0; li < a.n_layers; ++li) {
    const MegakernelLayer L = a.layers[li];
    // (1) RMSNorm + q/k/v.
    norm_into_shared(x, L.attn_norm, a.eps, H, xs);
    grid_product<1>(L.wqkv, qkv_dim, H, 0, xs, a.splits.qkv, partial,
                    [&](int64_t row, const float(&acc)[1]) { a.qkv[row] = acc[0]; });
    grid_barrier(a.barrier);
    // (2) attention, one (head, key chunk) per block at a time.
    const int units = s.n_heads * n_splits;
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const int h = u / n_splits, split = u % n_splits;
      float* state = a.partials + (static_cast<int64_t>(h) * max_splits + split) * (s.head_dim + 2);
      attention_chunk<kChunks>(a, L, h, split, n_splits, pos, scale_log2, sh, state);
    }
    if (a.prefetch) {  // most blocks have no attention chunk: stream the o and gate/up rows
      prefetch_rows(L.wo, H, q_dim, 0, a.splits.o, 1);
      prefetch_rows(L.w_gate_up, I, H, I, a.splits.gate_up, 2);
    }
    grid_barrier(a.barrier);
    // (3) merge + o product + residual (+ o bias): x += Wo · attn (+ bo), x row by its one owner.
    merge_attention(a.partials, s, n_splits, max_splits, xs);
    grid_product<1>(L.wo, H, q_dim, 0, xs, a.splits.o, partial,
                    [&](int64_t row, const float(&acc)[1]) {
                      float v = __ldcg(x + row) + acc[0];
                      if (L.bo != nullptr) v += L.bo[row];
                      x[row] = v;
                    });
    grid_barrier(a.barrier);
    // (4) RMSNorm + gate/up + SwiGLU (gate row i and up row I + i in one warp).
    norm_into_shared(x, L.ffn_norm, a.eps, H, xs);
    grid_product<2>(L.w_gate_up, I, H, I, xs, a.splits.gate_up, partial,
                    [&](int64_t row, const float(&acc)[2]) {
                      const float g = acc[0], up = acc[1];
                      a.act[row] = __float2bfloat16(g / (1.0f + expf(-g)) * up);
                    });
    if (a.prefetch) {  // while waiting for the slowest block: the down rows, the next q/k/v rows
      prefetch_rows(L.w_down, H, I, 0, a.splits.down, 1);
      if (li + 1 < a.n_layers) {
        prefetch_rows(a.layers[li + 1].wqkv, qkv_dim, H, 0, a.splits.qkv, 1);
      }
    }
    grid_barrier(a.barrier);
    // (5) down + residual, act staged in shared memory first.
    const uint4* act16 = reinterpret_cast<const uint4*>(a.act);
    for (int64_t i = threadIdx.x; i < I / 8; i += blockDim.x) {
      reinterpret_cast<uint4*>(xs)[i] = __ldcg(act16 + i);
    }
    __syncthreads();
    grid_product<1>(L.w_down, H, I, 0, xs, a.splits.down, partial,
                    [&](int64_t row, const float(&acc)[1]) { x[row] = __ldcg(x + row) + acc[0]; });
    if (li + 1 < a.n_layers) grid_barrier(a.barrier);
  }
}

// Calls f(kernel) with the instance for the head size (register tiles of head_dim / 32 per lane).
template <typename F>
void with_kernel(int head_dim, F&& f) {
  if (head_dim <= 64) {
    f(decode_megakernel_kernel<2>);
  } else if (head_dim <= 128) {
    f(decode_megakernel_kernel<4>);
  } else {
    f(decode_megakernel_kernel<8>);
  }
}

}  // namespace

bool decode_megakernel_supported(int64_t hidden, int64_t intermediate, QkvShape s) {
  const int64_t q_dim = int64_t{s.n_heads} * s.head_dim;
  const int64_t widest = std::max({hidden, intermediate, q_dim});
  return hidden > 0 && intermediate > 0 && hidden % 8 == 0 && intermediate % 8 == 0 &&
         s.head_dim > 0 && s.head_dim % 8 == 0 && s.head_dim <= kMaxAttentionHeadDim &&
         s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 && s.rot_dim % 2 == 0 &&
         s.rot_dim <= s.head_dim && widest <= kMegakernelMaxVector;
}

int64_t megakernel_partials_floats(QkvShape s, int64_t context_length) {
  const int64_t max_splits = (context_length + kMegakernelSplitKeys - 1) / kMegakernelSplitKeys;
  return int64_t{s.n_heads} * max_splits * (s.head_dim + 2);
}

int32_t megakernel_row_split(int64_t n, int64_t k, int32_t blocks) {
  int32_t best = 1;
  int64_t best_cost = -1;
  const int64_t k16 = k / 8;
  for (int32_t split = 1; split <= kMegakernelThreads / 32; split *= 2) {
    const int64_t rows_per_round = int64_t{blocks} * (kMegakernelThreads / 32 / split);
    const int64_t rounds = (n + rows_per_round - 1) / rows_per_round;
    const int64_t slice = (k16 + split - 1) / split;
    const int64_t passes = (slice + 32 * kLoads - 1) / (32 * kLoads);
    const int64_t cost = rounds * passes;
    if (best_cost < 0 || cost < best_cost) {
      best = split;
      best_cost = cost;
    }
  }
  return best;
}

int32_t megakernel_max_blocks(int64_t hidden, int64_t intermediate, QkvShape shape) {
  int device = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  int cooperative = 0, sms = 0;
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (cooperative == 0) return 0;
  const size_t smem = dynamic_shared_bytes(hidden, intermediate, shape);
  int per_sm = 0;
  with_kernel(shape.head_dim, [&](auto kernel) {
    // The most any supported shape needs, not this model's: another model loaded later must not
    // lower the limit under this one's launches.
    const size_t most =
        dynamic_shared_bytes(kMegakernelMaxVector, kMegakernelMaxVector, QkvShape{});
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(most)));
    KILN_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kMegakernelThreads, smem));
  });
  return per_sm * sms;
}

void decode_megakernel(const MegakernelArgs& args, cudaStream_t stream) {
  if (args.blocks <= 0) fail(KILN_ERR_INTERNAL, "decode_megakernel: no resident grid");
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeCooperative;
  attribute.val.cooperative = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(args.blocks));
  config.blockDim = dim3(kMegakernelThreads);
  config.dynamicSmemBytes = dynamic_shared_bytes(args.hidden, args.intermediate, args.shape);
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  with_kernel(args.shape.head_dim, [&](auto kernel) {
    check(cudaLaunchKernelEx(&config, kernel, args), "decode_megakernel_kernel");
  });
  check_launch("decode_megakernel_kernel");
}

}  // namespace kiln::cuda

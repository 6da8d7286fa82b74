// Causal grouped-query attention for prefill on BF16 tensor cores (mma.sync m16n8k16, float32
// accumulation; sm_80 and later), FlashAttention-2 style: no tokens × keys matrix exists.
//
// Rows: for one KV head, the query rows of all heads of its group are flattened token-major,
// row = t · group + (h mod group), so one block's rows share K/V tiles (loaded once per group, not
// once per head) and span few tokens (so the causal key range of a block is tight). Each warp
// owns 16 rows, a block kWarps · 16; the grid is (row tiles, KV heads), the last row tiles (the
// most keys) first.
//
// Keys stream through shared memory in tiles of kKeys, double-buffered with cp.async: tile j + 1
// is in flight while tile j is scored (S = Q Kᵀ) and applied (O += P V). q arrives as float32 and
// is scaled by log2(e)/sqrt(head_dim) before it is rounded to BF16, so scores are in log2
// units (exp2f) and the online softmax state (running max m, running sum l) is float32 per row.
// P is rounded to BF16 as the second product's input (as in FlashAttention-2). Columns past
// head_dim up to the kernel's kD are zero in shared memory and skipped where whole.
//
// kSplit (MmaPrecision::kBf16x2, what attention_prefill uses): q and P are each carried as two
// BF16 terms, hi = bf16(x) and lo = bf16(x − hi), and both products run on both terms (twice the
// tensor-core work). K and V are BF16 already (the cache), so the products are then exact to
// float32 accumulation and the result is as accurate as the float32 CUDA-core kernel's: one BF16
// rounding of q alone moves a score of a few units by ~5e-3 and doubles the output's error,
// which the HF parity gates (1e-2 relative L2 end to end) have no room for.
#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "core/error.hpp"
#include "mma_tiles.cuh"

namespace kiln::cuda {

namespace {

using mma::c_to_a;
using mma::cp_async_commit;
using mma::cp_async_wait_all;
using mma::load_a;
using mma::load_b2;
using mma::load_b_trans2;
using mma::load_tile;
using mma::mma_pair;
using mma::tile_bytes;

constexpr int kKeys = 64;  // keys per shared-memory tile

template <int kD, int kWarps, bool kSplit>
constexpr size_t mma_shared_bytes() {
  // Q tile (hi, and lo when split), then two stages of (K tile, V tile).
  return (kSplit ? 2 : 1) * tile_bytes<kD>(16 * kWarps) + 4 * tile_bytes<kD>(kKeys);
}

// x as hi + lo, both BF16 pairs (lo = the rounding error of hi, itself rounded).
__device__ __forceinline__ void split_pack(float x, float y, uint32_t& hi, uint32_t& lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  hi = mma::pack_raw(h.x, h.y);
  lo = mma::pack_bf16(x - __bfloat162float(h.x), y - __bfloat162float(h.y));
}

// c_to_a (mma_tiles.cuh) for both terms of the split.
__device__ __forceinline__ void c_to_a_split(uint32_t (&hi)[4], uint32_t (&lo)[4],
                                             const float (&t0)[4], const float (&t1)[4]) {
  split_pack(t0[0], t0[1], hi[0], lo[0]);
  split_pack(t0[2], t0[3], hi[1], lo[1]);
  split_pack(t1[0], t1[1], hi[2], lo[2]);
  split_pack(t1[2], t1[3], hi[3], lo[3]);
}

template <int kD, int kWarps, bool kSplit>
__global__ void __launch_bounds__(kWarps * 32)
    attention_prefill_mma_kernel(const float* __restrict__ q, const bf16* __restrict__ k_cache,
                                 const bf16* __restrict__ v_cache, bf16* __restrict__ out,
                                 int n_tokens, int start_pos, int n_heads, int group, int D,
                                 float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kRows = 16 * kWarps;
  constexpr int kChunks = kD / 8;  // 16-byte chunks of a shared-memory row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* q_s = reinterpret_cast<bf16*>(smem_raw);
  bf16* q_lo_s = q_s + kRows * kLd;  // used when kSplit
  // Stage st of the K/V double buffer: K at kv_s + st · 2·kKeys·kLd, V right after it.
  bf16* kv_s = q_s + (kSplit ? 2 : 1) * kRows * kLd;

  const int n_rows = n_tokens * group;
  const int r0 = (gridDim.x - 1 - blockIdx.x) * kRows;
  const int kvh = blockIdx.y;
  const int64_t q_stride = static_cast<int64_t>(n_heads) * D;
  const int64_t kv_stride = static_cast<int64_t>(n_heads / group) * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = lane % 4;
  const int k_steps = (D + 15) / 16;  // Q·Kᵀ k-steps that touch real columns

  // The block's keys: every key up to the last real row's position (later cache rows are not
  // read; the tile's rows past them are zero-filled).
  const int last_row = min(r0 + kRows, n_rows) - 1;
  const int n_keys = start_pos + last_row / group + 1;
  const int n_tiles = (n_keys + kKeys - 1) / kKeys;
  const bf16* k_head = k_cache + static_cast<int64_t>(kvh) * D;
  const bf16* v_head = v_cache + static_cast<int64_t>(kvh) * D;
  const auto issue = [&](int tile, int stage) {
    bf16* k_s = kv_s + stage * 2 * kKeys * kLd;
    load_tile<kKeys, kD>(k_s, k_head, kv_stride, tile * kKeys, n_keys, D);
    load_tile<kKeys, kD>(k_s + kKeys * kLd, v_head, kv_stride, tile * kKeys, n_keys, D);
  };
  issue(0, 0);
  cp_async_commit();

  // Q: float32 rows → scaled BF16 (zero past head_dim and past the last row) while K/V stream in.
  for (int i = threadIdx.x; i < kRows * kChunks; i += blockDim.x) {
    const int r = i / kChunks, col = (i % kChunks) * 8;
    const int row = r0 + r;
    float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f), b = a;
    if (row < n_rows && col < D) {
      const int t = row / group, h = kvh * group + row % group;
      const float* src = q + t * q_stride + static_cast<int64_t>(h) * D + col;
      a = *reinterpret_cast<const float4*>(src);
      b = *reinterpret_cast<const float4*>(src + 4);
    }
    uint4 hi, lo;
    split_pack(a.x * scale_log2, a.y * scale_log2, hi.x, lo.x);
    split_pack(a.z * scale_log2, a.w * scale_log2, hi.y, lo.y);
    split_pack(b.x * scale_log2, b.y * scale_log2, hi.z, lo.z);
    split_pack(b.z * scale_log2, b.w * scale_log2, hi.w, lo.w);
    *reinterpret_cast<uint4*>(q_s + r * kLd + col) = hi;
    if (kSplit) *reinterpret_cast<uint4*>(q_lo_s + r * kLd + col) = lo;
  }
  __syncthreads();

  // This warp's Q fragments stay in registers for every key tile.
  const int warp_row0 = r0 + warp * 16;
  uint32_t q_frag[kD / 16][4], q_lo_frag[kSplit ? kD / 16 : 1][4];
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk) {
    load_a(q_frag[kk], q_s, kLd, warp * 16, kk * 16, lane);
    if constexpr (kSplit) load_a(q_lo_frag[kk], q_lo_s, kLd, warp * 16, kk * 16, lane);
  }

  // Causal limits: this thread's rows (lane / 4 and lane / 4 + 8 of the warp) see keys up to
  // start_pos + their token; the warp as a whole, from its first row's limit to its last row's.
  const int row_a = warp_row0 + lane / 4, row_b = row_a + 8;
  const int limit[2] = {start_pos + row_a / group, start_pos + row_b / group};
  const int warp_first_limit = start_pos + warp_row0 / group;
  const int warp_last_limit =
      warp_row0 <= last_row ? start_pos + min(warp_row0 + 15, last_row) / group : -1;

  float acc[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int stage = tile & 1;
    cp_async_wait_all();  // this tile's K and V
    __syncthreads();      // ... visible to all; every warp is done with the other stage
    if (tile + 1 < n_tiles) {
      issue(tile + 1, stage ^ 1);
      cp_async_commit();
    }
    const int k0 = tile * kKeys;
    if (k0 > warp_last_limit) continue;  // warp-uniform: the whole tile is after its rows
    const bf16* k_s = kv_s + stage * 2 * kKeys * kLd;
    const bf16* v_s = k_s + kKeys * kLd;

    float s[kKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk >= k_steps) break;
#pragma unroll
      for (int n = 0; n < kKeys / 8; n += 2) {
        // Keys past the warp's last row (the diagonal tile): their scores are masked below.
        if (k0 + n * 8 > warp_last_limit) break;
        uint32_t bb[4];
        load_b_trans2(bb, k_s, kLd, n * 8, kk * 16, lane);
        mma_pair(s[n], s[n + 1], q_frag[kk], bb);
        if constexpr (kSplit) mma_pair(s[n], s[n + 1], q_lo_frag[kk], bb);
      }
    }

    // Causal mask only where the tile reaches past the warp's first row.
    const bool needs_mask = k0 + kKeys - 1 > warp_first_limit;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = k0 + n * 8 + 2 * c + (i & 1);
        if (needs_mask && key > limit[i / 2]) s[n][i] = -INFINITY;
        mx[i / 2] = fmaxf(mx[i / 2], s[n][i]);
      }
    }
    float corr[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      // A row that has seen no key keeps m = -inf; exp2 of (-inf) - 0 is then 0, never NaN.
      base[r] = m_new == -INFINITY ? 0.0f : m_new;
      corr[r] = exp2f(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= corr[r];
    }
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[n][i] = exp2f(s[n][i] - base[i / 2]);
        l[i / 2] += s[n][i];  // this thread's share; the quad is summed once at the end
      }
    }
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      acc[n][0] *= corr[0];
      acc[n][1] *= corr[0];
      acc[n][2] *= corr[1];
      acc[n][3] *= corr[1];
    }

    // acc += P V, P rounded to BF16 as the product's input (or split in two BF16 terms).
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      if (k0 + kk * 16 > warp_last_limit) break;  // P is zero there for every row of the warp
      uint32_t a[4], a_lo[4];
      if constexpr (kSplit) {
        c_to_a_split(a, a_lo, s[2 * kk], s[2 * kk + 1]);
      } else {
        c_to_a(a, s[2 * kk], s[2 * kk + 1]);
      }
#pragma unroll
      for (int n = 0; n < kD / 8; n += 2) {
        if (n * 8 >= D) break;
        uint32_t bb[4];
        load_b2(bb, v_s, kLd, kk * 16, n * 8, lane);
        mma_pair(acc[n], acc[n + 1], a, bb);
        if constexpr (kSplit) mma_pair(acc[n], acc[n + 1], a_lo, bb);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r == 0 ? row_a : row_b;
    if (row > last_row) continue;
    const float inv_l = 1.0f / l[r];
    const int t = row / group, h = kvh * group + row % group;
    bf16* o_row = out + t * q_stride + static_cast<int64_t>(h) * D;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      if (n * 8 >= D) break;
      *reinterpret_cast<__nv_bfloat162*>(o_row + n * 8 + 2 * c) =
          __floats2bfloat162_rn(acc[n][2 * r] * inv_l, acc[n][2 * r + 1] * inv_l);
    }
  }
}

template <int kD, int kWarps, bool kSplit>
void launch(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out, int n_tokens,
            int start_pos, int n_heads, int n_kv_heads, int D, cudaStream_t stream) {
  constexpr size_t smem = mma_shared_bytes<kD, kWarps, kSplit>();
  if constexpr (smem > 48 * 1024) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_mma_kernel<kD, kWarps, kSplit>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  }
  const int group = n_heads / n_kv_heads;
  const int64_t n_rows = static_cast<int64_t>(n_tokens) * group;
  const dim3 grid(static_cast<unsigned>((n_rows + 16 * kWarps - 1) / (16 * kWarps)),
                  static_cast<unsigned>(n_kv_heads));
  const float scale_log2 = 1.4426950408889634f / sqrtf(static_cast<float>(D));
  attention_prefill_mma_kernel<kD, kWarps, kSplit><<<grid, kWarps * 32, smem, stream>>>(
      q, k_cache, v_cache, out, n_tokens, start_pos, n_heads, group, D, scale_log2);
  check_launch("attention_prefill_mma_kernel");
}

template <int kD, bool kSplit>
void launch_warps(int warps, const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                  int n_tokens, int start_pos, int n_heads, int n_kv_heads, int D,
                  cudaStream_t stream) {
  switch (warps) {
    case 1:
      return launch<kD, 1, kSplit>(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                                   n_kv_heads, D, stream);
    case 2:
      return launch<kD, 2, kSplit>(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                                   n_kv_heads, D, stream);
    default:
      return launch<kD, 4, kSplit>(q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                                   n_kv_heads, D, stream);
  }
}

int device_attribute(cudaDeviceAttr attr) {
  int device = 0, value = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

// Fewer warps per block mean more blocks: the largest block size whose grid still gives a third
// of the SMs a block. (H100, 0.5B shape, 256-token chunk: 4 warps = 56 blocks ran 13.4–15.3 µs,
// 2 warps = 112 blocks 15.3–17.2 µs, 1 warp 19.6–21.5 µs: bigger blocks win even with SMs idle.)
int auto_warps(int64_t n_rows, int32_t n_kv_heads) {
  const int64_t sms = device_attribute(cudaDevAttrMultiProcessorCount);
  for (const int warps : {4, 2}) {
    const int64_t blocks = (n_rows + 16 * warps - 1) / (16 * warps) * n_kv_heads;
    if (3 * blocks >= sms) return warps;
  }
  return 1;
}

template <bool kSplit>
void launch_head_dim(int warps, const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                     int n_tokens, int start_pos, int n_heads, int n_kv_heads, int D,
                     cudaStream_t stream) {
  if (D <= 32) {
    launch_warps<32, kSplit>(warps, q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                             n_kv_heads, D, stream);
  } else if (D <= 64) {
    launch_warps<64, kSplit>(warps, q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                             n_kv_heads, D, stream);
  } else if (D <= 96) {
    launch_warps<96, kSplit>(warps, q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                             n_kv_heads, D, stream);
  } else {
    launch_warps<128, kSplit>(warps, q, k_cache, v_cache, out, n_tokens, start_pos, n_heads,
                              n_kv_heads, D, stream);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool attention_prefill_mma_supported(const float* q, const bf16* k_cache, const bf16* v_cache,
                                     bf16* out, int32_t head_dim) {
  return head_dim > 0 && head_dim % 8 == 0 && head_dim <= kMaxMmaPrefillHeadDim && aligned16(q) &&
         aligned16(k_cache) && aligned16(v_cache) && reinterpret_cast<uintptr_t>(out) % 4 == 0 &&
         device_attribute(cudaDevAttrComputeCapabilityMajor) >= 8;
}

void attention_prefill_mma(const float* q, const bf16* k_cache, const bf16* v_cache, bf16* out,
                           int64_t n_tokens, int64_t start_pos, int32_t n_heads, int32_t n_kv_heads,
                           int32_t head_dim, MmaPrecision precision, int warps_per_block,
                           cudaStream_t stream) {
  if (!attention_prefill_mma_supported(q, k_cache, v_cache, out, head_dim) || n_kv_heads <= 0 ||
      n_heads % n_kv_heads != 0) {
    fail(KILN_ERR_UNSUPPORTED,
         "CUDA tensor-core prefill attention: head_dim " + std::to_string(head_dim) +
             " (must be a multiple of 8, at most " + std::to_string(kMaxMmaPrefillHeadDim) +
             "; q, k, v 16-byte aligned; compute capability 8.0+), " + std::to_string(n_heads) +
             " heads over " + std::to_string(n_kv_heads) + " KV heads");
  }
  if (warps_per_block != 0 && warps_per_block != 1 && warps_per_block != 2 &&
      warps_per_block != 4) {
    fail(KILN_ERR_INVALID_ARGUMENT, "CUDA tensor-core prefill attention: warps_per_block " +
                                        std::to_string(warps_per_block) +
                                        " (must be 0 for automatic, 1, 2 or 4)");
  }
  if (n_tokens == 0) return;
  const int64_t n_rows = n_tokens * (n_heads / n_kv_heads);
  const int warps = warps_per_block == 0 ? auto_warps(n_rows, n_kv_heads) : warps_per_block;
  const auto n = static_cast<int>(n_tokens);
  const auto start = static_cast<int>(start_pos);
  if (precision == MmaPrecision::kBf16x2) {
    launch_head_dim<true>(warps, q, k_cache, v_cache, out, n, start, n_heads, n_kv_heads, head_dim,
                          stream);
  } else {
    launch_head_dim<false>(warps, q, k_cache, v_cache, out, n, start, n_heads, n_kv_heads, head_dim,
                           stream);
  }
}

}  // namespace kiln::cuda

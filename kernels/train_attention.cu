// Causal grouped-query attention for training, FlashAttention-2 style on BF16 tensor cores
// (mma.sync m16n8k16, float32 accumulation; sm_80 and later), so no seq × seq matrix exists.
//
//  forward   one block per (64 query rows, head, batch); each warp owns 16 rows, streams the key
//            tiles through shared memory with an online softmax (scores in log2 units, exp2f),
//            and writes o (BF16) and the row log-sum-exp (natural log, float32).
//  backward  three kernels, none with float atomics, so the result is bit-reproducible:
//            1. delta[row] = Σ_d dO·O (the softmax backward's row term);
//            2. dK/dV: one block per (key tile, kv head, batch) recomputes P from q, k and lse
//               for every query head of its group and every query tile at or after the key
//               tile, in a fixed order, accumulating in registers; each warp owns 16 keys and
//               works on the transposed products (Sᵀ = K Qᵀ), so warps never exchange P or dS;
//            3. dQ: one block per (query tile, head, batch) recomputes P and dS over its key tiles
//               (costs two extra products, buys determinism without a per-tile partial buffer).
//
// Fragment layouts and the padded shared-memory tiles: kernels/mma_tiles.cuh (shared with the
// inference prefill kernel). head_dim is padded to the kernel's kD with zeros.
#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "core/error.hpp"
#include "mma_tiles.cuh"

namespace kiln::cuda::train {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The tensor-core helpers (mma_bf16, ldmatrix fragment loads, cp.async tiles): mma_tiles.cuh.
using mma::c_to_a;
using mma::cp_async_commit;
using mma::cp_async_wait;
using mma::cp_async_wait_all;
using mma::load_a;
using mma::load_b2;
using mma::load_b_trans2;
using mma::load_tile;
using mma::mma_pair;
using mma::tile_bytes;

// ---- forward ------------------------------------------------------------------------------------
// The forward's tuning: warps per block (16 query rows each), key tile, the blocks per SM the
// register allocation must allow (__launch_bounds__' second argument; 1 leaves it to the
// compiler), and whether each warp keeps its Q fragments in registers instead of reloading them
// from shared memory for every key tile. attention_forward_variant() runs the others (bench).
struct FwdTuning {
  int warps, key_tile, min_blocks;
  bool q_in_registers;
};

// Loads are pipelined as in FlashAttention-2: V of a key tile streams in while the scores are
// computed from K, and the next K while P·V runs; one buffer each for Q, K and V.
template <int kD, int kBc, int kFwdWarps, int kMinBlocks, bool kQRegs>
__global__ void __launch_bounds__(kFwdWarps * 32, kMinBlocks)
    attention_forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                             const bf16* __restrict__ v, bf16* __restrict__ o,
                             float* __restrict__ lse, int T, int H, int group, int D,
                             float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kFwdRows = 16 * kFwdWarps;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* q_s = reinterpret_cast<bf16*>(smem_raw);
  bf16* k_s = q_s + kFwdRows * kLd;
  bf16* v_s = k_s + kBc * kLd;

  // The last query tiles have the most keys: start them first.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kFwdRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / group, Hkv = H / group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = lane % 4;
  const int k_steps = (D + 15) / 16;  // the padded columns past D are zero: skip them

  const bf16* q_bh = q + (static_cast<int64_t>(b) * H + h) * T * D;
  const bf16* k_bh = k + (static_cast<int64_t>(b) * Hkv + kvh) * T * D;
  const bf16* v_bh = v + (static_cast<int64_t>(b) * Hkv + kvh) * T * D;
  load_tile<kFwdRows, kD>(q_s, q_bh, D, q0, T, D);
  load_tile<kBc, kD>(k_s, k_bh, D, 0, T, D);
  cp_async_commit();

  const int warp_row0 = q0 + warp * 16;
  const int row_a = warp_row0 + lane / 4, row_b = row_a + 8;  // this thread's two rows
  float acc[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  const int last_row = min(q0 + kFwdRows, T) - 1;
  uint32_t q_frag[kQRegs ? kD / 16 : 1][4];
  for (int k0 = 0; k0 <= last_row; k0 += kBc) {
    cp_async_wait_all();  // K of this tile (and Q, the first time)
    __syncthreads();      // ... visible to all; every warp is done with the previous V
    if constexpr (kQRegs) {
      if (k0 == 0) {
#pragma unroll
        for (int kk = 0; kk < kD / 16; ++kk) {
          if (kk < k_steps) load_a(q_frag[kk], q_s, kLd, warp * 16, kk * 16, lane);
        }
      }
    }
    load_tile<kBc, kD>(v_s, v_bh, D, k0, T, D);
    cp_async_commit();
    // Warp-uniform: causal, the whole tile may lie after this warp's rows.
    const bool active = k0 <= warp_row0 + 15;

    float s[kBc / 8][4];
    if (active) {
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        if (kk >= k_steps) break;
        uint32_t a[4];
        if constexpr (kQRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[e] = q_frag[kk][e];
        } else {
          load_a(a, q_s, kLd, warp * 16, kk * 16, lane);
        }
#pragma unroll
        for (int n = 0; n < kBc / 8; n += 2) {
          uint32_t bb[4];
          load_b_trans2(bb, k_s, kLd, n * 8, kk * 16, lane);
          mma_pair(s[n], s[n + 1], a, bb);
        }
      }

      // Scale to log2 units; mask (causal, keys past T) only where the tile needs it.
      const bool needs_mask = k0 + kBc - 1 > warp_row0 || k0 + kBc > T;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int key = k0 + n * 8 + 2 * c + (i & 1);
          const int row = i < 2 ? row_a : row_b;
          s[n][i] = (!needs_mask || (key <= row && key < T)) ? s[n][i] * scale_log2 : -INFINITY;
          mx[i / 2] = fmaxf(mx[i / 2], s[n][i]);
        }
      }
      float corr[2], base[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m[r], mx[r]);
        // A row with no key seen yet keeps m = -inf; exp2 of (-inf) - 0 is then 0, never NaN.
        base[r] = m_new == -INFINITY ? 0.0f : m_new;
        corr[r] = exp2f(m[r] - base[r]);
        m[r] = m_new;
        l[r] *= corr[r];
      }
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
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
    }

    cp_async_wait_all();  // V of this tile
    __syncthreads();      // ... visible to all; every warp is done with K
    if (k0 + kBc <= last_row) {
      load_tile<kBc, kD>(k_s, k_bh, D, k0 + kBc, T, D);
      cp_async_commit();
    }
    if (active) {
      // acc += P V (P rounded to BF16 as the product's input).
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        uint32_t a[4];
        c_to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
        for (int n = 0; n < kD / 8; n += 2) {
          if (n * 8 >= D) break;
          uint32_t bb[4];
          load_b2(bb, v_s, kLd, kk * 16, n * 8, lane);
          mma_pair(acc[n], acc[n + 1], a, bb);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float inv_l[2] = {1.0f / l[0], 1.0f / l[1]};
  const int64_t o_stride = static_cast<int64_t>(H) * D;
  bf16* o_b = o + static_cast<int64_t>(b) * T * o_stride + static_cast<int64_t>(h) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r == 0 ? row_a : row_b;
    if (row >= T) continue;
    bf16* o_row = o_b + row * o_stride;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      if (n * 8 >= D) break;
      *reinterpret_cast<__nv_bfloat162*>(o_row + n * 8 + 2 * c) =
          __floats2bfloat162_rn(acc[n][2 * r] * inv_l[r], acc[n][2 * r + 1] * inv_l[r]);
    }
    if (c == 0) {
      lse[(static_cast<int64_t>(b) * H + h) * T + row] = (m[r] + log2f(l[r])) * kLn2;
    }
  }
}

// ---- backward: delta ----------------------------------------------------------------------------
// delta[b, h, t] = Σ_d dO[b, t, h, d] · O[b, t, h, d]; one warp per (b, t, h) row of o's layout.
__global__ void attention_delta_kernel(const bf16* __restrict__ o, const bf16* __restrict__ d_o,
                                       float* __restrict__ delta, int64_t rows, int T, int H,
                                       int D) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const bf16* o_row = o + row * D;
  const bf16* do_row = d_o + row * D;
  float sum = 0.0f;
  for (int d = lane * 2; d < D; d += 64) {  // D is even
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(o_row + d));
    const float2 e = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(do_row + d));
    sum += a.x * e.x + a.y * e.y;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) {
    const int64_t h = row % H, t = (row / H) % T, b = row / (static_cast<int64_t>(H) * T);
    delta[(b * H + h) * T + t] = sum;
  }
}

// ---- backward: dK, dV ---------------------------------------------------------------------------
// Block: kWarps · 16 keys of one kv head, visiting (query head of the group, query tile of kBr
// rows) in a fixed order. kStages 2: the next query tile's Q, dO, lse and delta load while this
// one is computed (double buffer); 1: no overlap (for GPUs with less shared memory per block).
template <int kD, int kBr>
__host__ __device__ constexpr size_t dkdv_stage_bytes() {
  return tile_bytes<kD>(2 * kBr) + 2 * kBr * sizeof(float);
}

template <int kD, int kWarps, int kBr, int kStages>
__global__ void __launch_bounds__(kWarps * 32)
    attention_dkdv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ d_o,
                          const float* __restrict__ lse, const float* __restrict__ delta,
                          float* __restrict__ dk, float* __restrict__ dv, int T, int H, int group,
                          int D, float scale, float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kBc = 16 * kWarps;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* k_s = reinterpret_cast<bf16*>(smem_raw);
  bf16* v_s = k_s + kBc * kLd;
  unsigned char* stage_base = reinterpret_cast<unsigned char*>(v_s + kBc * kLd);
  // Stage st: Q [kBr], dO [kBr] (BF16 tiles), lse [kBr] (log2 units), delta [kBr].
  const auto q_tile = [&](int st) {
    return reinterpret_cast<bf16*>(stage_base + st * dkdv_stage_bytes<kD, kBr>());
  };
  const auto do_tile = [&](int st) { return q_tile(st) + kBr * kLd; };
  const auto lse_tile = [&](int st) { return reinterpret_cast<float*>(do_tile(st) + kBr * kLd); };
  const auto delta_tile = [&](int st) { return lse_tile(st) + kBr; };

  const int k0 = blockIdx.x * kBc;
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int Hkv = H / group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = lane % 4;
  const int k_steps = (D + 15) / 16;
  const int64_t o_stride = static_cast<int64_t>(H) * D;

  // Query t sees key j when j <= t: the first query tile that sees this key tile holds k0.
  const int q_start = (k0 / kBr) * kBr;
  const int n_q = (T - q_start + kBr - 1) / kBr;
  const int n_iter = group * n_q;
  const auto issue = [&](int i, int st) {
    const int h = kvh * group + i / n_q, q0 = q_start + (i % n_q) * kBr;
    load_tile<kBr, kD>(q_tile(st), q + (static_cast<int64_t>(b) * H + h) * T * D, D, q0, T, D);
    load_tile<kBr, kD>(do_tile(st),
                       d_o + static_cast<int64_t>(b) * T * o_stride + static_cast<int64_t>(h) * D,
                       o_stride, q0, T, D);
    const int64_t stat = (static_cast<int64_t>(b) * H + h) * T;
    for (int r = threadIdx.x; r < kBr; r += blockDim.x) {
      const bool in = q0 + r < T;
      lse_tile(st)[r] = in ? lse[stat + q0 + r] * kLog2e : 0.0f;
      delta_tile(st)[r] = in ? delta[stat + q0 + r] : 0.0f;
    }
  };

  const int64_t kv_off = (static_cast<int64_t>(b) * Hkv + kvh) * T * D;
  load_tile<kBc, kD>(k_s, k + kv_off, D, k0, T, D);
  load_tile<kBc, kD>(v_s, v + kv_off, D, k0, T, D);
  if (kStages == 2) issue(0, 0);
  cp_async_commit();

  float dk_acc[kD / 8][4], dv_acc[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) dk_acc[n][i] = dv_acc[n][i] = 0.0f;
  }
  const int warp_key0 = k0 + warp * 16;
  const int key_a = warp_key0 + lane / 4, key_b = key_a + 8;  // this thread's two keys

  for (int i = 0; i < n_iter; ++i) {
    const int st = kStages == 2 ? (i & 1) : 0;
    __syncthreads();  // every warp is done with iteration i - 1 (its buffers may be refilled)
    if (kStages == 2) {
      if (i + 1 < n_iter) issue(i + 1, st ^ 1);
      cp_async_commit();
      cp_async_wait<1>();  // everything but the group just issued: iteration i's tiles
    } else {
      issue(i, 0);
      cp_async_commit();
      cp_async_wait<0>();
    }
    __syncthreads();  // ... visible to every warp

    const int q0 = q_start + (i % n_q) * kBr;
    // Warp-uniform: every query of the tile may precede this warp's keys.
    if (warp_key0 > q0 + kBr - 1) continue;
    const bool needs_mask = warp_key0 + 15 > q0 || q0 + kBr > T;
    const bf16* q_s = q_tile(st);
    const bf16* do_s = do_tile(st);
    const float* lse_s = lse_tile(st);
    const float* delta_s = delta_tile(st);

    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (16 keys × kBr queries).
    float st_[kBr / 8][4], dpt[kBr / 8][4];
#pragma unroll
    for (int n = 0; n < kBr / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) st_[n][e] = dpt[n][e] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk >= k_steps) break;
      uint32_t ak[4], av[4];
      load_a(ak, k_s, kLd, warp * 16, kk * 16, lane);
      load_a(av, v_s, kLd, warp * 16, kk * 16, lane);
#pragma unroll
      for (int n = 0; n < kBr / 8; n += 2) {
        uint32_t bq[4], bo[4];
        load_b_trans2(bq, q_s, kLd, n * 8, kk * 16, lane);
        mma_pair(st_[n], st_[n + 1], ak, bq);
        load_b_trans2(bo, do_s, kLd, n * 8, kk * 16, lane);
        mma_pair(dpt[n], dpt[n + 1], av, bo);
      }
    }
    // Pᵀ = exp2(s·scale·log2e − lse·log2e) where key <= query < T, else 0;
    // dSᵀ = Pᵀ ∘ (dPᵀ − delta[query]).
#pragma unroll
    for (int n = 0; n < kBr / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int qi = n * 8 + 2 * c + (e & 1);
        const int query = q0 + qi;
        const int key = e < 2 ? key_a : key_b;
        const float p = (!needs_mask || (key <= query && query < T))
                            ? exp2f(st_[n][e] * scale_log2 - lse_s[qi])
                            : 0.0f;
        st_[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - delta_s[qi]);
      }
    }
    // dV += Pᵀ dO, dK += dSᵀ Q (scaled at the end).
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk) {
      uint32_t ap[4], as[4];
      c_to_a(ap, st_[2 * kk], st_[2 * kk + 1]);
      c_to_a(as, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < kD / 8; n += 2) {
        if (n * 8 >= D) break;
        uint32_t bo[4], bq[4];
        load_b2(bo, do_s, kLd, kk * 16, n * 8, lane);
        mma_pair(dv_acc[n], dv_acc[n + 1], ap, bo);
        load_b2(bq, q_s, kLd, kk * 16, n * 8, lane);
        mma_pair(dk_acc[n], dk_acc[n + 1], as, bq);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = r == 0 ? key_a : key_b;
    if (key >= T) continue;
    float* dk_row = dk + kv_off + static_cast<int64_t>(key) * D;
    float* dv_row = dv + kv_off + static_cast<int64_t>(key) * D;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      if (n * 8 >= D) break;
      const int d = n * 8 + 2 * c;
      *reinterpret_cast<float2*>(dk_row + d) =
          make_float2(dk_acc[n][2 * r] * scale, dk_acc[n][2 * r + 1] * scale);
      *reinterpret_cast<float2*>(dv_row + d) = make_float2(dv_acc[n][2 * r], dv_acc[n][2 * r + 1]);
    }
  }
}

// ---- backward: dQ -------------------------------------------------------------------------------
// Block: kWarps · 16 query rows of one head, visiting its key tiles of kBc keys in order;
// kStages as above (the next K and V tiles load while this one is computed).
template <int kD, int kWarps, int kBc, int kStages>
__global__ void __launch_bounds__(kWarps * 32)
    attention_dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                        const bf16* __restrict__ v, const bf16* __restrict__ d_o,
                        const float* __restrict__ lse, const float* __restrict__ delta,
                        float* __restrict__ dq, int T, int H, int group, int D, float scale,
                        float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kBr = 16 * kWarps;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* q_s = reinterpret_cast<bf16*>(smem_raw);
  bf16* do_s = q_s + kBr * kLd;
  bf16* kv_base = do_s + kBr * kLd;
  const auto k_tile = [&](int st) { return kv_base + st * 2 * kBc * kLd; };
  const auto v_tile = [&](int st) { return k_tile(st) + kBc * kLd; };

  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBr;  // most work first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / group, Hkv = H / group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = lane % 4;
  const int k_steps = (D + 15) / 16;
  const int64_t o_stride = static_cast<int64_t>(H) * D;

  const int64_t q_off = (static_cast<int64_t>(b) * H + h) * T * D;
  const int64_t kv_off = (static_cast<int64_t>(b) * Hkv + kvh) * T * D;
  const int last_row = min(q0 + kBr, T) - 1;
  const int n_iter = last_row / kBc + 1;
  const auto issue = [&](int i, int st) {
    load_tile<kBc, kD>(k_tile(st), k + kv_off, D, i * kBc, T, D);
    load_tile<kBc, kD>(v_tile(st), v + kv_off, D, i * kBc, T, D);
  };
  load_tile<kBr, kD>(q_s, q + q_off, D, q0, T, D);
  load_tile<kBr, kD>(do_s,
                     d_o + static_cast<int64_t>(b) * T * o_stride + static_cast<int64_t>(h) * D,
                     o_stride, q0, T, D);
  if (kStages == 2) issue(0, 0);
  cp_async_commit();

  const int warp_row0 = q0 + warp * 16;
  const int row_a = warp_row0 + lane / 4, row_b = row_a + 8;
  const int64_t stat_off = (static_cast<int64_t>(b) * H + h) * T;
  const float lse_r[2] = {row_a < T ? lse[stat_off + row_a] * kLog2e : 0.0f,
                          row_b < T ? lse[stat_off + row_b] * kLog2e : 0.0f};
  const float delta_r[2] = {row_a < T ? delta[stat_off + row_a] : 0.0f,
                            row_b < T ? delta[stat_off + row_b] : 0.0f};

  float dq_acc[kD / 8][4];
#pragma unroll
  for (int n = 0; n < kD / 8; ++n) dq_acc[n][0] = dq_acc[n][1] = dq_acc[n][2] = dq_acc[n][3] = 0.0f;

  for (int i = 0; i < n_iter; ++i) {
    const int st = kStages == 2 ? (i & 1) : 0;
    __syncthreads();  // every warp is done with iteration i - 1
    if (kStages == 2) {
      if (i + 1 < n_iter) issue(i + 1, st ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      issue(i, 0);
      cp_async_commit();
      cp_async_wait<0>();
    }
    __syncthreads();

    const int k0 = i * kBc;
    if (k0 > warp_row0 + 15) continue;  // warp-uniform: the tile is after this warp's rows
    const bool needs_mask = k0 + kBc - 1 > warp_row0 || k0 + kBc > T;
    const bf16* k_s = k_tile(st);
    const bf16* v_s = v_tile(st);

    // S = Q Kᵀ and dP = dO Vᵀ.
    float s[kBc / 8][4], dp[kBc / 8][4];
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk >= k_steps) break;
      uint32_t aq[4], ao[4];
      load_a(aq, q_s, kLd, warp * 16, kk * 16, lane);
      load_a(ao, do_s, kLd, warp * 16, kk * 16, lane);
#pragma unroll
      for (int n = 0; n < kBc / 8; n += 2) {
        uint32_t bk[4], bv[4];
        load_b_trans2(bk, k_s, kLd, n * 8, kk * 16, lane);
        mma_pair(s[n], s[n + 1], aq, bk);
        load_b_trans2(bv, v_s, kLd, n * 8, kk * 16, lane);
        mma_pair(dp[n], dp[n + 1], ao, bv);
      }
    }
    // P, then dS = P ∘ (dP − delta).
#pragma unroll
    for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + n * 8 + 2 * c + (e & 1);
        const int row = e < 2 ? row_a : row_b;
        const float p = (!needs_mask || (key <= row && row < T))
                            ? exp2f(s[n][e] * scale_log2 - lse_r[e / 2])
                            : 0.0f;
        dp[n][e] = p * (dp[n][e] - delta_r[e / 2]);
      }
    }
    // dQ += dS K (scaled at the end).
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[4];
      c_to_a(a, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < kD / 8; n += 2) {
        if (n * 8 >= D) break;
        uint32_t bk[4];
        load_b2(bk, k_s, kLd, kk * 16, n * 8, lane);
        mma_pair(dq_acc[n], dq_acc[n + 1], a, bk);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r == 0 ? row_a : row_b;
    if (row >= T) continue;
    float* dq_row = dq + q_off + static_cast<int64_t>(row) * D;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      if (n * 8 >= D) break;
      *reinterpret_cast<float2*>(dq_row + n * 8 + 2 * c) =
          make_float2(dq_acc[n][2 * r] * scale, dq_acc[n][2 * r + 1] * scale);
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------
void check_shape(const QkvShape& s, const char* who) {
  if (s.head_dim <= 0 || s.head_dim % 8 != 0 || s.head_dim > 256 || s.n_kv_heads <= 0 ||
      s.n_heads <= 0 || s.n_heads % s.n_kv_heads != 0 || s.batch < 0 || s.seq < 0) {
    fail(KILN_ERR_UNSUPPORTED, std::string(who) + ": head_dim " + std::to_string(s.head_dim) +
                                   " (must be a positive multiple of 8, at most 256), " +
                                   std::to_string(s.n_heads) + " heads over " +
                                   std::to_string(s.n_kv_heads) + " KV heads, batch " +
                                   std::to_string(s.batch) + ", seq " + std::to_string(s.seq));
  }
}

template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
  }
}

// The most dynamic shared memory one block may have on the current device (opt-in): 227 KiB on
// H100, 163 KiB on A100, 99 KiB on sm_89; it decides whether the double-buffered backward fits.
size_t max_shared_per_block() {
  int device = 0, bytes = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

unsigned tiles(int n, int tile) { return static_cast<unsigned>((n + tile - 1) / tile); }

template <int kD, int kBc, int kWarps = 4, int kMinBlocks = 1, bool kQRegs = false>
void launch_forward(const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse,
                    const QkvShape& s, float scale, cudaStream_t stream) {
  constexpr int kRows = 16 * kWarps;
  const size_t smem = tile_bytes<kD>(kRows + 2 * kBc);
  const auto kernel = attention_forward_kernel<kD, kBc, kWarps, kMinBlocks, kQRegs>;
  allow_shared(kernel, smem);
  const dim3 grid(tiles(s.seq, kRows), static_cast<unsigned>(s.n_heads),
                  static_cast<unsigned>(s.batch));
  kernel<<<grid, kWarps * 32, smem, stream>>>(q, k, v, o, lse, s.seq, s.n_heads,
                                              s.n_heads / s.n_kv_heads, s.head_dim, scale * kLog2e);
  check_launch("attention_forward_kernel");
}

template <int kD, int kWarps, int kTile, int kStages>
void launch_dkdv(const bf16* q, const bf16* k, const bf16* v, const bf16* d_o, const float* lse,
                 const float* delta, float* dk, float* dv, const QkvShape& s, float scale,
                 size_t smem, cudaStream_t stream) {
  allow_shared(attention_dkdv_kernel<kD, kWarps, kTile, kStages>, smem);
  const dim3 grid(tiles(s.seq, 16 * kWarps), static_cast<unsigned>(s.n_kv_heads),
                  static_cast<unsigned>(s.batch));
  attention_dkdv_kernel<kD, kWarps, kTile, kStages><<<grid, kWarps * 32, smem, stream>>>(
      q, k, v, d_o, lse, delta, dk, dv, s.seq, s.n_heads, s.n_heads / s.n_kv_heads, s.head_dim,
      scale, scale * kLog2e);
  check_launch("attention_dkdv_kernel");
}

template <int kD, int kWarps, int kTile, int kStages>
void launch_dq(const bf16* q, const bf16* k, const bf16* v, const bf16* d_o, const float* lse,
               const float* delta, float* dq, const QkvShape& s, float scale, size_t smem,
               cudaStream_t stream) {
  allow_shared(attention_dq_kernel<kD, kWarps, kTile, kStages>, smem);
  const dim3 grid(tiles(s.seq, 16 * kWarps), static_cast<unsigned>(s.n_heads),
                  static_cast<unsigned>(s.batch));
  attention_dq_kernel<kD, kWarps, kTile, kStages><<<grid, kWarps * 32, smem, stream>>>(
      q, k, v, d_o, lse, delta, dq, s.seq, s.n_heads, s.n_heads / s.n_kv_heads, s.head_dim, scale,
      scale * kLog2e);
  check_launch("attention_dq_kernel");
}

// kWarps · 16 keys (dK/dV) or query rows (dQ) per block; kTile the other side's tile.
template <int kD, int kWarps, int kTile>
void launch_backward(const bf16* q, const bf16* k, const bf16* v, const bf16* d_o, const float* lse,
                     const float* delta, float* dq, float* dk, float* dv, const QkvShape& s,
                     float scale, cudaStream_t stream) {
  const size_t limit = max_shared_per_block();
  const size_t kv_bytes = tile_bytes<kD>(2 * 16 * kWarps);
  const size_t dkdv2 = kv_bytes + 2 * dkdv_stage_bytes<kD, kTile>();
  if (dkdv2 <= limit) {
    launch_dkdv<kD, kWarps, kTile, 2>(q, k, v, d_o, lse, delta, dk, dv, s, scale, dkdv2, stream);
  } else {
    launch_dkdv<kD, kWarps, kTile, 1>(q, k, v, d_o, lse, delta, dk, dv, s, scale,
                                      kv_bytes + dkdv_stage_bytes<kD, kTile>(), stream);
  }
  const size_t qdo_bytes = tile_bytes<kD>(2 * 16 * kWarps);
  const size_t dq2 = qdo_bytes + 2 * tile_bytes<kD>(2 * kTile);
  if (dq2 <= limit) {
    launch_dq<kD, kWarps, kTile, 2>(q, k, v, d_o, lse, delta, dq, s, scale, dq2, stream);
  } else {
    launch_dq<kD, kWarps, kTile, 1>(q, k, v, d_o, lse, delta, dq, s, scale,
                                    qdo_bytes + tile_bytes<kD>(2 * kTile), stream);
  }
}

}  // namespace

void attention_forward(const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse,
                       QkvShape shape, float scale, cudaStream_t stream) {
  check_shape(shape, "CUDA attention_forward");
  if (shape.batch == 0 || shape.seq == 0) return;
  if (shape.head_dim <= 64) {
    launch_forward<64, 64>(q, k, v, o, lse, shape, scale, stream);
  } else if (shape.head_dim <= 128) {
    launch_forward<128, 64>(q, k, v, o, lse, shape, scale, stream);
  } else {
    launch_forward<256, 32>(q, k, v, o, lse, shape, scale, stream);
  }
}

int attention_forward_variants() { return 8; }

void attention_forward_variant(int variant, const bf16* q, const bf16* k, const bf16* v, bf16* o,
                               float* lse, QkvShape shape, float scale, cudaStream_t stream) {
  check_shape(shape, "CUDA attention_forward_variant");
  if (shape.head_dim > 64) {
    fail(KILN_ERR_UNSUPPORTED, "attention_forward_variant: head_dim <= 64 only");
  }
  if (shape.batch == 0 || shape.seq == 0) return;
  switch (variant) {  // (key tile, warps, min blocks per SM, Q in registers)
    case 0:
      return launch_forward<64, 64>(q, k, v, o, lse, shape, scale, stream);  // production
    case 1:
      return launch_forward<64, 64, 4, 5>(q, k, v, o, lse, shape, scale, stream);
    case 2:
      return launch_forward<64, 64, 4, 6>(q, k, v, o, lse, shape, scale, stream);
    case 3:
      return launch_forward<64, 64, 4, 1, true>(q, k, v, o, lse, shape, scale, stream);
    case 4:
      return launch_forward<64, 64, 4, 5, true>(q, k, v, o, lse, shape, scale, stream);
    case 5:
      return launch_forward<64, 128, 4, 1>(q, k, v, o, lse, shape, scale, stream);
    case 6:
      return launch_forward<64, 64, 8, 1>(q, k, v, o, lse, shape, scale, stream);
    case 7:
      return launch_forward<64, 64, 8, 2, true>(q, k, v, o, lse, shape, scale, stream);
    default:
      fail(KILN_ERR_INVALID_ARGUMENT,
           "attention_forward_variant: no variant " + std::to_string(variant));
  }
}

size_t attention_backward_workspace_floats(QkvShape shape) {
  // delta, one float per (batch, head, query).
  return static_cast<size_t>(shape.batch) * static_cast<size_t>(shape.n_heads) *
         static_cast<size_t>(shape.seq);
}

void attention_backward(const bf16* q, const bf16* k, const bf16* v, const bf16* o,
                        const float* lse, const bf16* d_o, float* dq, float* dk, float* dv,
                        QkvShape shape, float scale, float* workspace, cudaStream_t stream) {
  check_shape(shape, "CUDA attention_backward");
  if (shape.batch == 0 || shape.seq == 0) return;
  const int64_t rows = static_cast<int64_t>(shape.batch) * shape.seq * shape.n_heads;
  constexpr int kDeltaThreads = 256;
  const auto delta_blocks = static_cast<unsigned>((rows * 32 + kDeltaThreads - 1) / kDeltaThreads);
  attention_delta_kernel<<<delta_blocks, kDeltaThreads, 0, stream>>>(
      o, d_o, workspace, rows, shape.seq, shape.n_heads, shape.head_dim);
  check_launch("attention_delta_kernel");
  if (shape.head_dim <= 64) {
    launch_backward<64, 4, 64>(q, k, v, d_o, lse, workspace, dq, dk, dv, shape, scale, stream);
  } else if (shape.head_dim <= 128) {
    launch_backward<128, 4, 64>(q, k, v, d_o, lse, workspace, dq, dk, dv, shape, scale, stream);
  } else {
    launch_backward<256, 2, 32>(q, k, v, d_o, lse, workspace, dq, dk, dv, shape, scale, stream);
  }
}

}  // namespace kiln::cuda::train

// Causal grouped-query attention for training, FlashAttention-2 style on BF16 tensor cores
// (mma.sync m16n8k16, float32 accumulation; sm_80 and later), so no seq × seq matrix exists.
//
//  forward   one block per (64 query rows, head, batch); each warp owns 16 rows, streams the key
//            tiles through shared memory with an online softmax (exponents in log2 units, on
//            the special-function unit with the scale folded into one FMA), and writes o (BF16)
//            and the row log-sum-exp (natural log, float32).
//  backward  two kernels, none with float atomics, so the result is bit-reproducible:
//            1. dQ: one block per (query tile, head, batch) first computes its rows'
//               delta = Σ_d dO·O (the softmax backward's row term; written out for kernel 2),
//               then recomputes P and dS over its key tiles (two extra products buy
//               determinism without a per-tile partial buffer);
//            2. dK/dV: one block per (key tile, kv head, batch) recomputes P from q, k and lse
//               for every query head of its group and every query tile at or after the key
//               tile, in a fixed order, accumulating in registers; each warp owns 16 keys and
//               works on the transposed products (Sᵀ = K Qᵀ), so warps never exchange P or dS.
//  Block shapes: what the variants benchmark (cuda_train_attention_test) measured fastest on
//  the H100 at GPT-2's shape. Occupancy decides there, not shared-memory traffic: warps of two
//  16-row tiles (each K/V fragment feeding two products) need ~210–250 registers, leave 8 warps
//  per SM and ran 1.5× slower than 16-row warps at ≤ 128 registers (16–20 warps per SM).
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
using mma::fast_exp2;
using mma::load_a;
using mma::load_b2;
using mma::load_b_trans2;
using mma::load_tile;
using mma::mma_pair;
using mma::tile_bytes;

// ---- forward ------------------------------------------------------------------------------------
// The forward's tuning: warps per block, 16-row tiles per warp (kM: a K or V fragment read from
// shared memory feeds kM products, so kM = 2 halves the shared-memory traffic per FLOP, which
// bounds the kM = 1 kernel), key tile, the blocks per SM the register allocation must allow
// (__launch_bounds__' second argument; 1 leaves it to the compiler), and whether each warp keeps
// its Q fragments in registers instead of reloading them from shared memory for every key tile.
// attention_forward_variant() runs the others (bench).
//
// Loads are pipelined as in FlashAttention-2: V of a key tile streams in while the scores are
// computed from K, and the next K while P·V runs; one buffer each for Q, K and V.
template <int kD, int kBc, int kFwdWarps, int kM, int kMinBlocks, bool kQRegs>
__global__ void __launch_bounds__(kFwdWarps * 32, kMinBlocks)
    attention_forward_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                             const bf16* __restrict__ v, bf16* __restrict__ o,
                             float* __restrict__ lse, int T, int H, int group, int D,
                             float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kWarpRows = 16 * kM;
  constexpr int kFwdRows = kWarpRows * kFwdWarps;
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

  const int warp_row0 = q0 + warp * kWarpRows;
  // This thread's rows: tile t holds rows warp_row0 + 16t + lane/4 and that + 8.
  float acc[kM][kD / 8][4];
  float m[kM][2], l[kM][2];
#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int n = 0; n < kD / 8; ++n)
      acc[t][n][0] = acc[t][n][1] = acc[t][n][2] = acc[t][n][3] = 0.0f;
    m[t][0] = m[t][1] = -INFINITY;
    l[t][0] = l[t][1] = 0.0f;
  }

  const int last_row = min(q0 + kFwdRows, T) - 1;
  uint32_t q_frag[kQRegs ? kM : 1][kQRegs ? kD / 16 : 1][4];
  for (int k0 = 0; k0 <= last_row; k0 += kBc) {
    cp_async_wait_all();  // K of this tile (and Q, the first time)
    __syncthreads();      // ... visible to all; every warp is done with the previous V
    if constexpr (kQRegs) {
      if (k0 == 0) {
#pragma unroll
        for (int t = 0; t < kM; ++t) {
#pragma unroll
          for (int kk = 0; kk < kD / 16; ++kk) {
            if (kk < k_steps)
              load_a(q_frag[t][kk], q_s, kLd, warp * kWarpRows + 16 * t, kk * 16, lane);
          }
        }
      }
    }
    load_tile<kBc, kD>(v_s, v_bh, D, k0, T, D);
    cp_async_commit();
    // Warp-uniform: causal, the whole tile may lie after this warp's rows.
    const bool active = k0 <= warp_row0 + kWarpRows - 1;

    float s[kM][kBc / 8][4];
    if (active) {
#pragma unroll
      for (int t = 0; t < kM; ++t) {
#pragma unroll
        for (int n = 0; n < kBc / 8; ++n) s[t][n][0] = s[t][n][1] = s[t][n][2] = s[t][n][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        if (kk >= k_steps) break;
        uint32_t a[kM][4];
#pragma unroll
        for (int t = 0; t < kM; ++t) {
          if constexpr (kQRegs) {
#pragma unroll
            for (int e = 0; e < 4; ++e) a[t][e] = q_frag[t][kk][e];
          } else {
            load_a(a[t], q_s, kLd, warp * kWarpRows + 16 * t, kk * 16, lane);
          }
        }
#pragma unroll
        for (int n = 0; n < kBc / 8; n += 2) {
          uint32_t bb[4];
          load_b_trans2(bb, k_s, kLd, n * 8, kk * 16, lane);
#pragma unroll
          for (int t = 0; t < kM; ++t) mma_pair(s[t][n], s[t][n + 1], a[t], bb);
        }
      }

      // Mask (causal, keys past T) only where the tile needs it. m stays in the scores' units;
      // the scale to log2 units folds into the exponent's FMA.
      const bool needs_mask = k0 + kBc - 1 > warp_row0 || k0 + kBc > T;
#pragma unroll
      for (int t = 0; t < kM; ++t) {
        const int row_a = warp_row0 + 16 * t + lane / 4, row_b = row_a + 8;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int key = k0 + n * 8 + 2 * c + (i & 1);
            const int row = i < 2 ? row_a : row_b;
            if (needs_mask && !(key <= row && key < T)) s[t][n][i] = -INFINITY;
            mx[i / 2] = fmaxf(mx[i / 2], s[t][n][i]);
          }
        }
        float corr[2], base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
          mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
          const float m_new = fmaxf(m[t][r], mx[r]);
          // A row with no key seen yet keeps m = -inf; 2^((-inf) - 0) is then 0, never NaN.
          base[r] = m_new == -INFINITY ? 0.0f : m_new * scale_log2;
          corr[r] = fast_exp2(m[t][r] * scale_log2 - base[r]);
          m[t][r] = m_new;
          l[t][r] *= corr[r];
        }
#pragma unroll
        for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            s[t][n][i] = fast_exp2(fmaf(s[t][n][i], scale_log2, -base[i / 2]));
            l[t][i / 2] += s[t][n][i];  // this thread's share; the quad is summed once at the end
          }
        }
#pragma unroll
        for (int n = 0; n < kD / 8; ++n) {
          acc[t][n][0] *= corr[0];
          acc[t][n][1] *= corr[0];
          acc[t][n][2] *= corr[1];
          acc[t][n][3] *= corr[1];
        }
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
        uint32_t a[kM][4];
#pragma unroll
        for (int t = 0; t < kM; ++t) c_to_a(a[t], s[t][2 * kk], s[t][2 * kk + 1]);
#pragma unroll
        for (int n = 0; n < kD / 8; n += 2) {
          if (n * 8 >= D) break;
          uint32_t bb[4];
          load_b2(bb, v_s, kLd, kk * 16, n * 8, lane);
#pragma unroll
          for (int t = 0; t < kM; ++t) mma_pair(acc[t][n], acc[t][n + 1], a[t], bb);
        }
      }
    }
  }

  const int64_t o_stride = static_cast<int64_t>(H) * D;
  bf16* o_b = o + static_cast<int64_t>(b) * T * o_stride + static_cast<int64_t>(h) * D;
#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[t][r] += __shfl_xor_sync(0xffffffffu, l[t][r], 1);
      l[t][r] += __shfl_xor_sync(0xffffffffu, l[t][r], 2);
    }
    const float inv_l[2] = {1.0f / l[t][0], 1.0f / l[t][1]};
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + 16 * t + lane / 4 + 8 * r;
      if (row >= T) continue;
      bf16* o_row = o_b + row * o_stride;
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        if (n * 8 >= D) break;
        *reinterpret_cast<__nv_bfloat162*>(o_row + n * 8 + 2 * c) =
            __floats2bfloat162_rn(acc[t][n][2 * r] * inv_l[r], acc[t][n][2 * r + 1] * inv_l[r]);
      }
      if (c == 0) {
        lse[(static_cast<int64_t>(b) * H + h) * T + row] =
            (m[t][r] * scale_log2 + log2f(l[t][r])) * kLn2;
      }
    }
  }
}

// ---- backward: dK, dV ---------------------------------------------------------------------------
// Block: kWarps · 16·kM keys of one kv head (kM 16-key tiles per warp, so a Q or dO fragment read
// from shared memory feeds kM products), visiting (query head of the group, query tile of kBr
// rows) in a fixed order. kKvRegs: the warp's K and V fragments stay in registers for the whole
// loop instead of being re-read from shared memory for every query tile. kStages 2: the next
// query tile's Q, dO, lse and delta load while this one is computed (double buffer); 1: no
// overlap (for GPUs with less shared memory per block).
template <int kD, int kBr>
__host__ __device__ constexpr size_t dkdv_stage_bytes() {
  return tile_bytes<kD>(2 * kBr) + 2 * kBr * sizeof(float);
}

template <int kD, int kWarps, int kM, int kBr, int kStages, bool kKvRegs, int kMinBlocks>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks)
    attention_dkdv_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                          const bf16* __restrict__ v, const bf16* __restrict__ d_o,
                          const float* __restrict__ lse, const float* __restrict__ delta,
                          float* __restrict__ dk, float* __restrict__ dv, int T, int H, int group,
                          int D, float scale, float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kWarpKeys = 16 * kM;
  constexpr int kBc = kWarpKeys * kWarps;
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

  float dk_acc[kM][kD / 8][4], dv_acc[kM][kD / 8][4];
#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) dk_acc[t][n][i] = dv_acc[t][n][i] = 0.0f;
    }
  }
  const int warp_key0 = k0 + warp * kWarpKeys;
  const int warp_row = warp * kWarpKeys;  // the warp's first key row in k_s / v_s
  uint32_t k_frag[kKvRegs ? kM : 1][kKvRegs ? kD / 16 : 1][4];
  uint32_t v_frag[kKvRegs ? kM : 1][kKvRegs ? kD / 16 : 1][4];

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
    if constexpr (kKvRegs) {
      if (i == 0) {
#pragma unroll
        for (int t = 0; t < kM; ++t) {
#pragma unroll
          for (int kk = 0; kk < kD / 16; ++kk) {
            if (kk >= k_steps) break;
            load_a(k_frag[t][kk], k_s, kLd, warp_row + 16 * t, kk * 16, lane);
            load_a(v_frag[t][kk], v_s, kLd, warp_row + 16 * t, kk * 16, lane);
          }
        }
      }
    }

    const int q0 = q_start + (i % n_q) * kBr;
    // Warp-uniform: every query of the tile may precede this warp's keys.
    if (warp_key0 > q0 + kBr - 1) continue;
    const bool needs_mask = warp_key0 + kWarpKeys - 1 > q0 || q0 + kBr > T;
    const bf16* q_s = q_tile(st);
    const bf16* do_s = do_tile(st);
    const float* lse_s = lse_tile(st);
    const float* delta_s = delta_tile(st);

    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ (16 keys × kBr queries per key tile).
    float st_[kM][kBr / 8][4], dpt[kM][kBr / 8][4];
#pragma unroll
    for (int t = 0; t < kM; ++t) {
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) st_[t][n][e] = dpt[t][n][e] = 0.0f;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk >= k_steps) break;
      uint32_t ak[kM][4], av[kM][4];
#pragma unroll
      for (int t = 0; t < kM; ++t) {
        if constexpr (kKvRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            ak[t][e] = k_frag[t][kk][e];
            av[t][e] = v_frag[t][kk][e];
          }
        } else {
          load_a(ak[t], k_s, kLd, warp_row + 16 * t, kk * 16, lane);
          load_a(av[t], v_s, kLd, warp_row + 16 * t, kk * 16, lane);
        }
      }
#pragma unroll
      for (int n = 0; n < kBr / 8; n += 2) {
        uint32_t bq[4], bo[4];
        load_b_trans2(bq, q_s, kLd, n * 8, kk * 16, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(st_[t][n], st_[t][n + 1], ak[t], bq);
        load_b_trans2(bo, do_s, kLd, n * 8, kk * 16, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(dpt[t][n], dpt[t][n + 1], av[t], bo);
      }
    }
    // Pᵀ = exp2(s·scale·log2e − lse·log2e) where key <= query < T, else 0;
    // dSᵀ = Pᵀ ∘ (dPᵀ − delta[query]).
#pragma unroll
    for (int t = 0; t < kM; ++t) {
      const int key_a = warp_key0 + 16 * t + lane / 4, key_b = key_a + 8;
#pragma unroll
      for (int n = 0; n < kBr / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qi = n * 8 + 2 * c + (e & 1);
          const int query = q0 + qi;
          const int key = e < 2 ? key_a : key_b;
          const float p = (!needs_mask || (key <= query && query < T))
                              ? fast_exp2(fmaf(st_[t][n][e], scale_log2, -lse_s[qi]))
                              : 0.0f;
          st_[t][n][e] = p;
          dpt[t][n][e] = p * (dpt[t][n][e] - delta_s[qi]);
        }
      }
    }
    // dV += Pᵀ dO, dK += dSᵀ Q (scaled at the end).
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk) {
      uint32_t ap[kM][4], as[kM][4];
#pragma unroll
      for (int t = 0; t < kM; ++t) {
        c_to_a(ap[t], st_[t][2 * kk], st_[t][2 * kk + 1]);
        c_to_a(as[t], dpt[t][2 * kk], dpt[t][2 * kk + 1]);
      }
#pragma unroll
      for (int n = 0; n < kD / 8; n += 2) {
        if (n * 8 >= D) break;
        uint32_t bo[4], bq[4];
        load_b2(bo, do_s, kLd, kk * 16, n * 8, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(dv_acc[t][n], dv_acc[t][n + 1], ap[t], bo);
        load_b2(bq, q_s, kLd, kk * 16, n * 8, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(dk_acc[t][n], dk_acc[t][n + 1], as[t], bq);
      }
    }
  }

#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = warp_key0 + 16 * t + lane / 4 + 8 * r;
      if (key >= T) continue;
      float* dk_row = dk + kv_off + static_cast<int64_t>(key) * D;
      float* dv_row = dv + kv_off + static_cast<int64_t>(key) * D;
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        if (n * 8 >= D) break;
        const int d = n * 8 + 2 * c;
        *reinterpret_cast<float2*>(dk_row + d) =
            make_float2(dk_acc[t][n][2 * r] * scale, dk_acc[t][n][2 * r + 1] * scale);
        *reinterpret_cast<float2*>(dv_row + d) =
            make_float2(dv_acc[t][n][2 * r], dv_acc[t][n][2 * r + 1]);
      }
    }
  }
}

// ---- backward: dQ -------------------------------------------------------------------------------
// Block: kWarps · 16·kM query rows of one head, visiting its key tiles of kBc keys in order;
// kQRegs: the warp's Q and dO fragments stay in registers; kStages as above (the next K and V
// tiles load while this one is computed).
template <int kD, int kWarps, int kM, int kBc, int kStages, bool kQRegs, int kMinBlocks>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks)
    attention_dq_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k,
                        const bf16* __restrict__ v, const bf16* __restrict__ o,
                        const bf16* __restrict__ d_o, const float* __restrict__ lse,
                        float* __restrict__ delta, float* __restrict__ dq, int T, int H, int group,
                        int D, float scale, float scale_log2) {
  constexpr int kLd = kD + 8;
  constexpr int kWarpRows = 16 * kM;
  constexpr int kBr = kWarpRows * kWarps;
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

  const int warp_row0 = q0 + warp * kWarpRows;
  const int64_t stat_off = (static_cast<int64_t>(b) * H + h) * T;
  float lse_r[kM][2], delta_r[kM][2] = {};
#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + 16 * t + lane / 4 + 8 * r;
      lse_r[t][r] = row < T ? lse[stat_off + row] * kLog2e : 0.0f;
    }
  }

  float dq_acc[kM][kD / 8][4];
#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int n = 0; n < kD / 8; ++n) {
      dq_acc[t][n][0] = dq_acc[t][n][1] = dq_acc[t][n][2] = dq_acc[t][n][3] = 0.0f;
    }
  }
  uint32_t q_frag[kQRegs ? kM : 1][kQRegs ? kD / 16 : 1][4];
  uint32_t do_frag[kQRegs ? kM : 1][kQRegs ? kD / 16 : 1][4];

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
    if (i == 0) {
      // delta = Σ_d dO·O for the warp's rows (the softmax backward's row term), dO from its tile,
      // O from device memory: two lanes per row, each over half of the columns. Written out for
      // the dK/dV kernel, which runs next.
#pragma unroll
      for (int t = 0; t < kM; ++t) {
        const int local = warp * kWarpRows + 16 * t + lane / 2, row = q0 + local;
        float sum = 0.0f;
        if (row < T) {
          const bf16* o_row =
              o + (static_cast<int64_t>(b) * T + row) * o_stride + static_cast<int64_t>(h) * D;
#pragma unroll
          for (int col = (lane % 2) * (kD / 2); col < (lane % 2 + 1) * (kD / 2); col += 8) {
            if (col >= D) break;
            const uint4 ov = *reinterpret_cast<const uint4*>(o_row + col);
            const uint4 dv = *reinterpret_cast<const uint4*>(do_s + local * kLd + col);
            const auto* op = reinterpret_cast<const __nv_bfloat162*>(&ov);
            const auto* dp2 = reinterpret_cast<const __nv_bfloat162*>(&dv);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float2 a = __bfloat1622float2(op[e]), d2 = __bfloat1622float2(dp2[e]);
              sum += a.x * d2.x + a.y * d2.y;
            }
          }
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        if (lane % 2 == 0 && row < T) delta[stat_off + row] = sum;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          delta_r[t][r] = __shfl_sync(0xffffffffu, sum, 2 * (lane / 4 + 8 * r));
        }
      }
    }
    if constexpr (kQRegs) {
      if (i == 0) {
#pragma unroll
        for (int t = 0; t < kM; ++t) {
#pragma unroll
          for (int kk = 0; kk < kD / 16; ++kk) {
            if (kk >= k_steps) break;
            load_a(q_frag[t][kk], q_s, kLd, warp * kWarpRows + 16 * t, kk * 16, lane);
            load_a(do_frag[t][kk], do_s, kLd, warp * kWarpRows + 16 * t, kk * 16, lane);
          }
        }
      }
    }

    const int k0 = i * kBc;
    if (k0 > warp_row0 + kWarpRows - 1) continue;  // warp-uniform: the tile is after its rows
    const bool needs_mask = k0 + kBc - 1 > warp_row0 || k0 + kBc > T;
    const bf16* k_s = k_tile(st);
    const bf16* v_s = v_tile(st);

    // S = Q Kᵀ and dP = dO Vᵀ.
    float s[kM][kBc / 8][4], dp[kM][kBc / 8][4];
#pragma unroll
    for (int t = 0; t < kM; ++t) {
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[t][n][e] = dp[t][n][e] = 0.0f;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      if (kk >= k_steps) break;
      uint32_t aq[kM][4], ao[kM][4];
#pragma unroll
      for (int t = 0; t < kM; ++t) {
        if constexpr (kQRegs) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            aq[t][e] = q_frag[t][kk][e];
            ao[t][e] = do_frag[t][kk][e];
          }
        } else {
          load_a(aq[t], q_s, kLd, warp * kWarpRows + 16 * t, kk * 16, lane);
          load_a(ao[t], do_s, kLd, warp * kWarpRows + 16 * t, kk * 16, lane);
        }
      }
#pragma unroll
      for (int n = 0; n < kBc / 8; n += 2) {
        uint32_t bk[4], bv[4];
        load_b_trans2(bk, k_s, kLd, n * 8, kk * 16, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(s[t][n], s[t][n + 1], aq[t], bk);
        load_b_trans2(bv, v_s, kLd, n * 8, kk * 16, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(dp[t][n], dp[t][n + 1], ao[t], bv);
      }
    }
    // P, then dS = P ∘ (dP − delta).
#pragma unroll
    for (int t = 0; t < kM; ++t) {
      const int row_a = warp_row0 + 16 * t + lane / 4, row_b = row_a + 8;
#pragma unroll
      for (int n = 0; n < kBc / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + n * 8 + 2 * c + (e & 1);
          const int row = e < 2 ? row_a : row_b;
          const float p = (!needs_mask || (key <= row && row < T))
                              ? fast_exp2(fmaf(s[t][n][e], scale_log2, -lse_r[t][e / 2]))
                              : 0.0f;
          dp[t][n][e] = p * (dp[t][n][e] - delta_r[t][e / 2]);
        }
      }
    }
    // dQ += dS K (scaled at the end).
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[kM][4];
#pragma unroll
      for (int t = 0; t < kM; ++t) c_to_a(a[t], dp[t][2 * kk], dp[t][2 * kk + 1]);
#pragma unroll
      for (int n = 0; n < kD / 8; n += 2) {
        if (n * 8 >= D) break;
        uint32_t bk[4];
        load_b2(bk, k_s, kLd, kk * 16, n * 8, lane);
#pragma unroll
        for (int t = 0; t < kM; ++t) mma_pair(dq_acc[t][n], dq_acc[t][n + 1], a[t], bk);
      }
    }
  }

#pragma unroll
  for (int t = 0; t < kM; ++t) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + 16 * t + lane / 4 + 8 * r;
      if (row >= T) continue;
      float* dq_row = dq + q_off + static_cast<int64_t>(row) * D;
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        if (n * 8 >= D) break;
        *reinterpret_cast<float2*>(dq_row + n * 8 + 2 * c) =
            make_float2(dq_acc[t][n][2 * r] * scale, dq_acc[t][n][2 * r + 1] * scale);
      }
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

// The forward's shape: kWarps warps of kM 16-row tiles each, key tile kBc, __launch_bounds__'
// minimum blocks per SM, Q fragments held in registers.
template <int kBc, int kWarps, int kM, int kMinBlocks, bool kQRegs>
struct Fwd {};

template <int kD, int kBc, int kWarps, int kM, int kMinBlocks, bool kQRegs>
void launch_forward(Fwd<kBc, kWarps, kM, kMinBlocks, kQRegs>, const bf16* q, const bf16* k,
                    const bf16* v, bf16* o, float* lse, const QkvShape& s, float scale,
                    cudaStream_t stream) {
  constexpr int kRows = 16 * kM * kWarps;
  const size_t smem = tile_bytes<kD>(kRows + 2 * kBc);
  const auto kernel = attention_forward_kernel<kD, kBc, kWarps, kM, kMinBlocks, kQRegs>;
  allow_shared(kernel, smem);
  const dim3 grid(tiles(s.seq, kRows), static_cast<unsigned>(s.n_heads),
                  static_cast<unsigned>(s.batch));
  kernel<<<grid, kWarps * 32, smem, stream>>>(q, k, v, o, lse, s.seq, s.n_heads,
                                              s.n_heads / s.n_kv_heads, s.head_dim, scale * kLog2e);
  check_launch("attention_forward_kernel");
}

// A backward kernel's shape: kWarps warps of kM 16-row tiles each (keys for dK/dV, query rows
// for dQ), the other side's tile kTile, this side's fragments held in registers, and
// __launch_bounds__' minimum blocks per SM (1 leaves the register budget to the compiler).
template <int kWarps, int kM, int kTile, bool kRegs, int kMinBlocks = 1>
struct Bwd {};

template <int kD, int kWarps, int kM, int kTile, bool kRegs, int kMinBlocks>
void launch_dkdv(Bwd<kWarps, kM, kTile, kRegs, kMinBlocks>, const bf16* q, const bf16* k,
                 const bf16* v, const bf16* d_o, const float* lse, const float* delta, float* dk,
                 float* dv, const QkvShape& s, float scale, cudaStream_t stream) {
  constexpr int kKeys = 16 * kM * kWarps;
  const size_t kv_bytes = tile_bytes<kD>(2 * kKeys);
  const size_t two_stages = kv_bytes + 2 * dkdv_stage_bytes<kD, kTile>();
  const dim3 grid(tiles(s.seq, kKeys), static_cast<unsigned>(s.n_kv_heads),
                  static_cast<unsigned>(s.batch));
  const int group = s.n_heads / s.n_kv_heads;
  const auto go = [&](auto kernel, size_t smem) {
    allow_shared(kernel, smem);
    kernel<<<grid, kWarps * 32, smem, stream>>>(q, k, v, d_o, lse, delta, dk, dv, s.seq, s.n_heads,
                                                group, s.head_dim, scale, scale * kLog2e);
  };
  if (two_stages <= max_shared_per_block()) {
    go(attention_dkdv_kernel<kD, kWarps, kM, kTile, 2, kRegs, kMinBlocks>, two_stages);
  } else {
    go(attention_dkdv_kernel<kD, kWarps, kM, kTile, 1, kRegs, kMinBlocks>,
       kv_bytes + dkdv_stage_bytes<kD, kTile>());
  }
  check_launch("attention_dkdv_kernel");
}

// Also writes delta (the dK/dV kernel's input).
template <int kD, int kWarps, int kM, int kTile, bool kRegs, int kMinBlocks>
void launch_dq(Bwd<kWarps, kM, kTile, kRegs, kMinBlocks>, const bf16* q, const bf16* k,
               const bf16* v, const bf16* o, const bf16* d_o, const float* lse, float* delta,
               float* dq, const QkvShape& s, float scale, cudaStream_t stream) {
  constexpr int kRows = 16 * kM * kWarps;
  const size_t qdo_bytes = tile_bytes<kD>(2 * kRows);
  const size_t two_stages = qdo_bytes + 2 * tile_bytes<kD>(2 * kTile);
  const dim3 grid(tiles(s.seq, kRows), static_cast<unsigned>(s.n_heads),
                  static_cast<unsigned>(s.batch));
  const int group = s.n_heads / s.n_kv_heads;
  const auto go = [&](auto kernel, size_t smem) {
    allow_shared(kernel, smem);
    kernel<<<grid, kWarps * 32, smem, stream>>>(q, k, v, o, d_o, lse, delta, dq, s.seq, s.n_heads,
                                                group, s.head_dim, scale, scale * kLog2e);
  };
  if (two_stages <= max_shared_per_block()) {
    go(attention_dq_kernel<kD, kWarps, kM, kTile, 2, kRegs, kMinBlocks>, two_stages);
  } else {
    go(attention_dq_kernel<kD, kWarps, kM, kTile, 1, kRegs, kMinBlocks>,
       qdo_bytes + tile_bytes<kD>(2 * kTile));
  }
  check_launch("attention_dq_kernel");
}

// The production shapes per head_dim bucket (the variants below are measured against them by
// cuda_train_attention_test's ForwardVariants / BackwardVariants benchmarks).
using Fwd64 = Fwd<32, 4, 1, 1, false>;
using Fwd128 = Fwd<64, 4, 1, 1, false>;
using Fwd256 = Fwd<32, 4, 1, 1, false>;
using Dkdv64 = Bwd<4, 1, 32, false, 4>;  // 128 registers: 4 blocks per SM
using Dq64 = Bwd<4, 1, 32, false, 4>;
using Bwd128 = Bwd<4, 1, 64, false>;
using Bwd256 = Bwd<2, 1, 32, false>;

template <int kD, typename DkdvShape, typename DqShape>
void launch_backward(DkdvShape dkdv_shape, DqShape dq_shape, const bf16* q, const bf16* k,
                     const bf16* v, const bf16* o, const bf16* d_o, const float* lse, float* dq,
                     float* dk, float* dv, const QkvShape& s, float scale, float* delta,
                     cudaStream_t stream) {
  launch_dq<kD>(dq_shape, q, k, v, o, d_o, lse, delta, dq, s, scale, stream);
  launch_dkdv<kD>(dkdv_shape, q, k, v, d_o, lse, delta, dk, dv, s, scale, stream);
}

}  // namespace

void attention_forward(const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse,
                       QkvShape shape, float scale, cudaStream_t stream) {
  check_shape(shape, "CUDA attention_forward");
  if (shape.batch == 0 || shape.seq == 0) return;
  if (shape.head_dim <= 64) {
    launch_forward<64>(Fwd64{}, q, k, v, o, lse, shape, scale, stream);
  } else if (shape.head_dim <= 128) {
    launch_forward<128>(Fwd128{}, q, k, v, o, lse, shape, scale, stream);
  } else {
    launch_forward<256>(Fwd256{}, q, k, v, o, lse, shape, scale, stream);
  }
}

int attention_forward_variants() { return 9; }

void attention_forward_variant(int variant, const bf16* q, const bf16* k, const bf16* v, bf16* o,
                               float* lse, QkvShape shape, float scale, cudaStream_t stream) {
  check_shape(shape, "CUDA attention_forward_variant");
  if (shape.head_dim > 64) {
    fail(KILN_ERR_UNSUPPORTED, "attention_forward_variant: head_dim <= 64 only");
  }
  if (shape.batch == 0 || shape.seq == 0) return;
  const auto run = [&](auto tuning) {
    launch_forward<64>(tuning, q, k, v, o, lse, shape, scale, stream);
  };
  switch (variant) {  // (key tile, warps, 16-row tiles per warp, min blocks per SM, Q in registers)
    case 0:
      return run(Fwd64{});  // production
    case 1:
      return run(Fwd<64, 4, 2, 1, true>{});  // 2 tiles per warp: 2 blocks per SM (209 registers)
    case 2:
      return run(Fwd<64, 4, 1, 5, false>{});
    case 3:
      return run(Fwd<32, 4, 1, 5, false>{});
    case 4:
      return run(Fwd<64, 4, 1, 1, false>{});  // production before 2026-11-25
    case 5:
      return run(Fwd<64, 2, 1, 8, false>{});
    case 6:
      return run(Fwd<64, 8, 1, 2, false>{});
    case 7:
      return run(Fwd<32, 4, 1, 1, true>{});
    case 8:
      return run(Fwd<32, 4, 1, 4, true>{});
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
  if (shape.head_dim <= 64) {
    launch_backward<64>(Dkdv64{}, Dq64{}, q, k, v, o, d_o, lse, dq, dk, dv, shape, scale, workspace,
                        stream);
  } else if (shape.head_dim <= 128) {
    launch_backward<128>(Bwd128{}, Bwd128{}, q, k, v, o, d_o, lse, dq, dk, dv, shape, scale,
                         workspace, stream);
  } else {
    launch_backward<256>(Bwd256{}, Bwd256{}, q, k, v, o, d_o, lse, dq, dk, dv, shape, scale,
                         workspace, stream);
  }
}

int attention_backward_variants() { return 9; }

void attention_backward_variant(int dkdv_variant, int dq_variant, const bf16* q, const bf16* k,
                                const bf16* v, const bf16* o, const float* lse, const bf16* d_o,
                                float* dq, float* dk, float* dv, QkvShape shape, float scale,
                                float* workspace, cudaStream_t stream) {
  check_shape(shape, "CUDA attention_backward_variant");
  if (shape.head_dim > 64) {
    fail(KILN_ERR_UNSUPPORTED, "attention_backward_variant: head_dim <= 64 only");
  }
  const int n = attention_backward_variants();
  if (dkdv_variant < -1 || dkdv_variant >= n || dq_variant < -1 || dq_variant >= n) {
    fail(KILN_ERR_INVALID_ARGUMENT, "attention_backward_variant: no variant " +
                                        std::to_string(dkdv_variant) + " / " +
                                        std::to_string(dq_variant));
  }
  if (shape.batch == 0 || shape.seq == 0) return;
  // (warps, 16-row tiles per warp, the other side's tile, this side's fragments in registers,
  // min blocks per SM)
  const auto with = [&](int variant, auto&& body) {
    switch (variant) {
      case 0:
        return body(Dkdv64{}, Dq64{});  // production
      case 1:
        return body(Bwd<4, 2, 16, true>{}, Bwd<4, 2, 32, true>{});  // 2 tiles per warp
      case 2:                                                       // production before 2026-11-25
        return body(Bwd<4, 1, 64, false, 3>{}, Bwd<4, 1, 64, false>{});
      case 3:
        return body(Bwd<4, 1, 64, false>{}, Bwd<4, 1, 64, false, 3>{});
      case 4:
        return body(Bwd<4, 1, 32, false>{}, Bwd<4, 1, 32, false>{});
      case 5:
        return body(Bwd<4, 1, 16, false, 4>{}, Bwd<4, 1, 16, false, 4>{});
      case 6:
        return body(Bwd<2, 1, 64, false, 6>{}, Bwd<8, 1, 64, false, 2>{});
      case 7:
        return body(Bwd<4, 1, 32, true, 4>{}, Bwd<4, 1, 32, true, 4>{});
      case 8:
        return body(Bwd<4, 1, 32, true, 3>{}, Bwd<4, 1, 32, true, 3>{});
      default:
        return;
    }
  };
  // The dQ kernel writes delta, which the dK/dV kernel reads: run it first.
  if (dq_variant >= 0) {
    with(dq_variant, [&](auto, auto dq_shape) {
      launch_dq<64>(dq_shape, q, k, v, o, d_o, lse, workspace, dq, shape, scale, stream);
    });
  }
  if (dkdv_variant >= 0) {
    with(dkdv_variant, [&](auto dkdv_shape, auto) {
      launch_dkdv<64>(dkdv_shape, q, k, v, d_o, lse, workspace, dk, dv, shape, scale, stream);
    });
  }
}

}  // namespace kiln::cuda::train

// The integer-dot form of the one-row quantised products (quant_gemv.cu, QuantDot::kInt8): x is
// quantised per 32-element block to int8 with a float scale, in shared memory by every block of
// the product (no extra kernel, no global scratch), and each 32-element weight chunk's 4/5/6/8-bit
// integers are dotted with it by __dp4a, four products per instruction, the block scales applied
// once per chunk in float. This is the approximation llama.cpp's CUDA MMVQ kernels make (q8_1
// activations); accuracy and the choices below are argued in docs/architecture.md.
//
// Quantisation of a block of 32 values v (each exactly the BF16 value the float path would use):
//   d = RN(max|v| / 127),  xi = round-half-even(RN(v · RN(127 / max|v|)))
// (d = xi = 0 when max|v| < 2^-100, where the reciprocal could overflow),
// so |xi| <= 127 and x̂ = d · xi differs from v by at most d / 2 (1 + 5e-5) per element (a
// reciprocal per block rather than a division per element: quantising x costs each block of the
// product ~10 instructions per 8 elements). The integer sums Σxi of each 16-element half are
// stored too: the mins (Q4_1, Q5_1, K-quants) and offsets (8, 16, Q6_K's 32) are folded in as
// m · d · Σxi, which makes each chunk's result the exact product of the weights with x̂ (rounded
// once or twice in float32). Folding them with the sum of the unquantised v instead would leave
// the error Σ (w_i + m) e_i instead of Σ w_i e_i (e_i = x̂_i − v_i): larger, since the K-quant
// offsets m are of the order of the weights themselves.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "quant_blocks.cuh"

namespace kiln::cuda::quant_detail {

// Shared-memory layout of the quantised x of k elements (k a multiple of 32): the int8 values
// (16-byte aligned, read 16 bytes at a time), then one float scale per 32-element block, then one
// int sum per 16-element half-block.
struct Int8X {
  int8_t* q;
  float* d;
  int* sum16;
};

inline size_t int8_x_bytes(int64_t k) {
  return static_cast<size_t>(k) + static_cast<size_t>(k / 32) * sizeof(float) +
         static_cast<size_t>(k / 16) * sizeof(int);
}

__device__ __forceinline__ Int8X int8_x_layout(void* smem, int64_t k) {
  auto* q = static_cast<int8_t*>(smem);
  auto* d = reinterpret_cast<float*>(q + k);
  return Int8X{q, d, reinterpret_cast<int*>(d + k / 32)};
}

// Quantises 8 consecutive values v (elements 8g .. 8g + 7) into xs: the four lanes 4j .. 4j + 3
// of a warp hold one 32-element block (g = 4b .. 4b + 3), so its max and sums take two shuffles.
// Every lane of the warp must call it (`store` false for lanes past the end, with v = 0).
__device__ __forceinline__ void quantize_8(const float* v, int64_t g, bool store, const Int8X& xs) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(v[i]));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  // Blocks below 2^-100 (where 127 / max|x| could overflow) become zeros.
  const bool zero = amax < 0x1p-100f;
  const float d = zero ? 0.0f : __fdiv_rn(amax, 127.0f);
  const float inv = zero ? 0.0f : __fdiv_rn(127.0f, amax);
  uint32_t packed[2] = {0u, 0u};
  int sum = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int q = __float2int_rn(__fmul_rn(v[i], inv));
    sum += q;
    packed[i / 4] |= (static_cast<uint32_t>(q) & 0xFFu) << (8 * (i % 4));
  }
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  if (!store) return;
  *reinterpret_cast<uint2*>(xs.q + 8 * g) = make_uint2(packed[0], packed[1]);
  const int part = static_cast<int>(g % 4);
  if (part % 2 == 0) xs.sum16[g / 2] = sum;  // g / 2 = 2b + part / 2
  if (part == 0) xs.d[g / 4] = d;
}

// Elements 0 .. 7 at p (BF16, 16-byte aligned) as float, in one 16-byte load.
__device__ __forceinline__ void load_bf16_8(const bf16* p, float* v) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* x2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(x2[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}

// Elements 8g .. 8g + 7 of the BF16 vector x (16-byte aligned) quantised into xs, with
// quantize_8's contract (every lane of the warp calls it; `in` false past the end).
__device__ __forceinline__ void quantize_bf16_8(const bf16* x, int64_t g, bool in,
                                                const Int8X& xs) {
  float v[8] = {};
  if (in) load_bf16_8(x + 8 * g, v);
  quantize_8(v, g, in, xs);
}

// Asks for the first 4 KiB of the `bytes` bytes at p (a row: whole rows of k up to ~7000 in Q4_K,
// ~3800 in Q8_0) to be brought into L2, one 128-byte line per lane; the loop's own loads, a
// chunk or two ahead, cover the rest.
__device__ __forceinline__ void prefetch_l2(const uint8_t* p, size_t bytes, int lane) {
  const size_t offset = 128 * static_cast<size_t>(lane);
  if (offset < bytes) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + offset));
}

// The chunk's 32 int8 values of x as 8 words.
__device__ __forceinline__ void x_words(const Int8X& xs, int64_t c, int* xw) {
  const auto* p = reinterpret_cast<const uint4*>(xs.q + c * 32);
  const uint4 a = p[0], b = p[1];
  xw[0] = static_cast<int>(a.x), xw[1] = static_cast<int>(a.y);
  xw[2] = static_cast<int>(a.z), xw[3] = static_cast<int>(a.w);
  xw[4] = static_cast<int>(b.x), xw[5] = static_cast<int>(b.y);
  xw[6] = static_cast<int>(b.z), xw[7] = static_cast<int>(b.w);
}

// Σ over chunk c of w · x̂ (one weight row starting at `row`).
template <QuantFormat F>
__device__ __forceinline__ float chunk_dot_int8(const uint8_t* row, int64_t c, const Int8X& xs);

// Q8_0: d_w · d_x · Σ q·xi. The 34-byte block B is read as the 9 aligned words from B & ~3 (the
// block starts at 0 or 2 bytes into a word); when it starts at 0 the 9th word would reach 2 bytes
// past the block (past the matrix for its last block), so its low half is read alone instead.
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q8_0>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  const uint8_t* b = row + c * 34;
  const auto a = reinterpret_cast<uintptr_t>(b);
  const auto* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const bool odd = (a & 2u) != 0;
  uint32_t v[9];
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = w[i];
  v[8] = odd ? w[8] : static_cast<uint32_t>(ld16(b + 32));
  const float d = half_bits(static_cast<uint16_t>(odd ? v[0] >> 16 : v[0] & 0xFFFFu));
  int xw[8];
  x_words(xs, c, xw);
  int sumi = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const uint32_t q = odd ? v[i + 1] : __funnelshift_r(v[i], v[i + 1], 16);
    sumi = __dp4a(static_cast<int>(q), xw[i], sumi);
  }
  return xs.d[c] * (d * static_cast<float>(sumi));
}

// Σ xi over the chunk (both halves).
__device__ __forceinline__ int x_sum(const Int8X& xs, int64_t c) {
  return xs.sum16[2 * c] + xs.sum16[2 * c + 1];
}

// Σ q·xi for a chunk of 4-bit quants in ggml's legacy order (element j < 16: the low nibble of
// byte j, element j + 16: its high nibble) given as 4 words, plus (kFive) the fifth bits qh (bit j
// for element j), spread to bit 4 of each byte.
template <bool kFive>
__device__ __forceinline__ int legacy_dot(const uint32_t* qs, uint32_t qh, const int* xw) {
  int sumi = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint32_t lo = qs[i] & 0x0F0F0F0Fu, hi = (qs[i] >> 4) & 0x0F0F0F0Fu;
    if constexpr (kFive) {
      const uint32_t bl = qh >> (4 * i), bh = qh >> (16 + 4 * i);
      lo |= ((bl << 4) & 0x10u) | ((bl << 11) & 0x1000u) | ((bl << 18) & 0x100000u) |
            ((bl << 25) & 0x10000000u);
      hi |= ((bh << 4) & 0x10u) | ((bh << 11) & 0x1000u) | ((bh << 18) & 0x100000u) |
            ((bh << 25) & 0x10000000u);
    }
    sumi = __dp4a(static_cast<int>(lo), xw[i], sumi);
    sumi = __dp4a(static_cast<int>(hi), xw[i + 4], sumi);
  }
  return sumi;
}

// Q4_0 (18 bytes: d, 16 quant bytes): w = d·(q − 8), so Σ w·x̂ = d_x · d · (Σ q·xi − 8·Σ xi).
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q4_0>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  uint32_t bw[5];
  ld_block_words<18>(row + c * 18, bw);
  uint32_t qs[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) qs[i] = __funnelshift_r(bw[i], bw[i + 1], 16);
  int xw[8];
  x_words(xs, c, xw);
  const int total = legacy_dot<false>(qs, 0u, xw) - 8 * x_sum(xs, c);
  return xs.d[c] * (half_bits(static_cast<uint16_t>(bw[0] & 0xFFFFu)) * static_cast<float>(total));
}

// Q4_1 (20 bytes: d, m, 16 quant bytes): w = d·q + m, so Σ w·x̂ = d_x · (d·Σ q·xi + m·Σ xi).
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q4_1>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  uint32_t bw[5];
  ld_block_words<20>(row + c * 20, bw);
  int xw[8];
  x_words(xs, c, xw);
  const int sumi = legacy_dot<false>(bw + 1, 0u, xw);
  const float d = half_bits(static_cast<uint16_t>(bw[0] & 0xFFFFu));
  const float m = half_bits(static_cast<uint16_t>(bw[0] >> 16));
  return xs.d[c] * (d * static_cast<float>(sumi) + m * static_cast<float>(x_sum(xs, c)));
}

// Q5_0 (22 bytes: d, qh, 16 quant bytes): w = d·(q − 16), q = nibble | fifth bit << 4.
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q5_0>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  uint32_t bw[6];
  ld_block_words<22>(row + c * 22, bw);
  const uint32_t qh = __funnelshift_r(bw[0], bw[1], 16);
  uint32_t qs[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) qs[i] = __funnelshift_r(bw[i + 1], bw[i + 2], 16);
  int xw[8];
  x_words(xs, c, xw);
  const int total = legacy_dot<true>(qs, qh, xw) - 16 * x_sum(xs, c);
  return xs.d[c] * (half_bits(static_cast<uint16_t>(bw[0] & 0xFFFFu)) * static_cast<float>(total));
}

// Q5_1 (24 bytes: d, m, qh, 16 quant bytes): w = d·q + m.
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q5_1>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  uint32_t bw[6];
  ld_block_words<24>(row + c * 24, bw);
  int xw[8];
  x_words(xs, c, xw);
  const int sumi = legacy_dot<true>(bw + 2, bw[1], xw);
  const float d = half_bits(static_cast<uint16_t>(bw[0] & 0xFFFFu));
  const float m = half_bits(static_cast<uint16_t>(bw[0] >> 16));
  return xs.d[c] * (d * static_cast<float>(sumi) + m * static_cast<float>(x_sum(xs, c)));
}

// Q4_K: chunk c is sub-block s = c % 8 of super-block c / 8 (as dequant_k45): w = d·sc·q −
// dmin·mn, so Σ w·x̂ = d_x · (d · (sc·Σ q·xi) − dmin · (mn·Σ xi)); both integer products are
// below 2^24 (|sc·Σ q·xi| <= 63·15·127·32), exact in float.
template <bool kFive>
__device__ __forceinline__ float chunk_dot_k45(const uint8_t* row, int64_t c, const Int8X& xs) {
  constexpr int kBytes = kFive ? 176 : 144;
  const uint8_t* b = row + (c / 8) * kBytes;  // 16-byte aligned (rows are whole blocks)
  const int s = static_cast<int>(c % 8);
  const uint32_t dm = *reinterpret_cast<const uint32_t*>(b);
  uint32_t sw[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) sw[i] = reinterpret_cast<const uint32_t*>(b + 4)[i];
  int sc = 0, mn = 0;
  scale_min_k4(s, sw, sc, mn);
  const auto* qs = reinterpret_cast<const uint4*>(b + (kFive ? 48 : 16) + 32 * (s / 2));
  const uint4 q0 = qs[0], q1 = qs[1];
  const uint32_t q[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
  uint32_t h[8] = {};
  if constexpr (kFive) {
    const auto* qh = reinterpret_cast<const uint4*>(b + 16);
    const uint4 h0 = qh[0], h1 = qh[1];
    const uint32_t hv[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = ((hv[i] >> s) & 0x01010101u) << 4;
  }
  const int shift = 4 * (s % 2);
  int xw[8];
  x_words(xs, c, xw);
  int sumi = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sumi = __dp4a(static_cast<int>(((q[i] >> shift) & 0x0F0F0F0Fu) | h[i]), xw[i], sumi);
  }
  const float d = half_bits(static_cast<uint16_t>(dm & 0xFFFFu));
  const float dmin = half_bits(static_cast<uint16_t>(dm >> 16));
  return xs.d[c] *
         (d * static_cast<float>(sc * sumi) - dmin * static_cast<float>(mn * x_sum(xs, c)));
}

template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q4_K>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  return chunk_dot_k45<false>(row, c, xs);
}

// Q4_K, two chunks per call ("wide" layouts of quant_gemv_prequant.cu): sub-blocks 2j and 2j + 1
// of a super-block are the low and high nibbles of the same 32 quant bytes, so pair p (chunks 2p
// and 2p + 1, j = p % 4) loads those bytes, d/dmin and the scales once for 64 elements instead of
// twice. Each chunk's term is chunk_dot_k45's; their sum is rounded once more than two calls.
__device__ __forceinline__ float pair_dot_q4k(const uint8_t* row, int64_t p, const Int8X& xs) {
  const uint8_t* b = row + (p / 4) * 144;
  const int j = static_cast<int>(p % 4);
  const uint32_t dm = *reinterpret_cast<const uint32_t*>(b);
  uint32_t sw[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) sw[i] = reinterpret_cast<const uint32_t*>(b + 4)[i];
  int sc0 = 0, mn0 = 0, sc1 = 0, mn1 = 0;
  scale_min_k4(2 * j, sw, sc0, mn0);
  scale_min_k4(2 * j + 1, sw, sc1, mn1);
  const auto* qs = reinterpret_cast<const uint4*>(b + 16 + 32 * j);
  const uint4 q0 = qs[0], q1 = qs[1];
  const uint32_t q[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
  const int64_t c0 = 2 * p, c1 = 2 * p + 1;
  int xw0[8], xw1[8];
  x_words(xs, c0, xw0);
  x_words(xs, c1, xw1);
  int sum0 = 0, sum1 = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sum0 = __dp4a(static_cast<int>(q[i] & 0x0F0F0F0Fu), xw0[i], sum0);
    sum1 = __dp4a(static_cast<int>((q[i] >> 4) & 0x0F0F0F0Fu), xw1[i], sum1);
  }
  const float d = half_bits(static_cast<uint16_t>(dm & 0xFFFFu));
  const float dmin = half_bits(static_cast<uint16_t>(dm >> 16));
  return xs.d[c0] *
             (d * static_cast<float>(sc0 * sum0) - dmin * static_cast<float>(mn0 * x_sum(xs, c0))) +
         xs.d[c1] *
             (d * static_cast<float>(sc1 * sum1) - dmin * static_cast<float>(mn1 * x_sum(xs, c1)));
}

// Q5_K: as Q4_K with the fifth bit of element l in bit s of qh[l] (176-byte blocks); |sc·Σ q·xi|
// <= 63·31·127·32 < 2^24.
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q5_K>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  return chunk_dot_k45<true>(row, c, xs);
}

// Q6_K: chunk c is group g = c % 8 of super-block c / 8 (as dequant_chunk<Q6_K>): two 16-element
// scale groups, w = d · sc_j · (q − 32) with q in [0, 63], so Σ w·x̂ = d_x · d · Σ_j sc_j · (Σ q·xi
// − 32 · Σ xi) over the halves j; the integer total is below 2^24 (2 · 128 · 16 · 32 · 127). ql and
// qh start at the block's parity (210-byte blocks); the 9-word reads stay inside it.
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q6_K>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  const uint8_t* b = row + (c / 8) * 210;
  const int g = static_cast<int>(c % 8), half = g / 4, k = g % 4;
  uint32_t ql[8], qh[8];
  ld32_aligned2(b + 64 * half + 32 * (k % 2), ql);
  ld32_aligned2(b + 128 + 32 * half, qh);
  const uint16_t scales = ld16(b + 192 + 8 * half + 2 * k);  // scales 2k, 2k + 1 of this half
  const float d = half_bits(ld16(b + 208));
  const int shift = k < 2 ? 0 : 4, hshift = 2 * k;
  int xw[8];
  x_words(xs, c, xw);
  int sum0 = 0, sum1 = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const uint32_t q = ((ql[i] >> shift) & 0x0F0F0F0Fu) | (((qh[i] >> hshift) & 0x03030303u) << 4);
    if (i < 4) {
      sum0 = __dp4a(static_cast<int>(q), xw[i], sum0);
    } else {
      sum1 = __dp4a(static_cast<int>(q), xw[i], sum1);
    }
  }
  const int sc0 = static_cast<int8_t>(scales & 0xFFu), sc1 = static_cast<int8_t>(scales >> 8);
  const int total = sc0 * (sum0 - 32 * xs.sum16[2 * c]) + sc1 * (sum1 - 32 * xs.sum16[2 * c + 1]);
  return xs.d[c] * (d * static_cast<float>(total));
}

}  // namespace kiln::cuda::quant_detail

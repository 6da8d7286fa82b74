// The integer-dot form of the one-row quantised products (quant_gemv.cu, QuantDot::kInt8): x is
// quantised per 32-element block to int8 with a float scale, in shared memory by every block of
// the product (no extra kernel, no global scratch), and each 32-element weight chunk's 4/6/8-bit
// integers are dotted with it by __dp4a, four products per instruction, the block scales applied
// once per chunk in float. This is the approximation llama.cpp's CUDA MMVQ kernels make (q8_1
// activations); accuracy and the choices below are argued in docs/architecture.md.
//
// Quantisation of a block of 32 values v (each exactly the BF16 value the float path would use):
//   d = RN(max|v| / 127),  xi = round-half-even(RN(v / d))  (|xi| <= 127; d = 0 gives xi = 0),
// so x̂ = d · xi differs from v by at most d / 2 per element. The integer sums Σxi of each
// 16-element half are stored too: K-quant mins and the Q6_K offset of 32 are folded in as
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

// The formats with an integer path.
constexpr bool has_int8_dot(QuantFormat f) {
  return f == QuantFormat::Q8_0 || f == QuantFormat::Q4_K || f == QuantFormat::Q6_K;
}

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

// Quantises the 32 values held one per lane (v) into block b of xs; all lanes of the warp take
// part.
__device__ __forceinline__ void quantize_block(float v, int64_t b, const Int8X& xs) {
  const int lane = threadIdx.x % 32;
  const float amax = detail::warp_max(fabsf(v));
  const float d = __fdiv_rn(amax, 127.0f);
  const int q = d == 0.0f ? 0 : __float2int_rn(__fdiv_rn(v, d));
  xs.q[b * 32 + lane] = static_cast<int8_t>(q);
  int s = q;
#pragma unroll
  for (int offset = 8; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
  if (lane % 16 == 0) xs.sum16[2 * b + lane / 16] = s;
  if (lane == 0) xs.d[b] = d;
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

// Q4_K: chunk c is sub-block s = c % 8 of super-block c / 8 (as dequant_k45): w = d·sc·q −
// dmin·mn, so Σ w·x̂ = d_x · (d · (sc·Σ q·xi) − dmin · (mn·Σ xi)); both integer products are
// below 2^24 (|sc·Σ q·xi| <= 63·15·127·32), exact in float.
template <>
__device__ __forceinline__ float chunk_dot_int8<QuantFormat::Q4_K>(const uint8_t* row, int64_t c,
                                                                   const Int8X& xs) {
  const uint8_t* b = row + (c / 8) * 144;  // 16-byte aligned (rows are whole 144-byte blocks)
  const int s = static_cast<int>(c % 8);
  const uint32_t dm = *reinterpret_cast<const uint32_t*>(b);
  uint32_t sw[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) sw[i] = reinterpret_cast<const uint32_t*>(b + 4)[i];
  int sc = 0, mn = 0;
  scale_min_k4(s, sw, sc, mn);
  const auto* qs = reinterpret_cast<const uint4*>(b + 16 + 32 * (s / 2));
  const uint4 q0 = qs[0], q1 = qs[1];
  const uint32_t q[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
  const int shift = 4 * (s % 2);
  int xw[8];
  x_words(xs, c, xw);
  int sumi = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i)
    sumi = __dp4a(static_cast<int>((q[i] >> shift) & 0x0F0F0F0Fu), xw[i], sumi);
  const int sumx = xs.sum16[2 * c] + xs.sum16[2 * c + 1];
  const float d = half_bits(static_cast<uint16_t>(dm & 0xFFFFu));
  const float dmin = half_bits(static_cast<uint16_t>(dm >> 16));
  return xs.d[c] * (d * static_cast<float>(sc * sumi) - dmin * static_cast<float>(mn * sumx));
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

// Device-side readers of the GGUF block fields (layouts in src/formats/quant/blocks.hpp, from
// ggml-common.h), shared by the float (quant_gemv.cu) and integer (quant_dot_int8.cuh) products.
// Blocks of every format have an even size, so any field at an even offset is 2-byte aligned.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace kiln::cuda::quant_detail {

__device__ __forceinline__ float half_bits(uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ uint16_t ld16(const uint8_t* p) {
  return *reinterpret_cast<const uint16_t*>(p);
}

// N bytes from a 2-byte-aligned address as N / 4 little-endian words.
template <int N>
__device__ __forceinline__ void ld_words(const uint8_t* p, uint32_t* words) {
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    words[i] =
        static_cast<uint32_t>(ld16(p + 4 * i)) | (static_cast<uint32_t>(ld16(p + 4 * i + 2)) << 16);
  }
}

// 32 bytes from a 2-byte-aligned address p as 8 little-endian words, with 9 aligned 4-byte loads
// (half the load instructions of ld_words<32>) re-aligned by funnel shifts; no branch, so lanes
// whose addresses differ in alignment stay converged. Reads the 4-byte word holding byte p + 33,
// i.e. up to p + 35: the caller guarantees those bytes belong to the same allocation.
__device__ __forceinline__ void ld32_aligned2(const uint8_t* p, uint32_t* words) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const unsigned shift = static_cast<unsigned>(a & 2u) * 8u;  // 0 or 16 bits
  uint32_t v[9];
#pragma unroll
  for (int i = 0; i < 9; ++i) v[i] = w[i];
#pragma unroll
  for (int i = 0; i < 8; ++i) words[i] = __funnelshift_r(v[i], v[i + 1], shift);
}

// The N-byte block at the 2-byte-aligned address p (N = 18, 20, 22 or 24: a legacy block) as
// (N + 3) / 4 little-endian words starting at p, from aligned 4-byte loads that never leave the
// block except to read the 2 bytes before it when p is not 4-aligned (the previous block's: the
// first block of a matrix is 16-byte aligned); the 2-byte remainder at either end is read as a
// 2-byte load. Lanes of different alignment run the same instructions.
template <int N>
__device__ __forceinline__ void ld_block_words(const uint8_t* p, uint32_t* words) {
  constexpr int kWords = (N + 3) / 4;
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto* w = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const bool odd = (a & 2u) != 0;
  uint32_t v[kWords + 1];
#pragma unroll
  for (int i = 0; i < kWords - 1; ++i) v[i] = w[i];
  if constexpr (N % 4 == 0) {
    v[kWords - 1] = w[kWords - 1];
    v[kWords] = odd ? static_cast<uint32_t>(ld16(p + N - 2)) : 0u;
  } else {
    v[kWords - 1] = odd ? w[kWords - 1] : static_cast<uint32_t>(ld16(p + N - 2));
    v[kWords] = 0u;
  }
  const unsigned shift = odd ? 16u : 0u;
#pragma unroll
  for (int i = 0; i < kWords; ++i) words[i] = __funnelshift_r(v[i], v[i + 1], shift);
}

__device__ __forceinline__ int byte_of(const uint32_t* words, int i) {
  return static_cast<int>((words[i / 4] >> (8 * (i % 4))) & 0xFFu);
}

// K-quant 6-bit scale and min of sub-block j (kiln::quant::scale_min_k4).
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* s, int& sc, int& mn) {
  if (j < 4) {
    sc = s[j] & 63;
    mn = s[j + 4] & 63;
  } else {
    sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The same from the 12 scale bytes as three words, in registers only (indexing a byte array by the
// runtime j puts it in local memory).
__device__ __forceinline__ void scale_min_k4(int j, const uint32_t* s, int& sc, int& mn) {
  const unsigned shift = 8u * static_cast<unsigned>(j & 3);
  const uint32_t a = s[0] >> shift, b = s[1] >> shift, e = s[2] >> shift;
  if (j < 4) {
    sc = static_cast<int>(a & 63u);
    mn = static_cast<int>(b & 63u);
  } else {
    sc = static_cast<int>((e & 0x0Fu) | ((a >> 2) & 0x30u));
    mn = static_cast<int>(((e >> 4) & 0x0Fu) | ((b >> 2) & 0x30u));
  }
}

}  // namespace kiln::cuda::quant_detail

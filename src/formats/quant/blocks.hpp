// Block layouts of the ggml quantisation formats stored in GGUF files (ggml/src/ggml-common.h in
// ggml-org/ggml; the GGUF spec, docs/gguf.md "File Structure", points there for tensor types).
// Every block stores its scales as IEEE binary16 ("half", here uint16_t bit patterns) or E8M0 and
// its quants packed little-endian; the structs below have exactly the on-disk size, so one block
// is read with a single memcpy (file data is only byte-aligned).
#pragma once

#include <cstdint>

namespace kiln::quant {

// Elements per block of the legacy formats and per super-block of the K-quants.
inline constexpr int kQK32 = 32;
inline constexpr int kQK_K = 256;
// K-quant scales/mins packed as 6-bit values in 12 bytes (Q4_K, Q5_K; Q3_K uses 12 bytes too).
inline constexpr int kKScaleBytes = 12;

// Q4_0: x = (q - 8) * d, q 4-bit; element j in the low nibble of qs[j], j+16 in the high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Q4_1: x = q * d + m.
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// Q5_0: x = (q - 16) * d, q 5-bit: 4 low bits as Q4_0, bit 4 of element j is bit j of qh (LE u32).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);

// Q5_1: x = q * d + m, q 5-bit as Q5_0.
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// Q8_0: x = q * d, q int8.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK32];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q2_K: 16 sub-blocks of 16; scales[i] = 4-bit scale (low) | 4-bit min (high);
// x = d * scale * q - dmin * min, q 2-bit.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

// Q3_K: 16 sub-blocks of 16; x = d * (scale - 32) * (q - 4 * !hbit), q 2 low bits in qs, the
// third bit in hmask; scales are 16 6-bit values packed into 12 bytes.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[kKScaleBytes];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// Q4_K: 8 sub-blocks of 32; x = d * scale * q - dmin * min, 6-bit scales and mins in 12 bytes.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// Q5_K: as Q4_K with a fifth bit per element in qh.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// Q6_K: 16 sub-blocks of 16; x = d * scale * (q - 32), q 6-bit (4 low bits in ql, 2 in qh),
// scale int8.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// MXFP4 (OCP Microscaling v1.0): one E8M0 exponent shared by 32 FP4 (E2M1) values; element j in
// the low nibble of qs[j], j+16 in the high nibble.
struct BlockMXFP4 {
  uint8_t e;
  uint8_t qs[kQK32 / 2];
};
static_assert(sizeof(BlockMXFP4) == 17);

}  // namespace kiln::quant

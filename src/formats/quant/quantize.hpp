// float32 → ggml block formats, for writing GGUF files (kiln-quantize). Written from the block
// layouts (blocks.hpp) and their dequantisation formulas; every quantiser rounds to nearest, and
// the K-quant ones choose their scales by the plain rule below (no search over candidate scales,
// no importance weighting — llama.cpp's quantizer refines K-quant scales further, so its files can
// be slightly more accurate).
//   F16:  IEEE binary16, round to nearest even.
//   Q8_0: d = max|x| / 127 (stored as f16), q = round(x / d).
//   Q5_0: m = the value of largest |x|, d = m / −16 (f16), q = round(x / d) + 16 clamped to
//         0..31 (m itself lands on code 0; the other end of the range is 15·|d|).
//   Q4_K: per sub-block of 32, scale = (max − min(min, 0)) / 15 and offset = −min(min, 0); the
//         super-block factors are d = max scale / 63 and dmin = max offset / 63 (f16); each
//         sub-block keeps round(scale / d), round(offset / dmin) as 6 bits, and q = round((x +
//         dmin·m) / (d·sc)) clamped to 0..15.
//   Q6_K: per sub-block of 16, scale = max|x| / 31; d = max scale / 127 (f16); sc = round(scale /
//         d) as int8; q = round(x / (d·sc)) clamped to −32..31.
#pragma once

#include <cstdint>

#include "formats/quant/ggml_type.hpp"

namespace kiln::quant {

// True for the types quantize() writes: F32, F16, Q5_0, Q8_0, Q4_K, Q6_K.
bool can_quantize(GgmlType type);

// n float32 values (a multiple of the type's block size) → blocks at dst (row_bytes(type, n)
// bytes). Throws KILN_ERR_INTERNAL for a type can_quantize() refuses.
void quantize(GgmlType type, const float* src, uint8_t* dst, int64_t n);

// Bytes of n elements of `type` (n a multiple of its block size).
size_t quantized_bytes(GgmlType type, int64_t n);

// IEEE binary16 bits of x, rounded to nearest even (overflow to infinity, NaN kept).
uint16_t float_to_half(float x);

}  // namespace kiln::quant

// The packed sub-block scales of the K-quant formats (layouts in blocks.hpp), shared by the
// dequantisers and the CPU backend's integer dot kernels.
#pragma once

#include <cstdint>

namespace kiln::quant {

// Q4_K / Q5_K: 8 6-bit scales and 8 6-bit mins in 12 bytes. Sub-blocks 0-3 keep theirs in the
// low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 put their low 4 bits in the
// nibbles of bytes 8-11 and their top 2 bits in the spare top bits of bytes 0-3 / 4-7.
inline void scale_min_k4(int j, const uint8_t* q, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q3_K: 16 6-bit scales (biased by 32) in 12 bytes. Low 4 bits: nibbles of bytes 0-7 (low nibble
// for scales 0-7, high for 8-15); top 2 bits: bit pair (i / 4) of byte 8 + i % 4.
inline int scale_q3_k(int i, const uint8_t* s) {
  const int low = i < 8 ? (s[i] & 0x0F) : (s[i - 8] >> 4);
  const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | (high << 4)) - 32;
}

}  // namespace kiln::quant

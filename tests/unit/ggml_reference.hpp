// A float64 reference dequantiser for the ggml block formats, written from the formats'
// definitions (ggml-common.h block comments, the OCP MX spec for MXFP4) independently of
// src/formats/quant: each element is located by its index k in the block — which byte, which bits,
// which sub-block scale — and computed in float64. Shared by the dequantiser, dot-kernel and
// quantiser tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "formats/quant/ggml_type.hpp"

namespace kiln::test {

using quant::GgmlType;

// IEEE binary16 from its definition: (-1)^s × 2^(e-15) × 1.m, or 2^-14 × 0.m when e = 0.
inline double half(const uint8_t* p) {
  const int bits = p[0] | (p[1] << 8);
  const int s = bits >> 15, e = (bits >> 10) & 31, m = bits & 1023;
  double v;
  if (e == 31) {
    v = m ? std::nan("") : INFINITY;
  } else if (e == 0) {
    v = std::ldexp(m / 1024.0, -14);
  } else {
    v = std::ldexp(1.0 + m / 1024.0, e - 15);
  }
  return s ? -v : v;
}

// Bit `i` of a little-endian bit string.
inline int bit(const uint8_t* p, int i) { return (p[i / 8] >> (i % 8)) & 1; }
// The 4-bit nibble holding element j (< 32) of a 32-element block whose 16 bytes keep element
// j in the low nibble of byte j and element j + 16 in the high nibble.
inline int nibble32(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4); }

// Q3_K scales as ggml-common.h describes and ggml's reference code unpacks them: the 12 bytes as
// three little-endian 32-bit words; the low nibbles of words 0-1 and the high nibbles give the low
// 4 bits of scales 0-7 and 8-15, word 2 holds the top 2 bits, two per scale, in 2-bit groups.
inline int q3k_scale(const uint8_t* s, int sub) {
  uint32_t w[3];
  std::memcpy(w, s, 12);
  const uint32_t low_word =
      sub < 8 ? (w[sub / 4] & 0x0F0F0F0Fu) : ((w[(sub - 8) / 4] >> 4) & 0x0F0F0F0Fu);
  const int low = static_cast<int>((low_word >> (8 * (sub % 4))) & 15);
  const uint32_t high_word = (w[2] >> (2 * (sub / 4))) & 0x03030303u;
  const int high = static_cast<int>((high_word >> (8 * (sub % 4))) & 3);
  return (low | (high << 4)) - 32;
}

// Q4_K / Q5_K: 8 scales and 8 mins of 6 bits in 12 bytes: sub-blocks 0-3 in the low 6 bits of bytes
// 0-3 (scale) and 4-7 (min); sub-blocks 4-7 low 4 bits in bytes 8-11 (scale low nibble, min high
// nibble), top 2 bits in the top 2 bits of bytes 0-3 (scale) and 4-7 (min).
inline void k4_scale_min(const uint8_t* s, int sub, int& scale, int& min) {
  if (sub < 4) {
    scale = s[sub] % 64;
    min = s[4 + sub] % 64;
  } else {
    scale = (s[8 + sub - 4] % 16) + 16 * (s[sub - 4] / 64);
    min = (s[8 + sub - 4] / 16) + 16 * (s[4 + sub - 4] / 64);
  }
}

// E2M1 (OCP MX v1.0 §5.3.3): sign, 2 exponent bits (bias 1), 1 mantissa bit.
inline double e2m1(int code) {
  const int s = code >> 3, e = (code >> 1) & 3, m = code & 1;
  const double v = e == 0 ? 0.5 * m : std::ldexp(1.0 + 0.5 * m, e - 1);
  return s ? -v : v;
}

// Element k of one block.
inline double reference(GgmlType t, const uint8_t* b, int k) {
  switch (t) {
    case GgmlType::F32: {
      float f;
      std::memcpy(&f, b, 4);
      return f;
    }
    case GgmlType::F16:
      return half(b);
    case GgmlType::BF16: {
      const uint32_t bits = static_cast<uint32_t>(b[0] | (b[1] << 8)) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case GgmlType::Q4_0:
      return (nibble32(b + 2, k) - 8) * half(b);
    case GgmlType::Q4_1:
      return nibble32(b + 4, k) * half(b) + half(b + 2);
    case GgmlType::Q5_0:
      return ((nibble32(b + 6, k) | (bit(b + 2, k) << 4)) - 16) * half(b);
    case GgmlType::Q5_1:
      return (nibble32(b + 8, k) | (bit(b + 4, k) << 4)) * half(b) + half(b + 2);
    case GgmlType::Q8_0:
      return static_cast<int8_t>(b[2 + k]) * half(b);
    case GgmlType::Q2_K: {
      // scales[16] qs[64] d dmin. Each 128-element half uses 32 bytes of qs; element r of the half
      // is the 2-bit field r / 32 of byte r % 32. Sub-blocks of 16 in element order.
      const uint8_t* scales = b;
      const uint8_t* qs = b + 16;
      const int q = (qs[32 * (k / 128) + k % 32] >> (2 * ((k % 128) / 32))) & 3;
      const int sub = k / 16;
      return half(b + 80) * (scales[sub] & 15) * q - half(b + 82) * (scales[sub] >> 4);
    }
    case GgmlType::Q3_K: {
      // hmask[32] qs[64] scales[12] d. Low 2 bits as Q2_K; bit k / 32 of hmask[k % 32] is the
      // high bit, and a clear high bit means q - 4.
      const uint8_t* hmask = b;
      const uint8_t* qs = b + 32;
      const int low = (qs[32 * (k / 128) + k % 32] >> (2 * ((k % 128) / 32))) & 3;
      const int q = low - ((hmask[k % 32] >> (k / 32)) & 1 ? 0 : 4);
      return half(b + 108) * q3k_scale(b + 96, k / 16) * q;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      // d dmin scales[12] (qh[32]) qs[128]. 64-element chunks from 32 bytes: the first 32
      // elements in the low nibbles, the next 32 in the high nibbles; sub-blocks of 32.
      const bool five = t == GgmlType::Q5_K;
      const uint8_t* qs = b + (five ? 48 : 16);
      const int sub = k / 32, l = k % 32;
      const uint8_t byte = qs[32 * (k / 64) + l];
      int q = sub % 2 ? byte >> 4 : byte & 15;
      if (five) q += 16 * ((b[16 + l] >> sub) & 1);
      int scale, min;
      k4_scale_min(b + 4, sub, scale, min);
      return half(b) * scale * q - half(b + 2) * min;
    }
    case GgmlType::Q6_K: {
      // ql[128] qh[64] scales[16] d. Half h (128 elements) uses ql[64h..), qh[32h..); element r
      // of a half: quarter g = r / 32, l = r % 32; low 4 bits from ql[l + 32 (g % 2)] (low nibble
      // for g < 2), top 2 bits are field g of qh[l]. Signed scale per 16 elements.
      const int h = k / 128, g = (k % 128) / 32, l = k % 32;
      const uint8_t lb = b[64 * h + l + 32 * (g % 2)];
      const int low = g < 2 ? lb & 15 : lb >> 4;
      const int high = (b[128 + 32 * h + l] >> (2 * g)) & 3;
      const int q = (low | (high << 4)) - 32;
      return half(b + 208) * static_cast<int8_t>(b[192 + k / 16]) * q;
    }
    case GgmlType::MXFP4:
      // e (E8M0: 2^(e-127)) qs[16].
      return e2m1(nibble32(b + 1, k)) * std::ldexp(1.0, b[0] - 127);
  }
  return NAN;
}

// Random blocks: random bytes, with every float16 factor replaced by a finite value of a realistic
// magnitude (2^-12 .. 2^3, either sign) so the float64 reference itself is exact before its one
// rounding.
inline std::vector<uint8_t> random_blocks(GgmlType t, int blocks, std::mt19937& rng) {
  const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t));
  std::vector<uint8_t> data(static_cast<size_t>(blocks) * info->block_bytes);
  for (auto& byte : data) byte = static_cast<uint8_t>(rng());
  std::vector<size_t> half_fields;
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0:
      half_fields = {0};
      break;
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
      half_fields = {0, 2};
      break;
    case GgmlType::Q2_K:
      half_fields = {80, 82};
      break;
    case GgmlType::Q3_K:
      half_fields = {108};
      break;
    case GgmlType::Q6_K:
      half_fields = {208};
      break;
    default:
      break;
  }
  std::uniform_int_distribution<int> exponent(15 - 12, 15 + 3), mantissa(0, 1023), sign(0, 1);
  for (int i = 0; i < blocks; ++i) {
    for (size_t off : half_fields) {
      const int bits = (sign(rng) << 15) | (exponent(rng) << 10) | mantissa(rng);
      uint8_t* p = data.data() + i * info->block_bytes + off;
      p[0] = static_cast<uint8_t>(bits & 0xFF);
      p[1] = static_cast<uint8_t>(bits >> 8);
    }
  }
  return data;
}

}  // namespace kiln::test

#include "formats/quant/quantize.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "formats/quant/blocks.hpp"

namespace kiln::quant {

namespace {

float half_value(uint16_t h) { return f16_to_f32(h); }

void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xFF);
  p[1] = static_cast<uint8_t>(v >> 8);
}

int round_clamp(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::nearbyint(v)), lo, hi);
}

void quantize_f16(const float* x, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, float_to_half(x[i]));
}

void quantize_q8_0(const float* x, uint8_t* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kQK32;
    uint8_t* out = dst + b * sizeof(BlockQ8_0);
    float amax = 0.0f;
    for (int j = 0; j < kQK32; ++j) amax = std::max(amax, std::fabs(v[j]));
    const uint16_t dh = float_to_half(amax / 127.0f);
    const float d = half_value(dh);  // the codes are chosen against the stored factor
    store_u16(out, dh);
    for (int j = 0; j < kQK32; ++j) {
      const int q = d > 0.0f ? round_clamp(v[j] / d, -127, 127) : 0;
      out[offsetof(BlockQ8_0, qs) + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
}

// Q5_0: the value of largest magnitude m maps to the code 0 (d = m / −16), so the 32 codes
// cover −16·d .. 15·d with m's sign at the wide end; q = round(x / d) + 16 clamped to 0..31.
void quantize_q5_0(const float* x, uint8_t* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kQK32;
    uint8_t* out = dst + b * sizeof(BlockQ5_0);
    float m = 0.0f;
    for (int j = 0; j < kQK32; ++j) {
      if (std::fabs(v[j]) > std::fabs(m)) m = v[j];
    }
    const uint16_t dh = float_to_half(m / -16.0f);
    const float d = half_value(dh);
    store_u16(out, dh);
    uint32_t qh = 0;
    uint8_t* qs = out + offsetof(BlockQ5_0, qs);
    std::memset(qs, 0, kQK32 / 2);
    for (int j = 0; j < kQK32; ++j) {
      const int q = d != 0.0f ? round_clamp(v[j] / d, -16, 15) + 16 : 16;
      // Element j < 16 in the low nibble of qs[j], j >= 16 in the high nibble of qs[j − 16];
      // bit 4 of every element's code is bit j of qh (blocks.hpp).
      qs[j % 16] |= static_cast<uint8_t>((q & 0x0F) << (j < 16 ? 0 : 4));
      qh |= static_cast<uint32_t>(q >> 4) << j;
    }
    for (int k = 0; k < 4; ++k) {
      out[offsetof(BlockQ5_0, qh) + k] = static_cast<uint8_t>(qh >> (8 * k));
    }
  }
}

// 6-bit scales and mins of Q4_K into the 12 bytes (the inverse of scale_min_k4).
void pack_scales_k4(const int* sc, const int* mn, uint8_t* s) {
  std::memset(s, 0, kKScaleBytes);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s[j] = static_cast<uint8_t>(sc[j] & 63);
      s[j + 4] = static_cast<uint8_t>(mn[j] & 63);
    } else {
      s[j + 4] = static_cast<uint8_t>((sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4));
      s[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      s[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
    }
  }
}

void quantize_q4_k(const float* x, uint8_t* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kQK_K;
    uint8_t* out = dst + b * sizeof(BlockQ4_K);
    float scale[8], offset[8];
    float max_scale = 0.0f, max_offset = 0.0f;
    for (int s = 0; s < 8; ++s) {
      float lo = 0.0f, hi = 0.0f;  // the range always includes 0: offsets are never negative
      for (int l = 0; l < 32; ++l) {
        lo = std::min(lo, v[32 * s + l]);
        hi = std::max(hi, v[32 * s + l]);
      }
      scale[s] = (hi - lo) / 15.0f;
      offset[s] = -lo;
      max_scale = std::max(max_scale, scale[s]);
      max_offset = std::max(max_offset, offset[s]);
    }
    const uint16_t dh = float_to_half(max_scale / 63.0f);
    const uint16_t mh = float_to_half(max_offset / 63.0f);
    const float d = half_value(dh), dmin = half_value(mh);
    int sc[8], mn[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = d > 0.0f ? round_clamp(scale[s] / d, 0, 63) : 0;
      mn[s] = dmin > 0.0f ? round_clamp(offset[s] / dmin, 0, 63) : 0;
    }
    store_u16(out + offsetof(BlockQ4_K, d), dh);
    store_u16(out + offsetof(BlockQ4_K, dmin), mh);
    pack_scales_k4(sc, mn, out + offsetof(BlockQ4_K, scales));
    uint8_t q[kQK_K];
    for (int s = 0; s < 8; ++s) {
      const float ds = d * static_cast<float>(sc[s]);
      const float ms = dmin * static_cast<float>(mn[s]);
      for (int l = 0; l < 32; ++l) {
        q[32 * s + l] =
            static_cast<uint8_t>(ds > 0.0f ? round_clamp((v[32 * s + l] + ms) / ds, 0, 15) : 0);
      }
    }
    // 64-element chunks into 32 bytes: the first 32 in the low nibbles, the next 32 high.
    uint8_t* qs = out + offsetof(BlockQ4_K, qs);
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
      }
    }
  }
}

void quantize_q6_k(const float* x, uint8_t* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = x + b * kQK_K;
    uint8_t* out = dst + b * sizeof(BlockQ6_K);
    float scale[16];
    float max_scale = 0.0f;
    for (int s = 0; s < 16; ++s) {
      float amax = 0.0f;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(v[16 * s + l]));
      scale[s] = amax / 31.0f;
      max_scale = std::max(max_scale, scale[s]);
    }
    const uint16_t dh = float_to_half(max_scale / 127.0f);
    const float d = half_value(dh);
    int8_t sc[16];
    int q[kQK_K];
    for (int s = 0; s < 16; ++s) {
      sc[s] = static_cast<int8_t>(d > 0.0f ? round_clamp(scale[s] / d, -128, 127) : 0);
      const float ds = d * static_cast<float>(sc[s]);
      for (int l = 0; l < 16; ++l) {
        q[16 * s + l] = (ds > 0.0f ? round_clamp(v[16 * s + l] / ds, -32, 31) : 0) + 32;
      }
    }
    // Halves of 128: element 32 k + l takes its low 4 bits to ql[l + 32 (k % 2)] (low nibble for
    // k < 2) and its top 2 bits to bit pair k of qh[l].
    uint8_t* ql = out + offsetof(BlockQ6_K, ql);
    uint8_t* qh = out + offsetof(BlockQ6_K, qh);
    std::memset(ql, 0, kQK_K / 2);
    std::memset(qh, 0, kQK_K / 4);
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const int v6 = q[128 * h + 32 * k + l];
          uint8_t& lb = ql[64 * h + l + 32 * (k % 2)];
          lb |= static_cast<uint8_t>(k < 2 ? (v6 & 0x0F) : ((v6 & 0x0F) << 4));
          qh[32 * h + l] |= static_cast<uint8_t>((v6 >> 4) << (2 * k));
        }
      }
    }
    std::memcpy(out + offsetof(BlockQ6_K, scales), sc, 16);
    store_u16(out + offsetof(BlockQ6_K, d), dh);
  }
}

}  // namespace

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return sign | 0x7C00u | (x > 0x7F800000u ? 0x0200u : 0u);  // inf, NaN
  if (x >= 0x477FF000u) return sign | 0x7C00u;  // rounds to 65536 or more: infinity
  if (x < 0x38800000u) {
    // Below 2^-14: a half subnormal, in units of 2^-24 (the product is exact; nearbyint rounds
    // half to even; 1024 units is the smallest normal, which the bit pattern then spells).
    float a;
    std::memcpy(&a, &x, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 0x1p24f));
  }
  // Normal: rebias the exponent (127 → 15) and round the 23-bit mantissa to 10 bits, half to even;
  // a carry out of the mantissa correctly bumps the exponent.
  const uint32_t rounded = x + 0x0FFFu + ((x >> 13) & 1u);
  return sign | static_cast<uint16_t>((rounded - 0x38000000u) >> 13);
}

bool can_quantize(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0:
    case GgmlType::Q4_K:
    case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

size_t quantized_bytes(GgmlType type, int64_t n) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<uint32_t>(type));
  return static_cast<size_t>(n / info->block_size) * info->block_bytes;
}

void quantize(GgmlType type, const float* src, uint8_t* dst, int64_t n) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<uint32_t>(type));
  if (!can_quantize(type) || n % info->block_size != 0) {
    fail(KILN_ERR_INTERNAL, "quantize: cannot write " + std::to_string(n) + " elements as " +
                                ggml_type_name(static_cast<uint32_t>(type)));
  }
  const int64_t blocks = n / info->block_size;
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::F16:
      return quantize_f16(src, dst, n);
    case GgmlType::Q5_0:
      return quantize_q5_0(src, dst, blocks);
    case GgmlType::Q8_0:
      return quantize_q8_0(src, dst, blocks);
    case GgmlType::Q4_K:
      return quantize_q4_k(src, dst, blocks);
    case GgmlType::Q6_K:
      return quantize_q6_k(src, dst, blocks);
    default:
      return;
  }
}

}  // namespace kiln::quant

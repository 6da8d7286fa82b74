// The K-quant super-block formats Q2_K .. Q6_K (layouts in blocks.hpp). A super-block of 256
// elements is cut into 16 or 8 sub-blocks with their own scale (and min); the super-block carries
// the float16 factors those small integer scales multiply. Every product below is exact in float32
// (at most 11 + 8 + 6 significant bits), so each element is rounded once, at its final
// subtraction, exactly as the format's definition would round it.
#include <cstring>

#include "core/dtype.hpp"
#include "formats/quant/blocks.hpp"
#include "formats/quant/dequantize_rows.hpp"
#include "formats/quant/k_scales.hpp"

namespace kiln::quant {

namespace {

template <typename Block>
Block load_block(const uint8_t* src, int64_t index) {
  Block b;
  std::memcpy(&b, src + index * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
  return b;
}

}  // namespace

void dequantize_q2_k(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ2_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    float* y = dst + i * kQK_K;
    // Two halves of 128 elements, each from 32 bytes of qs: bit pair `shift` of byte l gives
    // element 32 * (shift / 2) + l; sub-blocks of 16 run in element order.
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b.qs + 32 * half;
      for (int pair = 0; pair < 4; ++pair) {
        for (int part = 0; part < 2; ++part) {
          const int sub = half * 8 + pair * 2 + part;
          const float dl = d * static_cast<float>(b.scales[sub] & 0x0F);
          const float ml = dmin * static_cast<float>(b.scales[sub] >> 4);
          for (int l = 0; l < 16; ++l) {
            const int v = (q[part * 16 + l] >> (2 * pair)) & 3;
            *y++ = dl * static_cast<float>(v) - ml;
          }
        }
      }
    }
  }
}

void dequantize_q3_k(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ3_K>(src, i);
    const float d = f16_to_f32(b.d);
    float* y = dst + i * kQK_K;
    // As Q2_K for the low 2 bits; the third bit of element k lives in hmask[k % 32], bit k / 32.
    // A clear high bit subtracts 4 (q in [-4, 3]).
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = b.qs + 32 * half;
      for (int pair = 0; pair < 4; ++pair) {
        const int mask_bit = half * 4 + pair;
        for (int part = 0; part < 2; ++part) {
          const int sub = half * 8 + pair * 2 + part;
          const float dl = d * static_cast<float>(scale_q3_k(sub, b.scales));
          for (int l = 0; l < 16; ++l) {
            const int idx = part * 16 + l;
            const int low = (q[idx] >> (2 * pair)) & 3;
            const int v = low - (((b.hmask[idx] >> mask_bit) & 1) ? 0 : 4);
            *y++ = dl * static_cast<float>(v);
          }
        }
      }
    }
  }
}

void dequantize_q4_k(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ4_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    float* y = dst + i * kQK_K;
    // Four chunks of 64 elements from 32 bytes each: low nibbles are sub-block 2c, high nibbles
    // sub-block 2c+1.
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b.qs + 32 * c;
      for (int nib = 0; nib < 2; ++nib) {
        int sc = 0, mn = 0;
        scale_min_k4(2 * c + nib, b.scales, sc, mn);
        const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(mn);
        for (int l = 0; l < 32; ++l) {
          const int v = nib ? (q[l] >> 4) : (q[l] & 0x0F);
          *y++ = dl * static_cast<float>(v) - ml;
        }
      }
    }
  }
}

void dequantize_q5_k(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ5_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    float* y = dst + i * kQK_K;
    // As Q4_K; the fifth bit of sub-block s's element l is bit s of qh[l].
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = b.qs + 32 * c;
      for (int nib = 0; nib < 2; ++nib) {
        const int sub = 2 * c + nib;
        int sc = 0, mn = 0;
        scale_min_k4(sub, b.scales, sc, mn);
        const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(mn);
        for (int l = 0; l < 32; ++l) {
          const int low = nib ? (q[l] >> 4) : (q[l] & 0x0F);
          const int v = low | (((b.qh[l] >> sub) & 1) << 4);
          *y++ = dl * static_cast<float>(v) - ml;
        }
      }
    }
  }
}

void dequantize_q6_k(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ6_K>(src, i);
    const float d = f16_to_f32(b.d);
    float* y = dst + i * kQK_K;
    // Two halves of 128 elements, each from 64 bytes of ql and 32 of qh. Element 32 * k + l of a
    // half (k = 0..3): low 4 bits from ql[l + 32 * (k % 2)] (low nibble for k < 2, high otherwise),
    // top 2 bits from bit pair k of qh[l]; scale index 8 * half + 2 * k + l / 16.
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b.ql + 64 * half;
      const uint8_t* qh = b.qh + 32 * half;
      for (int k = 0; k < 4; ++k) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t lbyte = ql[l + 32 * (k % 2)];
          const int low = k < 2 ? (lbyte & 0x0F) : (lbyte >> 4);
          const int v = (low | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
          const float scale = d * static_cast<float>(b.scales[8 * half + 2 * k + l / 16]);
          y[128 * half + 32 * k + l] = scale * static_cast<float>(v);
        }
      }
    }
  }
}

}  // namespace kiln::quant

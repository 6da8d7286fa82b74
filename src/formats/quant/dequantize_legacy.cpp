// The 32-element block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (layouts in blocks.hpp). Each result
// is one product of exact values, or one rounding of an exact product plus the block minimum.
#include <cstring>

#include "core/dtype.hpp"
#include "formats/quant/blocks.hpp"
#include "formats/quant/dequantize_rows.hpp"

namespace kiln::quant {

namespace {

template <typename Block>
Block load_block(const uint8_t* src, int64_t index) {
  Block b;
  std::memcpy(&b, src + index * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
  return b;
}

uint32_t load_le_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

constexpr int kHalf = kQK32 / 2;

}  // namespace

void dequantize_q4_0(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ4_0>(src, i);
    const float d = f16_to_f32(b.d);
    float* y = dst + i * kQK32;
    for (int j = 0; j < kHalf; ++j) {
      y[j] = static_cast<float>((b.qs[j] & 0x0F) - 8) * d;
      y[j + kHalf] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ4_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    float* y = dst + i * kQK32;
    for (int j = 0; j < kHalf; ++j) {
      y[j] = static_cast<float>(b.qs[j] & 0x0F) * d + m;
      y[j + kHalf] = static_cast<float>(b.qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ5_0>(src, i);
    const float d = f16_to_f32(b.d);
    const uint32_t qh = load_le_u32(b.qh);
    float* y = dst + i * kQK32;
    for (int j = 0; j < kHalf; ++j) {
      const int lo = (b.qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + kHalf)) & 1u) << 4);
      y[j] = static_cast<float>(lo - 16) * d;
      y[j + kHalf] = static_cast<float>(hi - 16) * d;
    }
  }
}

void dequantize_q5_1(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ5_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    const uint32_t qh = load_le_u32(b.qh);
    float* y = dst + i * kQK32;
    for (int j = 0; j < kHalf; ++j) {
      const int lo = (b.qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (b.qs[j] >> 4) | static_cast<int>(((qh >> (j + kHalf)) & 1u) << 4);
      y[j] = static_cast<float>(lo) * d + m;
      y[j + kHalf] = static_cast<float>(hi) * d + m;
    }
  }
}

void dequantize_q8_0(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockQ8_0>(src, i);
    const float d = f16_to_f32(b.d);
    float* y = dst + i * kQK32;
    for (int j = 0; j < kQK32; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
  }
}

}  // namespace kiln::quant

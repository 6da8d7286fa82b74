// Plain float tensors and MXFP4.
#include <cmath>
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

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// E2M1 code → value, doubled so that every entry is an integer (as ggml's kvalues_mxfp4): sign bit
// 3, exponent bits 2-1, mantissa bit 0 give 0, 0.5, 1, 1.5, 2, 3, 4, 6; the block scale is halved
// to match (2^(e-127) / 2). Code 8 is -0 (OCP MX v1.0 §5.3.3); ggml's integer table yields +0
// there, the same value.
constexpr float kE2M1Doubled[16] = {0.0f,  1.0f,  2.0f,  3.0f,  4.0f,  6.0f,  8.0f,  12.0f,
                                    -0.0f, -1.0f, -2.0f, -3.0f, -4.0f, -6.0f, -8.0f, -12.0f};

}  // namespace

void dequantize_f32(const uint8_t* src, float* dst, int64_t blocks) {
  std::memcpy(dst, src, static_cast<size_t>(blocks) * sizeof(float));
}

void dequantize_f16(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
}

void dequantize_bf16(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
}

void dequantize_mxfp4(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    const auto b = load_block<BlockMXFP4>(src, i);
    // E8M0: the byte is a biased exponent only, scale 2^(e-127); halved for the doubled table.
    // 2^(e-128) is exact in float32 for every byte (e = 0, 1 are subnormals).
    const float scale = std::ldexp(1.0f, static_cast<int>(b.e) - 128);
    float* y = dst + i * kQK32;
    for (int j = 0; j < kQK32 / 2; ++j) {
      y[j] = kE2M1Doubled[b.qs[j] & 0x0F] * scale;
      y[j + kQK32 / 2] = kE2M1Doubled[b.qs[j] >> 4] * scale;
    }
  }
}

}  // namespace kiln::quant

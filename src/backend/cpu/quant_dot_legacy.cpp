// Integer dot kernels for the 32-element formats (layouts: formats/quant/blocks.hpp). Per block:
// sumi = Σ_j q_w[j] · q_x[j] in int32, then d_w · d_x · sumi (+ m_w · Σ x̂ for the formats with a
// minimum). The element loops are written so that GCC vectorises them in the AVX2 clone
// (byte unpacking, widening multiply-adds).
#include <cstddef>

#include "backend/cpu/cpu_clones.hpp"
#include "backend/cpu/quant_activation.hpp"
#include "backend/cpu/quant_dot.hpp"
#include "backend/cpu/quant_kernel_util.hpp"
#include "formats/quant/blocks.hpp"

namespace kiln::cpu {

namespace {

using quant::BlockQ4_0;
using quant::BlockQ4_1;
using quant::BlockQ5_0;
using quant::BlockQ5_1;
using quant::BlockQ8_0;

// Σ of the 32 products of a block whose 4-bit codes sit in nibbles (element j in the low nibble of
// qs[j], j + 16 in the high one), with `high_bits` (bit j = fifth bit of element j) and `offset`
// subtracted from every code.
inline int nibble_block_dot(const uint8_t* qs, uint32_t high_bits, int offset, const int8_t* x) {
  int8_t w[32];
  for (int j = 0; j < 16; ++j) {
    w[j] = static_cast<int8_t>((qs[j] & 0x0F) | (((high_bits >> j) & 1u) << 4));
    w[j + 16] = static_cast<int8_t>((qs[j] >> 4) | (((high_bits >> (j + 16)) & 1u) << 4));
  }
  int sum = 0;
  for (int j = 0; j < 32; ++j) sum += (w[j] - offset) * x[j];
  return sum;
}

}  // namespace

KILN_CPU_CLONES float dot_q8_0(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock32*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ8_0);
    const auto* q = reinterpret_cast<const int8_t*>(b + offsetof(BlockQ8_0, qs));
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += q[j] * a[i].q[j];
    acc += load_half(b) * a[i].d * static_cast<float>(sum);
  }
  return acc;
}

KILN_CPU_CLONES float dot_q4_0(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock32*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ4_0);
    const int sum = nibble_block_dot(b + offsetof(BlockQ4_0, qs), 0, 8, a[i].q);
    acc += load_half(b) * a[i].d * static_cast<float>(sum);
  }
  return acc;
}

KILN_CPU_CLONES float dot_q4_1(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock32*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ4_1);
    const int sum = nibble_block_dot(b + offsetof(BlockQ4_1, qs), 0, 0, a[i].q);
    acc += load_half(b) * a[i].d * static_cast<float>(sum) +
           load_half(b + offsetof(BlockQ4_1, m)) * a[i].sum;
  }
  return acc;
}

KILN_CPU_CLONES float dot_q5_0(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock32*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ5_0);
    const int sum = nibble_block_dot(b + offsetof(BlockQ5_0, qs),
                                     load_u32_le(b + offsetof(BlockQ5_0, qh)), 16, a[i].q);
    acc += load_half(b) * a[i].d * static_cast<float>(sum);
  }
  return acc;
}

KILN_CPU_CLONES float dot_q5_1(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock32*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ5_1);
    const int sum = nibble_block_dot(b + offsetof(BlockQ5_1, qs),
                                     load_u32_le(b + offsetof(BlockQ5_1, qh)), 0, a[i].q);
    acc += load_half(b) * a[i].d * static_cast<float>(sum) +
           load_half(b + offsetof(BlockQ5_1, m)) * a[i].sum;
  }
  return acc;
}

}  // namespace kiln::cpu

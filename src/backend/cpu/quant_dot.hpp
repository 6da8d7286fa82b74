// Integer dot products of block-quantised weight rows (GGUF's ggml formats, kept as stored) with
// activation rows quantised to 8 bits (quant_activation.hpp). Within each block the products of
// the small integers are summed exactly in int32; the float scales (weight block × activation
// block, and the block minimums against the activation sums) are applied once per block or
// sub-block. The result therefore equals Σ_j w_j · x̂_j — the exactly dequantised weights against
// the 8-bit activations — up to float32 rounding of those few per-block terms.
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/quant/ggml_type.hpp"

namespace kiln::cpu {

enum class ActFormat { Block32, Block256 };

// Σ over one row of `blocks` weight blocks (at any byte alignment) against as many activation
// blocks (ActBlock32 or ActBlock256, as the kernel's `act` says).
using QuantRowDot = float (*)(const uint8_t* w, const void* act, int64_t blocks);

struct QuantDotKernel {
  quant::GgmlType type;
  ActFormat act;
  int64_t block_size;  // weight elements per block = activation elements per block
  size_t block_bytes;  // bytes per weight block
  QuantRowDot dot;
};

// The kernel for `type`, or nullptr when kiln has none (plain float types, MXFP4): such weights
// are dequantised to float32 at load instead.
const QuantDotKernel* find_quant_dot(quant::GgmlType type);

// The kernels, one per format (quant_dot_legacy.cpp, quant_dot_k.cpp).
float dot_q4_0(const uint8_t* w, const void* act, int64_t blocks);
float dot_q4_1(const uint8_t* w, const void* act, int64_t blocks);
float dot_q5_0(const uint8_t* w, const void* act, int64_t blocks);
float dot_q5_1(const uint8_t* w, const void* act, int64_t blocks);
float dot_q8_0(const uint8_t* w, const void* act, int64_t blocks);
float dot_q2_k(const uint8_t* w, const void* act, int64_t blocks);
float dot_q3_k(const uint8_t* w, const void* act, int64_t blocks);
float dot_q4_k(const uint8_t* w, const void* act, int64_t blocks);
float dot_q5_k(const uint8_t* w, const void* act, int64_t blocks);
float dot_q6_k(const uint8_t* w, const void* act, int64_t blocks);

}  // namespace kiln::cpu

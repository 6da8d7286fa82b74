// One dequantiser per ggml block format: `blocks` consecutive blocks at `src` (any alignment) →
// blocks × block_size floats at `dst`. Layouts and formulas: blocks.hpp. Internal to
// formats/quant; callers use quant::dequantize().
#pragma once

#include <cstdint>

namespace kiln::quant {

void dequantize_f32(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_f16(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_bf16(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_mxfp4(const uint8_t* src, float* dst, int64_t blocks);

void dequantize_q4_0(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q4_1(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q5_0(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q5_1(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q8_0(const uint8_t* src, float* dst, int64_t blocks);

void dequantize_q2_k(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q3_k(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q4_k(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q5_k(const uint8_t* src, float* dst, int64_t blocks);
void dequantize_q6_k(const uint8_t* src, float* dst, int64_t blocks);

}  // namespace kiln::quant

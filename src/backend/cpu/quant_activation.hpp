// Activation rows quantised to 8 bits, so that a dot product with block-quantised weights runs in
// integers block by block (the idea of ggml's q8_0 / q8_K activation blocks; layouts here are
// kiln's own and never stored). Each block keeps its scale in float32, not float16: the only
// rounding is that of the 8-bit values themselves.
//
// Quantisation of a block of values x_j: d = max_j |x_j| / 127, q_j = round_to_nearest(x_j / d),
// so |x_j - d q_j| <= d / 2 (d = 0 and all q_j = 0 for an all-zero block).
#pragma once

#include <cstdint>

namespace kiln::cpu {

// For the 32-element weight formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0). `sum` = d * Σ q_j serves the
// formats with a block minimum (Σ_j (d_w q_w + m) x_j = d_w Σ q_w x_j + m Σ x_j).
struct ActBlock32 {
  float d;
  float sum;
  int8_t q[32];
};

// For the 256-element K-quant formats. bsums[i] = Σ q_j over elements 16 i .. 16 i + 15, for the
// sub-block minimums of Q2_K / Q4_K / Q5_K and Q6_K's offset.
struct ActBlock256 {
  float d;
  int16_t bsums[16];
  int8_t q[256];
};

// k (a multiple of 32, resp. 256) values of x into k / 32 (k / 256) blocks.
void quantize_act_32(const float* x, ActBlock32* out, int64_t k);
void quantize_act_256(const float* x, ActBlock256* out, int64_t k);

}  // namespace kiln::cpu

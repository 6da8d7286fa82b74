#include "backend/cpu/quant_activation.hpp"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_clones.hpp"

namespace kiln::cpu {

namespace {

// Scale of one block and its 8-bit values. nearbyint rounds half to even (the default rounding
// mode), which keeps |x - d q| <= d / 2; the clamp only guards a quotient that rounds to 127.5.
template <int N>
inline __attribute__((always_inline)) float quantize_block(const float* x, int8_t* q) {
  float amax = 0.0f;
  for (int j = 0; j < N; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float inv = d > 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < N; ++j) {
    const float v = std::clamp(std::nearbyint(x[j] * inv), -127.0f, 127.0f);
    q[j] = static_cast<int8_t>(v);
  }
  return d;
}

// One clone per instruction set, each with the loops above inlined and vectorised for it.
KILN_CPU_CLONES float quantize_block_32(const float* x, int8_t* q) {
  return quantize_block<32>(x, q);
}

KILN_CPU_CLONES float quantize_block_256(const float* x, int8_t* q) {
  return quantize_block<256>(x, q);
}

}  // namespace

void quantize_act_32(const float* x, ActBlock32* out, int64_t k) {
  for (int64_t b = 0; b < k / 32; ++b) {
    ActBlock32& o = out[b];
    o.d = quantize_block_32(x + b * 32, o.q);
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += o.q[j];
    o.sum = o.d * static_cast<float>(sum);
  }
}

void quantize_act_256(const float* x, ActBlock256* out, int64_t k) {
  for (int64_t b = 0; b < k / 256; ++b) {
    ActBlock256& o = out[b];
    o.d = quantize_block_256(x + b * 256, o.q);
    for (int i = 0; i < 16; ++i) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += o.q[16 * i + j];
      o.bsums[i] = static_cast<int16_t>(sum);
    }
  }
}

}  // namespace kiln::cpu

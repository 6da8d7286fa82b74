// Integer dot kernels for the K-quant super-blocks of 256 elements (layouts:
// formats/quant/blocks.hpp). Each super-block's codes are first unpacked and multiplied by their
// sub-block's integer scale into a plain int16 array (sc · q fits: at most 4096 in magnitude),
// then one int16 × int8 dot product over the 256 elements sums everything in int32 (no per
// sub-block reduction, which is what lets the compiler keep it in vector registers). The
// super-block's float16 factors and the activation scale are applied once:
//   x = d·sc·q − dmin·m  (Q2_K, Q4_K, Q5_K):  d_x · (d · Σ_s sc_s Σ q·q_x − dmin · Σ_s m_s Σ q_x)
//   x = d·sc·q           (Q3_K, Q6_K with q signed): d_x · d · Σ_s sc_s Σ q·q_x
// where Σ q_x per sub-block comes precomputed in ActBlock256::bsums.
#include <cstddef>

#include "backend/cpu/cpu_clones.hpp"
#include "backend/cpu/quant_activation.hpp"
#include "backend/cpu/quant_dot.hpp"
#include "backend/cpu/quant_kernel_util.hpp"
#include "formats/quant/blocks.hpp"
#include "formats/quant/k_scales.hpp"

namespace kiln::cpu {

namespace {

using quant::BlockQ2_K;
using quant::BlockQ3_K;
using quant::BlockQ4_K;
using quant::BlockQ5_K;
using quant::BlockQ6_K;

// Σ_j w[j] · x[j] over a super-block, in int32 (|w| <= 4096, |x| <= 127: no overflow).
inline int dot_256(const int16_t* w, const int8_t* x) {
  int sum = 0;
  for (int j = 0; j < 256; ++j) sum += w[j] * x[j];
  return sum;
}

// w[j] = scale[j / group] · q[j]: the sub-block scales applied to the codes.
template <int Group, typename Q, typename S>
inline void apply_scales(const Q* q, const S* scale, int16_t* w) {
  for (int s = 0; s < 256 / Group; ++s) {
    const int sc = scale[s];
    for (int i = 0; i < Group; ++i) {
      w[Group * s + i] = static_cast<int16_t>(sc * q[Group * s + i]);
    }
  }
}

// Q4_K / Q5_K: the codes (0..15, or 0..31 with the fifth bit) of one super-block, in element
// order: 64-element chunks from 32 bytes, low nibbles first.
inline void unpack_k4(const uint8_t* qs, const uint8_t* qh, uint8_t* q) {
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      q[64 * c + l] = qs[32 * c + l] & 0x0F;
      q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
    }
  }
  if (qh == nullptr) return;
  for (int s = 0; s < 8; ++s) {
    for (int l = 0; l < 32; ++l) q[32 * s + l] |= ((qh[l] >> s) & 1) << 4;
  }
}

// The shared part of Q4_K and Q5_K: scales and mins per sub-block of 32.
inline float k4_block_dot(const uint8_t* b, const uint8_t* scales, const uint8_t* q,
                          const ActBlock256& a) {
  uint8_t sc[8];
  int summ = 0;
  for (int s = 0; s < 8; ++s) {
    int scale = 0, min = 0;
    quant::scale_min_k4(s, scales, scale, min);
    sc[s] = static_cast<uint8_t>(scale);
    summ += min * (a.bsums[2 * s] + a.bsums[2 * s + 1]);
  }
  int16_t w[256];
  apply_scales<32>(q, sc, w);
  const int sumi = dot_256(w, a.q);
  return a.d *
         (load_half(b) * static_cast<float>(sumi) - load_half(b + 2) * static_cast<float>(summ));
}

}  // namespace

KILN_CPU_CLONES float dot_q4_k(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock256*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ4_K);
    uint8_t q[256];
    unpack_k4(b + offsetof(BlockQ4_K, qs), nullptr, q);
    acc += k4_block_dot(b, b + offsetof(BlockQ4_K, scales), q, a[i]);
  }
  return acc;
}

KILN_CPU_CLONES float dot_q5_k(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock256*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ5_K);
    uint8_t q[256];
    unpack_k4(b + offsetof(BlockQ5_K, qs), b + offsetof(BlockQ5_K, qh), q);
    acc += k4_block_dot(b, b + offsetof(BlockQ5_K, scales), q, a[i]);
  }
  return acc;
}

KILN_CPU_CLONES float dot_q6_k(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock256*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ6_K);
    int8_t q[256];
    // Two halves of 128: element 32 k + l of a half takes its low 4 bits from
    // ql[l + 32 (k % 2)] (low nibble for k < 2) and its top 2 from bit pair k of qh[l].
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b + offsetof(BlockQ6_K, ql) + 64 * h;
      const uint8_t* qh = b + offsetof(BlockQ6_K, qh) + 32 * h;
      int8_t* y = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        y[l] = static_cast<int8_t>(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
        y[32 + l] = static_cast<int8_t>(((ql[32 + l] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
        y[64 + l] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        y[96 + l] = static_cast<int8_t>(((ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
    }
    const auto* scales = reinterpret_cast<const int8_t*>(b + offsetof(BlockQ6_K, scales));
    int16_t ws[256];
    apply_scales<16>(q, scales, ws);
    const int sumi = dot_256(ws, a[i].q);
    acc += a[i].d * load_half(b + offsetof(BlockQ6_K, d)) * static_cast<float>(sumi);
  }
  return acc;
}

KILN_CPU_CLONES float dot_q2_k(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock256*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ2_K);
    const uint8_t* qs = b + offsetof(BlockQ2_K, qs);
    const uint8_t* sc = b + offsetof(BlockQ2_K, scales);
    uint8_t q[256];
    // Element 32 p + l of half h: bit pair p of qs[32 h + l].
    for (int h = 0; h < 2; ++h) {
      for (int p = 0; p < 4; ++p) {
        for (int l = 0; l < 32; ++l) q[128 * h + 32 * p + l] = (qs[32 * h + l] >> (2 * p)) & 3;
      }
    }
    uint8_t scale[16];
    int summ = 0;
    for (int s = 0; s < 16; ++s) {
      scale[s] = sc[s] & 0x0F;
      summ += (sc[s] >> 4) * a[i].bsums[s];
    }
    int16_t ws[256];
    apply_scales<16>(q, scale, ws);
    const int sumi = dot_256(ws, a[i].q);
    acc += a[i].d * (load_half(b + offsetof(BlockQ2_K, d)) * static_cast<float>(sumi) -
                     load_half(b + offsetof(BlockQ2_K, dmin)) * static_cast<float>(summ));
  }
  return acc;
}

KILN_CPU_CLONES float dot_q3_k(const uint8_t* w, const void* act, int64_t blocks) {
  const auto* a = static_cast<const ActBlock256*>(act);
  float acc = 0.0f;
  for (int64_t i = 0; i < blocks; ++i) {
    const uint8_t* b = w + i * sizeof(BlockQ3_K);
    const uint8_t* qs = b + offsetof(BlockQ3_K, qs);
    const uint8_t* hmask = b + offsetof(BlockQ3_K, hmask);
    int8_t q[256];
    // As Q2_K for the low 2 bits; a clear bit (4 h + p) of hmask[l] subtracts 4.
    for (int h = 0; h < 2; ++h) {
      for (int p = 0; p < 4; ++p) {
        for (int l = 0; l < 32; ++l) {
          const int low = (qs[32 * h + l] >> (2 * p)) & 3;
          const int high = (hmask[l] >> (4 * h + p)) & 1;
          q[128 * h + 32 * p + l] = static_cast<int8_t>(low - 4 + 4 * high);
        }
      }
    }
    int8_t scale[16];
    for (int s = 0; s < 16; ++s) {
      scale[s] = static_cast<int8_t>(quant::scale_q3_k(s, b + offsetof(BlockQ3_K, scales)));
    }
    int16_t ws[256];
    apply_scales<16>(q, scale, ws);
    const int sumi = dot_256(ws, a[i].q);
    acc += a[i].d * load_half(b + offsetof(BlockQ3_K, d)) * static_cast<float>(sumi);
  }
  return acc;
}

}  // namespace kiln::cpu

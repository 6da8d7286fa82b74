// Matrix products with BF16 weights kept as BF16 (zero-copy from the mmap): half the bytes of
// float32 per decoded token, which is what bounds CPU decoding. Activations and accumulation stay
// float32; each weight is widened exactly (BF16 → F32 is a shift), so results equal the float32
// path up to summation order.
#pragma once

#include <cstdint>

namespace kiln::cpu {

// y[n] = W[n×k] · x[k] (+ bias), W row-major BF16.
void gemv_bf16(const float* x, const uint16_t* w, const float* bias, float* y, int64_t k, int64_t n,
               int n_threads);

// y[m×n] = x[m×k] · W[n×k]ᵀ (+ bias): each thread widens a block of W's rows once and multiplies
// it with every token through sgemm.
void gemm_bf16(const float* x, const uint16_t* w, const float* bias, float* y, int64_t m, int64_t k,
               int64_t n, int n_threads);

// dst[k] = float(src[k])
void widen_bf16(const uint16_t* src, float* dst, int64_t k);

}  // namespace kiln::cpu

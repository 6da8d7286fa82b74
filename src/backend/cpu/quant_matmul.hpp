// Matrix products with block-quantised weights kept as stored (zero-copy from the GGUF mapping):
// a Q4_K weight streams 4.5 bits per element per decoded token instead of float32's 32.
#pragma once

#include <cstdint>

#include "backend/cpu/quant_dot.hpp"

namespace kiln::cpu {

// A weight matrix [n × k] in one block format: row r is k / block_size blocks at
// data + r × row_bytes.
struct QuantMatrix {
  const uint8_t* data = nullptr;
  const QuantDotKernel* kernel = nullptr;
};

// y[m×n] = x[m×k] · Wᵀ (+ bias). Each activation row is quantised to 8 bits once
// (quant_activation.hpp) and every output is one integer dot kernel call, threaded over blocks of
// output rows (and of tokens when m > 1). Results do not depend on n_threads.
void linear_quant(const float* x, const QuantMatrix& w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int n_threads);

// y[m×n] = x[m×k] · Wᵀ (+ bias) through float32: each thread dequantises a tile of W's rows
// exactly and multiplies it with every token by sgemm (no activation rounding).
void linear_quant_dequant(const float* x, const QuantMatrix& w, const float* bias, float* y,
                          int64_t m, int64_t k, int64_t n, int n_threads);

// Row `row` of W (k elements), dequantised, into dst.
void quant_matrix_row(const QuantMatrix& w, int64_t row, int64_t k, float* dst);

}  // namespace kiln::cpu

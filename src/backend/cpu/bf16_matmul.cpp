#include "backend/cpu/bf16_matmul.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "backend/cpu/cpu_clones.hpp"
#include "backend/cpu/team_scratch.hpp"

namespace kiln::cpu {

namespace {

// Rows per scheduling unit. Fixed (not derived from the thread count) so each output element is
// computed the same way whatever n_threads is.
constexpr int64_t kGemvRows = 16;
constexpr int64_t kGemmRows = 32;

inline float widen(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// One dot product of a BF16 row with a float32 vector. Eight independent partial sums let the
// compiler vectorise (one 256-bit register per partial-sum set on AVX2 machines, through the
// clone GCC emits for them); the final reduction order is fixed.
KILN_CPU_CLONES float dot_bf16(const uint16_t* w, const float* x, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += widen(w[i + j]) * x[i + j];
  }
  float tail = 0.0f;
  for (; i < k; ++i) tail += widen(w[i]) * x[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

}  // namespace

KILN_CPU_CLONES void widen_bf16(const uint16_t* src, float* dst, int64_t k) {
  for (int64_t i = 0; i < k; ++i) dst[i] = widen(src[i]);
}

void gemv_bf16(const float* x, const uint16_t* w, const float* bias, float* y, int64_t k, int64_t n,
               int n_threads) {
  const int64_t n_blocks = (n + kGemvRows - 1) / kGemvRows;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 4)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t r_end = std::min(n, (b + 1) * kGemvRows);
    for (int64_t r = b * kGemvRows; r < r_end; ++r) {
      y[r] = dot_bf16(w + r * k, x, k) + (bias ? bias[r] : 0.0f);
    }
  }
}

void gemm_bf16(const float* x, const uint16_t* w, const float* bias, float* y, int64_t m, int64_t k,
               int64_t n, int n_threads) {
  const int64_t n_blocks = (n + kGemmRows - 1) / kGemmRows;
  // One widened block of W per thread, reused for every block the thread takes.
  const TeamScratch scratch(n_threads, static_cast<size_t>(kGemmRows * k));
#pragma omp parallel num_threads(n_threads)
  {
    float* const wf = scratch.mine();
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t r0 = b * kGemmRows;
      const int64_t rows = std::min(kGemmRows, n - r0);
      widen_bf16(w + r0 * k, wf, rows * k);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
                  static_cast<blasint>(rows), static_cast<blasint>(k), 1.0f, x,
                  static_cast<blasint>(k), wf, static_cast<blasint>(k), 0.0f, y + r0,
                  static_cast<blasint>(n));
      if (bias) {
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < rows; ++j) y[i * n + r0 + j] += bias[r0 + j];
        }
      }
    }
  }
}

}  // namespace kiln::cpu

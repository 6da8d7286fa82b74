#include "backend/cpu/quant_matmul.hpp"

#include <cblas.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "backend/cpu/quant_activation.hpp"
#include "formats/quant/ggml_type.hpp"

namespace kiln::cpu {

namespace {

// Output rows per scheduling unit (fixed, so the work split never changes a result).
constexpr int64_t kGemvRows = 16;
// For m > 1: tiles of kTileRows weight rows × kTileTokens tokens; a tile's weight rows stay in
// cache while every token of the tile passes over them.
constexpr int64_t kTileRows = 16;
constexpr int64_t kTileTokens = 16;
// linear_quant_dequant: weight rows dequantised per tile.
constexpr int64_t kDequantRows = 32;

size_t row_bytes(const QuantMatrix& w, int64_t k) {
  return static_cast<size_t>(k / w.kernel->block_size) * w.kernel->block_bytes;
}

// The m activation rows, quantised in the kernel's activation format: `stride` bytes per row.
struct QuantizedActivations {
  std::vector<uint8_t> bytes;
  size_t stride = 0;
  const void* row(int64_t t) const { return bytes.data() + static_cast<size_t>(t) * stride; }
};

QuantizedActivations quantize_rows(const float* x, const QuantDotKernel& kernel, int64_t m,
                                   int64_t k, int n_threads) {
  QuantizedActivations a;
  const int64_t blocks = k / kernel.block_size;
  a.stride = static_cast<size_t>(blocks) *
             (kernel.act == ActFormat::Block32 ? sizeof(ActBlock32) : sizeof(ActBlock256));
  // A vector of bytes is only byte-aligned in principle; the blocks need float alignment, which
  // operator new's (16-byte) alignment and the strides (multiples of 4) give.
  a.bytes.resize(a.stride * static_cast<size_t>(m));
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m > 1)
  for (int64_t t = 0; t < m; ++t) {
    void* dst = a.bytes.data() + static_cast<size_t>(t) * a.stride;
    if (kernel.act == ActFormat::Block32) {
      quantize_act_32(x + t * k, static_cast<ActBlock32*>(dst), k);
    } else {
      quantize_act_256(x + t * k, static_cast<ActBlock256*>(dst), k);
    }
  }
  return a;
}

}  // namespace

void linear_quant(const float* x, const QuantMatrix& w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int n_threads) {
  const QuantDotKernel& kernel = *w.kernel;
  const int64_t blocks = k / kernel.block_size;
  const size_t stride = row_bytes(w, k);
  const QuantizedActivations a = quantize_rows(x, kernel, m, k, n_threads);
  if (m == 1) {
    const int64_t n_blocks = (n + kGemvRows - 1) / kGemvRows;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t r_end = std::min(n, (b + 1) * kGemvRows);
      for (int64_t r = b * kGemvRows; r < r_end; ++r) {
        y[r] = kernel.dot(w.data + static_cast<size_t>(r) * stride, a.row(0), blocks) +
               (bias ? bias[r] : 0.0f);
      }
    }
    return;
  }
  const int64_t row_tiles = (n + kTileRows - 1) / kTileRows;
  const int64_t token_tiles = (m + kTileTokens - 1) / kTileTokens;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) collapse(2)
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    for (int64_t tt = 0; tt < token_tiles; ++tt) {
      const int64_t r_end = std::min(n, (rt + 1) * kTileRows);
      const int64_t t_end = std::min(m, (tt + 1) * kTileTokens);
      for (int64_t r = rt * kTileRows; r < r_end; ++r) {
        const uint8_t* wr = w.data + static_cast<size_t>(r) * stride;
        const float b = bias ? bias[r] : 0.0f;
        for (int64_t t = tt * kTileTokens; t < t_end; ++t) {
          y[t * n + r] = kernel.dot(wr, a.row(t), blocks) + b;
        }
      }
    }
  }
}

void linear_quant_dequant(const float* x, const QuantMatrix& w, const float* bias, float* y,
                          int64_t m, int64_t k, int64_t n, int n_threads) {
  const size_t stride = row_bytes(w, k);
  const int64_t n_tiles = (n + kDequantRows - 1) / kDequantRows;
#pragma omp parallel num_threads(n_threads)
  {
    // One dequantised tile of W per thread, reused for every tile the thread takes.
    std::unique_ptr<float[]> wf(new float[static_cast<size_t>(kDequantRows * k)]);
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < n_tiles; ++b) {
      const int64_t r0 = b * kDequantRows;
      const int64_t rows = std::min(kDequantRows, n - r0);
      quant::dequantize(w.kernel->type, w.data + static_cast<size_t>(r0) * stride, wf.get(),
                        rows * k);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
                  static_cast<blasint>(rows), static_cast<blasint>(k), 1.0f, x,
                  static_cast<blasint>(k), wf.get(), static_cast<blasint>(k), 0.0f, y + r0,
                  static_cast<blasint>(n));
      if (bias) {
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < rows; ++j) y[i * n + r0 + j] += bias[r0 + j];
        }
      }
    }
  }
}

void quant_matrix_row(const QuantMatrix& w, int64_t row, int64_t k, float* dst) {
  quant::dequantize(w.kernel->type, w.data + static_cast<size_t>(row) * row_bytes(w, k), dst, k);
}

}  // namespace kiln::cpu

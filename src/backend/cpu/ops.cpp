#include "backend/cpu/ops.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "backend/cpu/bf16_matmul.hpp"
#include "backend/cpu/team_scratch.hpp"

namespace kiln::cpu {

namespace {

// Elementwise loops below this size run on the calling thread: waking a team costs more than the
// work. Results do not depend on it (each element is computed the same way either way).
constexpr int64_t kElementwiseParallelMin = 1 << 14;

// linear() cuts the output into fixed tiles — kLinearTileRows output features × kLinearTileTokens
// tokens — and hands whole tiles to threads. The tiling, not the thread count, decides which BLAS
// call computes each output element, so results are bit-identical for every n_threads. Tiling the
// tokens too keeps all threads busy on narrow projections (k/v of GQA models have few rows).
constexpr int64_t kLinearTileRows = 128;
constexpr int64_t kLinearTileTokens = 64;
// For one token (decode) the work is a matrix-vector product bound by reading W: finer row
// blocks spread those bytes over more threads.
constexpr int64_t kGemvBlockRows = 64;
// Block-quantised weights: below this many tokens every product is an integer dot kernel call on
// 8-bit activations; from it on, tiles of W are dequantised exactly and go through sgemm, whose
// cost per token is far lower once the dequantisation is shared by enough tokens (crossover
// between 4 and 16 tokens on the development machine, docs/performance.md).
constexpr int64_t kQuantDequantMinTokens = 8;

// All parallelism is ours (OpenMP over output blocks); OpenBLAS must not start its own pool inside
// our threads (oversubscription, and its pthread build serialises concurrent threaded calls).
// OpenBLAS keeps its thread count process-wide, so it is set once, on first use.
void make_blas_single_threaded() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace

void linear(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t k,
            int64_t n, int n_threads) {
  make_blas_single_threaded();
  const auto add_bias = [&](int64_t t0, int64_t tokens, int64_t r0, int64_t rows) {
    if (bias == nullptr) return;
    for (int64_t i = t0; i < t0 + tokens; ++i) {
      float* yi = y + i * n + r0;
      for (int64_t j = 0; j < rows; ++j) yi[j] += bias[r0 + j];
    }
  };
  if (m == 1) {
    const int64_t n_blocks = (n + kGemvBlockRows - 1) / kGemvBlockRows;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t r0 = b * kGemvBlockRows;
      const int64_t rows = std::min(kGemvBlockRows, n - r0);
      // y[r0 .. r0+rows) = W[r0 .. r0+rows, :] · x
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(k),
                  1.0f, w + r0 * k, static_cast<blasint>(k), x, 1, 0.0f, y + r0, 1);
      add_bias(0, 1, r0, rows);
    }
    return;
  }
  const int64_t row_tiles = (n + kLinearTileRows - 1) / kLinearTileRows;
  const int64_t token_tiles = (m + kLinearTileTokens - 1) / kLinearTileTokens;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) collapse(2)
  for (int64_t rt = 0; rt < row_tiles; ++rt) {
    for (int64_t tt = 0; tt < token_tiles; ++tt) {
      const int64_t r0 = rt * kLinearTileRows;
      const int64_t rows = std::min(kLinearTileRows, n - r0);
      const int64_t t0 = tt * kLinearTileTokens;
      const int64_t tokens = std::min(kLinearTileTokens, m - t0);
      // y[t0.., r0 .. r0+rows) = x[t0..] · W[r0 .. r0+rows, :]ᵀ
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(tokens),
                  static_cast<blasint>(rows), static_cast<blasint>(k), 1.0f, x + t0 * k,
                  static_cast<blasint>(k), w + r0 * k, static_cast<blasint>(k), 0.0f,
                  y + t0 * n + r0, static_cast<blasint>(n));
      add_bias(t0, tokens, r0, rows);
    }
  }
}

void linear(const float* x, const Matrix& w, const float* bias, float* y, int64_t m, int64_t k,
            int64_t n, int n_threads) {
  if (w.f32 != nullptr) {
    linear(x, w.f32, bias, y, m, k, n, n_threads);
  } else if (w.quant.data != nullptr) {
    if (m < kQuantDequantMinTokens) {
      linear_quant(x, w.quant, bias, y, m, k, n, n_threads);
    } else {
      make_blas_single_threaded();
      linear_quant_dequant(x, w.quant, bias, y, m, k, n, n_threads);
    }
  } else if (m == 1) {
    gemv_bf16(x, w.bf16, bias, y, k, n, n_threads);
  } else {
    make_blas_single_threaded();
    gemm_bf16(x, w.bf16, bias, y, m, k, n, n_threads);
  }
}

void matrix_row(const Matrix& w, int64_t row, int64_t k, float* dst) {
  if (w.f32 != nullptr) {
    std::memcpy(dst, w.f32 + row * k, static_cast<size_t>(k) * sizeof(float));
  } else if (w.quant.data != nullptr) {
    quant_matrix_row(w.quant, row, k, dst);
  } else {
    widen_bf16(w.bf16 + row * k, dst, k);
  }
}

void rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
              int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* outr = out + r * dim;
    // The mean of squares in double: HF computes it in float32, double only removes our own
    // accumulation error from the comparison.
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float variance = static_cast<float>(sum_sq / static_cast<double>(dim));
    const float inv_rms = 1.0f / std::sqrt(variance + eps);
    // HF order: normalise first (hidden * rsqrt(var + eps)), then scale by the weight.
    if (weight != nullptr) {
      for (int64_t i = 0; i < dim; ++i) outr[i] = weight[i] * (xr[i] * inv_rms);
    } else {
      for (int64_t i = 0; i < dim; ++i) outr[i] = xr[i] * inv_rms;
    }
  }
}

void layer_norm(const float* x, const float* weight, const float* bias, float* out, int64_t rows,
                int64_t dim, float eps, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* outr = out + r * dim;
    // Mean and variance in double (torch accumulates float32 with its own summation order; double
    // only removes our share of the rounding from the comparison).
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(dim);
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double d = xr[i] - mean;
      sum_sq += d * d;
    }
    const float inv_std =
        static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps));
    const auto mean_f = static_cast<float>(mean);
    for (int64_t i = 0; i < dim; ++i) outr[i] = (xr[i] - mean_f) * inv_std * weight[i] + bias[i];
  }
}

void rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
          int64_t rot_dim, const float* inv_freq, int n_threads) {
  const int64_t half = rot_dim / 2;
  if (half == 0) return;
  const TeamScratch scratch(n_threads, static_cast<size_t>(2 * half));
#pragma omp parallel num_threads(n_threads) if (n_tokens > 1)
  {
    float* const cos_t = scratch.mine();
    float* const sin_t = cos_t + half;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        // HF builds the angle as a float32 product (inv_freq ⊗ position), then takes cos/sin of
        // that float; cos/sin are evaluated in double and rounded once.
        const float angle = static_cast<float>(positions[t]) * inv_freq[i];
        cos_t[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sin_t[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * head_dim;
        // rotate_half: out = v * cos + cat(-v[half:], v[:half]) * sin, cos/sin repeated twice.
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i];
          const float b = v[i + half];
          v[i] = a * cos_t[i] - b * sin_t[i];
          v[i + half] = b * cos_t[i] + a * sin_t[i];
        }
      }
    }
  }
}

void attention(const float* q, const float* k_cache, const float* v_cache, float* out,
               int64_t n_tokens, int64_t start_pos, int64_t n_heads, int64_t n_kv_heads,
               int64_t head_dim, int n_threads) {
  make_blas_single_threaded();
  const int64_t group = n_heads / n_kv_heads;
  const int64_t kv_stride = n_kv_heads * head_dim;  // one cache row (position)
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const int64_t n_items = n_tokens * n_heads;
  // Scores of one query row over its keys; at most start_pos + n_tokens of them. Nothing of
  // size tokens × keys is ever materialised.
  const TeamScratch scratch(n_threads, static_cast<size_t>(start_pos + n_tokens));
#pragma omp parallel num_threads(n_threads) if (n_items > 1)
  {
    float* const scores = scratch.mine();
#pragma omp for schedule(static)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t t = item / n_heads;
      const int64_t h = item % n_heads;
      const int64_t kvh = h / group;
      const int64_t n_keys = start_pos + t + 1;  // causal: keys at positions <= this query's
      const float* qv = q + item * head_dim;
      const float* k0 = k_cache + kvh * head_dim;
      const float* v0 = v_cache + kvh * head_dim;
      float* o = out + item * head_dim;

      // scores[j] = scale * (K_j · q), K rows strided by one cache row.
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n_keys),
                  static_cast<blasint>(head_dim), scale, k0, static_cast<blasint>(kv_stride), qv, 1,
                  0.0f, scores, 1);
      float max_score = scores[0];
      for (int64_t j = 1; j < n_keys; ++j) max_score = std::max(max_score, scores[j]);
      float sum = 0.0f;
      for (int64_t j = 0; j < n_keys; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        sum += scores[j];
      }
      const float inv_sum = 1.0f / sum;
      for (int64_t j = 0; j < n_keys; ++j) scores[j] *= inv_sum;
      // o = Vᵀ · p over the same strided rows.
      cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(n_keys),
                  static_cast<blasint>(head_dim), 1.0f, v0, static_cast<blasint>(kv_stride),
                  scores, 1, 0.0f, o, 1);
    }
  }
}

void swiglu(const float* gate, const float* up, float* out, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kElementwiseParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void gelu_tanh(float* x, int64_t n, int n_threads) {
  const auto k = static_cast<float>(std::sqrt(2.0 / std::numbers::pi));
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kElementwiseParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void relu_squared(float* x, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kElementwiseParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float r = std::max(x[i], 0.0f);
    x[i] = r * r;
  }
}

void softcap(float* x, int64_t n, float cap, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kElementwiseParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

void add_inplace(float* dst, const float* src, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n >= kElementwiseParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace kiln::cpu

// CPU compute primitives in float32. Each has a plain reference in the tests (float64) that it is
// checked against. Threading: functions parallelise internally with OpenMP over `n_threads`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cpu/quant_matmul.hpp"

namespace kiln::cpu {

// A weight matrix as the CPU backend keeps it: float32, BF16 straight from the file, or a GGUF
// block format straight from the file (exactly one of the three is set).
struct Matrix {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
  QuantMatrix quant;
};

// y[m×n] = x[m×k] · Wᵀ for either storage of W (see linear() below for the float32 contract).
void linear(const float* x, const Matrix& w, const float* bias, float* y, int64_t m, int64_t k,
            int64_t n, int n_threads);

// Row `row` of W (k elements) as float32 into dst.
void matrix_row(const Matrix& w, int64_t row, int64_t k, float* dst);

// y[m×n] = x[m×k] · Wᵀ, W stored row-major [n×k] (the HF nn.Linear layout), plus bias[n] if not
// null. Uses OpenBLAS sgemm (m > 1) or sgemv (m == 1).
void linear(const float* x, const float* w, const float* bias, float* y, int64_t m, int64_t k,
            int64_t n, int n_threads);

// out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i], per row of `dim` (HF LlamaRMSNorm: compute in
// float32, multiply by weight after normalising). weight == nullptr: no scaling (NanoChat's
// parameter-free RMSNorm). In place allowed (out == x).
void rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps,
              int n_threads);

// torch.nn.LayerNorm: out[i] = (x[i] - mean) / sqrt(var + eps) * weight[i] + bias[i], per row of
// `dim`, var the biased variance. In place allowed (out == x).
void layer_norm(const float* x, const float* weight, const float* bias, float* out, int64_t rows,
                int64_t dim, float eps, int n_threads);

// Rotary embedding in the HF "rotate_half" layout: for each head vector v (head_dim), pairs
// (v[i], v[i + rot/2]) for i < rot/2 are rotated by angle pos * inv_freq[i]; elements past `rot`
// (partial rotary) are left alone. x is [n_tokens × n_heads × head_dim], positions[n_tokens].
void rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
          int64_t rot_dim, const float* inv_freq, int n_threads);

// Causal grouped-query attention over a KV cache.
// q: [n_tokens × n_heads × head_dim] for positions start_pos .. start_pos+n_tokens-1.
// k_cache, v_cache: [max_ctx × n_kv_heads × head_dim], rows 0 .. start_pos+n_tokens-1 valid.
// out: [n_tokens × n_heads × head_dim]. Query head h reads kv head h / (n_heads / n_kv_heads).
// Softmax in float32 with max subtraction; scale = 1/sqrt(head_dim).
void attention(const float* q, const float* k_cache, const float* v_cache, float* out,
               int64_t n_tokens, int64_t start_pos, int64_t n_heads, int64_t n_kv_heads,
               int64_t head_dim, int n_threads);

// out[i] = silu(gate[i]) * up[i]  (SwiGLU), n elements; out may alias gate.
void swiglu(const float* gate, const float* up, float* out, int64_t n, int n_threads);

// x[i] = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (transformers' NewGELUActivation, "gelu_new"),
// in place over n elements.
void gelu_tanh(float* x, int64_t n, int n_threads);

// x[i] = max(x[i], 0)² (transformers' ReLUSquaredActivation, "relu2"), in place.
void relu_squared(float* x, int64_t n, int n_threads);

// x[i] = cap · tanh(x[i] / cap) (final logit soft-capping), in place.
void softcap(float* x, int64_t n, float cap, int n_threads);

// dst[i] += src[i]
void add_inplace(float* dst, const float* src, int64_t n, int n_threads);

}  // namespace kiln::cpu

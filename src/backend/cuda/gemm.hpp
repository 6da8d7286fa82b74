// Matrix products of the CUDA backend through cuBLAS: BF16 inputs, float32 accumulation and
// output. The layout is that of HF nn.Linear: y = x · Wᵀ with W stored row-major [n × k].
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "backend/cuda/kernels.hpp"

namespace kiln::cuda {

// y[m × n] = x[m × k] · Wᵀ + beta · y (beta = 1 accumulates into y: the residual add of o_proj and
// down_proj happens inside the product's epilogue instead of a separate pass). One row (m = 1,
// decode) goes to the gemv_bf16 kernel on the handle's stream, the rest to cublasGemmEx.
void linear_bf16(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t m,
                 int64_t k, int64_t n, float beta);

// The same product into columns of a wider output: y has row stride ldy ≥ n (a slice of the
// logits' vocabulary). Always cuBLAS.
void linear_bf16_strided(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t m,
                         int64_t k, int64_t n, int64_t ldy, float beta);

// The F32 precision (KILN_PRECISION_F32): x, W and y float32, a full-float32 product with
// reduced-precision shortcuts (TF32 tensor cores, split reductions in lower precision) ruled out
// by CUBLAS_COMPUTE_32F_PEDANTIC. Every m, including the decode step's m = 1, goes to cuBLAS: this
// is a checking mode, not a fast one. ldy ≥ n is y's row stride.
void linear_f32(cublasHandle_t handle, const float* x, const float* w, float* y, int64_t m,
                int64_t k, int64_t n, int64_t ldy, float beta);

// y[count] += x[count] (cublasSaxpy on the handle's stream): a tensor-parallel rank adds the
// all-reduced sum of the ranks' partial products into the residual stream.
void add_f32(cublasHandle_t handle, const float* x, float* y, int64_t count);

}  // namespace kiln::cuda

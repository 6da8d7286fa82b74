// Matrix products of the training graph, templated on the scalar type (float for training, double
// for gradient checks) and computed by OpenBLAS (sgemm / dgemm).
//
// Determinism: every product is cut into fixed output tiles and each tile is one single-threaded
// BLAS call that performs the whole reduction over k, so which call computes an element depends on
// the tiling only, never on the thread count: results are bit-identical for any n_threads.
#pragma once

#include <cstdint>

namespace kiln::train {

// One single-threaded BLAS call, row-major: C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
// op(A) = Aᵀ when trans_a (A stored [k×m]), likewise for B.
template <class T>
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// As blas_gemm, cut into fixed output tiles spread over n_threads OpenMP threads.
template <class T>
void tiled_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, int n_threads);

// y[m×n] = x[m×k] · Wᵀ + bias, W stored [n×k] (nn.Linear's [out, in]); bias may be null.
template <class T>
void linear_forward(const T* x, const T* w, const T* bias, T* y, int64_t m, int64_t k, int64_t n,
                    int n_threads);

// Backward of linear_forward for the upstream gradient dy[m×n]:
//   dx[m×k] = dy · W   (overwritten, or added to when accumulate_dx; skipped when dx is null)
//   dw[n×k] += dyᵀ · x (skipped when null)
//   dbias[n] += Σ_rows dy (skipped when null)
template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, bool accumulate_dx, T* dw,
                     T* dbias, int64_t m, int64_t k, int64_t n, int n_threads);

// out[j] += Σ_r a[r×cols + j], summed over r in order (thread-count independent).
template <class T>
void add_column_sums(const T* a, int64_t rows, int64_t cols, T* out, int n_threads);

}  // namespace kiln::train

#include "train/ops/matmul.hpp"

#include <cblas.h>

#include <algorithm>

namespace kiln::train {

namespace {

// Output tile of tiled_gemm: big enough that each BLAS call runs near peak, small enough that a
// [tokens × hidden] product splits into many tiles for the threads.
constexpr int64_t kTileM = 64;
constexpr int64_t kTileN = 128;
// Column block of add_column_sums (one thread sums all rows of a block).
constexpr int64_t kColumnBlock = 64;

// All parallelism is ours (OpenMP over tiles); OpenBLAS must not start its own threads inside
// ours. Its thread count is process-wide, so it is set once.
void make_blas_single_threaded() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

void gemm_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

void gemm_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
               int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

}  // namespace

template <class T>
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  make_blas_single_threaded();
  if (k <= 0) {  // BLAS would leave C alone only for beta == 1; the product of nothing is zero
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  gemm_call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class T>
void tiled_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc, int n_threads) {
  if (m <= 0 || n <= 0) return;
  make_blas_single_threaded();
  const int64_t tiles_m = (m + kTileM - 1) / kTileM;
  const int64_t tiles_n = (n + kTileN - 1) / kTileN;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) \
    collapse(2) if (tiles_m * tiles_n > 1)
  for (int64_t tm = 0; tm < tiles_m; ++tm) {
    for (int64_t tn = 0; tn < tiles_n; ++tn) {
      const int64_t i0 = tm * kTileM, j0 = tn * kTileN;
      const int64_t rows = std::min(kTileM, m - i0), cols = std::min(kTileN, n - j0);
      // Row i0 of op(A): row i0 of A, or column i0 of A when transposed; likewise for B's columns.
      const T* a_tile = trans_a ? a + i0 : a + i0 * lda;
      const T* b_tile = trans_b ? b + j0 * ldb : b + j0;
      blas_gemm(trans_a, trans_b, rows, cols, k, alpha, a_tile, lda, b_tile, ldb, beta,
                c + i0 * ldc + j0, ldc);
    }
  }
}

template <class T>
void linear_forward(const T* x, const T* w, const T* bias, T* y, int64_t m, int64_t k, int64_t n,
                    int n_threads) {
  tiled_gemm<T>(false, true, m, n, k, T(1), x, k, w, k, T(0), y, n, n_threads);
  if (bias == nullptr) return;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m * n > (1 << 15))
  for (int64_t i = 0; i < m; ++i) {
    T* yi = y + i * n;
    for (int64_t j = 0; j < n; ++j) yi[j] += bias[j];
  }
}

template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, bool accumulate_dx, T* dw,
                     T* dbias, int64_t m, int64_t k, int64_t n, int n_threads) {
  if (dx != nullptr) {
    tiled_gemm<T>(false, false, m, k, n, T(1), dy, n, w, k, accumulate_dx ? T(1) : T(0), dx, k,
                  n_threads);
  }
  if (dw != nullptr) tiled_gemm<T>(true, false, n, k, m, T(1), dy, n, x, k, T(1), dw, k, n_threads);
  if (dbias != nullptr) add_column_sums(dy, m, n, dbias, n_threads);
}

template <class T>
void add_column_sums(const T* a, int64_t rows, int64_t cols, T* out, int n_threads) {
  const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (blocks > 1)
  for (int64_t bl = 0; bl < blocks; ++bl) {
    const int64_t j0 = bl * kColumnBlock, j1 = std::min(cols, j0 + kColumnBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const T* ar = a + r * cols;
      for (int64_t j = j0; j < j1; ++j) out[j] += ar[j];
    }
  }
}

#define KILN_INSTANTIATE(T)                                                                    \
  template void blas_gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,      \
                             const T*, int64_t, T, T*, int64_t);                               \
  template void tiled_gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,     \
                              const T*, int64_t, T, T*, int64_t, int);                         \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, \
                                  int);                                                        \
  template void linear_backward<T>(const T*, const T*, const T*, T*, bool, T*, T*, int64_t,    \
                                   int64_t, int64_t, int);                                     \
  template void add_column_sums<T>(const T*, int64_t, int64_t, T*, int);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

}  // namespace kiln::train

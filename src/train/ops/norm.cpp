#include "train/ops/norm.hpp"

#include <algorithm>
#include <cmath>

namespace kiln::train {

namespace {

constexpr int64_t kColumnBlock = 64;

// Shared by both norms: `mean` null means RMSNorm (no centring, no bias).
template <class T>
void norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                  int64_t dim, double eps, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows * dim > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = y + r * dim;
    double mu = 0.0;
    if (mean != nullptr) {
      for (int64_t i = 0; i < dim; ++i) mu += static_cast<double>(xr[i]);
      mu /= static_cast<double>(dim);
    }
    double sum_sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double d = static_cast<double>(xr[i]) - mu;
      sum_sq += d * d;
    }
    // Rounded to T before use, as a float32 model rounds its rsqrt.
    const T inv = static_cast<T>(1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps));
    const T m = static_cast<T>(mu);
    if (mean != nullptr) mean[r] = m;
    rstd[r] = inv;
    for (int64_t i = 0; i < dim; ++i) {
      const T xhat = (xr[i] - m) * inv;
      T v = w != nullptr ? w[i] * xhat : xhat;
      if (b != nullptr) v += b[i];
      yr[i] = v;
    }
  }
}

template <class T>
void norm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* dw,
                   T* db, int64_t rows, int64_t dim, int n_threads) {
  // dx = r · (g - mean(g) - x̂ · mean(g · x̂)) with g = dy · w; RMSNorm drops the mean(g) term.
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows * dim > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    const T m = mean != nullptr ? mean[r] : T(0);
    const T inv = rstd[r];
    double sum_g = 0.0, sum_gx = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double g = static_cast<double>(w != nullptr ? dyr[i] * w[i] : dyr[i]);
      sum_g += g;
      sum_gx += g * static_cast<double>((xr[i] - m) * inv);
    }
    const T mean_g = mean != nullptr ? static_cast<T>(sum_g / static_cast<double>(dim)) : T(0);
    const T mean_gx = static_cast<T>(sum_gx / static_cast<double>(dim));
    for (int64_t i = 0; i < dim; ++i) {
      const T g = w != nullptr ? dyr[i] * w[i] : dyr[i];
      const T xhat = (xr[i] - m) * inv;
      dxr[i] += inv * (g - mean_g - xhat * mean_gx);
    }
  }
  if (dw == nullptr && db == nullptr) return;
  const int64_t blocks = (dim + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (blocks > 1)
  for (int64_t bl = 0; bl < blocks; ++bl) {
    const int64_t j0 = bl * kColumnBlock, j1 = std::min(dim, j0 + kColumnBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * dim;
      const T* dyr = dy + r * dim;
      const T m = mean != nullptr ? mean[r] : T(0);
      for (int64_t j = j0; j < j1; ++j) {
        if (dw != nullptr) dw[j] += dyr[j] * ((xr[j] - m) * rstd[r]);
        if (db != nullptr) db[j] += dyr[j];
      }
    }
  }
}

}  // namespace

template <class T>
void rms_norm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps,
                      int n_threads) {
  norm_forward<T>(x, w, nullptr, y, nullptr, rstd, rows, dim, eps, n_threads);
}

template <class T>
void rms_norm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw,
                       int64_t rows, int64_t dim, int n_threads) {
  norm_backward<T>(dy, x, w, nullptr, rstd, dx, dw, nullptr, rows, dim, n_threads);
}

template <class T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                        int64_t dim, double eps, int n_threads) {
  norm_forward<T>(x, w, b, y, mean, rstd, rows, dim, eps, n_threads);
}

template <class T>
void layer_norm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                         T* dw, T* db, int64_t rows, int64_t dim, int n_threads) {
  norm_backward<T>(dy, x, w, mean, rstd, dx, dw, db, rows, dim, n_threads);
}

#define KILN_INSTANTIATE(T)                                                                       \
  template void rms_norm_forward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double, int);   \
  template void rms_norm_backward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t,     \
                                     int64_t, int);                                               \
  template void layer_norm_forward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t, \
                                      double, int);                                               \
  template void layer_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*,  \
                                       T*, int64_t, int64_t, int);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

}  // namespace kiln::train

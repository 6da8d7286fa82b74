#include "train/ops/embedding.hpp"

#include <algorithm>
#include <cstring>

namespace kiln::train {

namespace {
// Embedding gradients are split over column blocks, each summing every row in order.
constexpr int64_t kColumnBlock = 64;
}  // namespace

template <class T>
void embedding_forward(const T* table, const int32_t* ids, T* out, int64_t rows, int64_t dim,
                       int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows * dim > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out + r * dim, table + static_cast<int64_t>(ids[r]) * dim,
                static_cast<size_t>(dim) * sizeof(T));
  }
}

template <class T>
void embedding_backward(const T* dout, const int32_t* ids, T* dtable, int64_t rows, int64_t dim,
                        int n_threads, int32_t padding_idx) {
  const int64_t blocks = (dim + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (blocks > 1)
  for (int64_t bl = 0; bl < blocks; ++bl) {
    const int64_t j0 = bl * kColumnBlock, j1 = std::min(dim, j0 + kColumnBlock);
    for (int64_t r = 0; r < rows; ++r) {
      if (ids[r] == padding_idx) continue;
      T* dst = dtable + static_cast<int64_t>(ids[r]) * dim;
      const T* src = dout + r * dim;
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
  }
}

template <class T>
void positions_forward(const T* table, T* x, int64_t batch, int64_t seq, int64_t dim,
                       int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (batch * seq * dim > (1 << 14))
  for (int64_t r = 0; r < batch * seq; ++r) {
    const T* p = table + (r % seq) * dim;
    T* xr = x + r * dim;
    for (int64_t j = 0; j < dim; ++j) xr[j] += p[j];
  }
}

template <class T>
void positions_backward(const T* dx, T* dtable, int64_t batch, int64_t seq, int64_t dim,
                        int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (seq * dim > (1 << 14))
  for (int64_t t = 0; t < seq; ++t) {
    T* dst = dtable + t * dim;
    for (int64_t b = 0; b < batch; ++b) {
      const T* src = dx + (b * seq + t) * dim;
      for (int64_t j = 0; j < dim; ++j) dst[j] += src[j];
    }
  }
}

#define KILN_INSTANTIATE(T)                                                                \
  template void embedding_forward<T>(const T*, const int32_t*, T*, int64_t, int64_t, int); \
  template void embedding_backward<T>(const T*, const int32_t*, T*, int64_t, int64_t, int, \
                                      int32_t);                                            \
  template void positions_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int);        \
  template void positions_backward<T>(const T*, T*, int64_t, int64_t, int64_t, int);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

}  // namespace kiln::train

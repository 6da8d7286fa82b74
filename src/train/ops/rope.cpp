#include "train/ops/rope.hpp"

#include <cmath>

namespace kiln::train {

namespace {

// sign +1: forward rotation; -1: its transpose (the backward pass).
template <class T>
void rotate(T* x, const RopeTable<T>& t, int64_t batch, int64_t heads, int64_t head_dim, T sign,
            int n_threads) {
  const int64_t rows = batch * t.seq, half = t.half;
#pragma omp parallel for num_threads(n_threads) \
    schedule(static) if (rows * heads * head_dim > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = r % t.seq;
    const T* c = t.cos.data() + pos * half;
    const T* s = t.sin.data() + pos * half;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = x + (r * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const T x1 = v[i], x2 = v[i + half], si = sign * s[i];
        v[i] = x1 * c[i] - x2 * si;
        v[i + half] = x2 * c[i] + x1 * si;
      }
    }
  }
}

}  // namespace

template <class T>
RopeTable<T> make_rope_table(std::span<const float> inv_freq, int64_t seq, int direction) {
  RopeTable<T> t;
  t.seq = seq;
  t.half = static_cast<int64_t>(inv_freq.size());
  t.cos.resize(static_cast<size_t>(seq * t.half));
  t.sin.resize(t.cos.size());
  for (int64_t p = 0; p < seq; ++p) {
    for (int64_t i = 0; i < t.half; ++i) {
      const T angle = static_cast<T>(p) * static_cast<T>(inv_freq[i]);
      t.cos[p * t.half + i] = static_cast<T>(std::cos(static_cast<double>(angle)));
      t.sin[p * t.half + i] =
          static_cast<T>(direction) * static_cast<T>(std::sin(static_cast<double>(angle)));
    }
  }
  return t;
}

template <class T>
void rope_forward(T* x, const RopeTable<T>& table, int64_t batch, int64_t heads, int64_t head_dim,
                  int n_threads) {
  rotate(x, table, batch, heads, head_dim, T(1), n_threads);
}

template <class T>
void rope_backward(T* dx, const RopeTable<T>& table, int64_t batch, int64_t heads, int64_t head_dim,
                   int n_threads) {
  rotate(dx, table, batch, heads, head_dim, T(-1), n_threads);
}

#define KILN_INSTANTIATE(T)                                                               \
  template RopeTable<T> make_rope_table<T>(std::span<const float>, int64_t, int);         \
  template void rope_forward<T>(T*, const RopeTable<T>&, int64_t, int64_t, int64_t, int); \
  template void rope_backward<T>(T*, const RopeTable<T>&, int64_t, int64_t, int64_t, int);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

}  // namespace kiln::train

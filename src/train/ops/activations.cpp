#include "train/ops/activations.hpp"

#include <cmath>
#include <numbers>

namespace kiln::train {

namespace {

// Below this many elements the loop runs on the calling thread (waking a team costs more).
constexpr int64_t kParallelMin = 1 << 14;

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <class T>
constexpr T kGeluC = static_cast<T>(0.7978845608028654);  // √(2/π)
template <class T>
constexpr T kGeluA = static_cast<T>(0.044715);

}  // namespace

template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n,
                     int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], s = sigmoid(g), silu = g * s;
    dup[i] = dout[i] * silu;
    dgate[i] = dout[i] * up[i] * (s * (T(1) + g * (T(1) - s)));  // silu' = s (1 + g (1 - s))
  }
}

template <class T>
void gelu_tanh_forward(const T* x, T* y, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    y[i] = T(0.5) * v * (T(1) + std::tanh(kGeluC<T> * (v + kGeluA<T> * v * v * v)));
  }
}

template <class T>
void gelu_tanh_backward(const T* dy, const T* x, T* dx, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i];
    const T t = std::tanh(kGeluC<T> * (v + kGeluA<T> * v * v * v));
    const T dinner = kGeluC<T> * (T(1) + T(3) * kGeluA<T> * v * v);
    dx[i] = dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * dinner);
  }
}

template <class T>
void relu_squared_forward(const T* x, T* y, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] * x[i] : T(0);
}

template <class T>
void relu_squared_backward(const T* dy, const T* x, T* dx, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > T(0) ? T(2) * x[i] * dy[i] : T(0);
}

template <class T>
void softcap_forward(const T* x, T* y, int64_t n, T cap, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = cap * std::tanh(x[i] / cap);
}

template <class T>
void softcap_backward(const T* dy, const T* y, T* dx, int64_t n, T cap, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T t = y[i] / cap;
    dx[i] = dy[i] * (T(1) - t * t);
  }
}

#define KILN_INSTANTIATE(T)                                                             \
  template void swiglu_forward<T>(const T*, const T*, T*, int64_t, int);                \
  template void swiglu_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, int); \
  template void gelu_tanh_forward<T>(const T*, T*, int64_t, int);                       \
  template void gelu_tanh_backward<T>(const T*, const T*, T*, int64_t, int);            \
  template void relu_squared_forward<T>(const T*, T*, int64_t, int);                    \
  template void relu_squared_backward<T>(const T*, const T*, T*, int64_t, int);         \
  template void softcap_forward<T>(const T*, T*, int64_t, T, int);                      \
  template void softcap_backward<T>(const T*, const T*, T*, int64_t, T, int);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

}  // namespace kiln::train

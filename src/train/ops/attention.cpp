#include "train/ops/attention.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "train/ops/matmul.hpp"

namespace kiln::train {

template <class T>
void attention_forward(const T* q, const T* k, const T* v, T* out, T* probs, int64_t batch,
                       int64_t seq, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       int n_threads) {
  const int64_t group = n_heads / n_kv_heads;
  const int64_t q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) collapse(2)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t g = h / group;
      const T* qh = q + b * seq * q_stride + h * head_dim;
      const T* kg = k + b * seq * kv_stride + g * head_dim;
      const T* vg = v + b * seq * kv_stride + g * head_dim;
      T* p = probs + (b * n_heads + h) * seq * seq;
      // S = scale · Q Kᵀ over all pairs; the part above the diagonal is discarded below.
      blas_gemm<T>(false, true, seq, seq, head_dim, scale, qh, q_stride, kg, kv_stride, T(0), p,
                   seq);
      for (int64_t i = 0; i < seq; ++i) {
        T* row = p + i * seq;
        T max = row[0];
        for (int64_t j = 1; j <= i; ++j) max = std::max(max, row[j]);
        T sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          row[j] = std::exp(row[j] - max);
          sum += row[j];
        }
        const T inv = T(1) / sum;
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        for (int64_t j = i + 1; j < seq; ++j) row[j] = T(0);
      }
      blas_gemm<T>(false, false, seq, head_dim, seq, T(1), p, seq, vg, kv_stride, T(0),
                   out + b * seq * q_stride + h * head_dim, q_stride);
    }
  }
}

template <class T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                        T* dk, T* dv, int64_t batch, int64_t seq, int64_t n_heads,
                        int64_t n_kv_heads, int64_t head_dim, int n_threads) {
  const int64_t group = n_heads / n_kv_heads;
  const int64_t q_stride = n_heads * head_dim, kv_stride = n_kv_heads * head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) collapse(2)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < n_kv_heads; ++g) {
      std::vector<T> ds(static_cast<size_t>(seq * seq));
      const T* kg = k + b * seq * kv_stride + g * head_dim;
      const T* vg = v + b * seq * kv_stride + g * head_dim;
      T* dkg = dk + b * seq * kv_stride + g * head_dim;
      T* dvg = dv + b * seq * kv_stride + g * head_dim;
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const T* qh = q + b * seq * q_stride + h * head_dim;
        const T* doh = dout + b * seq * q_stride + h * head_dim;
        T* dqh = dq + b * seq * q_stride + h * head_dim;
        const T* p = probs + (b * n_heads + h) * seq * seq;
        const T beta = h == g * group ? T(0) : T(1);  // the group's first head overwrites
        // dV += Pᵀ dO
        blas_gemm<T>(true, false, seq, head_dim, seq, T(1), p, seq, doh, q_stride, beta, dvg,
                     kv_stride);
        // dP = dO Vᵀ, then dS = P ∘ (dP - Σ_j P dP) (softmax backward, per row)
        blas_gemm<T>(false, true, seq, seq, head_dim, T(1), doh, q_stride, vg, kv_stride, T(0),
                     ds.data(), seq);
        for (int64_t i = 0; i < seq; ++i) {
          const T* pr = p + i * seq;
          T* dr = ds.data() + i * seq;
          T dot = 0;
          for (int64_t j = 0; j <= i; ++j) dot += pr[j] * dr[j];
          for (int64_t j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - dot);
          for (int64_t j = i + 1; j < seq; ++j) dr[j] = T(0);
        }
        // dQ = scale · dS K;  dK += scale · dSᵀ Q
        blas_gemm<T>(false, false, seq, head_dim, seq, scale, ds.data(), seq, kg, kv_stride, T(0),
                     dqh, q_stride);
        blas_gemm<T>(true, false, seq, head_dim, seq, scale, ds.data(), seq, qh, q_stride, beta,
                     dkg, kv_stride);
      }
    }
  }
}

#define KILN_INSTANTIATE(T)                                                                     \
  template void attention_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,    \
                                     int64_t, int64_t, int64_t, int);                           \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, \
                                      T*, int64_t, int64_t, int64_t, int64_t, int64_t, int);
KILN_INSTANTIATE(float)
KILN_INSTANTIATE(double)
#undef KILN_INSTANTIATE

}  // namespace kiln::train

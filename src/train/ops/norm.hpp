// Normalisations of the training graph, forward and backward, per row of `dim` elements.
//
//   RMSNorm   y = x · r · w,            r = 1 / sqrt(mean(x²) + eps)       (w null: no weight)
//   LayerNorm y = (x - μ) · r · w + b,  r = 1 / sqrt(mean((x - μ)²) + eps)
//
// Both normalise first and scale after (HF LlamaRMSNorm / nn.LayerNorm order). The forward pass
// saves μ and r per row for the backward pass. Row statistics are accumulated in double.
// Backward passes ADD into dx (the caller zeroes it or lets it collect a residual's gradient) and
// into dw / db; weight gradients are summed over rows in order (thread-count independent).
#pragma once

#include <cstdint>

namespace kiln::train {

template <class T>
void rms_norm_forward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t dim, double eps,
                      int n_threads);

template <class T>
void rms_norm_backward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw,
                       int64_t rows, int64_t dim, int n_threads);

template <class T>
void layer_norm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                        int64_t dim, double eps, int n_threads);

template <class T>
void layer_norm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                         T* dw, T* db, int64_t rows, int64_t dim, int n_threads);

}  // namespace kiln::train

// Elementwise activations of the training graph, forward and backward, over n elements.
//
//   SwiGLU     a = silu(g) · u,  silu(g) = g / (1 + e^-g)                  (Llama family MLP)
//   GELU tanh  y = x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))             (GPT-2 "gelu_new")
//   ReLU²      y = max(x, 0)²                                               (NanoChat "relu2")
//   soft-cap   y = c · tanh(x / c)                                          (NanoChat logits)
//
// Backward passes overwrite their outputs. softcap_* may run in place (y == x, dx == dy).
#pragma once

#include <cstdint>

namespace kiln::train {

template <class T>
void swiglu_forward(const T* gate, const T* up, T* out, int64_t n, int n_threads);
template <class T>
void swiglu_backward(const T* dout, const T* gate, const T* up, T* dgate, T* dup, int64_t n,
                     int n_threads);

template <class T>
void gelu_tanh_forward(const T* x, T* y, int64_t n, int n_threads);
template <class T>
void gelu_tanh_backward(const T* dy, const T* x, T* dx, int64_t n, int n_threads);

template <class T>
void relu_squared_forward(const T* x, T* y, int64_t n, int n_threads);
template <class T>
void relu_squared_backward(const T* dy, const T* x, T* dx, int64_t n, int n_threads);

template <class T>
void softcap_forward(const T* x, T* y, int64_t n, T cap, int n_threads);
// Takes the forward OUTPUT y: dy/dx = 1 - (y / c)².
template <class T>
void softcap_backward(const T* dy, const T* y, T* dx, int64_t n, T cap, int n_threads);

}  // namespace kiln::train

// MLP activations of the training graph (GELU-tanh, ReLU², SwiGLU), forward from the BF16
// up-projection output and backward to its BF16 gradient; 16-byte accesses when inter % 8 == 0.
#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/train_kernels.hpp"
#include "train_common.cuh"

namespace kiln::cuda::train {

namespace {

constexpr int kThreads = 256;
constexpr float kGeluC = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluA = 0.044715f;

__device__ __forceinline__ float act_forward(Activation act, float h) {
  if (act == Activation::GeluTanh) {
    return 0.5f * h * (1.0f + tanhf(kGeluC * (h + kGeluA * h * h * h)));
  }
  const float r = fmaxf(h, 0.0f);
  return r * r;
}

// d act / d h.
__device__ __forceinline__ float act_derivative(Activation act, float h) {
  if (act == Activation::GeluTanh) {
    const float t = tanhf(kGeluC * (h + kGeluA * h * h * h));
    const float dinner = kGeluC * (1.0f + 3.0f * kGeluA * h * h);
    return 0.5f * (1.0f + t) + 0.5f * h * (1.0f - t * t) * dinner;
  }
  return 2.0f * fmaxf(h, 0.0f);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

template <int V>
__device__ __forceinline__ void load_h(const bf16* p, float (&v)[V]) {
  if constexpr (V == 8) {
    detail::load8(p, v);
  } else {
    v[0] = __bfloat162float(*p);
  }
}
template <int V>
__device__ __forceinline__ void store_h(bf16* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    detail::store8(p, v);
  } else {
    *p = __float2bfloat16(v[0]);
  }
}
template <int V>
__device__ __forceinline__ void load_f(const float* p, float (&v)[V]) {
  if constexpr (V == 8) {
    detail::load8(p, v);
  } else {
    v[0] = *p;
  }
}

// Each thread: V adjacent columns c of one row r of a [rows × inter].
template <int V>
__global__ void activation_forward_kernel(Activation act, const bf16* h, bf16* a, int64_t rows,
                                          int64_t inter) {
  const int64_t per_row = inter / V;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * per_row) return;
  const int64_t r = i / per_row, c = (i % per_row) * V;
  float out[V];
  if (act == Activation::SwiGlu) {
    float g[V], u[V];
    load_h<V>(h + r * 2 * inter + c, g);
    load_h<V>(h + r * 2 * inter + inter + c, u);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = g[k] * sigmoid(g[k]) * u[k];
  } else {
    float x[V];
    load_h<V>(h + r * inter + c, x);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = act_forward(act, x[k]);
  }
  store_h<V>(a + r * inter + c, out);
}

template <int V>
__global__ void activation_backward_kernel(Activation act, const bf16* h, const float* da, bf16* dh,
                                           int64_t rows, int64_t inter) {
  const int64_t per_row = inter / V;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * per_row) return;
  const int64_t r = i / per_row, c = (i % per_row) * V;
  float d[V];
  load_f<V>(da + r * inter + c, d);
  if (act == Activation::SwiGlu) {
    float g[V], u[V], dg[V], du[V];
    load_h<V>(h + r * 2 * inter + c, g);
    load_h<V>(h + r * 2 * inter + inter + c, u);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float s = sigmoid(g[k]);
      du[k] = d[k] * g[k] * s;
      dg[k] = d[k] * u[k] * (s * (1.0f + g[k] * (1.0f - s)));  // silu' = s (1 + g (1 - s))
    }
    store_h<V>(dh + r * 2 * inter + c, dg);
    store_h<V>(dh + r * 2 * inter + inter + c, du);
  } else {
    float x[V];
    load_h<V>(h + r * inter + c, x);
#pragma unroll
    for (int k = 0; k < V; ++k) d[k] *= act_derivative(act, x[k]);
    store_h<V>(dh + r * inter + c, d);
  }
}

unsigned blocks_for(int64_t items) {
  return static_cast<unsigned>((items + kThreads - 1) / kThreads);
}

}  // namespace

void activation_forward(Activation act, const bf16* h, bf16* a, int64_t rows, int64_t inter,
                        cudaStream_t stream) {
  if (rows <= 0 || inter <= 0) return;
  if (inter % 8 == 0 && detail::aligned16(h, a)) {
    activation_forward_kernel<8>
        <<<blocks_for(rows * inter / 8), kThreads, 0, stream>>>(act, h, a, rows, inter);
  } else {
    activation_forward_kernel<1>
        <<<blocks_for(rows * inter), kThreads, 0, stream>>>(act, h, a, rows, inter);
  }
  check_launch("activation_forward_kernel");
}

void activation_backward(Activation act, const bf16* h, const float* da, bf16* dh, int64_t rows,
                         int64_t inter, cudaStream_t stream) {
  if (rows <= 0 || inter <= 0) return;
  if (inter % 8 == 0 && detail::aligned16(h, dh) && detail::aligned16(da)) {
    activation_backward_kernel<8>
        <<<blocks_for(rows * inter / 8), kThreads, 0, stream>>>(act, h, da, dh, rows, inter);
  } else {
    activation_backward_kernel<1>
        <<<blocks_for(rows * inter), kThreads, 0, stream>>>(act, h, da, dh, rows, inter);
  }
  check_launch("activation_backward_kernel");
}

}  // namespace kiln::cuda::train

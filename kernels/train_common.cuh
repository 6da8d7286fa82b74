// Device helpers shared by the training kernels (kernels/train_*.cu): 16-byte vector loads and
// stores of float32 / BF16, and the fixed-order second pass that turns per-block partial sums into
// a deterministic "+=" reduction.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace kiln::cuda::train::detail {

// Whether every pointer is 16-byte aligned: the vectorised paths need it (parameter and gradient
// sub-buffers usually are, but nothing in the contract promises it).
template <class... P>
inline bool aligned16(const P*... ptrs) {
  return ((reinterpret_cast<uintptr_t>(ptrs) % 16 == 0) && ...);
}

// 8 BF16 values as one 16-byte word.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 h[4];
};

__device__ __forceinline__ void unpack8(const Bf16x8& word, float (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(word.h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
  unpack8(*reinterpret_cast<const Bf16x8*>(p), v);
}

__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&v)[8]) {
  Bf16x8 word;
#pragma unroll
  for (int i = 0; i < 4; ++i) word.h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<Bf16x8*>(p) = word;
}

__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}

// out[c] += Σ_{g < groups} partials[g · stride + c] for c < width, the groups summed in index
// order (deterministic). Defined in train_reduce.cu.
void add_partial_sums(const float* partials, int64_t groups, int64_t stride, int64_t width,
                      float* out, cudaStream_t stream);

}  // namespace kiln::cuda::train::detail

// SwiGLU over the fused gate/up projection: out = silu(gate) · up, as BF16 (float32 in the F32
// precision) for down_proj.
#include <algorithm>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "element.cuh"
#include "overlapped_launch.cuh"
#include "quant_dot_int8.cuh"

namespace kiln::cuda {

namespace {

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <typename T>
__global__ void swiglu_kernel(const float* gate_up, T* out, int64_t n, int64_t dim) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / dim, col = i % dim;
    const float g = gate_up[row * 2 * dim + col];
    const float u = gate_up[row * 2 * dim + dim + col];
    detail::store_f(out + i, silu_times(g, u));
  }
}

// One row, 8 outputs per thread (dim a multiple of 32, so the four lanes of each 32-element block
// share a warp): the BF16 outputs as swiglu_kernel writes them, then those values quantised into
// xq as quantize_x_int8 would (quant_dot_int8.cuh), for the down_proj product after it.
constexpr int kQuantizeThreads = 256;
__global__ void __launch_bounds__(kQuantizeThreads)
    swiglu_quantize_x_kernel(const float* gate_up, bf16* out, uint8_t* xq, int64_t dim) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  const quant_detail::Int8X xs = quant_detail::int8_x_layout(xq, dim);
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool in = g < dim / 8;
  float v[8] = {};
  if (in) {
    const auto* gate = reinterpret_cast<const float4*>(gate_up + 8 * g);
    const auto* up = reinterpret_cast<const float4*>(gate_up + dim + 8 * g);
    const float4 g0 = gate[0], g1 = gate[1], u0 = up[0], u1 = up[1];
    const float gs[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
    const float us[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
    uint4 packed;
    auto* p2 = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bf16 a = __float2bfloat16(silu_times(gs[2 * j], us[2 * j]));
      const bf16 b = __float2bfloat16(silu_times(gs[2 * j + 1], us[2 * j + 1]));
      p2[j] = __halves2bfloat162(a, b);
      v[2 * j] = __bfloat162float(a);
      v[2 * j + 1] = __bfloat162float(b);
    }
    *reinterpret_cast<uint4*>(out + 8 * g) = packed;
  }
  quant_detail::quantize_8(v, g, in, xs);
}

template <typename T>
void launch(const float* gate_up, T* out, int64_t rows, int64_t dim, cudaStream_t stream) {
  const int64_t n = rows * dim;
  if (n == 0) return;
  const unsigned blocks = std::min<unsigned>(detail::grid_for(n, 256), 8192);
  swiglu_kernel<T><<<blocks, 256, 0, stream>>>(gate_up, out, n, dim);
  check_launch("swiglu_kernel");
}

}  // namespace

void swiglu(const float* gate_up, bf16* out, int64_t rows, int64_t dim, cudaStream_t stream) {
  launch(gate_up, out, rows, dim, stream);
}

void swiglu(const float* gate_up, float* out, int64_t rows, int64_t dim, cudaStream_t stream) {
  launch(gate_up, out, rows, dim, stream);
}

void swiglu_quantize_x(const float* gate_up, bf16* out, void* xq, int64_t dim,
                       cudaStream_t stream) {
  if (dim % 32 != 0 || reinterpret_cast<uintptr_t>(gate_up) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(out) % 16 != 0) {
    launch(gate_up, out, 1, dim, stream);
    quantize_x_int8(out, dim, xq, stream);
    return;
  }
  detail::launch_overlapped(swiglu_quantize_x_kernel, detail::grid_for(dim / 8, kQuantizeThreads),
                            kQuantizeThreads, 0, stream, "swiglu_quantize_x_kernel", gate_up, out,
                            static_cast<uint8_t*>(xq), dim);
}

}  // namespace kiln::cuda

// RMSNorm (HF LlamaRMSNorm: mean of squares in float32, normalise, then scale by the weight), with
// an optional fused residual add, writing BF16 (float32 in the F32 precision) for the matrix
// product that follows.
//
// Rows of up to kThreads · kMaxPerThread elements (every model kiln runs up to hidden 4096) take
// the register form: each thread issues all of its loads (x, residual, weight) before using any,
// so a row costs one memory round trip instead of one per element a thread handles (at batch 1
// on the 7B shape, 14 dependent round trips made this 3584-element norm ~14 µs, a fifth of the
// decode step's kernel time). Both forms add the squares in the same order (thread t: elements
// t, t + 256, ... in turn, then block_sum), so they give the same bits, and so do the GEMVs that
// fuse this norm (quant_gemv.cu, gemv.cu follow rms_norm_kernel's arithmetic).
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "common.cuh"
#include "element.cuh"
#include "overlapped_launch.cuh"
#include "quant_dot_int8.cuh"

namespace kiln::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void rms_norm_kernel(float* x, const float* residual, const float* weight, T* out,
                                int64_t dim, float eps) {
  detail::allow_dependents();
  detail::wait_for_inputs();
  const int64_t row = blockIdx.x;
  float* xr = x + row * dim;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (residual != nullptr) {
      v += residual[row * dim + i];
      xr[i] = v;  // each element is read and written by the same thread: no barrier needed
    }
    sum_sq += v * v;
  }
  const float total = detail::block_sum(sum_sq);
  const float inv_rms = rsqrtf(total / static_cast<float>(dim) + eps);
  T* outr = out + row * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    detail::store_f(outr + i, weight[i] * (xr[i] * inv_rms));
  }
}

constexpr int kMaxPerThread = 16;

// xq (one row, T = bf16, dim a multiple of 32; null otherwise): the BF16 outputs are also
// quantised there as quantize_x_int8 would quantise them (quant_dot_int8.cuh), through shared
// memory, since a thread holds strided elements and the quantisation wants 8 consecutive ones.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rms_norm_registers_kernel(float* x, const float* residual, const float* weight, T* out,
                              int64_t dim, float eps, uint8_t* xq) {
  detail::allow_dependents();
  const int64_t row = blockIdx.x;
  float* xr = x + row * dim;
  float v[kMaxPerThread], w[kMaxPerThread];
  // The weights before the wait (overlapped launch: they overlap the previous kernel's tail).
#pragma unroll
  for (int j = 0; j < kMaxPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
    if (i < dim) w[j] = weight[i];
  }
  detail::wait_for_inputs();
#pragma unroll
  for (int j = 0; j < kMaxPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
    if (i < dim) {
      v[j] = xr[i];
      if (residual != nullptr) v[j] += residual[row * dim + i];
    }
  }
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
    if (i < dim) {
      if (residual != nullptr) xr[i] = v[j];  // read and written by this thread only
      sum_sq += v[j] * v[j];
    }
  }
  const float total = detail::block_sum(sum_sq);
  const float inv_rms = rsqrtf(total / static_cast<float>(dim) + eps);
  T* outr = out + row * dim;
#pragma unroll
  for (int j = 0; j < kMaxPerThread; ++j) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
    if (i < dim) detail::store_f(outr + i, w[j] * (v[j] * inv_rms));
  }
  if constexpr (sizeof(T) == sizeof(bf16)) {
    if (xq == nullptr) return;
    __shared__ float staged[kThreads * kMaxPerThread];
#pragma unroll
    for (int j = 0; j < kMaxPerThread; ++j) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(j) * kThreads;
      if (i < dim) staged[i] = __bfloat162float(__float2bfloat16(w[j] * (v[j] * inv_rms)));
    }
    __syncthreads();
    const quant_detail::Int8X xs = quant_detail::int8_x_layout(xq, dim);
    const int64_t groups = dim / 8;
    // A warp runs while its first lane has elements (whole 32-element blocks per 4 lanes).
    for (int64_t g = threadIdx.x; g - threadIdx.x % 32 < groups; g += kThreads) {
      float q[8] = {};
      const bool in = g < groups;
      if (in) {
#pragma unroll
        for (int j = 0; j < 8; ++j) q[j] = staged[8 * g + j];
      }
      quant_detail::quantize_8(q, g, in, xs);
    }
  }
}

// The register form is launched overlapped (its weights load before the wait) unless
// KILN_CUDA_NORM_OVERLAP=0 (A/B): the 7B decode step runs two of these per layer, each ~3 µs of
// mostly fixed latency that the plain launch could not hide behind the kernel before.
template <typename T>
void launch_registers(float* x, const float* residual, const float* weight, T* out, int64_t rows,
                      int64_t dim, float eps, uint8_t* xq, cudaStream_t stream) {
  const char* env = std::getenv("KILN_CUDA_NORM_OVERLAP");
  if (env != nullptr && std::string(env) == "0") {
    rms_norm_registers_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
        x, residual, weight, out, dim, eps, xq);
    check_launch("rms_norm_registers_kernel");
    return;
  }
  detail::launch_overlapped(rms_norm_registers_kernel<T>, static_cast<unsigned>(rows), kThreads, 0,
                            stream, "rms_norm_registers_kernel", x, residual, weight, out, dim, eps,
                            xq);
}

template <typename T>
void launch(float* x, const float* residual, const float* weight, T* out, int64_t rows, int64_t dim,
            float eps, cudaStream_t stream) {
  if (rows == 0) return;
  if (dim <= static_cast<int64_t>(kThreads) * kMaxPerThread) {
    launch_registers<T>(x, residual, weight, out, rows, dim, eps, nullptr, stream);
    return;
  }
  rms_norm_kernel<T>
      <<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, residual, weight, out, dim, eps);
  check_launch("rms_norm_kernel");
}

}  // namespace

void rms_norm(float* x, const float* residual, const float* weight, bf16* out, int64_t rows,
              int64_t dim, float eps, cudaStream_t stream) {
  launch(x, residual, weight, out, rows, dim, eps, stream);
}

void rms_norm(float* x, const float* residual, const float* weight, float* out, int64_t rows,
              int64_t dim, float eps, cudaStream_t stream) {
  launch(x, residual, weight, out, rows, dim, eps, stream);
}

void rms_norm_quantize_x(float* x, const float* weight, bf16* out, void* xq, int64_t dim, float eps,
                         cudaStream_t stream) {
  if (dim > static_cast<int64_t>(kThreads) * kMaxPerThread || dim % 32 != 0) {
    launch(x, static_cast<const float*>(nullptr), weight, out, 1, dim, eps, stream);
    quantize_x_int8(out, dim, xq, stream);
    return;
  }
  launch_registers<bf16>(x, nullptr, weight, out, 1, dim, eps, static_cast<uint8_t*>(xq), stream);
}

}  // namespace kiln::cuda

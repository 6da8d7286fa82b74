// Loads and stores of the two element types an inference buffer may hold: BF16 (the default
// path) or float32 (the F32 checking precision, KILN_PRECISION_F32). Kernels templated on the
// element type use these so that one body serves both.
#pragma once

#include <cuda_bf16.h>

namespace kiln::cuda::detail {

__device__ __forceinline__ float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float load_f(const float* p) { return *p; }

__device__ __forceinline__ void store_f(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store_f(float* p, float v) { *p = v; }

}  // namespace kiln::cuda::detail

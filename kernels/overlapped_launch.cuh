// Programmatic dependent launch (Hopper and later), opt-in (KILN_CUDA_OVERLAP=1, see
// overlap_allowed): a kernel launched with launch_overlapped() may start while the kernel before
// it on the stream is still finishing, so its launch latency and its weight loads overlap the
// previous kernel's tail. A decode step is a chain of ~120 small kernels whose run times (2–15 µs)
// are mostly fixed latency, which is what this is meant to hide.
//
// The contract, for every kernel launched this way:
//   - before wait_for_inputs() it reads only memory no kernel of the step writes (weights);
//   - it calls wait_for_inputs() before touching anything else (activations, caches, positions);
//     that returns once the previous grid — and so, transitively, every earlier one — has
//     completed and its writes are visible;
//   - it calls allow_dependents() early, letting the NEXT kernel's blocks be scheduled (they then
//     wait in their own wait_for_inputs()).
// A kernel that was compiled without these instructions (PTX for an older architecture) must not
// be launched overlapped; launch_overlapped() checks the kernel's PTX version for that.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "backend/cuda/cuda_check.hpp"

namespace kiln::cuda::detail {

__device__ __forceinline__ void wait_for_inputs() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether `kernel` is launched overlapped: only when KILN_CUDA_OVERLAP=1 (measured on the H100,
// 0.5B shape, it did not pay yet: tg128 826/880 tok/s with it, 872/871 without, same call — see
// tools/gpu/NOTES.md), and only if its code came from PTX for sm_90 or later (so the griddepcontrol
// instructions are in it).
template <typename Kernel>
bool overlap_allowed(Kernel kernel) {
  const char* env = std::getenv("KILN_CUDA_OVERLAP");
  if (env == nullptr || env[0] != '1') return false;
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kernel)) != cudaSuccess) {
    (void)cudaGetLastError();  // not fatal: launch it the ordinary way
    return false;
  }
  return attr.ptxVersion >= 90;
}

template <typename... Params, typename... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                       cudaStream_t stream, const char* name, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = overlap_allowed(kernel) ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name);
  check_launch(name);
}

}  // namespace kiln::cuda::detail

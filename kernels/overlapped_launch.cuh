// Programmatic dependent launch (Hopper and later), on by default (KILN_CUDA_OVERLAP, see
// overlap_mode): a kernel launched with launch_overlapped() may start while the kernel before
// it on the stream is still finishing, so its launch latency and its weight loads overlap the
// previous kernel's tail. A decode step is a chain of ~120 small kernels whose run times (2–15 µs)
// are mostly fixed latency, which is what this is meant to hide.
//
// The contract, for every kernel launched this way:
//   - before wait_for_inputs() it reads only memory no kernel of the step writes (weights; the
//     decode attention also reads cache rows of earlier steps and the position the step's first
//     copy wrote);
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
#include <string_view>
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

// Which kernels are launched overlapped (KILN_CUDA_OVERLAP; H100 measurements in
// tools/gpu/NOTES.md):
//   unset or "1" — every kernel launched through launch_overlapped(): the default since session 7
//     (tg128, alternating A/B in one call: 0.5B BF16 +7.5 %, 7B Q4_K_M +3.5 %, 7B BF16 and Q8_0
//     within the spread);
//   "all" — also those launched through launch_overlapped_opt_in(), the per-block quantised GEMV
//     of quant_gemv.cu, which then also lets its own dependents in early; after it, early
//     dependents measured slower (0.5B Q8_0, whose every product is that kernel: −4.5 %);
//   "0" — none: the A/B switch, and a way out should a driver misbehave.
enum class OverlapMode { kNone, kDefault, kAll };

inline OverlapMode overlap_mode() {
  const char* env = std::getenv("KILN_CUDA_OVERLAP");
  if (env == nullptr || env[0] == '\0' || (env[0] == '1' && env[1] == '\0')) {
    return OverlapMode::kDefault;
  }
  if (env[0] == '0' && env[1] == '\0') return OverlapMode::kNone;
  if (std::string_view(env) == "all") return OverlapMode::kAll;
  return OverlapMode::kDefault;  // an unknown value keeps the default rather than failing a launch
}

// Whether `kernel` is launched overlapped: by the mode above, and only if its code came from PTX
// for sm_90 or later (so the griddepcontrol instructions are in it; on older GPUs the attribute
// would be accepted and the kernel would run unsynchronised).
template <typename Kernel>
bool overlap_allowed(Kernel kernel, bool opt_in_only) {
  const OverlapMode mode = overlap_mode();
  if (mode == OverlapMode::kNone || (opt_in_only && mode != OverlapMode::kAll)) return false;
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kernel)) != cudaSuccess) {
    (void)cudaGetLastError();  // not fatal: launch it the ordinary way
    return false;
  }
  return attr.ptxVersion >= 90;
}

template <typename... Params, typename... Args>
void launch_with_overlap(bool opt_in_only, void (*kernel)(Params...), dim3 grid, dim3 block,
                         size_t shared_bytes, cudaStream_t stream, const char* name,
                         Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = overlap_allowed(kernel, opt_in_only) ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name);
  check_launch(name);
}

template <typename... Params, typename... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                       cudaStream_t stream, const char* name, Args&&... args) {
  launch_with_overlap(false, kernel, grid, block, shared_bytes, stream, name,
                      std::forward<Args>(args)...);
}

// Overlapped only under KILN_CUDA_OVERLAP=all: kernels that keep the contract but measured slower
// overlapped.
template <typename... Params, typename... Args>
void launch_overlapped_opt_in(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                              cudaStream_t stream, const char* name, Args&&... args) {
  launch_with_overlap(true, kernel, grid, block, shared_bytes, stream, name,
                      std::forward<Args>(args)...);
}

}  // namespace kiln::cuda::detail

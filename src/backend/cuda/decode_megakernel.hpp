// A session's state for the decode megakernel (kernels/decode_megakernel.cu): the device table of
// its layers' weight and KV-cache pointers, the attention chunks' partial states and the grid
// barrier's two counters. Made once per session before the decode step is captured (it copies the
// table to the device synchronously, which a capture must not see).
#pragma once

#include <memory>
#include <vector>

#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/kernels.hpp"

namespace kiln::cuda {

// KILN_CUDA_MEGAKERNEL: unset, "" or "1" (the default: on wherever supported) or "0" (the
// per-kernel decode step); anything else is KILN_ERR_INVALID_ARGUMENT. The one switch; read when
// a model is loaded.
bool megakernel_from_environment();

// KILN_CUDA_MEGAKERNEL_PREFETCH: "0" turns off the megakernel's L2 prefetch of later phases'
// weights (MegakernelArgs::prefetch; on by default), for measuring it; read when a session makes
// its megakernel state. Anything but unset, "", "0" or "1" is KILN_ERR_INVALID_ARGUMENT.
bool megakernel_prefetch_from_environment();

// Whether a model of these dimensions runs its decode step in the megakernel on this device (the
// shape within decode_megakernel_supported, a cooperative-launch-capable GPU with a resident grid).
// 0 when not, else the grid size.
int32_t megakernel_blocks(int64_t hidden, int64_t intermediate, QkvShape shape);

class DecodeMegakernel {
 public:
  // `dims`: every field of MegakernelArgs except the per-call buffers (x, qkv, act, position) and
  // those this class owns (layers, partials, barrier).
  DecodeMegakernel(const std::shared_ptr<DeviceAllocator>& allocator, const MegakernelArgs& dims,
                   const std::vector<MegakernelLayer>& layers, cudaStream_t stream);

  // Enqueues every layer for the token embedded in x at *position.
  void enqueue(float* x, float* qkv, bf16* act, const int32_t* position, cudaStream_t stream) const;

 private:
  MegakernelArgs args_;
  DeviceBuffer layers_, partials_, barrier_;
};

}  // namespace kiln::cuda

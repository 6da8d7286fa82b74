// The CUDA training engine (docs/training-design.md, "CUDA"): float32 master weights, gradients
// and AdamW moments on the device in the trainer's ParamLayout, BF16 compute copies of the weights
// (q/k/v and gate/up fused per block), activations of one micro-batch kept for the backward pass,
// cuBLASLt matrix products and the kernels of train_kernels.hpp. Every device byte comes from the
// backend's DeviceAllocator, so the runtime's device_memory_limit applies.
#pragma once

#include <memory>

#include "backend/cuda/device_memory.hpp"
#include "train/train_engine.hpp"

namespace kiln::cuda::train {

// Uploads `state`. Throws KILN_ERR_UNSUPPORTED (Muon: not implemented on the GPU yet),
// KILN_ERR_OUT_OF_MEMORY (naming the buffer and bytes; whatever was taken is freed).
std::unique_ptr<kiln::train::TrainEngine> make_cuda_engine(
    const kiln::train::TrainState& state, std::shared_ptr<DeviceAllocator> allocator);

}  // namespace kiln::cuda::train

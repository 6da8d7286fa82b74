// A session's sampler on the device: penalties, then greedy or temperature + top-k + min-p +
// top-p over one row of logits already in device memory (kernels/sampling.cu), and only the
// chosen id copied back. Owns its buffers, allocated once for the vocabulary (the penalty pairs'
// staging grows on demand), so that a draw allocates nothing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "backend/backend.hpp"
#include "backend/cuda/device_memory.hpp"

namespace kiln::cuda {

class DeviceSampler {
 public:
  // Throws KILN_ERR_OUT_OF_MEMORY naming the sampler's buffers when they do not fit.
  DeviceSampler(std::shared_ptr<DeviceAllocator> allocator, int64_t vocab);

  // Draws from logits[vocab] (device memory, modified in place by the penalties and temperature)
  // after the work already queued on `stream`, then waits for the stream. The id is sample_token's
  // for the same logits, request and u; every logit NaN with temperature > 0 throws
  // KILN_ERR_INVALID_ARGUMENT with sample_token's message.
  int32_t sample(float* logits, const DeviceSampleRequest& req, cudaStream_t stream);

 private:
  void stage_penalties(float* logits, const DeviceSampleRequest& req, cudaStream_t stream);

  std::shared_ptr<DeviceAllocator> allocator_;
  int32_t vocab_;
  size_t sort_temp_bytes_;
  DeviceBuffer keys_, sorted_keys_, ids_, sorted_ids_, sort_temp_, result_, penalties_;
  PinnedBuffer result_host_, penalties_host_;
  size_t penalty_capacity_ = 0;  // (id, count) pairs the two penalty buffers hold
};

}  // namespace kiln::cuda

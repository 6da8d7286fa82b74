#include "backend/cuda/device_sampler.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "backend/cuda/cuda_check.hpp"
#include "backend/cuda/kernels.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {
// Penalty pairs the staging holds at first: the default window (penalty_last_n = 64).
constexpr size_t kInitialPenaltyPairs = 64;
}  // namespace

DeviceSampler::DeviceSampler(std::shared_ptr<DeviceAllocator> allocator, int64_t vocab)
    : allocator_(std::move(allocator)) {
  if (vocab <= 0 || vocab > std::numeric_limits<int32_t>::max()) {
    fail(KILN_ERR_INTERNAL, "device sampler for a vocabulary of " + std::to_string(vocab));
  }
  vocab_ = static_cast<int32_t>(vocab);
  const size_t n = static_cast<size_t>(vocab);
  const std::string what = " of the device sampler (vocabulary " + std::to_string(vocab) + ")";
  keys_ = allocator_->allocate(n * sizeof(uint32_t), "sort keys" + what);
  sorted_keys_ = allocator_->allocate(n * sizeof(uint32_t), "sorted keys" + what);
  ids_ = allocator_->allocate(n * sizeof(int32_t), "candidate ids" + what);
  sorted_ids_ = allocator_->allocate(n * sizeof(int32_t), "sorted ids" + what);
  sort_temp_bytes_ = sampling_workspace_bytes(vocab_);
  sort_temp_ = allocator_->allocate(std::max<size_t>(sort_temp_bytes_, 1), "sort storage" + what);
  result_ = allocator_->allocate(sizeof(int32_t), "the drawn id" + what);
  result_host_ = PinnedBuffer(sizeof(int32_t), "the drawn id");
}

void DeviceSampler::stage_penalties(float* logits, const DeviceSampleRequest& req,
                                    cudaStream_t stream) {
  const size_t n = req.penalty_ids.size();
  if (n == 0) return;
  if (req.penalty_counts.size() != n) {
    fail(KILN_ERR_INTERNAL, "device sampler: " + std::to_string(n) + " penalty ids but " +
                                std::to_string(req.penalty_counts.size()) + " counts");
  }
  if (n > penalty_capacity_) {
    const size_t cap = std::max(n, std::max(kInitialPenaltyPairs, 2 * penalty_capacity_));
    penalty_capacity_ = 0;  // stays 0 if an allocation below throws
    penalties_ = DeviceBuffer();
    penalties_host_ = PinnedBuffer();
    penalties_ = allocator_->allocate(2 * cap * sizeof(int32_t),
                                      "penalty window (" + std::to_string(cap) + " ids)");
    penalties_host_ = PinnedBuffer(2 * cap * sizeof(int32_t), "penalty window");
    penalty_capacity_ = cap;
  }
  // The staging is free: the previous draw on this stream ended synchronised.
  int32_t* host = penalties_host_.as<int32_t>();
  std::memcpy(host, req.penalty_ids.data(), n * sizeof(int32_t));
  std::memcpy(host + n, req.penalty_counts.data(), n * sizeof(int32_t));
  KILN_CUDA_CHECK(cudaMemcpyAsync(penalties_.get(), host, 2 * n * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream));
  const int32_t* ids = penalties_.as<int32_t>();
  apply_penalties(logits, ids, ids + n, static_cast<int32_t>(n),
                  {req.repetition_penalty, req.presence_penalty, req.frequency_penalty}, stream);
}

int32_t DeviceSampler::sample(float* logits, const DeviceSampleRequest& req, cudaStream_t stream) {
  stage_penalties(logits, req, stream);
  int32_t* out = result_.as<int32_t>();
  if (req.temperature <= 0.0f) {  // as sample_token decides greedy (a NaN temperature is not)
    argmax_lowest_id(logits, vocab_, out, stream);
  } else {
    const SamplingWorkspace ws{keys_.as<uint32_t>(), sorted_keys_.as<uint32_t>(),
                               ids_.as<int32_t>(),   sorted_ids_.as<int32_t>(),
                               sort_temp_.get(),     sort_temp_bytes_};
    sample_filtered(logits, vocab_, req.temperature, {req.top_k, req.top_p, req.min_p}, req.u, ws,
                    out, stream);
  }
  KILN_CUDA_CHECK(cudaMemcpyAsync(result_host_.as<int32_t>(), out, sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  const int32_t id = *result_host_.as<int32_t>();
  if (id < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "sample_token: every one of the " + std::to_string(vocab_) + " logits is NaN");
  }
  return id;
}

}  // namespace kiln::cuda

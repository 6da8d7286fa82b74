// Tensor-parallel inference on the GPUs of one host (kiln_runtime_options.tensor_parallel; the
// split is model/tensor_parallel_plan.hpp's). Each rank is an ordinary CudaTransformer on its own
// device, built from shard_config() and the rank's ShardedWeights, whose o_proj and down_proj
// products are all-reduced (NCCL, one communicator per device from ncclCommInitAll) before the
// residual add; every rank therefore keeps the whole residual stream, and rank 0's logits are
// the model's. A session holds one CudaSessionState (KV cache of its KV heads, stream, decode
// graph) per rank. A forward pass runs each rank's unchanged code path on its own thread (NCCL
// requires one thread per rank, or group calls, when one process drives several devices), so
// each rank captures and replays its own decode graph.
//
// With one rank (KILN_CUDA_TP_FORCE_COLLECTIVES=1 on a one-GPU runtime) the same code runs the
// partial-sum + all-reduce path over a one-rank communicator: the check that the collective path
// computes the plain path's logits on a single GPU.
#pragma once

#include <memory>
#include <vector>

#include "backend/cuda/cuda_transformer.hpp"

namespace kiln::cuda {

class TensorParallelExecutor final : public ModelExecutor {
 public:
  // One rank per allocator, rank r on allocators[r]'s device. Throws as
  // plan_tensor_parallel / ShardedWeights / CudaTransformer / NcclComm::create_local_group.
  TensorParallelExecutor(const ModelConfig& config, const TransformerWeights& weights,
                         const std::vector<float>& inv_freq,
                         const std::vector<std::shared_ptr<DeviceAllocator>>& allocators,
                         const ProgressFn& progress);
  // Frees each rank on a thread of its own: ncclCommDestroy may wait for the group's other
  // communicators, which one thread destroying them in turn would never reach.
  ~TensorParallelExecutor() override;

  std::unique_ptr<SessionState> create_state(int32_t context_length) const override;
  // `cancel` is checked before the pass starts, not between layers: a rank that stopped alone
  // would leave the others waiting in a collective. Prompts run in chunks (Session), so a cancel
  // still lands within one chunk.
  void forward(SessionState& state, std::span<const int32_t> ids, int32_t start_pos, float* logits,
               bool all_positions, const std::atomic<bool>* cancel) const override;
  std::optional<int32_t> forward_sample(SessionState& state, std::span<const int32_t> ids,
                                        int32_t start_pos, const DeviceSampleRequest& req,
                                        const std::atomic<bool>* cancel) const override;
  int64_t n_parameters() const override { return n_parameters_; }
  int world_size() const { return static_cast<int>(ranks_.size()); }

 private:
  // Runs fn(rank) for every rank, ranks 1.. on threads of their own and rank 0 on the caller's;
  // rethrows the first rank's error after all have finished.
  template <typename Fn>
  void on_every_rank(Fn&& fn) const;
  // The ranks, rank r sharing comms[r].
  void build_ranks(const ModelConfig& config, const TransformerWeights& weights,
                   const std::vector<float>& inv_freq,
                   const std::vector<std::shared_ptr<DeviceAllocator>>& allocators,
                   const ProgressFn& progress, const std::vector<std::shared_ptr<NcclComm>>& comms);

  std::vector<std::unique_ptr<CudaTransformer>> ranks_;
  int64_t n_parameters_ = 0;
};

// Whether KILN_CUDA_TP_FORCE_COLLECTIVES=1: a one-GPU runtime then loads models through
// TensorParallelExecutor with one rank (a test mode; NCCL must be loadable).
bool tensor_parallel_forced_by_environment();

}  // namespace kiln::cuda

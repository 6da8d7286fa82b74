// TrainEngine: the compute half of a trainer. The Trainer (trainer.cpp) owns everything that is
// the same on every device: batch validation and the micro-batch split, the loss normalisers,
// cancellation, the schedule, the non-finite-norm check, step results, checkpoints, HF export and
// snapshots. An engine owns the gradients and runs forward / backward / clipping / the optimizer
// update wherever it computes (CpuEngine: the host TrainGraph; CudaEngine: the GPU).
//
// The trainer's host state (TrainState: float32 values and the Optimizer's moments in one
// ParamLayout) is the CPU engine's working state and the CUDA engine's host mirror: the CUDA engine
// uploads it when created and on upload_state(), and writes it back on download_state() (before
// a checkpoint, an export or a snapshot).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.hpp"
#include "model/config.hpp"
#include "train/optimizer/optimizer.hpp"
#include "train/param_layout.hpp"
#include "train/train_graph.hpp"
#include "train/trainer_options.hpp"

namespace kiln::train {

// What an engine trains. The references outlive the engine (the trainer owns both).
struct TrainState {
  const ModelConfig& config;  // with n_mtp_heads set from the options
  const ParamLayout& layout;
  const TrainerOptions& options;
  std::vector<float>& values;  // layout.total() floats
  Optimizer& optimizer;        // its moments and its step count
};

class TrainEngine {
 public:
  virtual ~TrainEngine() = default;

  // Sizes the engine's buffers for micro-batches of up to rows × cols tokens (nothing happens
  // when they already fit; the next step then allocates nothing).
  virtual void reserve(int64_t rows, int64_t cols) = 0;
  virtual void zero_grads() = 0;
  // TrainGraph::forward_backward's contract: ADDS the gradient, returns each head's loss;
  // `dropout` is this micro-batch's residual dropout (dropout_mask.hpp: every engine draws the
  // same mask).
  virtual std::vector<HeadLoss> forward_backward(const TrainBatch& batch,
                                                 std::span<const double> normalisers,
                                                 std::span<const float> mtp_weights,
                                                 const Dropout& dropout,
                                                 const std::atomic<bool>* cancel) = 0;
  virtual std::vector<HeadLoss> forward_loss(const TrainBatch& batch,
                                             const std::atomic<bool>* cancel) = 0;
  virtual void forward_logits(std::span<const int32_t> ids, const ForwardOutputs<float>& out,
                              const std::atomic<bool>* cancel) = 0;
  // The global L2 gradient norm before clipping; scales the gradients (or arranges for the update
  // to) when clip_norm > 0 and the norm is finite and above it.
  virtual double clip_grads(float clip_norm) = 0;
  // One optimizer update with every learning rate times lr_multiplier; counts it in
  // state.optimizer.steps_taken().
  virtual void optimizer_step(double lr_multiplier) = 0;
  // Copies the accumulated gradients (layout.total() floats) to `out` (tests and diagnostics).
  virtual void download_grads(std::span<float> out) = 0;
  // Host mirror <-> engine (no-ops for the CPU engine, whose state IS the host state).
  virtual void download_state() = 0;
  virtual void upload_state() = 0;
  // Data-parallel training (kiln_trainer_join_data_parallel): joins the group of `world_size`
  // processes as `rank` (blocking until all joined). With shard_optimizer_state (ZeRO-1,
  // train/data_parallel/shard_plan.hpp) the engine keeps only its rank's slice of the optimizer
  // moments: all_reduce_grads then reduce-scatters, clip_grads all-reduces the sum of squares,
  // optimizer_step updates the slice and all-gathers the weights, download_state fills only the
  // slice of the host moments and download_grads is meaningful only in the slice after the
  // reduce. Engines that cannot throw KILN_ERR_UNSUPPORTED (the default).
  virtual void join_data_parallel(const DataParallelId& id, int world_size, int rank,
                                  bool shard_optimizer_state);
  // Sums host values (loss normalisers and sums) over the group; nothing outside a group.
  virtual void all_reduce_host(std::span<double> values) { (void)values; }
  // Sums the accumulated gradients over the group (before clipping; with sharding, each rank's
  // shard only); nothing outside a group. After a backward pass that already reduced its
  // gradients in buckets (below), it only waits for those reductions.
  virtual void all_reduce_grads() {}
  // The next forward_backward is the step's last micro-batch: an engine that overlaps the
  // gradient all-reduce with the backward pass (the CUDA engine in a group, without ZeRO-1;
  // train/data_parallel/grad_buckets.hpp) may then start reducing each bucket of gradients as
  // soon as that backward pass has written it for the last time. Earlier micro-batches must not
  // reduce: their sums are partial. Applies to the next forward_backward only (zero_grads also
  // clears it); nothing by default.
  virtual void overlap_grad_reduce_with_next_backward() {}
};

// The CPU engine (src/train/cpu_engine.cpp).
std::unique_ptr<TrainEngine> make_cpu_engine(const TrainState& state);

}  // namespace kiln::train

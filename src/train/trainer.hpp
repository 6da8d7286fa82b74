// Trainer: full-parameter training of one model with float32 master weights. Owns the weights (a
// copy of the source model's), through its TrainEngine (train_engine.hpp: CPU or CUDA) their
// gradients, the optimizer state, the step counter and the caller's data-loader state; runs forward
// + backward over grad-accumulation micro-batches, clips, applies the LR schedule and the optimizer
// update. One thread at a time (Guard); cancel() from any thread. Semantics of batches, masks,
// weights and MTP heads: docs/training.md.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "model/config.hpp"
#include "train/trainer_options.hpp"

namespace kiln {

struct Model;
class Runtime;

constexpr int kMaxMtpHeads = 8;

// Checks what the optimizer, the schedule and the step loop need (KILN_ERR_INVALID_ARGUMENT
// naming the first bad field).
void validate_trainer_options(const TrainerOptions& options);

struct BatchView {
  int32_t rows = 0, cols = 0;  // B, T
  std::span<const int32_t> inputs, targets;
  std::span<const uint8_t> loss_mask;   // empty = all counted
  std::span<const float> loss_weights;  // empty = all 1
};

struct StepResult {
  double loss = 0, objective = 0;
  std::array<double, kMaxMtpHeads> mtp_losses{};
  int64_t n_tokens = 0;
  double weight_sum = 0;
  double grad_norm = 0;
  double learning_rate = 0;
  double tokens_per_second = 0;
  int64_t step = 0;
};

enum class TrainerOutput { Logits, Hidden };

class Trainer {
 public:
  virtual ~Trainer() = default;

  // Trains where `backend` computes (Backend::create_train_engine; null or a CPU backend: on the
  // host). Throws KILN_ERR_UNSUPPORTED (quantised weights, untrainable architecture, an option the
  // device engine lacks), KILN_ERR_INVALID_ARGUMENT (options), KILN_ERR_OUT_OF_MEMORY (with the
  // bytes).
  static std::unique_ptr<Trainer> create(const Model& model, const TrainerOptions& options,
                                         const Backend* backend = nullptr);
  // Throws KILN_ERR_NOT_FOUND / KILN_ERR_IO / KILN_ERR_FORMAT (naming what is wrong), and what
  // create() throws for the engine.
  static std::unique_ptr<Trainer> load_checkpoint(const std::filesystem::path& path,
                                                  const Backend* backend = nullptr);

  virtual StepResult train_step(const BatchView& batch) = 0;
  virtual StepResult eval_loss(const BatchView& batch) = 0;
  // Fills `out` ([1 + mtp][rows*cols][vocab] logits or [rows*cols][hidden]); size_needed() first.
  virtual size_t forward_size(int32_t rows, int32_t cols, TrainerOutput what) const = 0;
  virtual void forward(std::span<const int32_t> inputs, int32_t rows, int32_t cols,
                       TrainerOutput what, std::span<float> out) = 0;

  // In a group joined with sharded optimizer state, every rank must call this together with the
  // same path: rank 0 writes the main file and each rank its shard (save_checkpoint_shard).
  virtual void save_checkpoint(const std::filesystem::path& path) const = 0;
  // Writes rank `rank`'s part of a ZeRO-1 sharded checkpoint of `world` shards at `path`
  // (train/checkpoint/sharded_optimizer.hpp) from this trainer's host state: the main file when
  // rank is 0, then the shard file with the rank's slice of the optimizer state. The sharded
  // data-parallel save calls it with the group's rank; nothing here talks to other ranks, so one
  // trainer may write every rank's part. Throws KILN_ERR_INVALID_ARGUMENT (rank outside
  // [0, world)) and what save_checkpoint throws.
  virtual void save_checkpoint_shard(const std::filesystem::path& path, int32_t rank,
                                     int32_t world) const = 0;
  virtual void export_hf(const std::filesystem::path& directory) const = 0;
  // The current weights as an immutable model on `runtime`'s backend.
  virtual std::shared_ptr<const Model> snapshot(const Runtime& runtime) const = 0;

  virtual const ModelConfig& config() const = 0;
  virtual const TrainerOptions& options() const = 0;
  virtual int64_t step() const = 0;
  virtual int64_t n_parameters() const = 0;

  virtual void set_data_state(std::span<const uint8_t> bytes) = 0;
  virtual const std::vector<uint8_t>& data_state() const = 0;
  virtual void set_progress(ProgressFn progress) = 0;
  // Joins a data-parallel group (kiln_trainer_join_data_parallel: the semantics are in kiln.h).
  // Throws KILN_ERR_INVALID_ARGUMENT (sizes, already joined), KILN_ERR_UNSUPPORTED (CPU engine,
  // no NCCL), KILN_ERR_BACKEND (NCCL errors).
  // shard_optimizer_state: ZeRO-1 (each rank keeps and checkpoints its slice of the optimizer
  // state; KILN_ERR_UNSUPPORTED with Muon).
  virtual void join_data_parallel(const DataParallelId& id, int32_t world_size, int32_t rank,
                                  bool shard_optimizer_state) = 0;
  void cancel() { cancel_.store(true); }

  // Entered by every call on the trainer; throws KILN_ERR_BUSY when another thread is inside.
  class Guard {
   public:
    explicit Guard(const Trainer& t);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    const Trainer& t_;
  };

 protected:
  std::atomic<bool> cancel_{false};

 private:
  mutable std::atomic<bool> busy_{false};
};

}  // namespace kiln

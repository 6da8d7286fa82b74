// The backend interface: what the engine above (sessions, generation, the C shim) needs from a
// compute backend. A backend turns a validated model description into a ModelExecutor (weights
// resident where the backend computes) and runs forward passes over per-session state (KV cache).
// CPU now; CUDA implements the same interface.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "kiln.h"

namespace kiln {

struct ModelConfig;
class WeightSet;
namespace train {
class TrainEngine;
struct TrainState;
}  // namespace train

// Progress reporting during load: fraction in [0,1] and a stage label. Returns false to cancel (the
// loader then throws KILN_ERR_CANCELLED after freeing what it took).
using ProgressFn = std::function<bool(float fraction, const char* stage)>;

// The id of a data-parallel group (an ncclUniqueId's bytes; kiln_nccl_id).
using DataParallelId = std::array<uint8_t, 128>;

// Per-session mutable state owned by a backend (KV cache, scratch buffers).
class SessionState {
 public:
  virtual ~SessionState() = default;
  virtual int32_t context_length() const = 0;
};

// One token to draw from the last row's logits, for an executor that samples on its device
// (ModelExecutor::forward_sample). The fields mean what SamplingParams' do (session/sampler.hpp);
// the caller has already turned the penalty window into distinct ids in [0, vocab) with their
// counts, and drawn `u` (uniform in [0, 1)) from the session's RNG when temperature > 0, so that
// the RNG stream is the host sampler's.
struct DeviceSampleRequest {
  float temperature = 0.0f;  // <= 0: greedy (u unused)
  int32_t top_k = 0;
  float top_p = 1.0f, min_p = 0.0f;
  float repetition_penalty = 1.0f, presence_penalty = 0.0f, frequency_penalty = 0.0f;
  std::span<const int32_t> penalty_ids, penalty_counts;  // same length; ids distinct
  double u = 0.0;
};

class ModelExecutor {
 public:
  virtual ~ModelExecutor() = default;

  virtual std::unique_ptr<SessionState> create_state(int32_t context_length) const = 0;

  // Runs `ids` at positions start_pos .. start_pos + ids.size() - 1, writing their K/V into the
  // state's cache. Logits: when `logits` is null none are computed; otherwise all_positions picks
  // every row ([n × vocab]) or only the last ([vocab]). The caller has checked ids, capacity and
  // room in the cache. `cancel` (may be null) is polled between layers; when it is set the call
  // throws KILN_ERR_CANCELLED and the cache holds only the positions before start_pos.
  virtual void forward(SessionState& state, std::span<const int32_t> ids, int32_t start_pos,
                       float* logits, bool all_positions,
                       const std::atomic<bool>* cancel) const = 0;

  // forward() of `ids` followed by drawing one token from the last row's logits where they were
  // computed, so that only the chosen id leaves the device; the result is the id sample_token()
  // (session/sampler.hpp) gives for the same logits, request and u. nullopt (the default: an
  // executor whose logits live in host memory anyway) means nothing ran and the caller should use
  // forward() and sample on the host. Throws KILN_ERR_INVALID_ARGUMENT, with sample_token's
  // message, when temperature > 0 and every logit is NaN (the forward pass has then completed:
  // the ids are in the cache); after any other error the cache holds only positions before
  // start_pos, as after forward().
  virtual std::optional<int32_t> forward_sample(SessionState& state, std::span<const int32_t> ids,
                                                int32_t start_pos, const DeviceSampleRequest& req,
                                                const std::atomic<bool>* cancel) const {
    (void)state, (void)ids, (void)start_pos, (void)req, (void)cancel;
    return std::nullopt;
  }

  virtual int64_t n_parameters() const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual kiln_backend kind() const = 0;
  virtual const std::string& device_name() const = 0;
  virtual int n_threads() const = 0;
  // True when load_model takes GGUF block-quantised tensors (DType::GGML) as they are stored;
  // otherwise the engine dequantises them to float32 first.
  virtual bool keeps_quantized_weights() const { return false; }

  // `weights` stays alive as long as the executor (it may point into the mmap). `precision`: a
  // valid kiln_precision (kiln.h says what each backend does with it; one it cannot honour gives
  // KILN_ERR_UNSUPPORTED).
  virtual std::unique_ptr<ModelExecutor> load_model(const ModelConfig& config,
                                                    std::shared_ptr<const WeightSet> weights,
                                                    const ProgressFn& progress,
                                                    kiln_precision precision) const = 0;
  // The backend's default precision.
  std::unique_ptr<ModelExecutor> load_model(const ModelConfig& config,
                                            std::shared_ptr<const WeightSet> weights,
                                            const ProgressFn& progress) const {
    return load_model(config, std::move(weights), progress, KILN_PRECISION_DEFAULT);
  }

  // The engine that trains on this backend's device, uploading `state` (docs/training-design.md,
  // "CUDA"); null means the host engine (the CPU trainer). Throws KILN_ERR_OUT_OF_MEMORY (with the
  // bytes) or KILN_ERR_UNSUPPORTED (an option the device engine lacks).
  virtual std::unique_ptr<train::TrainEngine> create_train_engine(
      const train::TrainState& state) const;

  // A new data-parallel group id (kiln_nccl_id_create). KILN_ERR_UNSUPPORTED unless the backend
  // trains data-parallel (CUDA with NCCL).
  virtual DataParallelId create_data_parallel_id() const;
};

// n_threads <= 0: one per core.
std::unique_ptr<Backend> make_cpu_backend(int n_threads);

}  // namespace kiln

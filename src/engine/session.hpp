// Session: one conversation on a model — the backend's KV cache, the token history, the sampler's
// RNG. One thread at a time (enforced by SessionGuard); cancel() may come from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/model.hpp"
#include "session/sampler.hpp"

namespace kiln {

struct GenerateParams {
  SamplingParams sampling;
  int32_t max_tokens = 256;
  bool ignore_eos = false;
  std::vector<std::string> stop_strings;
  // Streaming: (text, token id) → false to stop. Token id -1 delivers held-back text at the end.
  std::function<bool(std::string_view text, int32_t id)> on_token;
  int32_t* output_ids = nullptr;
  size_t output_ids_capacity = 0;
};

struct GenerateStats {
  int32_t n_prompt_tokens = 0;
  int32_t n_generated = 0;
  kiln_stop_reason stop_reason = KILN_STOP_NONE;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

class Session {
 public:
  // context_length 0 → the model's, capped at kDefaultMaxContext.
  Session(std::shared_ptr<const Model> model, int32_t context_length, uint64_t seed);

  static constexpr int32_t kDefaultMaxContext = 4096;

  const Model& model() const { return *model_; }
  int32_t n_past() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t context_length() const { return state_->context_length(); }

  void reset();
  void cancel() { cancel_.store(true); }

  // Appends ids to the context. logits: null → none; else [n × vocab] or [vocab] (all_positions).
  void forward(std::span<const int32_t> ids, float* logits, bool all_positions);

  GenerateStats generate(std::span<const int32_t> prompt, const GenerateParams& params);

  int32_t sample(std::span<float> logits, const SamplingParams& params);

  // Entered by every call on the session; throws KILN_ERR_BUSY when another thread is inside.
  class Guard {
   public:
    explicit Guard(const Session& s);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    const Session& s_;
  };

 private:
  void check_ids(std::span<const int32_t> ids) const;
  void throw_if_cancelled();
  void forward_chunked(std::span<const int32_t> ids, float* logits_last_row);
  void run_backend(std::span<const int32_t> chunk, float* logits, bool all_positions);
  // Runs ids (non-empty) as forward_chunked does and draws the next token from the last row: on
  // the device when the executor samples there (only the id comes back), else from `logits` on
  // the host. Both give the same id and consume the RNG alike.
  int32_t forward_and_sample(std::span<const int32_t> ids, const SamplingParams& params,
                             std::span<float> logits);
  // The device half of that for the last chunk; nullopt (nothing run) when the executor does not
  // sample on its device.
  std::optional<int32_t> forward_sample_on_device(std::span<const int32_t> chunk,
                                                  const SamplingParams& params);

  std::shared_ptr<const Model> model_;
  std::unique_ptr<SessionState> state_;
  std::vector<int32_t> tokens_;
  uint64_t seed_;
  Rng rng_;
  // The penalty window as (id, count) pairs for the device sampler; kept to reuse their storage.
  std::vector<int32_t> penalty_ids_, penalty_counts_;
  std::atomic<bool> cancel_{false};
  mutable std::atomic<bool> busy_{false};
};

}  // namespace kiln

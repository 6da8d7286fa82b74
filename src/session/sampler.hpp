// Token sampling on the CPU: penalties, then greedy or temperature + top-k + top-p + min-p, with a
// seeded, portable RNG (same seed and options → same ids on every platform and thread count).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln {

struct SamplingParams {
  float temperature = 0.8f;         // <= 0 → greedy
  int32_t top_k = 40;               // <= 0 → off
  float top_p = 0.95f;              // >= 1 → off
  float min_p = 0.05f;              // <= 0 → off
  float repetition_penalty = 1.0f;  // CTRL: logit > 0 ? logit / p : logit * p, once per distinct id
  float presence_penalty = 0.0f;    // logit -= presence if id occurred
  float frequency_penalty = 0.0f;   // logit -= frequency * count
  int32_t penalty_last_n = 64;      // window of history for penalties; < 0 → all history
};

// xoshiro256** seeded through splitmix64 (fixed algorithms, so streams are reproducible).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  void seed(uint64_t seed);
  uint64_t next_u64();
  double next_double();  // uniform [0, 1) with 53 random bits

 private:
  uint64_t s_[4];
};

// The penalty window's distinct in-vocabulary ids (ids outside [0, vocab) are ignored) and how
// often each occurs in it: the last penalty_last_n ids of history (all of it when penalty_last_n <
// 0). Both vectors are cleared first; they stay empty when the penalties are neutral (nothing to
// do). Order unspecified (each id is penalised once, so order does not matter). Shared by the CPU
// sampler and the device samplers, which apply the same per-id rule.
void penalty_counts(std::span<const int32_t> history, const SamplingParams& params, size_t vocab,
                    std::vector<int32_t>& ids, std::vector<int32_t>& counts);

// Applies penalties (using the last penalty_last_n ids of history) and samples. `logits` is
// modified in place (penalties, temperature). Ties in greedy pick the lowest id.
int32_t sample_token(std::span<float> logits, std::span<const int32_t> history,
                     const SamplingParams& params, Rng& rng);

}  // namespace kiln

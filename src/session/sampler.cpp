#include "session/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "core/error.hpp"
#include "session/sampling_filters.hpp"

namespace kiln {

namespace {

// splitmix64 (Steele, Lea, Flood; reference code by S. Vigna, https://prng.di.unimi.it/
// splitmix64.c): the seeding generator the xoshiro authors recommend.
uint64_t splitmix64_next(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// CTRL repetition penalty once per distinct id, then presence and frequency (llama.cpp order).
void apply_penalties(std::span<float> logits, std::span<const int32_t> history,
                     const SamplingParams& p) {
  std::vector<int32_t> ids, counts;
  penalty_counts(history, p, logits.size(), ids, counts);
  for (size_t i = 0; i < ids.size(); ++i) {
    float& l = logits[static_cast<size_t>(ids[i])];
    if (p.repetition_penalty != 1.0f) {
      l = l > 0.0f ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
    l -= p.presence_penalty;
    l -= p.frequency_penalty * static_cast<float>(counts[i]);
  }
}

int32_t argmax_lowest_id(std::span<const float> logits) {
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
  }
  return static_cast<int32_t>(best);
}

}  // namespace

void penalty_counts(std::span<const int32_t> history, const SamplingParams& p, size_t vocab,
                    std::vector<int32_t>& ids, std::vector<int32_t>& counts) {
  ids.clear();
  counts.clear();
  const bool neutral =
      p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f;
  if (neutral || p.penalty_last_n == 0 || history.empty()) return;
  size_t window = history.size();
  if (p.penalty_last_n > 0) window = std::min(window, static_cast<size_t>(p.penalty_last_n));
  std::unordered_map<int32_t, int32_t> seen;
  for (int32_t id : history.last(window)) {
    if (id >= 0 && static_cast<size_t>(id) < vocab) ++seen[id];
  }
  ids.reserve(seen.size());
  counts.reserve(seen.size());
  for (const auto& [id, count] : seen) {
    ids.push_back(id);
    counts.push_back(count);
  }
}

Rng::Rng(uint64_t seed) { this->seed(seed); }

void Rng::seed(uint64_t seed) {
  uint64_t x = seed;
  for (auto& word : s_) word = splitmix64_next(x);
}

// xoshiro256** 1.0 (Blackman & Vigna, https://prng.di.unimi.it/xoshiro256starstar.c).
uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

// The top 53 bits as a multiple of 2^-53 (the conversion the xoshiro page recommends).
double Rng::next_double() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

int32_t sample_token(std::span<float> logits, std::span<const int32_t> history,
                     const SamplingParams& params, Rng& rng) {
  if (logits.empty()) fail(KILN_ERR_INVALID_ARGUMENT, "sample_token: empty logits");
  apply_penalties(logits, history, params);
  if (params.temperature <= 0.0f) return argmax_lowest_id(logits);

  for (float& l : logits) l /= params.temperature;
  const std::vector<TokenProb> kept = filter_candidates(logits, params);
  if (kept.empty()) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "sample_token: every one of the " + std::to_string(logits.size()) + " logits is NaN");
  }
  // Inverse CDF over the kept tokens in rank order.
  const double u = rng.next_double();
  double cumulative = 0.0;
  for (const auto& t : kept) {
    cumulative += t.prob;
    if (u < cumulative) return t.id;
  }
  return kept.back().id;  // u within rounding of 1
}

}  // namespace kiln

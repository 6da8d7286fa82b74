// Sampler: the RNG against an independent transcription of the published algorithms, penalties
// against their formulas, each filter's kept set against a brute-force reference, and the draw's
// frequencies against the filtered distribution.
#include "session/sampler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.hpp"
#include "session/sampling_filters.hpp"

namespace kiln {
namespace {

// ---------------------------------------------------------------------------------------------
// Reference RNG, transcribed separately from https://prng.di.unimi.it/splitmix64.c and
// https://prng.di.unimi.it/xoshiro256starstar.c.

class ReferenceXoshiro {
 public:
  explicit ReferenceXoshiro(uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; ++i) {
      x += 0x9E3779B97F4A7C15ULL;
      uint64_t z = x;
      z ^= z >> 30;
      z *= 0xBF58476D1CE4E5B9ULL;
      z ^= z >> 27;
      z *= 0x94D049BB133111EBULL;
      z ^= z >> 31;
      s[i] = z;
    }
  }
  uint64_t next() {
    const uint64_t m = s[1] * 5;
    const uint64_t result = ((m << 7) | (m >> 57)) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
  }

 private:
  uint64_t s[4];
};

TEST(SamplerRng, MatchesReferenceXoshiro256StarStar) {
  for (uint64_t seed : {0ULL, 1ULL, 42ULL, 0xDEADBEEFCAFEF00DULL, ~0ULL}) {
    Rng rng(seed);
    ReferenceXoshiro ref(seed);
    for (int i = 0; i < 100; ++i) ASSERT_EQ(rng.next_u64(), ref.next()) << "seed " << seed;
  }
}

TEST(SamplerRng, NextDoubleIsTop53BitsOverTwoToThe53) {
  Rng rng(7);
  ReferenceXoshiro ref(7);
  for (int i = 0; i < 1000; ++i) {
    const double d = rng.next_double();
    ASSERT_EQ(d, std::ldexp(static_cast<double>(ref.next() >> 11), -53));
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
  }
}

TEST(SamplerRng, ReseedingRestartsTheStream) {
  Rng a(123);
  const uint64_t first = a.next_u64();
  a.next_u64();
  a.seed(123);
  EXPECT_EQ(a.next_u64(), first);
}

// ---------------------------------------------------------------------------------------------
// Greedy and penalties

std::vector<float> random_logits(size_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

SamplingParams greedy_params() {
  SamplingParams p;
  p.temperature = 0.0f;
  return p;
}

TEST(SamplerGreedy, PicksArgmaxAndLowestIdOnTies) {
  Rng rng(1);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto logits = random_logits(101, seed);
    const auto expected =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(sample_token(logits, {}, greedy_params(), rng), expected);
  }
  std::vector<float> tied = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  EXPECT_EQ(sample_token(tied, {}, greedy_params(), rng), 1);
  SamplingParams negative = greedy_params();
  negative.temperature = -1.0f;
  EXPECT_EQ(sample_token(tied, {}, negative, rng), 1);
}

TEST(SamplerPenalties, ChangeLogitsExactlyAsTheFormula) {
  const std::vector<float> original = {1.5f, -2.0f, 0.0f, 3.0f, -0.5f, 4.0f, 2.5f};
  // Id 5 appears only outside the window of the last 6; id 3 three times, id 1 twice.
  const std::vector<int32_t> history = {5, 5, 3, 1, 3, 0, 1, 3};
  SamplingParams p = greedy_params();
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.25f;
  p.frequency_penalty = 0.125f;
  p.penalty_last_n = 6;
  std::vector<float> logits = original;
  Rng rng(0);
  sample_token(logits, history, p, rng);

  std::map<int32_t, int> counts;
  for (size_t i = history.size() - 6; i < history.size(); ++i) ++counts[history[i]];
  for (size_t id = 0; id < original.size(); ++id) {
    float expected = original[id];
    auto it = counts.find(static_cast<int32_t>(id));
    if (it != counts.end()) {
      expected = expected > 0 ? expected / p.repetition_penalty : expected * p.repetition_penalty;
      expected = expected - p.presence_penalty - p.frequency_penalty * it->second;
    }
    EXPECT_FLOAT_EQ(logits[id], expected) << "id " << id;
  }
  EXPECT_EQ(logits[5], original[5]) << "id 5 is outside the window";
}

TEST(SamplerPenalties, WindowAllAndNone) {
  const std::vector<float> original = {1.0f, 2.0f, 3.0f};
  const std::vector<int32_t> history = {0, 1, 2, 2};
  SamplingParams p = greedy_params();
  p.presence_penalty = 1.0f;
  Rng rng(0);

  p.penalty_last_n = -1;  // all history
  auto all = original;
  sample_token(all, history, p, rng);
  EXPECT_EQ(all, (std::vector<float>{0.0f, 1.0f, 2.0f}));

  p.penalty_last_n = 0;  // off
  auto none = original;
  sample_token(none, history, p, rng);
  EXPECT_EQ(none, original);
}

// The (id, count) pairs the device samplers are given: the window's distinct in-range ids, counted
// by hand here; nothing when the penalties are neutral or the window is empty.
TEST(SamplerPenalties, CountsAreTheWindowsDistinctInRangeIds) {
  const std::vector<int32_t> history = {9, 4, -1, 4, 7, 12, 4, 0, 7};  // vocab 10: -1, 12 ignored
  SamplingParams p = greedy_params();
  p.frequency_penalty = 0.5f;
  std::vector<int32_t> ids = {99}, counts = {99};  // cleared first
  auto as_map = [&] {
    std::map<int32_t, int32_t> m;
    EXPECT_EQ(ids.size(), counts.size());
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_TRUE(m.emplace(ids[i], counts[i]).second);
    return m;
  };
  p.penalty_last_n = 6;  // 4, 7, 12, 4, 0, 7
  penalty_counts(history, p, 10, ids, counts);
  EXPECT_EQ(as_map(), (std::map<int32_t, int32_t>{{0, 1}, {4, 2}, {7, 2}}));
  p.penalty_last_n = -1;  // all
  penalty_counts(history, p, 10, ids, counts);
  EXPECT_EQ(as_map(), (std::map<int32_t, int32_t>{{0, 1}, {4, 3}, {7, 2}, {9, 1}}));
  p.penalty_last_n = 0;  // off
  penalty_counts(history, p, 10, ids, counts);
  EXPECT_TRUE(ids.empty() && counts.empty());
  p.penalty_last_n = 64;
  p.frequency_penalty = 0.0f;  // neutral
  penalty_counts(history, p, 10, ids, counts);
  EXPECT_TRUE(ids.empty() && counts.empty());
}

TEST(SamplerPenalties, RepetitionPenaltyCanChangeTheGreedyChoice) {
  std::vector<float> logits = {2.0f, 1.9f};
  SamplingParams p = greedy_params();
  p.repetition_penalty = 1.1f;  // 2.0 / 1.1 < 1.9
  Rng rng(0);
  const std::vector<int32_t> history = {0};
  EXPECT_EQ(sample_token(logits, history, p, rng), 1);
}

// ---------------------------------------------------------------------------------------------
// Filters vs a brute-force reference that follows the documented order literally:
// sort all → top-k → softmax → top-p → min-p → renormalise.

std::vector<TokenProb> reference_filter(const std::vector<float>& logits, const SamplingParams& p) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });  // ties: lower id
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < order.size()) order.resize(p.top_k);
  double z = 0;
  for (int32_t id : order) z += std::exp(static_cast<double>(logits[id]) - logits[order[0]]);
  std::vector<TokenProb> c;
  for (int32_t id : order) {
    c.push_back({id, std::exp(static_cast<double>(logits[id]) - logits[order[0]]) / z});
  }
  if (p.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < c.size()) {
      cum += c[n++].prob;
      if (cum >= p.top_p) break;
    }
    c.resize(n);
  }
  if (p.min_p > 0.0f) {
    const double cut = p.min_p * c[0].prob;
    std::vector<TokenProb> kept;
    for (const auto& t : c) {
      if (t.prob >= cut) kept.push_back(t);
    }
    c = kept;
  }
  double mass = 0;
  for (const auto& t : c) mass += t.prob;
  for (auto& t : c) t.prob /= mass;
  return c;
}

void expect_same_distribution(const std::vector<TokenProb>& got,
                              const std::vector<TokenProb>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].id, want[i].id) << "rank " << i;
    EXPECT_NEAR(got[i].prob, want[i].prob, 1e-12 + 1e-9 * want[i].prob) << "rank " << i;
  }
}

TEST(SamplerFilters, EachFilterAloneMatchesBruteForce) {
  const auto logits = random_logits(300, 3);
  SamplingParams off;
  off.top_k = 0;
  off.top_p = 1.0f;
  off.min_p = 0.0f;

  expect_same_distribution(filter_candidates(logits, off), reference_filter(logits, off));
  EXPECT_EQ(filter_candidates(logits, off).size(), 300u);
  for (int k : {1, 7, 299, 300, 1000}) {
    SamplingParams p = off;
    p.top_k = k;
    SCOPED_TRACE(k);
    auto got = filter_candidates(logits, p);
    EXPECT_EQ(got.size(), std::min<size_t>(k, 300));
    expect_same_distribution(got, reference_filter(logits, p));
  }
  for (float top_p : {0.0f, 0.1f, 0.5f, 0.9f, 0.999f}) {
    SamplingParams p = off;
    p.top_p = top_p;
    SCOPED_TRACE(top_p);
    expect_same_distribution(filter_candidates(logits, p), reference_filter(logits, p));
  }
  for (float min_p : {0.01f, 0.2f, 0.9f, 1.0f}) {
    SamplingParams p = off;
    p.min_p = min_p;
    SCOPED_TRACE(min_p);
    expect_same_distribution(filter_candidates(logits, p), reference_filter(logits, p));
  }
}

TEST(SamplerFilters, CombinationsAndTiesMatchBruteForce) {
  std::mt19937 gen(11);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + gen() % 400;
    auto logits = random_logits(n, 1000 + trial, trial % 2 ? 1.0f : 4.0f);
    if (trial % 3 == 0) {  // many exact ties
      for (auto& l : logits) l = std::round(l);
    }
    SamplingParams p;
    p.top_k = static_cast<int32_t>(gen() % (n + 5)) - 2;
    p.top_p = std::uniform_real_distribution<float>(0.0f, 1.2f)(gen);
    p.min_p = std::uniform_real_distribution<float>(-0.1f, 0.5f)(gen);
    SCOPED_TRACE(testing::Message() << "trial " << trial << " n=" << n << " k=" << p.top_k
                                    << " p=" << p.top_p << " min_p=" << p.min_p);
    expect_same_distribution(filter_candidates(logits, p), reference_filter(logits, p));
  }
}

TEST(SamplerFilters, NanLogitsAreNeverKept) {
  std::vector<float> logits = {NAN, 1.0f, NAN, 0.5f};
  SamplingParams p;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  auto got = filter_candidates(logits, p);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, 1);
  EXPECT_EQ(got[1].id, 3);
}

// ---------------------------------------------------------------------------------------------
// Draws

TEST(SamplerDraw, FrequenciesMatchTheFilteredDistribution) {
  const std::vector<float> base = {2.0f, 1.0f, 0.5f, 0.3f, 0.0f, -0.5f, -1.0f, -3.0f, 1.5f, 0.9f};
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 8;
  p.top_p = 0.97f;
  p.min_p = 0.02f;

  std::vector<float> scaled = base;
  for (auto& l : scaled) l /= p.temperature;
  const auto expected = reference_filter(scaled, p);
  ASSERT_GE(expected.size(), 4u);

  Rng rng(2024);
  const int draws = 20000;
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> logits = base;
    ++counts[sample_token(logits, {}, p, rng)];
  }
  double chi2 = 0;
  int seen_in_set = 0;
  for (const auto& t : expected) {
    const double e = draws * t.prob;
    const double o = counts.count(t.id) ? counts[t.id] : 0;
    seen_in_set += static_cast<int>(o);
    chi2 += (o - e) * (o - e) / e;
  }
  EXPECT_EQ(seen_in_set, draws) << "a token outside the filtered set was drawn";
  // df = |set| - 1 (≤ 7); 30 is far beyond the 99.99th percentile of chi² with 7 dof (~29.9
  // is p≈1e-4), while a wrong distribution (e.g. unfiltered) lands in the hundreds.
  EXPECT_LT(chi2, 30.0) << "chi2 " << chi2;
}

TEST(SamplerDraw, SameSeedSameSequenceDifferentSeedDifferent) {
  const auto base = random_logits(50, 5, 1.0f);
  SamplingParams p;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.temperature = 1.0f;
  auto run = [&](uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> ids;
    for (int i = 0; i < 64; ++i) {
      auto logits = base;
      ids.push_back(sample_token(logits, ids, p, rng));
    }
    return ids;
  };
  EXPECT_EQ(run(9), run(9));
  EXPECT_NE(run(9), run(10));
}

TEST(SamplerDraw, TemperatureScalesLogitsInPlace) {
  std::vector<float> logits = {1.0f, 2.0f, -4.0f};
  SamplingParams p;
  p.temperature = 0.5f;
  Rng rng(1);
  sample_token(logits, {}, p, rng);
  EXPECT_EQ(logits, (std::vector<float>{2.0f, 4.0f, -8.0f}));
}

TEST(SamplerDraw, RejectsEmptyOrAllNanLogits) {
  Rng rng(1);
  SamplingParams p;
  std::vector<float> empty;
  try {
    sample_token(empty, {}, p, rng);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
  }
  std::vector<float> nans = {NAN, NAN};
  EXPECT_THROW(sample_token(nans, {}, p, rng), Error);
}

}  // namespace
}  // namespace kiln

#include "session/sampling_filters.hpp"

#include <algorithm>
#include <cmath>

namespace kiln {

namespace {

struct Candidate {
  float logit;
  int32_t id;
  double prob;
};

// The one rank order every filter and the draw use; a strict total order, so partial and full
// sorts agree on every prefix.
bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Sorts the shortest prefix of `c` (by rank) whose probability reaches top_p (all of it when
// top_p >= 1) and returns its length. Most of the vocabulary is never sorted: the sorted prefix
// grows geometrically until it holds enough mass.
size_t sort_top_p_prefix(std::vector<Candidate>& c, float top_p) {
  const size_t n = c.size();
  size_t m = std::min<size_t>(n, 64);
  size_t counted = 0;
  double cumulative = 0.0;
  for (;;) {
    std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(m), c.end(), ranks_before);
    for (; counted < m; ++counted) {
      cumulative += c[counted].prob;
      if (top_p < 1.0f && cumulative >= static_cast<double>(top_p)) return counted + 1;
    }
    if (m == n) return n;
    m = std::min(n, m * 4);
  }
}

}  // namespace

std::vector<TokenProb> filter_candidates(std::span<const float> scaled_logits,
                                         const SamplingParams& params) {
  std::vector<Candidate> c;
  c.reserve(scaled_logits.size());
  for (size_t i = 0; i < scaled_logits.size(); ++i) {
    if (std::isnan(scaled_logits[i])) continue;  // never sampleable
    c.push_back({scaled_logits[i], static_cast<int32_t>(i), 0.0});
  }
  if (c.empty()) return {};

  // top-k: the k best by rank (unordered for now).
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < c.size()) {
    const auto kth = c.begin() + params.top_k;
    std::nth_element(c.begin(), kth, c.end(), ranks_before);
    c.erase(kth, c.end());
  }

  // softmax over the survivors, in double.
  float max_logit = c[0].logit;
  for (const auto& x : c) max_logit = std::max(max_logit, x.logit);
  double total = 0.0;
  for (auto& x : c) {
    x.prob = std::exp(static_cast<double>(x.logit) - static_cast<double>(max_logit));
    total += x.prob;
  }
  for (auto& x : c) x.prob /= total;

  // min-p keeps a rank prefix (probability falls along the rank order) and so does top-p; the
  // kept set is the shorter of the two. Dropping the min-p losers first only spares sorting them:
  // the survivors are a prefix, so top-p's cumulative sums over them are unchanged.
  if (params.min_p > 0.0f) {
    double max_prob = 0.0;
    for (const auto& x : c) max_prob = std::max(max_prob, x.prob);
    const double threshold = static_cast<double>(params.min_p) * max_prob;
    std::erase_if(c, [threshold](const Candidate& x) { return x.prob < threshold; });
  }

  const size_t keep = sort_top_p_prefix(c, params.top_p);
  c.resize(keep);

  double kept_mass = 0.0;
  for (const auto& x : c) kept_mass += x.prob;
  std::vector<TokenProb> out;
  out.reserve(keep);
  for (const auto& x : c) out.push_back({x.id, x.prob / kept_mass});
  return out;
}

}  // namespace kiln

// The filtering half of sampling: from temperature-scaled logits to the distribution a token is
// drawn from (top-k → softmax → top-p → min-p → renormalise). Separate from the draw so that the
// kept set can be checked exactly against a reference.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "session/sampler.hpp"

namespace kiln {

struct TokenProb {
  int32_t id;
  double prob;
};

// Candidates ranked by logit (higher first, lower id first on ties): top-k keeps the first k,
// top-p the shortest prefix whose probability reaches top_p, min-p those with probability >=
// min_p × the largest. Returns the kept tokens in that rank order with probabilities renormalised
// to sum to 1. `scaled_logits` are already divided by the temperature. Never empty for a
// non-empty input.
std::vector<TokenProb> filter_candidates(std::span<const float> scaled_logits,
                                         const SamplingParams& params);

}  // namespace kiln

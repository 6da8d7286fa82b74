// HF's SplitDelimiterBehavior (tokenizers/src/tokenizer/normalizer.rs, NormalizedString::split):
// how the delimiters found in a piece of text are kept when the piece is cut.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/pattern.hpp"

namespace kiln::tok {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

SplitBehavior parse_split_behavior(const std::string& name, const std::string& path);

// Cuts [0, text_size) at the delimiter spans `matches` (sorted, non-overlapping). With `invert`
// the matches are the pieces to keep and the gaps are the delimiters. Empty pieces are dropped.
std::vector<Span> split_spans(size_t text_size, const std::vector<Span>& matches,
                              SplitBehavior behavior, bool invert);

}  // namespace kiln::tok

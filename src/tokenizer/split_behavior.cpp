#include "tokenizer/split_behavior.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace kiln::tok {

SplitBehavior parse_split_behavior(const std::string& name, const std::string& path) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail(KILN_ERR_FORMAT, "tokenizer JSON field " + path + ": unknown split behavior \"" + name +
                            "\" (expected Removed, Isolated, MergedWithPrevious, MergedWithNext "
                            "or Contiguous)");
}

std::vector<Span> split_spans(size_t text_size, const std::vector<Span>& matches,
                              SplitBehavior behavior, bool invert) {
  struct Part {
    Span span;
    bool is_match;
  };
  // The text as alternating gap / match parts, in order.
  std::vector<Part> parts;
  size_t last = 0;
  for (const Span& m : matches) {
    if (m.begin > last) parts.push_back({{last, m.begin}, invert});
    parts.push_back({m, !invert});
    last = m.end;
  }
  if (last < text_size) parts.push_back({{last, text_size}, invert});

  std::vector<Span> out;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Part& p : parts) out.push_back(p.span);
      break;
    case SplitBehavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.is_match) out.push_back(p.span);
      }
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !out.empty()) {
          out.back().end = p.span.end;
        } else {
          out.push_back(p.span);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !out.empty()) {
          out.back().end = p.span.end;
        } else {
          out.push_back(p.span);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;  // walking backwards: "previous" is the part to the right
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->span.begin;
        } else {
          out.push_back(it->span);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  std::erase_if(out, [](const Span& s) { return s.end <= s.begin; });
  return out;
}

}  // namespace kiln::tok

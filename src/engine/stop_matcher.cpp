#include "engine/stop_matcher.hpp"

#include <algorithm>

namespace kiln {

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return {};
  held_.append(text);
  // A complete stop string: release what precedes the earliest one.
  size_t earliest = std::string::npos;
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    earliest = std::min(earliest, held_.find(s));
  }
  if (earliest != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, earliest);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string. A stop string starts
  // with a UTF-8 lead byte, so the cut always falls on a character boundary.
  size_t keep = 0;
  for (const auto& s : stops_) {
    const size_t max_len = std::min(s.size() - (s.empty() ? 0 : 1), held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

}  // namespace kiln

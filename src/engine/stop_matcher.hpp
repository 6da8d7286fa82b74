// StopMatcher: streams generated text while watching for stop strings. Text that might be the
// start of a stop string is held back until it is known not to be; text from a completed stop
// string onward is never released.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends text; returns what can be released now. Once a stop string completes, stopped() is
  // true and the text before it has been released.
  std::string push(std::string_view text);
  // Releases everything still held (generation ended for another reason).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace kiln

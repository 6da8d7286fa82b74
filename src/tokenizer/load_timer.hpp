// LoadTimer: wall time, process CPU time and page faults of each stage of building a tokenizer,
// for finding where load time goes (kiln_tokenizer_load logs them at KILN_LOG_DEBUG;
// `kiln-tokenize bench --load --phases` prints them). CPU time and faults matter because the
// first load of a process runs on a fresh heap, where every page of a large table is a fault, and
// because wall time on a shared machine says little. A stage ends at mark(); it is measured from
// the previous mark (or construction).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::tok {

class LoadTimer {
 public:
  LoadTimer() : start_(sample()), last_(start_) {}

  void mark(const char* stage) {
    const Sample now = sample();
    stages_.push_back({stage, now - last_});
    last_ = now;
  }
  // "read files 7.1 ms (cpu 6.0 ms, 2900 faults), ... = total 93.0 ms (cpu ..., ... faults)".
  std::string summary() const;

 private:
  struct Sample {
    double wall_ms = 0;
    double cpu_ms = 0;   // user + system, all threads of the process
    int64_t faults = 0;  // minor + major page faults of the process
    Sample operator-(const Sample& other) const {
      return {wall_ms - other.wall_ms, cpu_ms - other.cpu_ms, faults - other.faults};
    }
  };
  struct Stage {
    const char* name;  // a string literal
    Sample cost;
  };
  static Sample sample();

  Sample start_;
  Sample last_;
  std::vector<Stage> stages_;
};

// mark() on a timer that may be absent (loads nobody is timing pass nullptr).
inline void mark_stage(LoadTimer* timer, const char* stage) {
  if (timer) timer->mark(stage);
}

}  // namespace kiln::tok

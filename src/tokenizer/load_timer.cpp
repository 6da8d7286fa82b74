#include "tokenizer/load_timer.hpp"

#include <sys/resource.h>

#include <cstdio>

namespace kiln::tok {

LoadTimer::Sample LoadTimer::sample() {
  Sample s;
  s.wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    const auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec * 1e-3; };
    s.cpu_ms = ms(usage.ru_utime) + ms(usage.ru_stime);
    s.faults = usage.ru_minflt + usage.ru_majflt;
  }
  return s;
}

std::string LoadTimer::summary() const {
  std::string out;
  char part[160];
  const auto append = [&](const char* separator, const char* name, const Sample& cost) {
    std::snprintf(part, sizeof(part), "%s%s %.1f ms (cpu %.1f ms, %lld faults)", separator, name,
                  cost.wall_ms, cost.cpu_ms, static_cast<long long>(cost.faults));
    out += part;
  };
  for (const Stage& stage : stages_) append(out.empty() ? "" : ", ", stage.name, stage.cost);
  append(out.empty() ? "" : " = ", "total", last_ - start_);
  return out;
}

}  // namespace kiln::tok

#include "train/optimizer/lr_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "core/error.hpp"

namespace kiln {

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  fail(KILN_ERR_INVALID_ARGUMENT, "learning-rate schedule: " + field + " " + what);
}

int64_t decay_steps(const LrSchedule& s) {
  return static_cast<int64_t>(
      std::llround(static_cast<double>(s.decay_fraction) * static_cast<double>(s.total_steps)));
}

}  // namespace

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Constant:
      return "constant";
    case ScheduleKind::WarmupCosine:
      return "warmup_cosine";
    case ScheduleKind::WarmupLinear:
      return "warmup_linear";
    case ScheduleKind::WarmupStableDecay:
      return "warmup_stable_decay";
  }
  return "unknown";
}

void validate_schedule(const LrSchedule& s) {
  if (s.kind != ScheduleKind::Constant && s.kind != ScheduleKind::WarmupCosine &&
      s.kind != ScheduleKind::WarmupLinear && s.kind != ScheduleKind::WarmupStableDecay) {
    bad("kind", "is " + std::to_string(static_cast<int>(s.kind)) + ", not a known schedule");
  }
  if (s.warmup_steps < 0) bad("warmup_steps", "is " + std::to_string(s.warmup_steps) + " (< 0)");
  if (!(s.min_lr_ratio >= 0.0f && s.min_lr_ratio <= 1.0f)) {
    bad("min_lr_ratio", "is " + std::to_string(s.min_lr_ratio) + ", expected a value in [0, 1]");
  }
  if (s.kind == ScheduleKind::Constant) return;
  if (s.total_steps < 1) {
    bad("total_steps", "is " + std::to_string(s.total_steps) + "; schedule " +
                           schedule_kind_name(s.kind) + " needs at least 1");
  }
  if (s.warmup_steps > s.total_steps) {
    bad("warmup_steps", "(" + std::to_string(s.warmup_steps) + ") exceeds total_steps (" +
                            std::to_string(s.total_steps) + ")");
  }
  if (s.kind == ScheduleKind::WarmupStableDecay) {
    if (!(s.decay_fraction > 0.0f && s.decay_fraction <= 1.0f)) {
      bad("decay_fraction",
          "is " + std::to_string(s.decay_fraction) + ", expected a value in (0, 1]");
    }
    const int64_t d = decay_steps(s);
    if (d < 1) {
      bad("decay_fraction", "(" + std::to_string(s.decay_fraction) + ") of total_steps (" +
                                std::to_string(s.total_steps) + ") rounds to no decay step");
    }
    if (s.warmup_steps + d > s.total_steps) {
      bad("warmup_steps", "(" + std::to_string(s.warmup_steps) + ") plus the " + std::to_string(d) +
                              " decay steps exceed total_steps (" + std::to_string(s.total_steps) +
                              ")");
    }
  }
}

double lr_multiplier(const LrSchedule& s, int64_t step) {
  const double r = s.min_lr_ratio;
  if (step < s.warmup_steps) {
    return static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  }
  // Progress of the post-warmup phase after this update, clamped to [0, 1].
  const auto progress = [](int64_t done, int64_t span) {
    return std::clamp(static_cast<double>(done) / static_cast<double>(std::max<int64_t>(span, 1)),
                      0.0, 1.0);
  };
  switch (s.kind) {
    case ScheduleKind::Constant:
      return 1.0;
    case ScheduleKind::WarmupCosine: {
      const double p = progress(step - s.warmup_steps + 1, s.total_steps - s.warmup_steps);
      return r + (1.0 - r) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    }
    case ScheduleKind::WarmupLinear: {
      const double p = progress(step - s.warmup_steps + 1, s.total_steps - s.warmup_steps);
      return 1.0 - (1.0 - r) * p;
    }
    case ScheduleKind::WarmupStableDecay: {
      const int64_t d = decay_steps(s);
      const int64_t decay_start = s.total_steps - d;
      if (step < decay_start) return 1.0;
      return 1.0 - (1.0 - r) * progress(step - decay_start + 1, d);
    }
  }
  return 1.0;
}

}  // namespace kiln

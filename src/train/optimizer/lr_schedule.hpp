// Learning-rate schedules: the multiplier applied to every base learning rate at a step.
//
// Steps are 0-based update indices (step 0 is the first optimizer update). With W warmup steps
// and T total steps:
//   warmup (every kind, s < W):  (s + 1) / W, so the last warmup step reaches exactly 1
//   Constant:                    1
//   WarmupCosine (s >= W):       r + (1 - r) * (1 + cos(pi * p)) / 2,  p = (s - W + 1) / (T - W)
//   WarmupLinear (s >= W):       1 - (1 - r) * p
//   WarmupStableDecay:           1 until the last D = round(decay_fraction * T) steps, then
//                                1 - (1 - r) * (s - (T - D) + 1) / D
// where r = min_lr_ratio and p is clamped to [0, 1]: the last step (s = T - 1) runs at exactly r,
// and steps past T stay there. (s + 1) rather than s, so no update is wasted at multiplier 0.
#pragma once

#include <cstdint>

namespace kiln {

enum class ScheduleKind : uint8_t { Constant, WarmupCosine, WarmupLinear, WarmupStableDecay };

const char* schedule_kind_name(ScheduleKind kind);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::Constant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;      // needed by every kind but Constant
  float min_lr_ratio = 0.0f;    // in [0, 1]
  float decay_fraction = 0.2f;  // WarmupStableDecay: share of total_steps spent decaying, (0, 1]
};

// Throws KILN_ERR_INVALID_ARGUMENT naming the field and its value: negative warmup, total_steps
// < 1 (non-constant kinds), warmup (+ decay for WSD) longer than total_steps, ratios outside
// their range, an unknown kind.
void validate_schedule(const LrSchedule& schedule);

// The multiplier for update `step` (>= 0), computed in double. Assumes a validated schedule.
double lr_multiplier(const LrSchedule& schedule, int64_t step);

}  // namespace kiln

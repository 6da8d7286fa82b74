// The options of a training run that a checkpoint records, so a resumed run continues exactly.
#pragma once

#include <cstdint>
#include <vector>

#include "train/optimizer/lr_schedule.hpp"
#include "train/optimizer/optimizer.hpp"

namespace kiln {

struct TrainerOptions {
  OptimizerOptions optimizer;
  LrSchedule schedule;
  int32_t grad_accum_steps = 1;
  float clip_norm = 0.0f;  // 0 = no clipping
  uint64_t seed = 0;
  std::vector<float> mtp_weights;  // one per MTP head (docs/training-design.md)
  float residual_dropout = 0.0f;   // [0, 1); train steps only (train/dropout_mask.hpp)
};

}  // namespace kiln

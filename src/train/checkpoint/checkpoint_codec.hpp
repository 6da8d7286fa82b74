// Conversions between kiln's C++ types and the generated flatbuffers types of
// schemas/checkpoint.fbs, shared by the checkpoint writer and reader. Internal to
// src/train/checkpoint/.
#pragma once

#include <optional>

#include "checkpoint_generated.h"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "train/tensor_kind.hpp"
#include "train/trainer_options.hpp"

namespace kiln::ckpt_codec {

inline ckpt::DType to_fb(DType t) {
  switch (t) {
    case DType::F32:
      return ckpt::DType::F32;
    case DType::F16:
      return ckpt::DType::F16;
    case DType::BF16:
      return ckpt::DType::BF16;
    case DType::GGML:  // trainer tensors are float types; only GGUF views carry GGML
      fail(KILN_ERR_INTERNAL, "a training checkpoint cannot hold a GGML block-quantised tensor");
  }
  return ckpt::DType::F32;
}

inline std::optional<DType> from_fb(ckpt::DType t) {
  switch (t) {
    case ckpt::DType::F32:
      return DType::F32;
    case ckpt::DType::F16:
      return DType::F16;
    case ckpt::DType::BF16:
      return DType::BF16;
  }
  return std::nullopt;
}

// The stored values of both enums are kiln's own (see tensor_kind.hpp); these only check range.
inline ckpt::TensorKind to_fb(TensorKind k) { return static_cast<ckpt::TensorKind>(k); }
inline std::optional<TensorKind> from_fb(ckpt::TensorKind k) {
  const auto v = static_cast<uint8_t>(k);
  if (v >= kTensorKindCount) return std::nullopt;
  return static_cast<TensorKind>(v);
}

inline ckpt::OptimizerKind to_fb(OptimizerKind k) {
  return k == OptimizerKind::Muon ? ckpt::OptimizerKind::Muon : ckpt::OptimizerKind::AdamW;
}
inline std::optional<OptimizerKind> from_fb(ckpt::OptimizerKind k) {
  switch (k) {
    case ckpt::OptimizerKind::AdamW:
      return OptimizerKind::AdamW;
    case ckpt::OptimizerKind::Muon:
      return OptimizerKind::Muon;
  }
  return std::nullopt;
}

inline ckpt::ScheduleKind to_fb(ScheduleKind k) {
  switch (k) {
    case ScheduleKind::Constant:
      return ckpt::ScheduleKind::Constant;
    case ScheduleKind::WarmupCosine:
      return ckpt::ScheduleKind::WarmupCosine;
    case ScheduleKind::WarmupLinear:
      return ckpt::ScheduleKind::WarmupLinear;
    case ScheduleKind::WarmupStableDecay:
      return ckpt::ScheduleKind::WarmupStableDecay;
  }
  return ckpt::ScheduleKind::Constant;
}
inline std::optional<ScheduleKind> from_fb(ckpt::ScheduleKind k) {
  switch (k) {
    case ckpt::ScheduleKind::Constant:
      return ScheduleKind::Constant;
    case ckpt::ScheduleKind::WarmupCosine:
      return ScheduleKind::WarmupCosine;
    case ckpt::ScheduleKind::WarmupLinear:
      return ScheduleKind::WarmupLinear;
    case ckpt::ScheduleKind::WarmupStableDecay:
      return ScheduleKind::WarmupStableDecay;
  }
  return std::nullopt;
}

}  // namespace kiln::ckpt_codec

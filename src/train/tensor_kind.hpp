// What a stored training tensor holds: a parameter value or one of the optimizer's per-parameter
// buffers. Shared by the optimizer (its named state) and checkpoints (their tensor table). Values
// are stored in checkpoints: never renumber, only append.
#pragma once

#include <cstdint>

namespace kiln {

enum class TensorKind : uint8_t {
  Value = 0,         // the parameter itself
  AdamM = 1,         // AdamW first moment
  AdamV = 2,         // AdamW second moment
  MuonMomentum = 3,  // Muon momentum buffer
};

inline constexpr uint8_t kTensorKindCount = 4;

inline const char* tensor_kind_name(TensorKind kind) {
  switch (kind) {
    case TensorKind::Value:
      return "value";
    case TensorKind::AdamM:
      return "adam_m";
    case TensorKind::AdamV:
      return "adam_v";
    case TensorKind::MuonMomentum:
      return "muon_momentum";
  }
  return "unknown";
}

}  // namespace kiln

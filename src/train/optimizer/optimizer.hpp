// Optimizer: updates the trainer's parameter buffer from its gradient buffer, holding one F32
// state buffer per moment in the same ParamLayout.
//
//   AdamW mode: every tensor is updated by AdamW (train/optimizer/adamw.hpp).
//   Muon mode:  Matrix tensors (2-D weights inside blocks) by Muon (train/optimizer/muon.hpp),
//               every other role (embeddings, positions, the head, norms, biases) by AdamW, as in
//               nanochat and modded-nanogpt.
// Weight decay for AdamW-updated tensors defaults to `weight_decay` for Matrix and Head tensors
// and 0 for the other roles (no decay for norms, biases, embeddings, positions); `groups` overrides
// the learning rate and decay per role, like torch param groups. Muon-updated tensors use `muon`.
//
// Deterministic: tensors are updated in layout order, each by an elementwise loop or fixed-tile
// matmuls, so two runs with the same inputs give bit-identical results for any thread count.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "train/optimizer/muon.hpp"
#include "train/param_layout.hpp"
#include "train/tensor_kind.hpp"

namespace kiln {

enum class OptimizerKind : uint8_t { AdamW = 0, Muon = 1 };

inline constexpr size_t kParamRoleCount = 6;  // ParamRole::Matrix .. ParamRole::Bias

const char* optimizer_kind_name(OptimizerKind kind);

// Overrides for the AdamW-updated tensors of one role; an unset field inherits.
struct ParamGroup {
  std::optional<float> lr;
  std::optional<float> weight_decay;
};

struct MuonOptions {
  float lr = 0.02f;
  float momentum = 0.95f;
  bool nesterov = true;
  int32_t ns_steps = 5;
  float weight_decay = 0.0f;  // decoupled, p *= 1 - lr * wd (nanochat's Muon has none)
};

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::AdamW;
  // AdamW (torch.optim.AdamW's defaults).
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // for Matrix and Head tensors unless a group overrides
  std::array<ParamGroup, kParamRoleCount> groups{};  // indexed by ParamRole
  MuonOptions muon;

  // The AdamW learning rate / weight decay a tensor of `role` gets.
  float lr_for(ParamRole role) const;
  float weight_decay_for(ParamRole role) const;
};

// Throws KILN_ERR_INVALID_ARGUMENT naming the field and value: negative or non-finite lr or
// weight decay, betas or momentum outside [0, 1), eps <= 0, ns_steps outside [1, 100], an unknown
// kind.
void validate_optimizer_options(const OptimizerOptions& options);

// Which optimizer updates a tensor of `role` in `kind` mode.
bool uses_muon(OptimizerKind kind, ParamRole role);

// The Muon settings of one update at lr_multiplier × the peak learning rate (the CPU optimizer and
// the CUDA engine both step with this).
MuonStep muon_step(const OptimizerOptions& options, double lr_multiplier);

// One named state tensor: the buffer `kind` of parameter `param` (param->numel floats).
struct OptimizerState {
  const ParamSpec* param;
  TensorKind kind;
  float* data;
};
struct ConstOptimizerState {
  const ParamSpec* param;
  TensorKind kind;
  const float* data;
};

class Optimizer {
 public:
  // Validates the options (see above) and, in Muon mode, that every Matrix tensor is 2-D
  // (KILN_ERR_INVALID_ARGUMENT naming it). State starts at zero. n_threads >= 1.
  Optimizer(ParamLayout layout, const OptimizerOptions& options, int n_threads);

  // One update of `values` (layout.total() floats) from `grads`; every learning rate is
  // multiplied by lr_multiplier (the schedule's value for this step). Counts the update.
  void step(float* values, const float* grads, double lr_multiplier);

  // Updates applied so far (AdamW's bias-correction t of the next update is this + 1).
  int64_t steps_taken() const { return steps_; }
  // For restoring a checkpoint. Throws KILN_ERR_INVALID_ARGUMENT when negative.
  void set_steps_taken(int64_t steps);

  // The state tensors that exist in this mode, in layout order: adam_m and adam_v for each
  // AdamW-updated tensor, muon_momentum for each Muon-updated one.
  std::vector<OptimizerState> state();
  std::vector<ConstOptimizerState> state() const;
  // Copies `numel` floats into the named state tensor. Throws KILN_ERR_FORMAT naming the tensor
  // when no such state exists in this mode, or when numel disagrees with the parameter's.
  void restore_state(std::string_view param_name, TensorKind kind, const float* data,
                     int64_t numel);

  // The flat state buffers (layout.total() floats each, alignment padding included) that exist
  // in this mode: adam_m and adam_v, and muon_momentum in Muon mode. What ZeRO-1 shards and
  // sharded checkpoints slice (train/data_parallel/shard_plan.hpp).
  std::vector<TensorKind> flat_kinds() const;
  // Throws KILN_ERR_INTERNAL for a kind not in flat_kinds().
  std::span<float> flat_state(TensorKind kind);
  std::span<const float> flat_state(TensorKind kind) const;

  const ParamLayout& layout() const { return layout_; }
  const OptimizerOptions& options() const { return options_; }

 private:
  template <class State, class Self>
  static std::vector<State> collect_state(Self& self);
  float* buffer(TensorKind kind);
  ParamLayout layout_;
  OptimizerOptions options_;
  int n_threads_;
  int64_t steps_ = 0;
  // Each the size of layout_.total(); muon_momentum_ only in Muon mode. In Muon mode the Adam
  // moments of Matrix tensors are never used (kept for one offset per tensor in every buffer).
  std::vector<float> adam_m_, adam_v_, muon_momentum_;
  MuonScratch scratch_;
};

}  // namespace kiln

#include "train/optimizer/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.hpp"
#include "train/optimizer/adamw.hpp"

namespace kiln {

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  fail(KILN_ERR_INVALID_ARGUMENT, "optimizer option " + field + " " + what);
}

void check_nonnegative(const std::string& field, float v) {
  if (!(v >= 0.0f) || !std::isfinite(v)) {
    bad(field, "is " + std::to_string(v) + ", expected a finite value >= 0");
  }
}

void check_unit_interval(const std::string& field, float v) {
  if (!(v >= 0.0f && v < 1.0f)) bad(field, "is " + std::to_string(v) + ", expected [0, 1)");
}

size_t role_index(ParamRole role) { return static_cast<size_t>(role); }

}  // namespace

const char* optimizer_kind_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::AdamW:
      return "adamw";
    case OptimizerKind::Muon:
      return "muon";
  }
  return "unknown";
}

float OptimizerOptions::lr_for(ParamRole role) const {
  return groups[role_index(role)].lr.value_or(lr);
}

float OptimizerOptions::weight_decay_for(ParamRole role) const {
  const bool decays_by_default = role == ParamRole::Matrix || role == ParamRole::Head;
  return groups[role_index(role)].weight_decay.value_or(decays_by_default ? weight_decay : 0.0f);
}

void validate_optimizer_options(const OptimizerOptions& o) {
  if (o.kind != OptimizerKind::AdamW && o.kind != OptimizerKind::Muon) {
    bad("kind", "is " + std::to_string(static_cast<int>(o.kind)) + ", not a known optimizer");
  }
  check_nonnegative("lr", o.lr);
  check_unit_interval("beta1", o.beta1);
  check_unit_interval("beta2", o.beta2);
  if (!(o.eps > 0.0f) || !std::isfinite(o.eps)) {
    bad("eps", "is " + std::to_string(o.eps) + ", expected a finite value > 0");
  }
  check_nonnegative("weight_decay", o.weight_decay);
  for (size_t r = 0; r < kParamRoleCount; ++r) {
    const std::string role = param_role_name(static_cast<ParamRole>(r));
    if (o.groups[r].lr) check_nonnegative("groups[" + role + "].lr", *o.groups[r].lr);
    if (o.groups[r].weight_decay) {
      check_nonnegative("groups[" + role + "].weight_decay", *o.groups[r].weight_decay);
    }
  }
  check_nonnegative("muon.lr", o.muon.lr);
  check_unit_interval("muon.momentum", o.muon.momentum);
  check_nonnegative("muon.weight_decay", o.muon.weight_decay);
  if (o.muon.ns_steps < 1 || o.muon.ns_steps > 100) {
    bad("muon.ns_steps", "is " + std::to_string(o.muon.ns_steps) + ", expected 1..100");
  }
}

bool uses_muon(OptimizerKind kind, ParamRole role) {
  return kind == OptimizerKind::Muon && role == ParamRole::Matrix;
}

MuonStep muon_step(const OptimizerOptions& options, double lr_multiplier) {
  MuonStep m;
  m.lr = static_cast<double>(options.muon.lr) * lr_multiplier;
  m.momentum = options.muon.momentum;
  m.nesterov = options.muon.nesterov;
  m.ns_steps = options.muon.ns_steps;
  m.weight_decay = options.muon.weight_decay;
  return m;
}

Optimizer::Optimizer(ParamLayout layout, const OptimizerOptions& options, int n_threads)
    : layout_(std::move(layout)), options_(options), n_threads_(n_threads) {
  validate_optimizer_options(options_);
  if (n_threads_ < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "optimizer: n_threads is " + std::to_string(n_threads) + ", expected >= 1");
  }
  const auto total = static_cast<size_t>(layout_.total());
  adam_m_.assign(total, 0.0f);
  adam_v_.assign(total, 0.0f);
  if (options_.kind == OptimizerKind::Muon) {
    for (const ParamSpec& s : layout_.specs()) {
      if (s.role == ParamRole::Matrix && s.shape.size() != 2) {
        fail(KILN_ERR_INVALID_ARGUMENT, "optimizer: Muon updates 2-D matrices, but '" + s.name +
                                            "' (role matrix) has " +
                                            std::to_string(s.shape.size()) + " dimensions");
      }
    }
    muon_momentum_.assign(total, 0.0f);
  }
}

void Optimizer::set_steps_taken(int64_t steps) {
  if (steps < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "optimizer: steps taken is " + std::to_string(steps) + ", expected >= 0");
  }
  steps_ = steps;
}

void Optimizer::step(float* values, const float* grads, double lr_multiplier) {
  const int64_t t = steps_ + 1;
  for (const ParamSpec& s : layout_.specs()) {
    float* p = values + s.offset;
    const float* g = grads + s.offset;
    if (uses_muon(options_.kind, s.role)) {
      muon_update(p, g, muon_momentum_.data() + s.offset, s.shape[0], s.shape[1],
                  muon_step(options_, lr_multiplier), scratch_, n_threads_);
    } else {
      AdamWStep a;
      a.lr = static_cast<double>(options_.lr_for(s.role)) * lr_multiplier;
      a.beta1 = options_.beta1;
      a.beta2 = options_.beta2;
      a.eps = options_.eps;
      a.weight_decay = options_.weight_decay_for(s.role);
      a.t = t;
      adamw_update(p, g, adam_m_.data() + s.offset, adam_v_.data() + s.offset, s.numel, a,
                   n_threads_);
    }
  }
  steps_ = t;
}

float* Optimizer::buffer(TensorKind kind) {
  switch (kind) {
    case TensorKind::AdamM:
      return adam_m_.data();
    case TensorKind::AdamV:
      return adam_v_.data();
    case TensorKind::MuonMomentum:
      return muon_momentum_.empty() ? nullptr : muon_momentum_.data();
    case TensorKind::Value:
      return nullptr;
  }
  return nullptr;
}

std::vector<TensorKind> Optimizer::flat_kinds() const {
  if (muon_momentum_.empty()) return {TensorKind::AdamM, TensorKind::AdamV};
  return {TensorKind::AdamM, TensorKind::AdamV, TensorKind::MuonMomentum};
}

std::span<float> Optimizer::flat_state(TensorKind kind) {
  float* data = buffer(kind);
  if (data == nullptr) {
    fail(KILN_ERR_INTERNAL, std::string("optimizer: no flat ") + tensor_kind_name(kind) +
                                " buffer in " + optimizer_kind_name(options_.kind) + " mode");
  }
  return {data, static_cast<size_t>(layout_.total())};
}

std::span<const float> Optimizer::flat_state(TensorKind kind) const {
  return const_cast<Optimizer&>(*this).flat_state(kind);
}

template <class State, class Self>
std::vector<State> Optimizer::collect_state(Self& self) {
  std::vector<State> out;
  for (const ParamSpec& s : self.layout_.specs()) {
    if (uses_muon(self.options_.kind, s.role)) {
      out.push_back({&s, TensorKind::MuonMomentum, self.muon_momentum_.data() + s.offset});
    } else {
      out.push_back({&s, TensorKind::AdamM, self.adam_m_.data() + s.offset});
      out.push_back({&s, TensorKind::AdamV, self.adam_v_.data() + s.offset});
    }
  }
  return out;
}

std::vector<OptimizerState> Optimizer::state() { return collect_state<OptimizerState>(*this); }

std::vector<ConstOptimizerState> Optimizer::state() const {
  return collect_state<ConstOptimizerState>(*this);
}

void Optimizer::restore_state(std::string_view param_name, TensorKind kind, const float* data,
                              int64_t numel) {
  const ParamSpec* s = layout_.find(param_name);
  const std::string what =
      std::string(tensor_kind_name(kind)) + " state of '" + std::string(param_name) + "'";
  if (s == nullptr) {
    fail(KILN_ERR_FORMAT, "optimizer: no trainable parameter for the " + what);
  }
  const bool muon = uses_muon(options_.kind, s->role);
  const bool exists = muon ? kind == TensorKind::MuonMomentum
                           : (kind == TensorKind::AdamM || kind == TensorKind::AdamV);
  if (!exists) {
    fail(KILN_ERR_FORMAT, "optimizer: the " + what + " does not exist: in " +
                              optimizer_kind_name(options_.kind) + " mode that tensor (role " +
                              param_role_name(s->role) + ") is updated by " +
                              (muon ? "Muon" : "AdamW"));
  }
  if (numel != s->numel) {
    fail(KILN_ERR_FORMAT, "optimizer: the " + what + " has " + std::to_string(numel) +
                              " elements, the parameter has " + std::to_string(s->numel));
  }
  std::memcpy(buffer(kind) + s->offset, data, static_cast<size_t>(numel) * sizeof(float));
}

}  // namespace kiln

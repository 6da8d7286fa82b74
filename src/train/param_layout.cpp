#include "train/param_layout.hpp"

#include "core/error.hpp"

namespace kiln {

const char* param_role_name(ParamRole role) {
  switch (role) {
    case ParamRole::Matrix:
      return "matrix";
    case ParamRole::Embedding:
      return "embedding";
    case ParamRole::Position:
      return "position";
    case ParamRole::Head:
      return "head";
    case ParamRole::Norm:
      return "norm";
    case ParamRole::Bias:
      return "bias";
  }
  return "unknown";
}

const ParamSpec& ParamLayout::add(std::string name, std::vector<int64_t> shape, ParamRole role) {
  if (find(name) != nullptr) fail(KILN_ERR_INTERNAL, "parameter '" + name + "' added twice");
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d <= 0) fail(KILN_ERR_INTERNAL, "parameter '" + name + "' has a non-positive dimension");
    numel *= d;
  }
  ParamSpec spec{std::move(name), std::move(shape), role, total_, numel};
  total_ += (numel + kAlign - 1) / kAlign * kAlign;
  specs_.push_back(std::move(spec));
  return specs_.back();
}

const ParamSpec* ParamLayout::find(std::string_view name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const ParamSpec& ParamLayout::at(std::string_view name) const {
  const ParamSpec* s = find(name);
  if (s == nullptr)
    fail(KILN_ERR_INTERNAL, "no trainable parameter named '" + std::string(name) + "'");
  return *s;
}

int64_t ParamLayout::n_parameters() const {
  int64_t n = 0;
  for (const auto& s : specs_) n += s.numel;
  return n;
}

}  // namespace kiln

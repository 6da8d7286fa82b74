// WeightSet::from_owned: a weight set whose float32 tensors live in memory rather than in a
// mapped file (weights converted at load, e.g. dequantised GGUF tensors).
#include "core/error.hpp"
#include "formats/safetensors.hpp"

namespace kiln {

std::unique_ptr<WeightSet> WeightSet::from_owned(std::vector<OwnedF32Tensor> tensors,
                                                 const std::string& origin) {
  auto set = std::make_unique<WeightSet>();
  set->description_ = origin;
  set->owned_.reserve(tensors.size());
  for (OwnedF32Tensor& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (numel != static_cast<int64_t>(t.values.size())) {
      fail(KILN_ERR_FORMAT, "tensor " + t.name + " from " + origin + " holds " +
                                std::to_string(t.values.size()) + " values, its shape " +
                                std::to_string(numel));
    }
    if (set->index_.count(t.name)) {
      fail(KILN_ERR_FORMAT, "tensor " + t.name + " appears twice in " + origin);
    }
    auto owned = std::make_unique<OwnedView>();
    owned->tensor = std::move(t);
    owned->view.name = owned->tensor.name;
    owned->view.dtype = DType::F32;
    owned->view.shape = owned->tensor.shape;
    owned->view.data = reinterpret_cast<const uint8_t*>(owned->tensor.values.data());
    owned->view.nbytes = owned->tensor.values.size() * sizeof(float);
    owned->view.file = origin;
    set->index_.emplace(owned->view.name, &owned->view);
    set->owned_.push_back(std::move(owned));
  }
  return set;
}

}  // namespace kiln

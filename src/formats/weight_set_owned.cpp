// WeightSet::from_owned and from_views: weight sets whose tensors live in memory rather than in
// safetensors files (float32 tensors converted at load; GGUF tensors in the GGUF file's mapping).
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

std::unique_ptr<WeightSet> WeightSet::from_views(std::vector<TensorView> views,
                                                 std::vector<std::vector<uint8_t>> buffers,
                                                 std::shared_ptr<const void> keep_alive,
                                                 const std::string& origin) {
  auto set = std::make_unique<WeightSet>();
  set->description_ = origin;
  set->keep_alive_ = std::move(keep_alive);
  // Moving a vector keeps its heap block, so views into `buffers` stay valid.
  set->buffers_ = std::move(buffers);
  set->views_.reserve(views.size());
  for (TensorView& v : views) {
    if (set->index_.count(v.name)) {
      fail(KILN_ERR_FORMAT, "tensor " + v.name + " appears twice in " + origin);
    }
    auto view = std::make_unique<TensorView>(std::move(v));
    set->index_.emplace(view->name, view.get());
    set->views_.push_back(std::move(view));
  }
  return set;
}

}  // namespace kiln

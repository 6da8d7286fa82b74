// ParamLayout: where every trainable tensor lives inside the trainer's contiguous buffers (values,
// gradients and each optimizer moment share one layout). Names and roles follow
// docs/training-design.md; roles decide weight decay and which optimizer (Muon or AdamW) updates a
// tensor.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

enum class ParamRole : uint8_t {
  Matrix,     // 2-D weight inside a block (attention / MLP projections)
  Embedding,  // token embedding (also the unembedding when tied)
  Position,   // learned position table (GPT-2)
  Head,       // untied lm_head
  Norm,       // norm weights
  Bias,       // biases (linear and LayerNorm)
};

const char* param_role_name(ParamRole role);

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  ParamRole role;
  int64_t offset = 0;  // in elements, a multiple of ParamLayout::kAlign
  int64_t numel = 0;
};

class ParamLayout {
 public:
  // Offsets are aligned to 16 elements (64 bytes for float) so every tensor starts on a cache line
  // and vector loads never straddle two tensors.
  static constexpr int64_t kAlign = 16;

  // Appends a tensor; throws KILN_ERR_INTERNAL on a duplicate name or a non-positive dimension.
  const ParamSpec& add(std::string name, std::vector<int64_t> shape, ParamRole role);

  const std::vector<ParamSpec>& specs() const { return specs_; }
  // nullptr when absent.
  const ParamSpec* find(std::string_view name) const;
  // Throws KILN_ERR_INTERNAL naming the tensor when absent.
  const ParamSpec& at(std::string_view name) const;
  // Total elements of a buffer holding every tensor (including alignment padding).
  int64_t total() const { return total_; }
  // Sum of numel over all tensors (the model's parameter count).
  int64_t n_parameters() const;

 private:
  std::vector<ParamSpec> specs_;
  int64_t total_ = 0;
};

}  // namespace kiln

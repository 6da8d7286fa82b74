// One tensor-parallel rank's weights (tensor_parallel_plan.hpp says which): row slices of q/k/v
// (and their biases) and gate/up are views into the checkpoint, as Phi-3's fused tensors already
// are; column slices of o_proj and down_proj are copied (a row of the slice is not contiguous in
// the file), block for block when the tensor is GGUF-quantised. Everything else is shared as is.
// The same code feeds every backend that splits a model, so the CPU proof of the split
// (tests/unit/tensor_parallel_plan_test.cpp) checks the slices the CUDA ranks upload.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "model/tensor_parallel_plan.hpp"
#include "model/transformer_weights.hpp"

namespace kiln {

// The rows `range` of `ref` (a 2-D block, or a 1-D vector of rows=numel × cols=1) as a view.
// Throws KILN_ERR_INTERNAL when the range lies outside the block (the plan was made for another
// config) and KILN_ERR_UNSUPPORTED for a transposed (Conv1D) block.
WeightRef slice_rows(const WeightRef& ref, IndexRange range, const char* role);

// A rank's TransformerWeights and the bytes of its column slices. Neither copyable nor movable:
// the weights point into the slices it owns.
class ShardedWeights {
 public:
  // Throws KILN_ERR_UNSUPPORTED (a quantised o_proj/down_proj whose column range does not fall on
  // block boundaries, naming tensor, format and range; a transposed block) or KILN_ERR_INTERNAL.
  ShardedWeights(const TransformerWeights& full, const TensorParallelShard& shard);
  ShardedWeights(const ShardedWeights&) = delete;
  ShardedWeights& operator=(const ShardedWeights&) = delete;

  const TransformerWeights& weights() const { return weights_; }
  // Bytes copied for the column slices (host memory held until the executor is built).
  size_t copied_bytes() const;

 private:
  WeightRef slice_columns(const WeightRef& ref, IndexRange range, const char* role);

  std::deque<std::vector<uint8_t>> buffers_;  // deque: views keep pointing at their bytes
  std::deque<TensorView> views_;
  TransformerWeights weights_;
};

}  // namespace kiln

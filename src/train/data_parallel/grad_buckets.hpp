// Gradient buckets for the data-parallel all-reduce overlapped with the backward pass (issue 8),
// as PyTorch DDP does it: the flat gradient buffer (ParamLayout order) is cut into contiguous
// buckets, and each bucket is all-reduced on a second stream as soon as the LAST micro-batch's
// backward pass will not write it again, while the backward pass goes on with earlier layers.
//
// When a gradient is final. Both engines walk the backward pass in one order (train_graph.hpp,
// cuda_engine.cpp): for each head h = 0..n_mtp_heads, its unembedding product, its final-norm
// backward, then its block (layer L-1 for the main head, MTP block h otherwise); then the trunk
// layers L-2..0; then the embedding norm (embed_norm), the positions and the token embedding.
// The points below are where a group of tensors is written for the last time:
//   HeadOutputs     after the LAST head's final-norm backward: lm_head (every head writes it) and
//                   model.norm, unless embed_norm makes the embedding write model.norm again
//   BlockMlp b      after block b's MLP-norm backward: post_attention_layernorm and the MLP
//                   projections (their bias gradients included: the BGRADB epilogues and column
//                   sums are enqueued before that norm's backward)
//   BlockAttention  after block b's attention-norm backward: input_layernorm, q/k/v/o (+ biases)
//                   and the q/k norms
//   Embedding       at the end: model.embed_tokens (also the tied head, written by every head
//                   first), model.embed_positions, and model.norm with embed_norm
// Why half-blocks and not tensors: inside a block the tensors are written in an order unrelated
// to their layout order (w_down first, input_layernorm last, while the layout starts the block
// with input_layernorm), so per-tensor readiness would not give contiguous ranges; but the MLP
// half (post_attention_layernorm, gate, up, down) is the contiguous END of each block's range
// and the attention half its contiguous start, so each half is one range, final at one point.
// Consecutive points mostly name adjacent ranges walking down the buffer (tail -> layer L-1 ->
// ... -> layer 0 -> embedding), so small groups merge into buckets of up to the target size.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.hpp"
#include "train/param_layout.hpp"

namespace kiln::train {

enum class GradPointKind : uint8_t { HeadOutputs, BlockMlp, BlockAttention, Embedding };

// `block` numbers blocks as the engines do: layers 0..L-1, then MTP head k at L + k - 1; -1 for
// HeadOutputs and Embedding.
struct GradPoint {
  GradPointKind kind = GradPointKind::Embedding;
  int32_t block = -1;
  bool operator==(const GradPoint&) const = default;
};

// "BlockMlp 3", "HeadOutputs" (messages).
std::string grad_point_name(const GradPoint& point);

// The points of one backward pass in the order the engines reach them (the order above).
std::vector<GradPoint> backward_grad_points(const ModelConfig& config);

// [begin, end) in elements of the flat gradient buffer (alignment padding included, so the
// buckets together cover [0, layout.total())), the tensors [first_param, end_param) of
// layout.specs(), and the index into points() after which none of them is written again.
struct GradBucket {
  int64_t begin = 0;
  int64_t end = 0;
  int32_t first_param = 0;
  int32_t end_param = 0;
  int32_t ready_point = 0;
  int64_t bytes() const { return (end - begin) * static_cast<int64_t>(sizeof(float)); }
};

class GradBucketPlan {
 public:
  // PyTorch DDP's default bucket_cap_mb.
  static constexpr int64_t kDefaultBytes = int64_t{25} << 20;

  // Buckets of at most `cap_bytes` (float32 gradients); a tensor bigger than that is a bucket
  // alone. Groups are merged only while the result stays one contiguous range. Throws
  // KILN_ERR_INVALID_ARGUMENT for cap_bytes < 1 and KILN_ERR_INTERNAL naming a tensor the
  // backward order above does not place (a layout grown without this plan).
  GradBucketPlan(const ModelConfig& config, const ParamLayout& layout, int64_t cap_bytes);

  const std::vector<GradPoint>& points() const { return points_; }
  // In launch order: ready_point never decreases.
  const std::vector<GradBucket>& buckets() const { return buckets_; }
  // The bucket holding element `offset` of [0, total); throws KILN_ERR_INTERNAL outside it.
  int32_t bucket_of(int64_t offset) const;
  int64_t cap_bytes() const { return cap_bytes_; }

 private:
  std::vector<GradPoint> points_;
  std::vector<GradBucket> buckets_;
  std::vector<int32_t> by_begin_;  // bucket indices sorted by begin (bucket_of's search)
  int64_t cap_bytes_;
};

// Walks one backward pass along a plan: which buckets each point releases, and a guard that no
// gradient is written after its bucket was handed to the all-reduce (the engine asks before it
// enqueues every gradient write). Pure host bookkeeping; one per engine.
class GradBucketCursor {
 public:
  explicit GradBucketCursor(const GradBucketPlan& plan) : plan_(plan) {}

  // A backward pass that reduces starts: no point reached, no bucket released.
  void start();
  // The engine reached `point`; returns [first, end) of the buckets it releases (in launch
  // order). Throws KILN_ERR_INTERNAL naming both points when `point` is not the next one.
  std::pair<int32_t, int32_t> reach(const GradPoint& point);
  // Throws KILN_ERR_INTERNAL naming the tensor when element `offset` lies in a released bucket.
  void check_writable(int64_t offset) const;
  int32_t released() const { return released_; }
  // Every point reached (so every bucket released).
  bool finished() const { return next_point_ == static_cast<int32_t>(plan_.points().size()); }

 private:
  const GradBucketPlan& plan_;
  int32_t next_point_ = 0;
  int32_t released_ = 0;
};

// The bucket size from KILN_DP_BUCKET_MB's value: null or empty -> kDefaultBytes; "0" -> 0 (one
// all-reduce after the backward pass); otherwise a decimal number of MiB > 0 (fractions allowed:
// tests use buckets of a few KiB), at least one byte. Throws KILN_ERR_INVALID_ARGUMENT naming
// the variable and the value otherwise.
int64_t grad_bucket_bytes_from_env(const char* value);

}  // namespace kiln::train

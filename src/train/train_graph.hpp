// TrainGraph<T>: forward and backward of the whole decoder on the CPU, for every family a
// ModelConfig describes (docs/training-design.md):
//
//   Llama family  RMSNorm with weight, SwiGLU, RoPE (scaled per rope_inverse_frequencies), GQA,
//                 optional q/k/v and o biases, Qwen3 q/k RMSNorm before RoPE, tied or untied head
//   GPT-2         LayerNorm with bias, GELU (tanh), learned positions, biases on every linear
//   NanoChat      parameter-free RMSNorm, also on the token embedding (embed_norm), RoPE rotated
//                 the other way (see rope.hpp) then parameter-free per-head q/k RMSNorm, ReLU² MLP,
//                 untied head, logits soft-capped c · tanh(z / c)
//
// Every block is pre-norm: x += attn(norm1(x)); x += mlp(norm2(x)). With embed_norm the token
// embedding goes through model.norm before the first layer (transformers' NanoChatModel applies
// its one `self.norm` module there and after the last layer, so a weighted norm would share those
// weights). Attention scale is 1/sqrt(head_dim) for all families.
//
// Multi-token prediction (Meta's layout): the trunk is layers 0..L-2; the main head is layer L-1;
// MTP head K (1..n_mtp_heads) is one more block fed by the trunk output; every head goes through
// the shared final norm and unembedding. Head K at position t predicts targets[t + K] and uses
// loss_mask[t + K] and loss_weights[t + K]; positions with t + K >= seq are not counted.
//
// Loss: per counted token (mask != 0, target >= 0) ce = logsumexp(z) - z[target], z the logits
// after the soft-cap. The gradient computed is that of
//     Σ_heads c_h · Σ_i w_i ce_i / N_h,     c_0 = 1, c_K = mtp_weights[K-1],
// N_h the normaliser the caller passes: the total weight of head h over the WHOLE step (every
// accumulation micro-batch; see loss_weight_totals), so summing micro-batch gradients gives the
// full batch's gradient exactly.
//
// Precision and determinism: T = float trains, T = double runs gradient checks. Reductions run in
// a fixed order (see the ops), so results are bit-identical for the same inputs at any thread
// count. Memory: every block's activations are kept for the backward pass, including the
// attention probabilities ([batch × heads × seq × seq] per block); the logits are produced
// 128 rows at a time and never held whole.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "model/config.hpp"
#include "train/data_parallel/grad_buckets.hpp"
#include "train/dropout_mask.hpp"
#include "train/param_layout.hpp"

namespace kiln::train {

// One micro-batch: rows × seq tokens, row-major; rows = inputs.size() / seq.
struct TrainBatch {
  std::span<const int32_t> inputs;
  std::span<const int32_t> targets;     // -1 = not counted
  std::span<const uint8_t> loss_mask;   // empty = every token counted; 0 = not counted
  std::span<const float> loss_weights;  // empty = weight 1; finite and >= 0
};

// A head's loss over one call: Σ w·ce and Σ w over its counted tokens, and how many there were.
// The head's mean loss is loss_sum / weight_sum (summed over micro-batches first).
struct HeadLoss {
  double loss_sum = 0.0;
  double weight_sum = 0.0;
  int64_t tokens = 0;
};

// Σ w over the counted tokens of each head (1 + n_mtp_heads of them) in `batch`; the trainer sums
// these over the step's micro-batches to get the normalisers. Validates the batch like
// forward_backward.
std::vector<double> loss_weight_totals(const ModelConfig& config, const TrainBatch& batch,
                                       int64_t seq);

// Told, during a backward pass, each GradPoint (data_parallel/grad_buckets.hpp) right after the
// last write of the gradients it names: the order the CUDA engine releases all-reduce buckets in,
// which tests check against this graph's actual writes.
using GradPointObserver = std::function<void(const GradPoint&)>;

// Optional outputs of TrainGraph::forward_logits (empty spans are skipped).
template <class T>
struct ForwardOutputs {
  std::span<T> logits;        // [1 + n_mtp_heads][rows × seq][vocab], head-major, after soft-cap
  std::span<T> trunk_hidden;  // [rows × seq][hidden]: output of layer L-2 (the embedding when L=1),
                              // the input of the last layer and of the MTP heads
  std::span<T> final_hidden;  // [rows × seq][hidden]: the main head after the final norm
};

// Not thread-safe: a graph reuses its activation buffers, so one call at a time per graph.
template <class T>
class TrainGraph {
 public:
  // Buffers for up to `max_batch` rows of `seq` tokens. n_threads < 1 means 1. Throws
  // KILN_ERR_INVALID_ARGUMENT for a config make_param_layout rejects, non-positive sizes, or
  // learned positions shorter than seq; KILN_ERR_OUT_OF_MEMORY when the activations do not fit.
  TrainGraph(const ModelConfig& config, int64_t max_batch, int64_t seq, int n_threads = 1);
  ~TrainGraph();
  TrainGraph(const TrainGraph&) = delete;
  TrainGraph& operator=(const TrainGraph&) = delete;

  const ParamLayout& layout() const;
  int32_t n_heads() const;  // 1 + n_mtp_heads
  int64_t max_batch() const;
  int64_t seq() const;

  // Forward and backward; ADDS the gradient described above into `grads`. `normalisers` holds
  // N_h for each head (n_heads() of them), `mtp_weights` c_K (empty: all 1). Returns each head's
  // loss over this batch. Throws KILN_ERR_INVALID_ARGUMENT (span sizes, a main normaliser <= 0,
  // a head whose batch weight is positive while its normaliser is not, bad weights),
  // KILN_ERR_OUT_OF_RANGE (an input id or target outside the vocabulary), KILN_ERR_CANCELLED when
  // *cancel turns true (checked between blocks; `grads` then holds a partial sum and must be
  // discarded). `dropout` (dropout_mask.hpp) drops the residual-branch outputs of this forward
  // and the same elements of their gradients; the returned losses are those of the dropped model.
  // `on_final`, when given, is called at each GradPoint of the backward pass.
  std::vector<HeadLoss> forward_backward(std::span<const T> params, std::span<T> grads,
                                         const TrainBatch& batch,
                                         std::span<const double> normalisers,
                                         std::span<const float> mtp_weights,
                                         const std::atomic<bool>* cancel = nullptr,
                                         const Dropout& dropout = {},
                                         const GradPointObserver* on_final = nullptr);

  // Forward only (never drops): each head's loss over this batch.
  std::vector<HeadLoss> forward_loss(std::span<const T> params, const TrainBatch& batch,
                                     const std::atomic<bool>* cancel = nullptr);

  // Forward of `ids` (rows × seq, rows <= max_batch) into whichever outputs are given.
  void forward_logits(std::span<const T> params, std::span<const int32_t> ids,
                      const ForwardOutputs<T>& out, const std::atomic<bool>* cancel = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class TrainGraph<float>;
extern template class TrainGraph<double>;

}  // namespace kiln::train

// Tensor parallelism (issue 8): which part of every layer each of `world_size` ranks computes.
// Megatron-LM's split of a decoder layer: attention by heads, the MLP by intermediate columns.
// Each rank holds
//   - the q heads [rank·H/tp, (rank+1)·H/tp) (H = n_heads; contiguous, so q_proj rows and o_proj
//     columns are one block each),
//   - the KV heads those q heads read: with n_kv_heads divisible by tp, n_kv/tp contiguous heads;
//     with fewer KV heads than ranks (tp divisible by n_kv_heads) one KV head, r·n_kv/tp, which
//     tp/n_kv ranks then hold alike (replicated: every rank's q heads lie in that one GQA group),
//   - the intermediate columns of one contiguous range (gate/up rows, down_proj columns), aligned
//     to the largest power of two up to 256 that still gives every rank some (see ffn_alignment),
//   - everything else whole: embedding, norms, q/k norm weights, o_proj bias, lm_head.
// A rank's o_proj and down_proj products are then partial sums of the layer's: summing them over
// the ranks (one all-reduce each per layer) and adding the residual and o_proj's bias once gives
// the unsplit layer. Seen from one rank the layer is a smaller model of the same family:
// shard_config() gives that config, so an executor runs its slices with the unsplit code.
#pragma once

#include <cstdint>

#include "model/config.hpp"

namespace kiln {

// A half-open range [begin, begin + count) of heads, rows or columns.
struct IndexRange {
  int64_t begin = 0, count = 0;
  int64_t end() const { return begin + count; }
  bool operator==(const IndexRange&) const = default;
};

struct TensorParallelShard {
  int32_t world_size = 1, rank = 0;
  IndexRange q_heads, kv_heads, ffn_columns;
  int64_t head_dim = 0;
  // Rows of q_proj / k_proj / v_proj (and their biases) this rank takes, and columns of o_proj.
  IndexRange q_rows() const { return {q_heads.begin * head_dim, q_heads.count * head_dim}; }
  IndexRange kv_rows() const { return {kv_heads.begin * head_dim, kv_heads.count * head_dim}; }
  IndexRange o_columns() const { return q_rows(); }
  // Rows of gate_proj / up_proj and columns of down_proj.
  IndexRange ffn_rows() const { return ffn_columns; }
  // Whether this rank adds the terms that must enter the sum once (o_proj bias): rank 0.
  bool adds_replicated_terms() const { return rank == 0; }
};

// Checks that `config` splits over `world_size` ranks, before any weight is touched. Throws
// KILN_ERR_INVALID_ARGUMENT naming the numbers: world_size < 1; n_heads not divisible by it;
// n_kv_heads neither divisible by it nor dividing it; intermediate_size smaller than it.
// KILN_ERR_UNSUPPORTED for structures the split does not cover (GPT-2's fused Conv1D c_attn,
// MLP biases) when world_size > 1.
void validate_tensor_parallel(const ModelConfig& config, int32_t world_size);

// The slices of rank `rank` (validated as above; rank outside [0, world_size) is
// KILN_ERR_INVALID_ARGUMENT).
TensorParallelShard plan_tensor_parallel(const ModelConfig& config, int32_t world_size,
                                         int32_t rank);

// The config one rank's executor sees: its heads, KV heads and intermediate size; the rest as
// `config`.
ModelConfig shard_config(const ModelConfig& config, const TensorParallelShard& shard);

// The alignment of the FFN ranges: the largest power of two <= 256 that splits `intermediate`
// into equal shares over `world_size` ranks; else the largest that still makes a unit at most an
// eighth of a share (units are dealt out in order, so ranks then differ by one unit at most, and
// the last unit may be short). 256 keeps down_proj's column slices whole blocks of every GGUF
// format, 32 of the legacy ones.
int64_t ffn_alignment(int64_t intermediate, int32_t world_size);

}  // namespace kiln

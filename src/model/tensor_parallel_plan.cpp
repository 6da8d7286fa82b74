#include "model/tensor_parallel_plan.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"

namespace kiln {

namespace {

std::string n(int64_t v) { return std::to_string(v); }

// The share of `units` that rank r gets when they are dealt out in order: [r·u/tp, (r+1)·u/tp).
IndexRange even_share(int64_t units, int32_t world_size, int32_t rank) {
  const int64_t first = units * rank / world_size;
  const int64_t last = units * (rank + 1) / world_size;
  return {first, last - first};
}

}  // namespace

void validate_tensor_parallel(const ModelConfig& c, int32_t tp) {
  if (tp < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "tensor_parallel is " + n(tp) + "; expected 1 or more ranks (0 or 1 = off)");
  }
  if (tp == 1) return;
  const std::string where = " (" + c.architecture + ", tensor_parallel " + n(tp) + ")";
  if (c.traits.family == ArchFamily::Gpt2) {
    fail(KILN_ERR_UNSUPPORTED, "tensor parallelism does not split GPT-2's Conv1D projections" +
                                   where + "; load it with tensor_parallel 1");
  }
  if (c.mlp_bias) {
    fail(KILN_ERR_UNSUPPORTED,
         "tensor parallelism does not split MLP biases" + where + "; use tensor_parallel 1");
  }
  if (c.n_heads % tp != 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "num_attention_heads " + n(c.n_heads) +
                                        " is not divisible by tensor_parallel " + n(tp) + where +
                                        ": every rank takes the same number of q heads");
  }
  if (c.n_kv_heads % tp != 0 && tp % c.n_kv_heads != 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "num_key_value_heads " + n(c.n_kv_heads) +
                                        " neither divides nor is divisible by " +
                                        "tensor_parallel " + n(tp) + where +
                                        ": a rank's q heads must read whole KV heads of their own");
  }
  if (c.intermediate_size < tp) {
    fail(KILN_ERR_INVALID_ARGUMENT, "intermediate_size " + n(c.intermediate_size) +
                                        " is smaller than tensor_parallel " + n(tp) + where);
  }
}

int64_t ffn_alignment(int64_t intermediate, int32_t tp) {
  for (int64_t a = 256; a >= 1; a /= 2) {
    if (intermediate % (a * tp) == 0) return a;
  }
  // Uneven: units dealt out in order leave ranks at most one unit apart, so keep a unit under
  // an eighth of a share.
  for (int64_t a = 256; a > 1; a /= 2) {
    if ((intermediate + a - 1) / a >= 8 * static_cast<int64_t>(tp)) return a;
  }
  return 1;
}

TensorParallelShard plan_tensor_parallel(const ModelConfig& c, int32_t tp, int32_t rank) {
  validate_tensor_parallel(c, tp);
  if (rank < 0 || rank >= tp) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "tensor-parallel rank " + n(rank) + " is outside [0, " + n(tp) + ")");
  }
  TensorParallelShard s;
  s.world_size = tp;
  s.rank = rank;
  s.head_dim = c.head_dim;
  const int64_t q_per_rank = c.n_heads / tp;
  s.q_heads = {rank * q_per_rank, q_per_rank};
  if (c.n_kv_heads % tp == 0) {
    const int64_t kv_per_rank = c.n_kv_heads / tp;
    s.kv_heads = {rank * kv_per_rank, kv_per_rank};
  } else {
    // tp / n_kv ranks share each KV head: rank r's q heads all belong to group r·n_kv/tp.
    s.kv_heads = {static_cast<int64_t>(rank) * c.n_kv_heads / tp, 1};
  }
  const int64_t align = ffn_alignment(c.intermediate_size, tp);
  const int64_t units = (c.intermediate_size + align - 1) / align;
  const IndexRange u = even_share(units, tp, rank);
  const int64_t begin = u.begin * align;
  const int64_t end = std::min<int64_t>(u.end() * align, c.intermediate_size);
  s.ffn_columns = {begin, end - begin};
  return s;
}

ModelConfig shard_config(const ModelConfig& config, const TensorParallelShard& shard) {
  ModelConfig local = config;
  local.n_heads = static_cast<int32_t>(shard.q_heads.count);
  local.n_kv_heads = static_cast<int32_t>(shard.kv_heads.count);
  local.intermediate_size = static_cast<int32_t>(shard.ffn_columns.count);
  return local;
}

}  // namespace kiln

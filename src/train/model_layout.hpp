// The trainable tensors of a decoder described by a ModelConfig, under the canonical names of
// docs/training-design.md, and where each block's tensors sit in a ParamLayout.
//
// Which tensors exist follows the config:
//   norms        weight unless NormKind::RmsNormNoWeight; bias for NormKind::LayerNorm
//   q/k/v bias   traits.qkv_bias (Qwen2) or attention_bias (Llama's flag; GPT-2 sets it)
//   o bias       attention_bias
//   MLP biases   mlp_bias (GPT-2 sets it)
//   q/k norm     weights [head_dim] for QkNormKind::BeforeRopeWeighted only
//   positions    model.embed_positions.weight [max_position_embeddings, hidden] when Learned
//   lm_head      absent when tie_word_embeddings
#pragma once

#include <cstdint>
#include <string>

#include "model/config.hpp"
#include "train/param_layout.hpp"

namespace kiln::train {

// Throws KILN_ERR_INVALID_ARGUMENT naming the field when the config cannot describe a trainable
// decoder (non-positive sizes, heads not a multiple of kv heads, odd rotary dimension, negative
// n_mtp_heads).
ParamLayout make_param_layout(const ModelConfig& config);

// "model.layers.L." for a layer, "model.mtp_heads.K." for MTP head K (1-based).
std::string layer_prefix(int32_t layer);
std::string mtp_head_prefix(int32_t head);

// Offsets (in elements) of one transformer block's tensors; -1 where the config has none.
struct BlockOffsets {
  int64_t attn_norm_w = -1, attn_norm_b = -1;
  int64_t wq = -1, bq = -1, wk = -1, bk = -1, wv = -1, bv = -1, wo = -1, bo = -1;
  int64_t q_norm = -1, k_norm = -1;
  int64_t mlp_norm_w = -1, mlp_norm_b = -1;
  int64_t w_gate = -1, b_gate = -1, w_up = -1, b_up = -1, w_down = -1, b_down = -1;
};

// The offsets of the block whose tensor names start with `prefix` (layer_prefix / mtp_head_prefix).
BlockOffsets block_offsets(const ParamLayout& layout, const std::string& prefix);

// Offset of `name`, or -1 when the layout has no such tensor.
int64_t offset_or_none(const ParamLayout& layout, const std::string& name);

// Whether the config's q/k/v projections carry biases.
inline bool has_qkv_bias(const ModelConfig& c) { return c.traits.qkv_bias || c.attention_bias; }

}  // namespace kiln::train

// Which tensor of an HF checkpoint is which weight of the shared transformer, with every shape
// checked against the ModelConfig. Backend-independent: the CPU and CUDA backends both consume a
// TransformerWeights and never look tensors up by name themselves.
//
// Shapes are HF's (torch nn.Linear stores [out_features, in_features]):
//   embed / lm_head [vocab, hidden]; q_proj [heads*head_dim, hidden]; k_proj, v_proj
//   [kv_heads*head_dim, hidden]; o_proj [hidden, heads*head_dim]; gate_proj, up_proj
//   [intermediate, hidden]; down_proj [hidden, intermediate]; norms [hidden]; q_norm, k_norm
//   [head_dim]; biases [out_features].
// Phi3 stores q, k, v stacked by rows in self_attn.qkv_proj and gate, up stacked by rows in
// mlp.gate_up_proj (Phi3MLP: `gate, up = gate_up.chunk(2, dim=-1)`); those become row slices.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/safetensors.hpp"
#include "model/config.hpp"

namespace kiln {

// A tensor or a row-slice of one (for Phi3's fused qkv / gate_up).
struct WeightRef {
  const TensorView* tensor = nullptr;  // null = absent (optional weight)
  // The [rows x cols] block starting at row_begin (2-D), or rows=numel, cols=1 for 1-D.
  int64_t row_begin = 0, rows = 0, cols = 0;

  bool present() const { return tensor != nullptr; }
  // First byte of the block (tensor->data + row_begin * cols * element size); null when absent.
  const uint8_t* data() const;
  size_t nbytes() const;
};

struct LayerWeights {
  WeightRef attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, ffn_norm, w_gate, w_up,
      w_down;
};

struct TransformerWeights {
  WeightRef embed, final_norm, lm_head /* = embed when tied */;
  std::vector<LayerWeights> layers;
};

// Resolves every weight the config calls for. Present: bq/bk/bv when traits.qkv_bias or
// attention_bias; bo when attention_bias; q_norm/k_norm when traits.qk_norm; the rest always.
// Throws kiln::Error: KILN_ERR_FORMAT (a missing tensor, or a shape that disagrees with the config,
// naming tensor, file, got and expected and the config fields behind it), KILN_ERR_UNSUPPORTED (a
// needed tensor in a dtype other than F32/F16/BF16; mlp_bias, which no supported model uses).
TransformerWeights resolve_transformer_weights(const ModelConfig& config, const WeightSet& weights);

// A backend's check of one block it is about to use: it must be [rows × cols] (a 1-D weight is
// [numel × 1]); an absent weight is allowed only when `optional`. Throws KILN_ERR_FORMAT naming
// the role, tensor and file.
void expect_weight_shape(const WeightRef& ref, int64_t rows, int64_t cols, const char* role,
                         bool optional = false);

}  // namespace kiln

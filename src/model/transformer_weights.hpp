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
//
// GPT-2 stores its projections as transformers' Conv1D, [in_features, out_features] (the
// transpose of nn.Linear), with q, k, v side by side in the columns of attn.c_attn. Those become
// `transposed` WeightRefs: still described in nn.Linear orientation ([out × in]), but their bytes
// are the stored transpose, so a backend must materialise them (the CPU backend copies them
// transposed at load) instead of reading data() as a row-major block.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/safetensors.hpp"
#include "model/config.hpp"

namespace kiln {

// A tensor or a row-slice of one (for Phi3's fused qkv / gate_up), in nn.Linear orientation.
struct WeightRef {
  const TensorView* tensor = nullptr;  // null = absent (optional weight)
  // The [rows x cols] block starting at row_begin (2-D), or rows=numel, cols=1 for 1-D.
  int64_t row_begin = 0, rows = 0, cols = 0;
  // The tensor stores the transpose (a Conv1D [in, out_total] weight): element (r, c) of the block
  // is stored at [c][row_begin + r], out_total = tensor->shape[1]. data() and nbytes() then refuse
  // (KILN_ERR_INTERNAL): the block is not contiguous.
  bool transposed = false;

  bool present() const { return tensor != nullptr; }
  // First byte of the block (tensor->data + row_begin * cols * element size); null when absent.
  const uint8_t* data() const;
  size_t nbytes() const;
};

// Absent (tensor == nullptr) unless the config calls for it; see resolve_transformer_weights.
struct LayerWeights {
  WeightRef attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, ffn_norm, w_gate, w_up,
      w_down;
  // LayerNorm biases (NormKind::LayerNorm) and MLP biases (mlp_bias): b_up on the first
  // projection (w_up), b_down on w_down.
  WeightRef attn_norm_bias, ffn_norm_bias, b_up, b_down;
};

struct TransformerWeights {
  WeightRef embed, final_norm, lm_head /* = embed when tied */;
  WeightRef final_norm_bias;  // NormKind::LayerNorm
  WeightRef positions;        // PositionKind::Learned: [max_position_embeddings, hidden]
  std::vector<LayerWeights> layers;
};

// Resolves every weight the config calls for. Present: bq/bk/bv when traits.qkv_bias or
// attention_bias; bo when attention_bias; q_norm/k_norm when qk_norm is BeforeRopeWeighted;
// attn_norm/ffn_norm/final_norm unless norm is RmsNormNoWeight, and their *_bias when LayerNorm;
// w_gate only for SwiGLU (GeluTanh and ReluSquared have one input projection, w_up); b_up/b_down
// when mlp_bias; positions when positions is Learned; the rest always.
// Names: the Llama family's model.layers.N.*; NanoChat's the same with mlp.fc1 (w_up) and mlp.fc2
// (w_down); GPT-2's [transformer.]wte/wpe/ln_f and h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2,
// mlp.c_fc (w_up), mlp.c_proj (w_down)} with the "transformer." prefix optional (older
// checkpoints lack it) and lm_head.weight only when untied; other tensors (GPT-2's attn.bias
// mask buffers) are ignored.
// Throws kiln::Error: KILN_ERR_FORMAT (a missing tensor, or a shape that disagrees with the config,
// naming tensor, file, got and expected and the config fields behind it), KILN_ERR_UNSUPPORTED (a
// needed tensor in a dtype other than F32/F16/BF16; mlp_bias on a SwiGLU (Llama-family) model,
// which no supported model uses).
TransformerWeights resolve_transformer_weights(const ModelConfig& config, const WeightSet& weights);

// A backend's check of one block it is about to use: it must be [rows × cols] (a 1-D weight is
// [numel × 1]); an absent weight is allowed only when `optional`. Throws KILN_ERR_FORMAT naming
// the role, tensor and file.
void expect_weight_shape(const WeightRef& ref, int64_t rows, int64_t cols, const char* role,
                         bool optional = false);

}  // namespace kiln

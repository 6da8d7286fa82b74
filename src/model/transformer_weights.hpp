// src/model/transformer_weights.hpp
#pragma once
#include <cstdint>
#include <vector>
#include "formats/safetensors.hpp"
#include "model/config.hpp"
namespace kiln {
struct WeightRef {           // a tensor or a row-slice of one (Phi3's fused qkv / gate_up)
  const TensorView* tensor = nullptr;  // null = absent (optional weight, e.g. biases)
  int64_t row_begin = 0, rows = 0, cols = 0;  // the [rows × cols] block starting at row row_begin (2-D), or rows=numel, cols=1 for 1-D
};
struct LayerWeights { WeightRef attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, ffn_norm, w_gate, w_up, w_down; };
struct TransformerWeights { WeightRef embed, final_norm, lm_head /* = embed when tied */; std::vector<LayerWeights> layers; };
// Validates every shape/dtype against the config; throws kiln::Error (KILN_ERR_FORMAT) naming tensors.
TransformerWeights resolve_transformer_weights(const ModelConfig&, const WeightSet&);
}

#include "train/import.hpp"

#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "model/transformer_weights.hpp"
#include "train/model_layout.hpp"

namespace kiln::train {

namespace {

void copy_weight(const WeightRef& ref, const ParamLayout& layout, const std::string& name,
                 std::span<float> values) {
  const ParamSpec& spec = layout.at(name);
  if (!ref.present()) {
    fail(KILN_ERR_FORMAT, "checkpoint provides no tensor for trainable parameter " + name);
  }
  const int64_t n = ref.rows * ref.cols;
  if (n != spec.numel) {
    fail(KILN_ERR_FORMAT, "tensor " + ref.tensor->name + " in " + ref.tensor->file + " gives " +
                              std::to_string(n) + " elements for " + name + ", which holds " +
                              std::to_string(spec.numel));
  }
  float* out = values.data() + spec.offset;
  if (!ref.transposed) {
    convert_to_f32(ref.tensor->dtype, ref.data(), out, static_cast<size_t>(n));
    return;
  }
  // A Conv1D weight (GPT-2): stored [in, out_total]; the block is columns row_begin..+rows of it.
  // Converted whole, then gathered into nn.Linear orientation [rows, cols = in].
  const int64_t out_total = ref.tensor->shape[1];
  std::vector<float> whole(static_cast<size_t>(ref.tensor->numel()));
  convert_to_f32(ref.tensor->dtype, ref.tensor->data, whole.data(), whole.size());
  for (int64_t r = 0; r < ref.rows; ++r) {
    for (int64_t c = 0; c < ref.cols; ++c) {
      out[r * ref.cols + c] = whole[static_cast<size_t>(c * out_total + ref.row_begin + r)];
    }
  }
}

}  // namespace

void import_hf_weights(const ModelConfig& config, const ParamLayout& layout,
                       const WeightSet& weights, std::span<float> values) {
  if (static_cast<int64_t>(values.size()) != layout.total()) {
    fail(KILN_ERR_INVALID_ARGUMENT, "import_hf_weights: buffer holds " +
                                        std::to_string(values.size()) + " elements, the layout " +
                                        std::to_string(layout.total()));
  }
  const TransformerWeights w = resolve_transformer_weights(config, weights);
  const bool norm_weight = config.norm != NormKind::RmsNormNoWeight;
  const bool norm_bias = config.norm == NormKind::LayerNorm;
  const bool gated = config.mlp == MlpKind::SwiGLU;
  copy_weight(w.embed, layout, "model.embed_tokens.weight", values);
  if (config.positions == PositionKind::Learned) {
    copy_weight(w.positions, layout, "model.embed_positions.weight", values);
  }
  if (norm_weight) copy_weight(w.final_norm, layout, "model.norm.weight", values);
  if (norm_bias) copy_weight(w.final_norm_bias, layout, "model.norm.bias", values);
  if (!config.tie_word_embeddings) copy_weight(w.lm_head, layout, "lm_head.weight", values);
  for (int32_t l = 0; l < config.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = layer_prefix(l);
    const auto copy = [&](const WeightRef& ref, const char* name) {
      copy_weight(ref, layout, p + name, values);
    };
    if (norm_weight) copy(lw.attn_norm, "input_layernorm.weight");
    if (norm_bias) copy(lw.attn_norm_bias, "input_layernorm.bias");
    copy(lw.wq, "self_attn.q_proj.weight");
    copy(lw.wk, "self_attn.k_proj.weight");
    copy(lw.wv, "self_attn.v_proj.weight");
    copy(lw.wo, "self_attn.o_proj.weight");
    if (has_qkv_bias(config)) {
      copy(lw.bq, "self_attn.q_proj.bias");
      copy(lw.bk, "self_attn.k_proj.bias");
      copy(lw.bv, "self_attn.v_proj.bias");
    }
    if (config.attention_bias) copy(lw.bo, "self_attn.o_proj.bias");
    if (config.qk_norm == QkNormKind::BeforeRopeWeighted) {
      copy(lw.q_norm, "self_attn.q_norm.weight");
      copy(lw.k_norm, "self_attn.k_norm.weight");
    }
    if (norm_weight) copy(lw.ffn_norm, "post_attention_layernorm.weight");
    if (norm_bias) copy(lw.ffn_norm_bias, "post_attention_layernorm.bias");
    if (gated) copy(lw.w_gate, "mlp.gate_proj.weight");
    copy(lw.w_up, "mlp.up_proj.weight");
    copy(lw.w_down, "mlp.down_proj.weight");
    if (config.mlp_bias) {
      copy(lw.b_up, "mlp.up_proj.bias");
      copy(lw.b_down, "mlp.down_proj.bias");
    }
  }
}

}  // namespace kiln::train

#include "train/import.hpp"

#include <string>

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
  convert_to_f32(ref.tensor->dtype, ref.data(), values.data() + spec.offset,
                 static_cast<size_t>(n));
}

}  // namespace

void import_hf_weights(const ModelConfig& config, const ParamLayout& layout,
                       const WeightSet& weights, std::span<float> values) {
  if (config.norm != NormKind::RmsNorm || config.mlp != MlpKind::SwiGLU ||
      config.positions != PositionKind::Rope || config.embed_norm ||
      config.qk_norm == QkNormKind::AfterRopeNoWeight) {
    fail(KILN_ERR_UNSUPPORTED,
         "importing HF weights for training supports the Llama family "
         "(RMSNorm, SwiGLU, RoPE), not " +
             config.architecture);
  }
  if (static_cast<int64_t>(values.size()) != layout.total()) {
    fail(KILN_ERR_INVALID_ARGUMENT, "import_hf_weights: buffer holds " +
                                        std::to_string(values.size()) + " elements, the layout " +
                                        std::to_string(layout.total()));
  }
  const TransformerWeights w = resolve_transformer_weights(config, weights);
  copy_weight(w.embed, layout, "model.embed_tokens.weight", values);
  copy_weight(w.final_norm, layout, "model.norm.weight", values);
  if (!config.tie_word_embeddings) copy_weight(w.lm_head, layout, "lm_head.weight", values);
  for (int32_t l = 0; l < config.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string p = layer_prefix(l);
    const auto copy = [&](const WeightRef& ref, const char* name) {
      copy_weight(ref, layout, p + name, values);
    };
    copy(lw.attn_norm, "input_layernorm.weight");
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
    copy(lw.ffn_norm, "post_attention_layernorm.weight");
    copy(lw.w_gate, "mlp.gate_proj.weight");
    copy(lw.w_up, "mlp.up_proj.weight");
    copy(lw.w_down, "mlp.down_proj.weight");
  }
}

}  // namespace kiln::train

#include "train/model_layout.hpp"

#include "core/error.hpp"

namespace kiln::train {

namespace {

void require_positive(int64_t value, const char* field) {
  if (value <= 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         std::string("model config: ") + field + " must be positive, got " + std::to_string(value));
  }
}

void validate(const ModelConfig& c) {
  require_positive(c.vocab_size, "vocab_size");
  require_positive(c.hidden_size, "hidden_size");
  require_positive(c.n_layers, "num_hidden_layers");
  require_positive(c.n_heads, "num_attention_heads");
  require_positive(c.n_kv_heads, "num_key_value_heads");
  require_positive(c.head_dim, "head_dim");
  require_positive(c.intermediate_size, "intermediate_size");
  require_positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.n_heads % c.n_kv_heads != 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "model config: num_attention_heads (" + std::to_string(c.n_heads) +
             ") is not a multiple of num_key_value_heads (" + std::to_string(c.n_kv_heads) + ")");
  }
  if (c.n_mtp_heads < 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "model config: n_mtp_heads must be >= 0, got " + std::to_string(c.n_mtp_heads));
  }
  if (c.positions == PositionKind::Rope && c.head_dim % 2 != 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "model config: RoPE needs an even head_dim, got " + std::to_string(c.head_dim));
  }
}

void add_norm(ParamLayout& layout, const ModelConfig& c, const std::string& name) {
  const int64_t h = c.hidden_size;
  if (c.norm == NormKind::RmsNormNoWeight) return;
  layout.add(name + ".weight", {h}, ParamRole::Norm);
  if (c.norm == NormKind::LayerNorm) layout.add(name + ".bias", {h}, ParamRole::Bias);
}

void add_linear(ParamLayout& layout, const std::string& name, int64_t out, int64_t in, bool bias) {
  layout.add(name + ".weight", {out, in}, ParamRole::Matrix);
  if (bias) layout.add(name + ".bias", {out}, ParamRole::Bias);
}

void add_block(ParamLayout& layout, const ModelConfig& c, const std::string& p) {
  const int64_t h = c.hidden_size, q_dim = int64_t{c.n_heads} * c.head_dim,
                kv_dim = int64_t{c.n_kv_heads} * c.head_dim, inter = c.intermediate_size;
  add_norm(layout, c, p + "input_layernorm");
  add_linear(layout, p + "self_attn.q_proj", q_dim, h, has_qkv_bias(c));
  add_linear(layout, p + "self_attn.k_proj", kv_dim, h, has_qkv_bias(c));
  add_linear(layout, p + "self_attn.v_proj", kv_dim, h, has_qkv_bias(c));
  add_linear(layout, p + "self_attn.o_proj", h, q_dim, c.attention_bias);
  if (c.qk_norm == QkNormKind::BeforeRopeWeighted) {
    layout.add(p + "self_attn.q_norm.weight", {c.head_dim}, ParamRole::Norm);
    layout.add(p + "self_attn.k_norm.weight", {c.head_dim}, ParamRole::Norm);
  }
  add_norm(layout, c, p + "post_attention_layernorm");
  if (c.mlp == MlpKind::SwiGLU) add_linear(layout, p + "mlp.gate_proj", inter, h, c.mlp_bias);
  add_linear(layout, p + "mlp.up_proj", inter, h, c.mlp_bias);
  add_linear(layout, p + "mlp.down_proj", h, inter, c.mlp_bias);
}

}  // namespace

std::string layer_prefix(int32_t layer) { return "model.layers." + std::to_string(layer) + "."; }

std::string mtp_head_prefix(int32_t head) {
  return "model.mtp_heads." + std::to_string(head) + ".";
}

ParamLayout make_param_layout(const ModelConfig& c) {
  validate(c);
  ParamLayout layout;
  layout.add("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, ParamRole::Embedding);
  if (c.positions == PositionKind::Learned) {
    layout.add("model.embed_positions.weight", {c.max_position_embeddings, c.hidden_size},
               ParamRole::Position);
  }
  for (int32_t l = 0; l < c.n_layers; ++l) add_block(layout, c, layer_prefix(l));
  for (int32_t k = 1; k <= c.n_mtp_heads; ++k) add_block(layout, c, mtp_head_prefix(k));
  add_norm(layout, c, "model.norm");
  if (!c.tie_word_embeddings) {
    layout.add("lm_head.weight", {c.vocab_size, c.hidden_size}, ParamRole::Head);
  }
  return layout;
}

int64_t offset_or_none(const ParamLayout& layout, const std::string& name) {
  const ParamSpec* s = layout.find(name);
  return s != nullptr ? s->offset : -1;
}

BlockOffsets block_offsets(const ParamLayout& layout, const std::string& p) {
  const auto at = [&](const std::string& name) { return offset_or_none(layout, p + name); };
  BlockOffsets o;
  o.attn_norm_w = at("input_layernorm.weight");
  o.attn_norm_b = at("input_layernorm.bias");
  o.wq = at("self_attn.q_proj.weight");
  o.bq = at("self_attn.q_proj.bias");
  o.wk = at("self_attn.k_proj.weight");
  o.bk = at("self_attn.k_proj.bias");
  o.wv = at("self_attn.v_proj.weight");
  o.bv = at("self_attn.v_proj.bias");
  o.wo = at("self_attn.o_proj.weight");
  o.bo = at("self_attn.o_proj.bias");
  o.q_norm = at("self_attn.q_norm.weight");
  o.k_norm = at("self_attn.k_norm.weight");
  o.mlp_norm_w = at("post_attention_layernorm.weight");
  o.mlp_norm_b = at("post_attention_layernorm.bias");
  o.w_gate = at("mlp.gate_proj.weight");
  o.b_gate = at("mlp.gate_proj.bias");
  o.w_up = at("mlp.up_proj.weight");
  o.b_up = at("mlp.up_proj.bias");
  o.w_down = at("mlp.down_proj.weight");
  o.b_down = at("mlp.down_proj.bias");
  if (o.wq < 0 || o.wk < 0 || o.wv < 0 || o.wo < 0 || o.w_up < 0 || o.w_down < 0) {
    fail(KILN_ERR_INTERNAL, "parameter layout has no complete block '" + p + "'");
  }
  return o;
}

}  // namespace kiln::train

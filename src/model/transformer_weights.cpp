#include "model/transformer_weights.hpp"

#include "core/error.hpp"

namespace kiln {

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

// One expected dimension and the config fields it comes from ("num_key_value_heads=2 x
// head_dim=64").
struct Dim {
  int64_t size;
  std::string why;
};

class Resolver {
 public:
  Resolver(const ModelConfig& c, const WeightSet& w) : c_(c), w_(w) {
    const std::string H = std::to_string(c.hidden_size), D = std::to_string(c.head_dim);
    hidden_ = {c.hidden_size, "hidden_size=" + H};
    vocab_ = {c.vocab_size, "vocab_size=" + std::to_string(c.vocab_size)};
    head_dim_ = {c.head_dim, "head_dim=" + D};
    q_out_ = {int64_t{c.n_heads} * c.head_dim,
              "num_attention_heads=" + std::to_string(c.n_heads) + " × head_dim=" + D};
    kv_out_ = {int64_t{c.n_kv_heads} * c.head_dim,
               "num_key_value_heads=" + std::to_string(c.n_kv_heads) + " × head_dim=" + D};
    inter_ = {c.intermediate_size, "intermediate_size=" + std::to_string(c.intermediate_size)};
  }

  TransformerWeights resolve() const {
    if (c_.mlp_bias) {
      fail(KILN_ERR_UNSUPPORTED,
           "config has mlp_bias=true (" + c_.architecture + "): MLP biases are not supported");
    }
    TransformerWeights t;
    t.embed = matrix("model.embed_tokens.weight", vocab_, hidden_);
    t.final_norm = vector("model.norm.weight", hidden_);
    if (c_.tie_word_embeddings) {
      t.lm_head = t.embed;  // HF ties lm_head.weight to the embedding (any stored copy is unused)
    } else {
      if (w_.find("lm_head.weight") == nullptr) {
        try {
          (void)w_.get("lm_head.weight");  // its message names the files searched
        } catch (const Error& e) {
          fail(e.status(), std::string(e.what()) +
                               " (tie_word_embeddings is false, so the checkpoint needs it)");
        }
      }
      t.lm_head = matrix("lm_head.weight", vocab_, hidden_);
    }
    t.layers.reserve(static_cast<size_t>(c_.n_layers));
    for (int32_t i = 0; i < c_.n_layers; ++i) t.layers.push_back(layer(i));
    return t;
  }

 private:
  LayerWeights layer(int32_t i) const {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.attn_norm = vector(p + "input_layernorm.weight", hidden_);
    l.ffn_norm = vector(p + "post_attention_layernorm.weight", hidden_);

    if (c_.traits.fused_qkv) {
      const Dim rows{q_out_.size + 2 * kv_out_.size,
                     "(" + q_out_.why + ") + 2 × (" + kv_out_.why + ")"};
      const WeightRef qkv = matrix(p + "self_attn.qkv_proj.weight", rows, hidden_);
      l.wq = slice(qkv, 0, q_out_.size);
      l.wk = slice(qkv, q_out_.size, kv_out_.size);
      l.wv = slice(qkv, q_out_.size + kv_out_.size, kv_out_.size);
    } else {
      l.wq = matrix(p + "self_attn.q_proj.weight", q_out_, hidden_);
      l.wk = matrix(p + "self_attn.k_proj.weight", kv_out_, hidden_);
      l.wv = matrix(p + "self_attn.v_proj.weight", kv_out_, hidden_);
    }
    l.wo = matrix(p + "self_attn.o_proj.weight", hidden_, q_out_);
    if (c_.traits.qkv_bias || c_.attention_bias) {
      l.bq = vector(p + "self_attn.q_proj.bias", q_out_);
      l.bk = vector(p + "self_attn.k_proj.bias", kv_out_);
      l.bv = vector(p + "self_attn.v_proj.bias", kv_out_);
    }
    if (c_.attention_bias) l.bo = vector(p + "self_attn.o_proj.bias", hidden_);
    if (c_.traits.qk_norm) {
      l.q_norm = vector(p + "self_attn.q_norm.weight", head_dim_);
      l.k_norm = vector(p + "self_attn.k_norm.weight", head_dim_);
    }

    if (c_.traits.fused_gate_up) {
      const Dim rows{2 * inter_.size, "2 × " + inter_.why};
      const WeightRef gate_up = matrix(p + "mlp.gate_up_proj.weight", rows, hidden_);
      l.w_gate = slice(gate_up, 0, inter_.size);
      l.w_up = slice(gate_up, inter_.size, inter_.size);
    } else {
      l.w_gate = matrix(p + "mlp.gate_proj.weight", inter_, hidden_);
      l.w_up = matrix(p + "mlp.up_proj.weight", inter_, hidden_);
    }
    l.w_down = matrix(p + "mlp.down_proj.weight", hidden_, inter_);
    return l;
  }

  static WeightRef slice(const WeightRef& whole, int64_t row_begin, int64_t rows) {
    WeightRef r = whole;
    r.row_begin = row_begin;
    r.rows = rows;
    return r;
  }

  const TensorView& checked(const std::string& name, const std::vector<Dim>& dims) const {
    const TensorView& t = w_.get(name);
    std::vector<int64_t> expected;
    std::string why;
    for (const Dim& d : dims) {
      expected.push_back(d.size);
      why += (why.empty() ? "" : ", ") + d.why;
    }
    if (t.shape != expected) {
      fail(KILN_ERR_FORMAT, "tensor " + name + " in " + t.file + " has shape " +
                                shape_string(t.shape) + ", expected " + shape_string(expected) +
                                " (" + why + ")");
    }
    return t;
  }

  WeightRef matrix(const std::string& name, const Dim& rows, const Dim& cols) const {
    return {&checked(name, {rows, cols}), 0, rows.size, cols.size};
  }

  WeightRef vector(const std::string& name, const Dim& n) const {
    return {&checked(name, {n}), 0, n.size, 1};
  }

  const ModelConfig& c_;
  const WeightSet& w_;
  Dim hidden_, vocab_, head_dim_, q_out_, kv_out_, inter_;
};

}  // namespace

const uint8_t* WeightRef::data() const {
  if (tensor == nullptr) return nullptr;
  return tensor->data + tensor->byte_offset(row_begin * cols);
}

size_t WeightRef::nbytes() const {
  if (tensor == nullptr) return 0;
  return tensor->byte_offset(rows * cols);
}

TransformerWeights resolve_transformer_weights(const ModelConfig& config,
                                               const WeightSet& weights) {
  return Resolver(config, weights).resolve();
}

void expect_weight_shape(const WeightRef& ref, int64_t rows, int64_t cols, const char* role,
                         bool optional) {
  if (ref.tensor == nullptr) {
    if (optional) return;
    fail(KILN_ERR_FORMAT, std::string("missing weight for ") + role);
  }
  if (ref.rows != rows || ref.cols != cols) {
    fail(KILN_ERR_FORMAT, std::string("weight ") + role + " '" + ref.tensor->name + "' in " +
                              ref.tensor->file + ": expected [" + std::to_string(rows) + " × " +
                              std::to_string(cols) + "], got [" + std::to_string(ref.rows) + " × " +
                              std::to_string(ref.cols) + "]");
  }
}

}  // namespace kiln

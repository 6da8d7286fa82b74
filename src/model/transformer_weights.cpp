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
    positions_ = {c.max_position_embeddings,
                  "max_position_embeddings=" + std::to_string(c.max_position_embeddings)};
  }

  TransformerWeights resolve() const {
    if (c_.mlp_bias && c_.mlp == MlpKind::SwiGLU) {
      fail(KILN_ERR_UNSUPPORTED,
           "config has mlp_bias=true (" + c_.architecture + "): MLP biases are not supported");
    }
    if (c_.traits.family == ArchFamily::Gpt2) return resolve_gpt2();
    TransformerWeights t;
    t.embed = matrix("model.embed_tokens.weight", vocab_, hidden_);
    if (c_.norm != NormKind::RmsNormNoWeight) t.final_norm = vector("model.norm.weight", hidden_);
    t.lm_head = lm_head(t.embed);
    t.layers.reserve(static_cast<size_t>(c_.n_layers));
    for (int32_t i = 0; i < c_.n_layers; ++i) t.layers.push_back(layer(i));
    return t;
  }

 private:
  WeightRef lm_head(const WeightRef& embed) const {
    if (c_.tie_word_embeddings) {
      return embed;  // HF ties lm_head.weight to the embedding (any stored copy is unused)
    }
    if (w_.find("lm_head.weight") == nullptr) {
      try {
        (void)w_.get("lm_head.weight");  // its message names the files searched
      } catch (const Error& e) {
        fail(e.status(),
             std::string(e.what()) + " (tie_word_embeddings is false, so the checkpoint needs it)");
      }
    }
    return matrix("lm_head.weight", vocab_, hidden_);
  }

  LayerWeights layer(int32_t i) const {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    if (c_.norm != NormKind::RmsNormNoWeight) {
      l.attn_norm = vector(p + "input_layernorm.weight", hidden_);
      l.ffn_norm = vector(p + "post_attention_layernorm.weight", hidden_);
    }

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
    if (c_.qk_norm == QkNormKind::BeforeRopeWeighted) {
      l.q_norm = vector(p + "self_attn.q_norm.weight", head_dim_);
      l.k_norm = vector(p + "self_attn.k_norm.weight", head_dim_);
    }

    if (c_.mlp == MlpKind::ReluSquared) {  // NanoChatMLP: fc2(relu(fc1(x))^2)
      l.w_up = matrix(p + "mlp.fc1.weight", inter_, hidden_);
      l.w_down = matrix(p + "mlp.fc2.weight", hidden_, inter_);
      return l;
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

  // GPT2LMHeadModel. save_pretrained writes "transformer."-prefixed names; the original OpenAI
  // conversions on the Hub have none. The prefix is taken from the embedding; a checkpoint with
  // neither is reported under the prefixed name.
  TransformerWeights resolve_gpt2() const {
    const std::string p =
        w_.find("transformer.wte.weight") != nullptr || w_.find("wte.weight") == nullptr
            ? "transformer."
            : "";
    TransformerWeights t;
    t.embed = matrix(p + "wte.weight", vocab_, hidden_);
    t.positions = matrix(p + "wpe.weight", positions_, hidden_);
    t.final_norm = vector(p + "ln_f.weight", hidden_);
    t.final_norm_bias = vector(p + "ln_f.bias", hidden_);
    t.lm_head = lm_head(t.embed);
    t.layers.reserve(static_cast<size_t>(c_.n_layers));
    for (int32_t i = 0; i < c_.n_layers; ++i) {
      const std::string h = p + "h." + std::to_string(i) + ".";
      LayerWeights l;
      l.attn_norm = vector(h + "ln_1.weight", hidden_);
      l.attn_norm_bias = vector(h + "ln_1.bias", hidden_);
      // c_attn: [hidden, 3 × hidden], columns q | k | v (GPT2Attention splits the output in 3).
      const Dim qkv_out{3 * q_out_.size, "3 × (" + q_out_.why + ")"};
      const WeightRef qkv = conv1d(h + "attn.c_attn.weight", qkv_out, hidden_);
      const WeightRef qkv_bias = vector(h + "attn.c_attn.bias", qkv_out);
      l.wq = slice(qkv, 0, q_out_.size);
      l.wk = slice(qkv, q_out_.size, q_out_.size);
      l.wv = slice(qkv, 2 * q_out_.size, q_out_.size);
      l.bq = slice(qkv_bias, 0, q_out_.size);
      l.bk = slice(qkv_bias, q_out_.size, q_out_.size);
      l.bv = slice(qkv_bias, 2 * q_out_.size, q_out_.size);
      l.wo = conv1d(h + "attn.c_proj.weight", hidden_, q_out_);
      l.bo = vector(h + "attn.c_proj.bias", hidden_);
      l.ffn_norm = vector(h + "ln_2.weight", hidden_);
      l.ffn_norm_bias = vector(h + "ln_2.bias", hidden_);
      l.w_up = conv1d(h + "mlp.c_fc.weight", inter_, hidden_);
      l.b_up = vector(h + "mlp.c_fc.bias", inter_);
      l.w_down = conv1d(h + "mlp.c_proj.weight", hidden_, inter_);
      l.b_down = vector(h + "mlp.c_proj.bias", hidden_);
      t.layers.push_back(l);
    }
    return t;
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

  // A Conv1D weight: stored [in, out], described as the [out × in] nn.Linear block it stands for.
  WeightRef conv1d(const std::string& name, const Dim& out, const Dim& in) const {
    return {&checked(name, {in, out}), 0, out.size, in.size, true};
  }

  const ModelConfig& c_;
  const WeightSet& w_;
  Dim hidden_, vocab_, head_dim_, q_out_, kv_out_, inter_, positions_;
};

}  // namespace

namespace {

void refuse_transposed(const WeightRef& r, const char* what) {
  if (r.transposed) {
    fail(KILN_ERR_INTERNAL, std::string("WeightRef::") + what + " of '" + r.tensor->name +
                                "', a transposed (Conv1D) block that is not contiguous");
  }
}

}  // namespace

const uint8_t* WeightRef::data() const {
  if (tensor == nullptr) return nullptr;
  refuse_transposed(*this, "data()");
  return tensor->data + tensor->byte_offset(row_begin * cols);
}

size_t WeightRef::nbytes() const {
  if (tensor == nullptr) return 0;
  refuse_transposed(*this, "nbytes()");
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

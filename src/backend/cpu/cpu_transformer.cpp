#include "backend/cpu/cpu_transformer.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "backend/cpu/ops.hpp"
#include "core/error.hpp"

namespace kiln::cpu {

namespace {

std::unique_ptr<float[]> allocate_floats(size_t n, const char* what) {
  try {
    return std::make_unique_for_overwrite<float[]>(n);
  } catch (const std::bad_alloc&) {
    fail(KILN_ERR_OUT_OF_MEMORY, std::string("cannot allocate ") +
                                     std::to_string(n * sizeof(float)) + " bytes for " + what);
  }
}

void check_cancel(const std::atomic<bool>* cancel) {
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    fail(KILN_ERR_CANCELLED, "forward pass cancelled");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CpuSessionState

CpuSessionState::CpuSessionState(int32_t context_length, int32_t n_layers, int64_t kv_dim)
    : context_length_(context_length), kv_dim_(static_cast<size_t>(kv_dim)) {
  if (context_length <= 0) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "context length must be positive, got " + std::to_string(context_length));
  }
  const size_t per_cache = static_cast<size_t>(n_layers) * layer_stride();
  try {
    // Left uninitialised: only rows below the session's position are ever read, and untouched
    // pages of a large context cost no memory.
    k_ = std::make_unique_for_overwrite<float[]>(per_cache);
    v_ = std::make_unique_for_overwrite<float[]>(per_cache);
  } catch (const std::bad_alloc&) {
    fail(KILN_ERR_OUT_OF_MEMORY,
         "cannot allocate the KV cache for a context of " + std::to_string(context_length) +
             " tokens: " + std::to_string(2 * per_cache * sizeof(float)) + " bytes");
  }
}

float* CpuSessionState::scratch(size_t n) {
  if (n > scratch_size_) {
    scratch_.reset();  // free the old buffer before asking for the bigger one
    scratch_size_ = 0;
    scratch_ = allocate_floats(n, "forward-pass scratch buffers");
    scratch_size_ = n;
  }
  return scratch_.get();
}

// ---------------------------------------------------------------------------------------------
// CpuTransformer

CpuTransformer::CpuTransformer(const ModelConfig& config, const TransformerWeights& w,
                               std::vector<float> inv_freq, int n_threads,
                               std::shared_ptr<const void> keep_alive, const ProgressFn& progress)
    : keep_alive_(std::move(keep_alive)),
      store_(std::max(1, n_threads)),
      n_threads_(std::max(1, n_threads)),
      vocab_(config.vocab_size),
      hidden_(config.hidden_size),
      n_heads_(config.n_heads),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      intermediate_(config.intermediate_size),
      n_layers_(config.n_layers),
      eps_(config.rms_norm_eps),
      norm_kind_(config.norm),
      mlp_kind_(config.mlp),
      qk_norm_(config.qk_norm),
      embed_norm_(config.embed_norm),
      logit_softcap_(config.logit_softcap),
      max_positions_(config.max_position_embeddings),
      inv_freq_(std::move(inv_freq)) {
  if (config.mlp_bias && mlp_kind_ == MlpKind::SwiGLU) {
    fail(KILN_ERR_UNSUPPORTED,
         "mlp_bias = true is not supported (model " + config.architecture + ")");
  }
  if (n_heads_ <= 0 || n_kv_heads_ <= 0 || n_heads_ % n_kv_heads_ != 0) {
    fail(KILN_ERR_FORMAT, "num_attention_heads " + std::to_string(n_heads_) +
                              " is not a positive multiple of num_key_value_heads " +
                              std::to_string(n_kv_heads_));
  }
  if (config.positions == PositionKind::Rope) {
    rot_dim_ = static_cast<int64_t>(static_cast<float>(head_dim_) * config.partial_rotary_factor);
    rot_dim_ -= rot_dim_ % 2;
  } else {
    rot_dim_ = 0;
  }
  if (static_cast<int64_t>(inv_freq_.size()) * 2 != rot_dim_) {
    fail(KILN_ERR_INTERNAL, "RoPE: " + std::to_string(inv_freq_.size()) +
                                " inverse frequencies for a rotary dimension of " +
                                std::to_string(rot_dim_));
  }
  // Rotating by -angle is rotating by angle with the frequencies negated: cos is even and sin odd,
  // so the float angle, its cosine and its sine come out exactly negated where needed.
  if (config.rope_reversed) {
    for (float& f : inv_freq_) f = -f;
  }
  if (static_cast<int32_t>(w.layers.size()) != n_layers_) {
    fail(KILN_ERR_FORMAT, "weights hold " + std::to_string(w.layers.size()) +
                              " layers, config says " + std::to_string(n_layers_));
  }

  const int64_t q_dim = n_heads_ * head_dim_;
  const int64_t kv_dim = n_kv_heads_ * head_dim_;
  const bool norm_weights = norm_kind_ != NormKind::RmsNormNoWeight;
  const bool norm_biases = norm_kind_ == NormKind::LayerNorm;
  const bool weighted_qk_norm = qk_norm_ == QkNormKind::BeforeRopeWeighted;
  const bool gated = mlp_kind_ == MlpKind::SwiGLU;
  const bool learned_positions = config.positions == PositionKind::Learned;
  expect_weight_shape(w.embed, vocab_, hidden_, "embed_tokens");
  expect_weight_shape(w.positions, max_positions_, hidden_, "position embeddings",
                      !learned_positions);
  expect_weight_shape(w.final_norm, hidden_, 1, "final norm", !norm_weights);
  expect_weight_shape(w.final_norm_bias, hidden_, 1, "final norm bias", !norm_biases);
  expect_weight_shape(w.lm_head, vocab_, hidden_, "lm_head");
  embed_ = store_.matrix(w.embed);
  if (learned_positions) positions_ = store_.get(w.positions);
  if (norm_weights) final_norm_ = store_.get(w.final_norm);
  if (norm_biases) final_norm_bias_ = store_.get(w.final_norm_bias);
  lm_head_ = store_.matrix(w.lm_head);

  // A weight the structure has no use for is never taken (so it is neither converted nor counted).
  const auto take = [&](const WeightRef& ref, bool used) {
    return used ? store_.get(ref) : nullptr;
  };
  layers_.reserve(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    expect_weight_shape(l.attn_norm, hidden_, 1, "input_layernorm", !norm_weights);
    expect_weight_shape(l.attn_norm_bias, hidden_, 1, "input_layernorm bias", !norm_biases);
    expect_weight_shape(l.wq, q_dim, hidden_, "q_proj");
    expect_weight_shape(l.wk, kv_dim, hidden_, "k_proj");
    expect_weight_shape(l.wv, kv_dim, hidden_, "v_proj");
    expect_weight_shape(l.wo, hidden_, q_dim, "o_proj");
    expect_weight_shape(l.bq, q_dim, 1, "q_proj bias", true);
    expect_weight_shape(l.bk, kv_dim, 1, "k_proj bias", true);
    expect_weight_shape(l.bv, kv_dim, 1, "v_proj bias", true);
    expect_weight_shape(l.bo, hidden_, 1, "o_proj bias", true);
    expect_weight_shape(l.q_norm, head_dim_, 1, "q_norm", !weighted_qk_norm);
    expect_weight_shape(l.k_norm, head_dim_, 1, "k_norm", !weighted_qk_norm);
    expect_weight_shape(l.ffn_norm, hidden_, 1, "post_attention_layernorm", !norm_weights);
    expect_weight_shape(l.ffn_norm_bias, hidden_, 1, "post_attention_layernorm bias", !norm_biases);
    expect_weight_shape(l.w_gate, intermediate_, hidden_, "gate_proj", !gated);
    expect_weight_shape(l.w_up, intermediate_, hidden_, "up_proj");
    expect_weight_shape(l.w_down, hidden_, intermediate_, "down_proj");
    expect_weight_shape(l.b_up, intermediate_, 1, "up_proj bias", true);
    expect_weight_shape(l.b_down, hidden_, 1, "down_proj bias", true);
    layers_.push_back(
        Layer{take(l.attn_norm, norm_weights), store_.matrix(l.wq), store_.matrix(l.wk),
              store_.matrix(l.wv), store_.matrix(l.wo), store_.get(l.bq), store_.get(l.bk),
              store_.get(l.bv), store_.get(l.bo), take(l.q_norm, weighted_qk_norm),
              take(l.k_norm, weighted_qk_norm), take(l.ffn_norm, norm_weights),
              gated ? store_.matrix(l.w_gate) : Matrix{}, store_.matrix(l.w_up),
              store_.matrix(l.w_down), take(l.attn_norm_bias, norm_biases),
              take(l.ffn_norm_bias, norm_biases), store_.get(l.b_up), store_.get(l.b_down)});
    if (progress &&
        !progress(static_cast<float>(i + 1) / static_cast<float>(n_layers_), "preparing weights")) {
      fail(KILN_ERR_CANCELLED, "model load cancelled by the progress callback");
    }
  }
  n_parameters_ = store_.n_elements();
}

void CpuTransformer::norm(const float* x, const float* weight, const float* bias, float* out,
                          int64_t rows) const {
  if (norm_kind_ == NormKind::LayerNorm) {
    layer_norm(x, weight, bias, out, rows, hidden_, eps_, n_threads_);
  } else {
    rms_norm(x, weight, out, rows, hidden_, eps_, n_threads_);  // weight null: RmsNormNoWeight
  }
}

std::unique_ptr<SessionState> CpuTransformer::create_state(int32_t context_length) const {
  return std::make_unique<CpuSessionState>(context_length, n_layers_, n_kv_heads_ * head_dim_);
}

void CpuTransformer::forward(SessionState& base_state, std::span<const int32_t> ids,
                             int32_t start_pos, float* logits, bool all_positions,
                             const std::atomic<bool>* cancel) const {
  auto* state = dynamic_cast<CpuSessionState*>(&base_state);
  if (state == nullptr) fail(KILN_ERR_INTERNAL, "CPU forward given another backend's state");
  const auto n = static_cast<int64_t>(ids.size());
  if (n == 0) return;
  // The caller has validated these; checked again because a slip would corrupt memory.
  if (start_pos < 0 || start_pos + n > state->context_length()) {
    fail(KILN_ERR_CONTEXT_FULL,
         "positions " + std::to_string(start_pos) + ".." + std::to_string(start_pos + n - 1) +
             " do not fit a context of " + std::to_string(state->context_length()));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab_) {
      fail(KILN_ERR_OUT_OF_RANGE, "token id " + std::to_string(ids[t]) + " at index " +
                                      std::to_string(t) + " outside [0, " + std::to_string(vocab_) +
                                      ")");
    }
  }

  const int64_t H = hidden_, I = intermediate_;
  const int64_t q_dim = n_heads_ * head_dim_, kv_dim = n_kv_heads_ * head_dim_;
  const int nt = n_threads_;

  // Scratch: x (residual stream), h (normed input / projection out), q, attn, gate, up.
  float* x = state->scratch(static_cast<size_t>(n * (2 * H + 2 * q_dim + 2 * I)));
  float* h = x + n * H;
  float* q = h + n * H;
  float* attn = q + n * q_dim;
  float* gate = attn + n * q_dim;
  float* up = gate + n * I;

  for (int64_t t = 0; t < n; ++t) {
    matrix_row(embed_, ids[t], H, x + t * H);
  }
  if (positions_ != nullptr) {
    if (start_pos + n > max_positions_) {
      fail(KILN_ERR_CONTEXT_FULL, "positions " + std::to_string(start_pos) + ".." +
                                      std::to_string(start_pos + n - 1) +
                                      " are past the learned position table (" +
                                      std::to_string(max_positions_) + " positions)");
    }
    add_inplace(x, positions_ + start_pos * H, n * H, nt);  // rows start_pos.. are contiguous
  }
  if (embed_norm_) norm(x, nullptr, nullptr, x, n);
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[t] = start_pos + static_cast<int32_t>(t);

  for (int32_t li = 0; li < n_layers_; ++li) {
    check_cancel(cancel);
    const Layer& L = layers_[li];
    float* k_layer = state->k_cache(li);
    float* v_layer = state->v_cache(li);
    // This batch's K and V are projected straight into their cache rows.
    float* k_new = k_layer + start_pos * kv_dim;
    float* v_new = v_layer + start_pos * kv_dim;

    norm(x, L.attn_norm, L.attn_norm_bias, h, n);
    linear(h, L.wq, L.bq, q, n, H, q_dim, nt);
    linear(h, L.wk, L.bk, k_new, n, H, kv_dim, nt);
    linear(h, L.wv, L.bv, v_new, n, H, kv_dim, nt);
    if (qk_norm_ == QkNormKind::BeforeRopeWeighted) {  // Qwen3: RMSNorm per head, before RoPE
      rms_norm(q, L.q_norm, q, n * n_heads_, head_dim_, eps_, nt);
      rms_norm(k_new, L.k_norm, k_new, n * n_kv_heads_, head_dim_, eps_, nt);
    }
    if (rot_dim_ > 0) {
      rope(q, positions.data(), n, n_heads_, head_dim_, rot_dim_, inv_freq_.data(), nt);
      rope(k_new, positions.data(), n, n_kv_heads_, head_dim_, rot_dim_, inv_freq_.data(), nt);
    }
    if (qk_norm_ == QkNormKind::AfterRopeNoWeight) {  // NanoChat: RoPE, then a plain RMSNorm
      rms_norm(q, nullptr, q, n * n_heads_, head_dim_, eps_, nt);
      rms_norm(k_new, nullptr, k_new, n * n_kv_heads_, head_dim_, eps_, nt);
    }
    attention(q, k_layer, v_layer, attn, n, start_pos, n_heads_, n_kv_heads_, head_dim_, nt);
    linear(attn, L.wo, L.bo, h, n, q_dim, H, nt);
    add_inplace(x, h, n * H, nt);

    norm(x, L.ffn_norm, L.ffn_norm_bias, h, n);
    switch (mlp_kind_) {
      case MlpKind::SwiGLU:
        linear(h, L.w_gate, nullptr, gate, n, H, I, nt);
        linear(h, L.w_up, nullptr, up, n, H, I, nt);
        swiglu(gate, up, gate, n * I, nt);
        break;
      case MlpKind::GeluTanh:
        linear(h, L.w_up, L.b_up, gate, n, H, I, nt);
        gelu_tanh(gate, n * I, nt);
        break;
      case MlpKind::ReluSquared:
        linear(h, L.w_up, L.b_up, gate, n, H, I, nt);
        relu_squared(gate, n * I, nt);
        break;
    }
    linear(gate, L.w_down, L.b_down, h, n, I, H, nt);
    add_inplace(x, h, n * H, nt);
  }
  check_cancel(cancel);
  if (logits == nullptr) return;

  // Only the rows whose logits were asked for go through the final norm and the head.
  const int64_t rows = all_positions ? n : 1;
  const float* last = all_positions ? x : x + (n - 1) * H;
  norm(last, final_norm_, final_norm_bias_, h, rows);
  linear(h, lm_head_, nullptr, logits, rows, H, vocab_, nt);
  if (logit_softcap_ > 0.0f) softcap(logits, rows * vocab_, logit_softcap_, nt);
}

}  // namespace kiln::cpu

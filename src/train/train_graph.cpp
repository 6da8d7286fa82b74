#include "train/train_graph.hpp"

#include <algorithm>
#include <cmath>
#include <new>
#include <string>
#include <utility>

#include "core/error.hpp"
#include "train/model_layout.hpp"
#include "train/ops/activations.hpp"
#include "train/ops/attention.hpp"
#include "train/ops/cross_entropy.hpp"
#include "train/ops/embedding.hpp"
#include "train/ops/matmul.hpp"
#include "train/ops/norm.hpp"
#include "train/ops/rope.hpp"

namespace kiln::train {

namespace {

// Logit rows produced (and turned into gradients) at a time: [kLogitRows × vocab] is all the
// logit memory a step needs.
constexpr int64_t kLogitRows = 128;

void check_cancel(const std::atomic<bool>* cancel) {
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
    fail(KILN_ERR_CANCELLED, "training step cancelled");
  }
}

// NanoChat's rotary embedding turns the other way (rope.hpp); its layout is the one with the
// parameter-free q/k norm after RoPE, which no other family uses.
int rope_direction(const ModelConfig& c) {
  return c.qk_norm == QkNormKind::AfterRopeNoWeight ? -1 : 1;
}

std::string n_str(int64_t v) { return std::to_string(v); }

// Checks a batch against the config; returns its row count.
int64_t validate_batch(const ModelConfig& c, const TrainBatch& b, int64_t seq, int64_t max_rows,
                       bool need_targets) {
  const auto n = static_cast<int64_t>(b.inputs.size());
  if (n == 0 || n % seq != 0) {
    fail(KILN_ERR_INVALID_ARGUMENT, "batch holds " + n_str(n) +
                                        " input ids, not a positive multiple of the sequence "
                                        "length " +
                                        n_str(seq));
  }
  const int64_t rows = n / seq;
  if (rows > max_rows) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "batch has " + n_str(rows) + " rows, the graph was built for " + n_str(max_rows));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (b.inputs[i] < 0 || b.inputs[i] >= c.vocab_size) {
      fail(KILN_ERR_OUT_OF_RANGE, "input id " + n_str(b.inputs[i]) + " at index " + n_str(i) +
                                      " outside [0, " + n_str(c.vocab_size) + ")");
    }
  }
  if (!need_targets) return rows;
  if (static_cast<int64_t>(b.targets.size()) != n) {
    fail(KILN_ERR_INVALID_ARGUMENT, "batch has " + n_str(n) + " inputs but " +
                                        n_str(static_cast<int64_t>(b.targets.size())) + " targets");
  }
  if (!b.loss_mask.empty() && static_cast<int64_t>(b.loss_mask.size()) != n) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "loss_mask has " + n_str(b.loss_mask.size()) + " entries for " + n_str(n) + " tokens");
  }
  if (!b.loss_weights.empty() && static_cast<int64_t>(b.loss_weights.size()) != n) {
    fail(KILN_ERR_INVALID_ARGUMENT, "loss_weights has " + n_str(b.loss_weights.size()) +
                                        " entries for " + n_str(n) + " tokens");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (b.targets[i] < -1 || b.targets[i] >= c.vocab_size) {
      fail(KILN_ERR_OUT_OF_RANGE, "target " + n_str(b.targets[i]) + " at index " + n_str(i) +
                                      " outside [0, " + n_str(c.vocab_size) + ") (-1 = ignored)");
    }
    if (!b.loss_weights.empty() &&
        !(std::isfinite(b.loss_weights[i]) && b.loss_weights[i] >= 0.0f)) {
      fail(KILN_ERR_INVALID_ARGUMENT, "loss weight " + std::to_string(b.loss_weights[i]) +
                                          " at index " + n_str(i) + " is not a finite number >= 0");
    }
  }
  return rows;
}

// What head h learns at token r (row-major over rows × seq): targets[r + h] with that token's mask
// and weight, when r + h stays in the same sequence.
struct HeadTarget {
  int32_t target = -1;  // -1: not counted
  double weight = 0.0;
};

HeadTarget head_target(const TrainBatch& b, int64_t seq, int64_t r, int64_t h) {
  if (r % seq + h >= seq) return {};
  const int64_t j = r + h;
  if (b.targets[j] < 0 || (!b.loss_mask.empty() && b.loss_mask[j] == 0)) return {};
  return {b.targets[j], b.loss_weights.empty() ? 1.0 : static_cast<double>(b.loss_weights[j])};
}

template <class T>
void allocate(std::vector<T>& v, int64_t n) {
  try {
    v.assign(static_cast<size_t>(n), T(0));
  } catch (const std::bad_alloc&) {
    fail(KILN_ERR_OUT_OF_MEMORY, "cannot allocate " + n_str(n * static_cast<int64_t>(sizeof(T))) +
                                     " bytes of training activations");
  }
}

template <class T>
const T* param(const T* base, int64_t offset) {
  return offset < 0 ? nullptr : base + offset;
}
template <class T>
T* param(T* base, int64_t offset) {
  return offset < 0 || base == nullptr ? nullptr : base + offset;
}

}  // namespace

std::vector<double> loss_weight_totals(const ModelConfig& config, const TrainBatch& batch,
                                       int64_t seq) {
  if (seq <= 0) fail(KILN_ERR_INVALID_ARGUMENT, "sequence length must be positive");
  const int64_t rows = validate_batch(config, batch, seq, INT64_MAX, true);
  std::vector<double> totals(static_cast<size_t>(1 + config.n_mtp_heads), 0.0);
  for (int64_t h = 0; h <= config.n_mtp_heads; ++h) {
    for (int64_t r = 0; r < rows * seq; ++r) totals[h] += head_target(batch, seq, r, h).weight;
  }
  return totals;
}

template <class T>
struct TrainGraph<T>::Impl {
  // One block's saved activations (rows × seq tokens each).
  struct Acts {
    std::vector<T> n1, mean1, rstd1;  // attention norm output and row statistics
    std::vector<T> q_pre, k_pre;      // input of the q/k norm (when there is one)
    std::vector<T> rstd_q, rstd_k;    // q/k norm statistics, per token and head
    std::vector<T> q, k, v;           // what attention reads
    std::vector<T> probs, attn;       // attention probabilities and output
    std::vector<T> x_mid;             // residual after attention
    std::vector<T> n2, mean2, rstd2;  // MLP norm
    std::vector<T> gate, up, act;     // MLP pre-activations and activation
    std::vector<T> out;               // residual after the MLP: the block's output
  };

  ModelConfig c;
  ParamLayout layout;
  int64_t B, S, H, V, nh, nkv, hd, qd, kvd, I;
  int32_t L, n_heads;
  int nt;
  double eps;
  bool use_rope;
  RopeTable<T> rope;
  int64_t off_embed, off_pos, off_final_w, off_final_b, off_unembed;
  std::vector<BlockOffsets> blocks;  // layers 0..L-1, then MTP heads 1..n
  std::vector<Acts> acts;
  std::vector<T> embed_raw, embed_normed, embed_mean, embed_rstd;
  std::vector<std::vector<T>> head_y, head_mean, head_rstd;
  std::vector<T> logit_buf, dlogit_buf, row_scale, row_loss;
  // The dropout of the running forward_backward (inactive for every other call).
  Dropout drop;
  // The running forward_backward's observer (null otherwise).
  const GradPointObserver* on_final = nullptr;
  void grads_final(GradPointKind kind, int32_t block) const {
    if (on_final != nullptr) (*on_final)(GradPoint{kind, block});
  }
  std::vector<int32_t> row_target;
  // Backward scratch, shared by all blocks.
  std::vector<T> d_head_y, d_x, d_trunk, d_next, d_mid, d_n, d_attn, dq, dk, dv, dq_tmp, dk_tmp,
      d_act, d_gate, d_up, d_branch;

  Impl(const ModelConfig& config, int64_t max_batch, int64_t seq, int n_threads)
      : c(config), layout(make_param_layout(config)) {
    if (max_batch <= 0 || seq <= 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "training graph needs a positive batch and sequence, got " +
                                          n_str(max_batch) + " × " + n_str(seq));
    }
    if (c.positions == PositionKind::Learned && seq > c.max_position_embeddings) {
      fail(KILN_ERR_INVALID_ARGUMENT, "sequence length " + n_str(seq) +
                                          " exceeds the learned position table (" +
                                          n_str(c.max_position_embeddings) + " positions)");
    }
    if (c.logit_softcap < 0.0f || !std::isfinite(c.logit_softcap)) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "logit_softcap must be >= 0, got " + std::to_string(c.logit_softcap));
    }
    B = max_batch, S = seq, H = c.hidden_size, V = c.vocab_size, nh = c.n_heads, nkv = c.n_kv_heads,
    hd = c.head_dim, I = c.intermediate_size;
    qd = nh * hd, kvd = nkv * hd;
    L = c.n_layers, n_heads = 1 + c.n_mtp_heads;
    nt = std::max(1, n_threads);
    eps = c.rms_norm_eps;
    use_rope = c.positions == PositionKind::Rope;
    if (use_rope) {
      const std::vector<float> inv_freq = rope_inverse_frequencies(c);
      if (inv_freq.empty() || static_cast<int64_t>(inv_freq.size()) * 2 > hd) {
        fail(KILN_ERR_INVALID_ARGUMENT,
             "RoPE: " + n_str(inv_freq.size()) + " frequencies for head_dim " + n_str(hd));
      }
      rope = make_rope_table<T>(inv_freq, S, rope_direction(c));
    }
    off_embed = layout.at("model.embed_tokens.weight").offset;
    off_pos = offset_or_none(layout, "model.embed_positions.weight");
    off_final_w = offset_or_none(layout, "model.norm.weight");
    off_final_b = offset_or_none(layout, "model.norm.bias");
    off_unembed = c.tie_word_embeddings ? off_embed : layout.at("lm_head.weight").offset;
    for (int32_t l = 0; l < L; ++l) blocks.push_back(block_offsets(layout, layer_prefix(l)));
    for (int32_t k = 1; k < n_heads; ++k)
      blocks.push_back(block_offsets(layout, mtp_head_prefix(k)));

    const int64_t N = B * S;
    const bool layer_norm = c.norm == NormKind::LayerNorm;
    const bool qk_norm = c.qk_norm != QkNormKind::None;
    acts.resize(blocks.size());
    for (Acts& a : acts) {
      allocate(a.n1, N * H);
      allocate(a.rstd1, N);
      if (layer_norm) allocate(a.mean1, N), allocate(a.mean2, N);
      if (qk_norm) {
        allocate(a.q_pre, N * qd), allocate(a.k_pre, N * kvd);
        allocate(a.rstd_q, N * nh), allocate(a.rstd_k, N * nkv);
      }
      allocate(a.q, N * qd), allocate(a.k, N * kvd), allocate(a.v, N * kvd);
      allocate(a.probs, B * nh * S * S), allocate(a.attn, N * qd);
      allocate(a.x_mid, N * H), allocate(a.n2, N * H), allocate(a.rstd2, N);
      if (c.mlp == MlpKind::SwiGLU) allocate(a.gate, N * I);
      allocate(a.up, N * I), allocate(a.act, N * I), allocate(a.out, N * H);
    }
    allocate(embed_raw, N * H);
    if (c.embed_norm) {
      allocate(embed_normed, N * H), allocate(embed_rstd, N);
      if (layer_norm) allocate(embed_mean, N);
    }
    head_y.resize(n_heads), head_mean.resize(n_heads), head_rstd.resize(n_heads);
    for (int32_t h = 0; h < n_heads; ++h) {
      allocate(head_y[h], N * H), allocate(head_rstd[h], N);
      if (layer_norm) allocate(head_mean[h], N);
    }
    const int64_t chunk = std::min(kLogitRows, N);
    allocate(logit_buf, chunk * V), allocate(dlogit_buf, chunk * V);
    allocate(row_scale, chunk), allocate(row_loss, chunk);
    row_target.assign(static_cast<size_t>(chunk), -1);
  }

  // Scratch for the backward pass, allocated on first use (forward-only graphs never need it).
  void ensure_backward_scratch() {
    if (!d_x.empty()) return;
    const int64_t N = B * S;
    for (auto* v : {&d_head_y, &d_x, &d_trunk, &d_next, &d_mid, &d_n}) allocate(*v, N * H);
    for (auto* v : {&d_attn, &dq, &dq_tmp}) allocate(*v, N * qd);
    for (auto* v : {&dk, &dv, &dk_tmp}) allocate(*v, N * kvd);
    for (auto* v : {&d_act, &d_gate, &d_up}) allocate(*v, N * I);
  }

  // Inverted dropout of one site over the first n tokens' hidden vectors, in place (forward on
  // the branch output, backward on its gradient: the same elements, the same scale).
  void apply_dropout(uint32_t site, T* v, int64_t n) const {
    const uint64_t key = dropout_site_key(drop.seed, drop.step, site);
    const uint32_t threshold = dropout_threshold(drop.p);
    const T scale = dropout_scale<T>(drop.p);
    const auto index0 = static_cast<uint64_t>(drop.first_row * S * H);
#pragma omp parallel for num_threads(nt) schedule(static) if (n * H > (int64_t{1} << 14))
    for (int64_t i = 0; i < n * H; ++i) {
      v[i] = dropout_keep(key, index0 + static_cast<uint64_t>(i), threshold) ? v[i] * scale : T(0);
    }
  }

  // ---- norms -----------------------------------------------------------------------------

  void norm_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                int64_t dim) const {
    if (c.norm == NormKind::LayerNorm) {
      layer_norm_forward<T>(x, w, b, y, mean, rstd, rows, dim, eps, nt);
    } else {
      rms_norm_forward<T>(x, w, y, rstd, rows, dim, eps, nt);
    }
  }

  void norm_bwd(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* dw,
                T* db, int64_t rows, int64_t dim) const {
    if (c.norm == NormKind::LayerNorm) {
      layer_norm_backward<T>(dy, x, w, mean, rstd, dx, dw, db, rows, dim, nt);
    } else {
      rms_norm_backward<T>(dy, x, w, rstd, dx, dw, rows, dim, nt);
    }
  }

  // ---- one block -------------------------------------------------------------------------

  // q or k of one block: linear output -> (norm) -> RoPE -> (norm), ending in `fin`.
  void qk_forward(const T* norm_w, T* pre, T* fin, T* rstd, int64_t rows, int64_t heads) const {
    const int64_t n = rows * S;
    switch (c.qk_norm) {
      case QkNormKind::None:
        if (use_rope) rope_forward<T>(fin, rope, rows, heads, hd, nt);
        break;
      case QkNormKind::BeforeRopeWeighted:  // Qwen3: norm(q_lin) then RoPE
        rms_norm_forward<T>(pre, norm_w, fin, rstd, n * heads, hd, eps, nt);
        if (use_rope) rope_forward<T>(fin, rope, rows, heads, hd, nt);
        break;
      case QkNormKind::AfterRopeNoWeight:  // NanoChat: RoPE then a parameter-free norm
        if (use_rope) rope_forward<T>(pre, rope, rows, heads, hd, nt);
        rms_norm_forward<T>(pre, static_cast<const T*>(nullptr), fin, rstd, n * heads, hd, eps, nt);
        break;
    }
  }

  // Gradient of qk_forward: `d` holds d(fin) on entry, d(linear output) on return (via tmp).
  void qk_backward(std::vector<T>& d, std::vector<T>& tmp, const T* norm_w, T* d_norm_w,
                   const T* pre, const T* rstd, int64_t rows, int64_t heads) const {
    const int64_t n = rows * S;
    switch (c.qk_norm) {
      case QkNormKind::None:
        if (use_rope) rope_backward<T>(d.data(), rope, rows, heads, hd, nt);
        break;
      case QkNormKind::BeforeRopeWeighted:
        if (use_rope) rope_backward<T>(d.data(), rope, rows, heads, hd, nt);
        std::fill(tmp.begin(), tmp.begin() + n * heads * hd, T(0));
        rms_norm_backward<T>(d.data(), pre, norm_w, rstd, tmp.data(), d_norm_w, n * heads, hd, nt);
        std::swap(d, tmp);
        break;
      case QkNormKind::AfterRopeNoWeight:
        std::fill(tmp.begin(), tmp.begin() + n * heads * hd, T(0));
        rms_norm_backward<T>(d.data(), pre, static_cast<const T*>(nullptr), rstd, tmp.data(),
                             nullptr, n * heads, hd, nt);
        if (use_rope) rope_backward<T>(tmp.data(), rope, rows, heads, hd, nt);
        std::swap(d, tmp);
        break;
    }
  }

  void block_forward(const T* p, size_t bi, const T* x, int64_t rows) {
    const BlockOffsets& o = blocks[bi];
    Acts& a = acts[bi];
    const int64_t n = rows * S;
    norm_fwd(x, param(p, o.attn_norm_w), param(p, o.attn_norm_b), a.n1.data(), a.mean1.data(),
             a.rstd1.data(), n, H);
    const bool qk_norm = c.qk_norm != QkNormKind::None;
    T* q_lin = qk_norm ? a.q_pre.data() : a.q.data();
    T* k_lin = qk_norm ? a.k_pre.data() : a.k.data();
    linear_forward<T>(a.n1.data(), p + o.wq, param(p, o.bq), q_lin, n, H, qd, nt);
    linear_forward<T>(a.n1.data(), p + o.wk, param(p, o.bk), k_lin, n, H, kvd, nt);
    linear_forward<T>(a.n1.data(), p + o.wv, param(p, o.bv), a.v.data(), n, H, kvd, nt);
    qk_forward(param(p, o.q_norm), a.q_pre.data(), a.q.data(), a.rstd_q.data(), rows, nh);
    qk_forward(param(p, o.k_norm), a.k_pre.data(), a.k.data(), a.rstd_k.data(), rows, nkv);
    attention_forward<T>(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.probs.data(), rows, S,
                         nh, nkv, hd, nt);
    linear_forward<T>(a.attn.data(), p + o.wo, param(p, o.bo), a.x_mid.data(), n, qd, H, nt);
    if (drop.active())
      apply_dropout(dropout_site_attention(static_cast<int64_t>(bi)), a.x_mid.data(), n);
    for (int64_t i = 0; i < n * H; ++i) a.x_mid[i] += x[i];

    norm_fwd(a.x_mid.data(), param(p, o.mlp_norm_w), param(p, o.mlp_norm_b), a.n2.data(),
             a.mean2.data(), a.rstd2.data(), n, H);
    linear_forward<T>(a.n2.data(), p + o.w_up, param(p, o.b_up), a.up.data(), n, H, I, nt);
    switch (c.mlp) {
      case MlpKind::SwiGLU:
        linear_forward<T>(a.n2.data(), p + o.w_gate, param(p, o.b_gate), a.gate.data(), n, H, I,
                          nt);
        swiglu_forward<T>(a.gate.data(), a.up.data(), a.act.data(), n * I, nt);
        break;
      case MlpKind::GeluTanh:
        gelu_tanh_forward<T>(a.up.data(), a.act.data(), n * I, nt);
        break;
      case MlpKind::ReluSquared:
        relu_squared_forward<T>(a.up.data(), a.act.data(), n * I, nt);
        break;
    }
    linear_forward<T>(a.act.data(), p + o.w_down, param(p, o.b_down), a.out.data(), n, I, H, nt);
    if (drop.active()) apply_dropout(dropout_site_mlp(static_cast<int64_t>(bi)), a.out.data(), n);
    for (int64_t i = 0; i < n * H; ++i) a.out[i] += a.x_mid[i];
  }

  // dout: gradient of the block's output; ADDS the gradient of its input x into dx.
  void block_backward(const T* p, T* g, size_t bi, const T* x, const T* dout, T* dx, int64_t rows) {
    const BlockOffsets& o = blocks[bi];
    Acts& a = acts[bi];
    const int64_t n = rows * S;
    std::copy(dout, dout + n * H, d_mid.begin());
    // The branch's gradient: the residual's, through the same dropout mask.
    const T* d_down = dout;
    if (drop.active()) {
      std::copy(dout, dout + n * H, d_branch.begin());
      apply_dropout(dropout_site_mlp(static_cast<int64_t>(bi)), d_branch.data(), n);
      d_down = d_branch.data();
    }
    linear_backward<T>(d_down, a.act.data(), p + o.w_down, d_act.data(), false, g + o.w_down,
                       param(g, o.b_down), n, I, H, nt);
    switch (c.mlp) {
      case MlpKind::SwiGLU:
        swiglu_backward<T>(d_act.data(), a.gate.data(), a.up.data(), d_gate.data(), d_up.data(),
                           n * I, nt);
        break;
      case MlpKind::GeluTanh:
        gelu_tanh_backward<T>(d_act.data(), a.up.data(), d_up.data(), n * I, nt);
        break;
      case MlpKind::ReluSquared:
        relu_squared_backward<T>(d_act.data(), a.up.data(), d_up.data(), n * I, nt);
        break;
    }
    linear_backward<T>(d_up.data(), a.n2.data(), p + o.w_up, d_n.data(), false, g + o.w_up,
                       param(g, o.b_up), n, H, I, nt);
    if (c.mlp == MlpKind::SwiGLU) {
      linear_backward<T>(d_gate.data(), a.n2.data(), p + o.w_gate, d_n.data(), true, g + o.w_gate,
                         param(g, o.b_gate), n, H, I, nt);
    }
    norm_bwd(d_n.data(), a.x_mid.data(), param(p, o.mlp_norm_w), a.mean2.data(), a.rstd2.data(),
             d_mid.data(), param(g, o.mlp_norm_w), param(g, o.mlp_norm_b), n, H);
    grads_final(GradPointKind::BlockMlp, static_cast<int32_t>(bi));

    const T* d_o = d_mid.data();
    if (drop.active()) {
      std::copy(d_mid.begin(), d_mid.begin() + n * H, d_branch.begin());
      apply_dropout(dropout_site_attention(static_cast<int64_t>(bi)), d_branch.data(), n);
      d_o = d_branch.data();
    }
    linear_backward<T>(d_o, a.attn.data(), p + o.wo, d_attn.data(), false, g + o.wo, param(g, o.bo),
                       n, qd, H, nt);
    attention_backward<T>(d_attn.data(), a.q.data(), a.k.data(), a.v.data(), a.probs.data(),
                          dq.data(), dk.data(), dv.data(), rows, S, nh, nkv, hd, nt);
    qk_backward(dq, dq_tmp, param(p, o.q_norm), param(g, o.q_norm), a.q_pre.data(), a.rstd_q.data(),
                rows, nh);
    qk_backward(dk, dk_tmp, param(p, o.k_norm), param(g, o.k_norm), a.k_pre.data(), a.rstd_k.data(),
                rows, nkv);
    linear_backward<T>(dq.data(), a.n1.data(), p + o.wq, d_n.data(), false, g + o.wq,
                       param(g, o.bq), n, H, qd, nt);
    linear_backward<T>(dk.data(), a.n1.data(), p + o.wk, d_n.data(), true, g + o.wk, param(g, o.bk),
                       n, H, kvd, nt);
    linear_backward<T>(dv.data(), a.n1.data(), p + o.wv, d_n.data(), true, g + o.wv, param(g, o.bv),
                       n, H, kvd, nt);
    for (int64_t i = 0; i < n * H; ++i) dx[i] += d_mid[i];
    norm_bwd(d_n.data(), x, param(p, o.attn_norm_w), a.mean1.data(), a.rstd1.data(), dx,
             param(g, o.attn_norm_w), param(g, o.attn_norm_b), n, H);
    grads_final(GradPointKind::BlockAttention, static_cast<int32_t>(bi));
  }

  // ---- whole model -----------------------------------------------------------------------

  const T* trunk_output() const {
    if (L >= 2) return acts[L - 2].out.data();
    return c.embed_norm ? embed_normed.data() : embed_raw.data();
  }
  const T* block_input(size_t bi) const {
    if (bi >= static_cast<size_t>(L)) return trunk_output();  // MTP heads
    if (bi > 0) return acts[bi - 1].out.data();
    return c.embed_norm ? embed_normed.data() : embed_raw.data();
  }
  // Hidden state each head unembeds: the last layer's output, or MTP head K's.
  size_t head_block(int32_t h) const { return h == 0 ? L - 1 : L + h - 1; }

  void forward_trunk_and_heads(const T* p, const int32_t* ids, int64_t rows,
                               const std::atomic<bool>* cancel) {
    const int64_t n = rows * S;
    embedding_forward<T>(p + off_embed, ids, embed_raw.data(), n, H, nt);
    if (off_pos >= 0) positions_forward<T>(p + off_pos, embed_raw.data(), rows, S, H, nt);
    if (c.embed_norm) {
      norm_fwd(embed_raw.data(), param(p, off_final_w), param(p, off_final_b), embed_normed.data(),
               embed_mean.data(), embed_rstd.data(), n, H);
    }
    if (drop.active()) {
      apply_dropout(kDropoutSiteEmbedding, c.embed_norm ? embed_normed.data() : embed_raw.data(),
                    n);
    }
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      check_cancel(cancel);
      block_forward(p, bi, block_input(bi), rows);
    }
    for (int32_t h = 0; h < n_heads; ++h) {
      norm_fwd(acts[head_block(h)].out.data(), param(p, off_final_w), param(p, off_final_b),
               head_y[h].data(), head_mean[h].data(), head_rstd[h].data(), n, H);
    }
  }

  // Logits of rows [r0, r0 + m) of head h into `z` (after the soft-cap).
  void head_logits(const T* p, int32_t h, int64_t r0, int64_t m, T* z) const {
    tiled_gemm<T>(false, true, m, V, H, T(1), head_y[h].data() + r0 * H, H, p + off_unembed, H,
                  T(0), z, V, nt);
    if (c.logit_softcap > 0.0f) {
      softcap_forward<T>(z, z, m * V, static_cast<T>(c.logit_softcap), nt);
    }
  }

  // Loss of head h over the batch; with g != nullptr also its gradient (scale · Σ w·ce) into the
  // unembedding's gradient and d_head_y.
  HeadLoss head_loss(const T* p, T* g, int32_t h, const TrainBatch& batch, int64_t rows,
                     double scale) {
    HeadLoss result;
    const int64_t n = rows * S;
    for (int64_t r0 = 0; r0 < n; r0 += kLogitRows) {
      const int64_t m = std::min(kLogitRows, n - r0);
      head_logits(p, h, r0, m, logit_buf.data());
      for (int64_t i = 0; i < m; ++i) {
        const HeadTarget t = head_target(batch, S, r0 + i, h);
        row_target[i] = t.target;
        row_scale[i] = static_cast<T>(scale * t.weight);
      }
      cross_entropy_forward_backward<T>(logit_buf.data(), row_target.data(), row_scale.data(),
                                        row_loss.data(), g != nullptr ? dlogit_buf.data() : nullptr,
                                        m, V, nt);
      for (int64_t i = 0; i < m; ++i) {
        if (row_target[i] < 0) continue;
        const double w = head_target(batch, S, r0 + i, h).weight;
        result.loss_sum += w * static_cast<double>(row_loss[i]);
        result.weight_sum += w;
        ++result.tokens;
      }
      if (g == nullptr) continue;
      if (c.logit_softcap > 0.0f) {
        softcap_backward<T>(dlogit_buf.data(), logit_buf.data(), dlogit_buf.data(), m * V,
                            static_cast<T>(c.logit_softcap), nt);
      }
      tiled_gemm<T>(false, false, m, H, V, T(1), dlogit_buf.data(), V, p + off_unembed, H, T(0),
                    d_head_y.data() + r0 * H, H, nt);
      tiled_gemm<T>(true, false, V, H, m, T(1), dlogit_buf.data(), V, head_y[h].data() + r0 * H, H,
                    T(1), g + off_unembed, H, nt);
    }
    return result;
  }

  std::vector<HeadLoss> run(const T* p, T* g, const TrainBatch& batch,
                            std::span<const double> normalisers, std::span<const float> mtp_weights,
                            const std::atomic<bool>* cancel, const Dropout& dropout) {
    const int64_t rows = validate_batch(c, batch, S, B, true);
    if (!(dropout.p >= 0.0f && dropout.p < 1.0f)) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           "residual dropout " + std::to_string(dropout.p) + " outside [0, 1)");
    }
    drop = g != nullptr ? dropout : Dropout{};
    std::vector<double> scales(static_cast<size_t>(n_heads), 0.0);
    if (g != nullptr) {
      if (static_cast<int32_t>(normalisers.size()) != n_heads) {
        fail(KILN_ERR_INVALID_ARGUMENT, "expected " + n_str(n_heads) + " loss normalisers (1 + " +
                                            n_str(n_heads - 1) + " MTP heads), got " +
                                            n_str(normalisers.size()));
      }
      if (!mtp_weights.empty() && static_cast<int32_t>(mtp_weights.size()) != n_heads - 1) {
        fail(KILN_ERR_INVALID_ARGUMENT, "expected " + n_str(n_heads - 1) +
                                            " MTP loss weights, got " + n_str(mtp_weights.size()));
      }
      const std::vector<double> own = loss_weight_totals(c, batch, S);
      for (int32_t h = 0; h < n_heads; ++h) {
        const double norm = normalisers[h];
        const double coef = h == 0 || mtp_weights.empty() ? 1.0 : mtp_weights[h - 1];
        if (!std::isfinite(coef) || coef < 0.0) {
          fail(KILN_ERR_INVALID_ARGUMENT, "MTP loss weight " + std::to_string(coef) + " of head " +
                                              n_str(h) + " is not a finite number >= 0");
        }
        if (!std::isfinite(norm) || norm < 0.0 || (h == 0 && norm == 0.0) ||
            (own[h] > 0.0 && norm == 0.0)) {
          fail(KILN_ERR_INVALID_ARGUMENT,
               "loss normaliser of head " + n_str(h) + " is " + std::to_string(norm) +
                   " (this batch alone weighs " + std::to_string(own[h]) +
                   "); a step whose total loss weight is 0 cannot be trained");
        }
        scales[h] = norm > 0.0 ? coef / norm : 0.0;
      }
      ensure_backward_scratch();
      if (drop.active() && d_branch.empty()) allocate(d_branch, B * S * H);
    }
    forward_trunk_and_heads(p, batch.inputs.data(), rows, cancel);
    const int64_t n = rows * S;
    std::vector<HeadLoss> losses(static_cast<size_t>(n_heads));
    if (g != nullptr) std::fill(d_trunk.begin(), d_trunk.begin() + n * H, T(0));
    for (int32_t h = 0; h < n_heads; ++h) {
      check_cancel(cancel);
      losses[h] = head_loss(p, g, h, batch, rows, scales[h]);
      if (g == nullptr) continue;
      const size_t bi = head_block(h);
      std::fill(d_x.begin(), d_x.begin() + n * H, T(0));
      norm_bwd(d_head_y.data(), acts[bi].out.data(), param(p, off_final_w), head_mean[h].data(),
               head_rstd[h].data(), d_x.data(), param(g, off_final_w), param(g, off_final_b), n, H);
      if (h == n_heads - 1) grads_final(GradPointKind::HeadOutputs, -1);
      block_backward(p, g, bi, block_input(bi), d_x.data(), d_trunk.data(), rows);
    }
    if (g == nullptr) return losses;
    // d_trunk: gradient of the trunk output; walk the trunk layers down to the embedding.
    for (int32_t l = L - 2; l >= 0; --l) {
      check_cancel(cancel);
      std::fill(d_next.begin(), d_next.begin() + n * H, T(0));
      block_backward(p, g, static_cast<size_t>(l), block_input(l), d_trunk.data(), d_next.data(),
                     rows);
      std::swap(d_trunk, d_next);
    }
    if (drop.active()) apply_dropout(kDropoutSiteEmbedding, d_trunk.data(), n);
    const T* d_embed = d_trunk.data();
    if (c.embed_norm) {
      std::fill(d_next.begin(), d_next.begin() + n * H, T(0));
      norm_bwd(d_trunk.data(), embed_raw.data(), param(p, off_final_w), embed_mean.data(),
               embed_rstd.data(), d_next.data(), param(g, off_final_w), param(g, off_final_b), n,
               H);
      d_embed = d_next.data();
    }
    if (off_pos >= 0) positions_backward<T>(d_embed, g + off_pos, rows, S, H, nt);
    embedding_backward<T>(d_embed, batch.inputs.data(), g + off_embed, n, H, nt, c.padding_idx);
    grads_final(GradPointKind::Embedding, -1);
    return losses;
  }

  void check_params(std::span<const T> params, const char* what) const {
    if (static_cast<int64_t>(params.size()) != layout.total()) {
      fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " holds " + n_str(params.size()) +
                                          " elements, the parameter layout " +
                                          n_str(layout.total()));
    }
  }
};

template <class T>
TrainGraph<T>::TrainGraph(const ModelConfig& config, int64_t max_batch, int64_t seq, int n_threads)
    : impl_(std::make_unique<Impl>(config, max_batch, seq, n_threads)) {}

template <class T>
TrainGraph<T>::~TrainGraph() = default;

template <class T>
const ParamLayout& TrainGraph<T>::layout() const {
  return impl_->layout;
}
template <class T>
int32_t TrainGraph<T>::n_heads() const {
  return impl_->n_heads;
}
template <class T>
int64_t TrainGraph<T>::max_batch() const {
  return impl_->B;
}
template <class T>
int64_t TrainGraph<T>::seq() const {
  return impl_->S;
}

template <class T>
std::vector<HeadLoss> TrainGraph<T>::forward_backward(
    std::span<const T> params, std::span<T> grads, const TrainBatch& batch,
    std::span<const double> normalisers, std::span<const float> mtp_weights,
    const std::atomic<bool>* cancel, const Dropout& dropout, const GradPointObserver* on_final) {
  impl_->check_params(params, "parameter buffer");
  impl_->check_params(grads, "gradient buffer");
  impl_->on_final = on_final;
  try {
    auto losses =
        impl_->run(params.data(), grads.data(), batch, normalisers, mtp_weights, cancel, dropout);
    impl_->on_final = nullptr;
    return losses;
  } catch (...) {
    impl_->on_final = nullptr;
    throw;
  }
}

template <class T>
std::vector<HeadLoss> TrainGraph<T>::forward_loss(std::span<const T> params,
                                                  const TrainBatch& batch,
                                                  const std::atomic<bool>* cancel) {
  impl_->check_params(params, "parameter buffer");
  return impl_->run(params.data(), nullptr, batch, {}, {}, cancel, Dropout{});
}

template <class T>
void TrainGraph<T>::forward_logits(std::span<const T> params, std::span<const int32_t> ids,
                                   const ForwardOutputs<T>& out, const std::atomic<bool>* cancel) {
  Impl& m = *impl_;
  m.check_params(params, "parameter buffer");
  TrainBatch batch;
  batch.inputs = ids;
  const int64_t rows = validate_batch(m.c, batch, m.S, m.B, false);
  const int64_t n = rows * m.S;
  const auto expect = [&](size_t got, int64_t want, const char* what) {
    if (got != 0 && static_cast<int64_t>(got) != want) {
      fail(KILN_ERR_INVALID_ARGUMENT,
           std::string(what) + " holds " + n_str(got) + " elements, expected " + n_str(want));
    }
  };
  expect(out.logits.size(), m.n_heads * n * m.V, "logits output");
  expect(out.trunk_hidden.size(), n * m.H, "trunk hidden output");
  expect(out.final_hidden.size(), n * m.H, "final hidden output");
  m.drop = Dropout{};
  m.forward_trunk_and_heads(params.data(), ids.data(), rows, cancel);
  if (!out.trunk_hidden.empty()) {
    std::copy(m.trunk_output(), m.trunk_output() + n * m.H, out.trunk_hidden.begin());
  }
  if (!out.final_hidden.empty()) {
    std::copy(m.head_y[0].begin(), m.head_y[0].begin() + n * m.H, out.final_hidden.begin());
  }
  if (out.logits.empty()) return;
  for (int32_t h = 0; h < m.n_heads; ++h) {
    for (int64_t r0 = 0; r0 < n; r0 += kLogitRows) {
      const int64_t rows_now = std::min(kLogitRows, n - r0);
      m.head_logits(params.data(), h, r0, rows_now, out.logits.data() + (h * n + r0) * m.V);
    }
  }
}

template class TrainGraph<float>;
template class TrainGraph<double>;

}  // namespace kiln::train

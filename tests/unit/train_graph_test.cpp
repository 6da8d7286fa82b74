// TrainGraph on tiny models of every family:
//  - the forward pass (logits of every head, and the loss) against a float64 reference written
//    here from the families' definitions (HF Llama/Qwen3, GPT-2, transformers' NanoChat port):
//    one token and one head vector at a time, plain loops;
//  - the gradient of forward_backward against central finite differences of the loss, in double,
//    on two random elements of every tensor;
//  - loss semantics: masked tokens contribute nothing, a weight of 2 equals a duplicated token,
//    micro-batches sum to the full batch's gradient, thread-count independence.
#include "train/train_graph.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "train/init.hpp"
#include "train/model_layout.hpp"

namespace kiln::train {
namespace {

using Vec = std::vector<double>;

// ---------------------------------------------------------------------------------------------
// Tiny configs

enum class Family { Llama, Qwen3, Gpt2, NanoChat };

struct Variant {
  const char* name;
  Family family;
  int32_t layers = 2;
  int32_t mtp = 0;
  bool tied = false;
  bool biases = false;  // q/k/v + o biases (Llama: attention_bias)
  bool llama3_rope = false;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

ModelConfig make_config(const Variant& v) {
  ModelConfig c;
  c.vocab_size = 13;
  c.hidden_size = 12;
  c.n_layers = v.layers;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.intermediate_size = 10;
  c.max_position_embeddings = 16;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 100.0f;
  c.tie_word_embeddings = v.tied;
  c.n_mtp_heads = v.mtp;
  switch (v.family) {
    case Family::Llama:
      c.architecture = "LlamaForCausalLM";
      c.traits = *find_arch_traits(c.architecture);
      c.attention_bias = v.biases;
      if (v.llama3_rope) {
        // Short old context so the three bands of the llama3 scaling all occur for head_dim 4.
        c.rope_scaling.type = RopeScalingType::Llama3;
        c.rope_scaling.factor = 8.0f;
        c.rope_scaling.original_max_position_embeddings = 8;
      }
      break;
    case Family::Qwen3:
      c.architecture = "Qwen3ForCausalLM";
      c.traits = *find_arch_traits(c.architecture);
      c.qk_norm = QkNormKind::BeforeRopeWeighted;
      c.head_dim = 6;  // heads × head_dim ≠ hidden
      break;
    case Family::Gpt2:
      c.architecture = "GPT2LMHeadModel";
      c.n_kv_heads = 4;
      c.head_dim = 3;
      c.norm = NormKind::LayerNorm;
      c.mlp = MlpKind::GeluTanh;
      c.positions = PositionKind::Learned;
      c.attention_bias = true;
      c.mlp_bias = true;
      break;
    case Family::NanoChat:
      c.architecture = "NanoChatForCausalLM";
      c.norm = NormKind::RmsNormNoWeight;
      c.mlp = MlpKind::ReluSquared;
      c.qk_norm = QkNormKind::AfterRopeNoWeight;
      c.embed_norm = true;
      c.logit_softcap = 2.5f;  // small, so the cap bends the logits
      break;
  }
  return c;
}

// Random parameters that keep every part of the model in play (no zero projections).
Vec random_params(const ParamLayout& layout, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Vec p(static_cast<size_t>(layout.total()), 0.0);
  for (const ParamSpec& s : layout.specs()) {
    for (int64_t i = 0; i < s.numel; ++i) {
      double v = u(gen);
      switch (s.role) {
        case ParamRole::Norm:
          v = 1.0 + 0.2 * v;
          break;
        case ParamRole::Bias:
          v *= 0.2;
          break;
        case ParamRole::Embedding:
        case ParamRole::Position:
          v *= 0.8;
          break;
        default:
          v *= 1.5 / std::sqrt(static_cast<double>(s.shape[1]));
          break;
      }
      p[s.offset + i] = v;
    }
  }
  return p;
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  std::vector<uint8_t> mask;
  std::vector<float> weights;
  TrainBatch view() const { return {inputs, targets, mask, weights}; }
};

Batch random_batch(int64_t rows, int64_t seq, int32_t vocab, uint32_t seed, bool mask_and_weights) {
  std::mt19937 gen(seed);
  Batch b;
  const int64_t n = rows * seq;
  for (int64_t i = 0; i < n; ++i) {
    b.inputs.push_back(static_cast<int32_t>(gen() % vocab));
    b.targets.push_back(static_cast<int32_t>(gen() % vocab));
  }
  if (mask_and_weights) {
    b.targets[3] = -1;
    for (int64_t i = 0; i < n; ++i) {
      b.mask.push_back(i % 4 == 1 ? 0 : 1);
      b.weights.push_back(0.5f + static_cast<float>(gen() % 7) * 0.25f);
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// The float64 reference

class Reference {
 public:
  Reference(const ModelConfig& c, const ParamLayout& layout, const Vec& p)
      : c_(c), layout_(layout), p_(p), inv_freq_(rope_inverse_frequencies(c)) {}

  // Residual dropout as the contract defines it (dropout_mask.hpp's keep(), scale 1/(1-p) in
  // float64) at the embedding output and every sub-layer output; p = 0: none.
  void set_dropout(const Dropout& d) { drop_ = d; }

  // Logits of every head, [head][row × seq][vocab].
  std::vector<Vec> logits(const std::vector<int32_t>& ids, int64_t seq) const {
    const int64_t rows = static_cast<int64_t>(ids.size()) / seq, H = c_.hidden_size;
    std::vector<Vec> out(1 + c_.n_mtp_heads, Vec(ids.size() * c_.vocab_size));
    seq_ = seq;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<Vec> x(seq);
      for (int64_t t = 0; t < seq; ++t) {
        x[t].assign(P("model.embed_tokens.weight") + ids[r * seq + t] * H,
                    P("model.embed_tokens.weight") + (ids[r * seq + t] + 1) * H);
        if (c_.positions == PositionKind::Learned) {
          for (int64_t j = 0; j < H; ++j) x[t][j] += P("model.embed_positions.weight")[t * H + j];
        }
        if (c_.embed_norm) x[t] = norm(x[t], "model.norm");
        dropout(x[t], kDropoutSiteEmbedding, r, t);
      }
      for (int32_t l = 0; l + 1 < c_.n_layers; ++l) x = block(x, layer_prefix(l), l, r);
      for (int32_t h = 0; h <= c_.n_mtp_heads; ++h) {
        const int64_t bi = h == 0 ? c_.n_layers - 1 : c_.n_layers + h - 1;
        const auto y = block(x, h == 0 ? layer_prefix(c_.n_layers - 1) : mtp_head_prefix(h), bi, r);
        for (int64_t t = 0; t < seq; ++t) {
          const Vec f = norm(y[t], "model.norm");
          const double* W =
              c_.tie_word_embeddings ? P("model.embed_tokens.weight") : P("lm_head.weight");
          for (int32_t v = 0; v < c_.vocab_size; ++v) {
            double z = 0;
            for (int64_t j = 0; j < H; ++j) z += f[j] * W[v * H + j];
            if (c_.logit_softcap > 0) z = c_.logit_softcap * std::tanh(z / c_.logit_softcap);
            out[h][(r * seq + t) * c_.vocab_size + v] = z;
          }
        }
      }
    }
    return out;
  }

  // Σ w·ce per head, and Σ w, straight from the contract's definition.
  void loss(const Batch& b, int64_t seq, Vec& loss_sum, Vec& weight_sum) const {
    const auto z = logits(b.inputs, seq);
    const int64_t n = static_cast<int64_t>(b.inputs.size());
    loss_sum.assign(z.size(), 0.0);
    weight_sum.assign(z.size(), 0.0);
    for (size_t h = 0; h < z.size(); ++h) {
      for (int64_t i = 0; i < n; ++i) {
        if (i % seq + static_cast<int64_t>(h) >= seq) continue;
        const int64_t j = i + static_cast<int64_t>(h);
        if (b.targets[j] < 0 || (!b.mask.empty() && b.mask[j] == 0)) continue;
        const double w = b.weights.empty() ? 1.0 : b.weights[j];
        double sum = 0;
        for (int32_t v = 0; v < c_.vocab_size; ++v) sum += std::exp(z[h][i * c_.vocab_size + v]);
        loss_sum[h] += w * (std::log(sum) - z[h][i * c_.vocab_size + b.targets[j]]);
        weight_sum[h] += w;
      }
    }
  }

 private:
  // Token t of batch row r: element j is element ((first_row + r)·seq + t)·H + j of the mask.
  void dropout(Vec& v, uint32_t site, int64_t r, int64_t t) const {
    if (drop_.p == 0.0f) return;
    const uint64_t key = dropout_site_key(drop_.seed, drop_.step, site);
    const double p = drop_.p;
    const auto threshold = static_cast<uint64_t>(std::floor(p * 4294967296.0));
    const int64_t H = c_.hidden_size;
    for (int64_t j = 0; j < H; ++j) {
      const auto index = static_cast<uint64_t>(((drop_.first_row + r) * seq_ + t) * H + j);
      v[j] = dropout_bits(key, index) >= threshold ? v[j] / (1.0 - p) : 0.0;
    }
  }

  const double* P(const std::string& name) const {
    const ParamSpec* s = layout_.find(name);
    return s ? p_.data() + s->offset : nullptr;
  }

  Vec norm(const Vec& x, const std::string& name) const {
    const double* w = P(name + ".weight");
    const double* b = P(name + ".bias");
    const auto n = static_cast<double>(x.size());
    double mu = 0;
    if (c_.norm == NormKind::LayerNorm) {
      for (double v : x) mu += v;
      mu /= n;
    }
    double var = 0;
    for (double v : x) var += (v - mu) * (v - mu);
    const double inv = 1 / std::sqrt(var / n + c_.rms_norm_eps);
    Vec y(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      y[i] = (x[i] - mu) * inv * (w ? w[i] : 1.0) + (b ? b[i] : 0.0);
    }
    return y;
  }

  Vec linear(const Vec& x, const std::string& name) const {
    const ParamSpec& s = layout_.at(name + ".weight");
    const double* W = p_.data() + s.offset;
    const double* b = P(name + ".bias");
    const int64_t out = s.shape[0], in = s.shape[1];
    Vec y(out);
    for (int64_t o = 0; o < out; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += W[o * in + i] * x[i];
      y[o] = acc;
    }
    return y;
  }

  // q·cos + rotate_half(q)·sin, rotate_half = (-x2, x1); NanoChat's is (x2, -x1).
  void rope(double* v, int64_t pos) const {
    const int64_t half = static_cast<int64_t>(inv_freq_.size());
    const double sign = c_.qk_norm == QkNormKind::AfterRopeNoWeight ? -1.0 : 1.0;
    Vec rotated(2 * half);
    for (int64_t i = 0; i < half; ++i) {
      rotated[i] = -sign * v[i + half];
      rotated[i + half] = sign * v[i];
    }
    for (int64_t i = 0; i < 2 * half; ++i) {
      const double angle = static_cast<double>(pos) * inv_freq_[i % half];
      v[i] = v[i] * std::cos(angle) + rotated[i] * std::sin(angle);
    }
  }

  void head_rms(double* v, const double* w) const {
    const int64_t d = c_.head_dim;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += v[i] * v[i];
    const double inv = 1 / std::sqrt(ss / d + c_.rms_norm_eps);
    for (int64_t i = 0; i < d; ++i) v[i] = v[i] * inv * (w ? w[i] : 1.0);
  }

  void position_q_or_k(Vec& x, int64_t heads, int64_t pos, const std::string& norm_name) const {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = x.data() + h * c_.head_dim;
      if (c_.qk_norm == QkNormKind::BeforeRopeWeighted) head_rms(v, P(norm_name));
      if (c_.positions == PositionKind::Rope) rope(v, pos);
      if (c_.qk_norm == QkNormKind::AfterRopeNoWeight) head_rms(v, nullptr);
    }
  }

  std::vector<Vec> block(const std::vector<Vec>& x, const std::string& p, int64_t bi,
                         int64_t r) const {
    const int64_t seq = static_cast<int64_t>(x.size()), hd = c_.head_dim;
    const int64_t nh = c_.n_heads, group = c_.n_heads / c_.n_kv_heads;
    std::vector<Vec> q(seq), k(seq), v(seq), out(seq);
    for (int64_t t = 0; t < seq; ++t) {
      const Vec h = norm(x[t], p + "input_layernorm");
      q[t] = linear(h, p + "self_attn.q_proj");
      k[t] = linear(h, p + "self_attn.k_proj");
      v[t] = linear(h, p + "self_attn.v_proj");
      position_q_or_k(q[t], nh, t, p + "self_attn.q_norm.weight");
      position_q_or_k(k[t], c_.n_kv_heads, t, p + "self_attn.k_norm.weight");
    }
    for (int64_t t = 0; t < seq; ++t) {
      Vec attn(nh * hd, 0.0);
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t g = h / group;
        Vec s(t + 1);
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t e = 0; e < hd; ++e) d += q[t][h * hd + e] * k[j][g * hd + e];
          s[j] = std::exp(d / std::sqrt(static_cast<double>(hd)));
          sum += s[j];
        }
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t e = 0; e < hd; ++e) attn[h * hd + e] += s[j] / sum * v[j][g * hd + e];
      }
      Vec mid = linear(attn, p + "self_attn.o_proj");
      dropout(mid, dropout_site_attention(bi), r, t);
      for (size_t i = 0; i < mid.size(); ++i) mid[i] += x[t][i];
      const Vec h2 = norm(mid, p + "post_attention_layernorm");
      Vec a = linear(h2, p + "mlp.up_proj");
      if (c_.mlp == MlpKind::SwiGLU) {
        const Vec gate = linear(h2, p + "mlp.gate_proj");
        for (size_t i = 0; i < a.size(); ++i) a[i] *= gate[i] / (1 + std::exp(-gate[i]));
      } else if (c_.mlp == MlpKind::GeluTanh) {
        for (double& e : a)
          e = 0.5 * e * (1 + std::tanh(std::sqrt(2 / M_PI) * (e + 0.044715 * e * e * e)));
      } else {
        for (double& e : a) e = e > 0 ? e * e : 0.0;
      }
      out[t] = linear(a, p + "mlp.down_proj");
      dropout(out[t], dropout_site_mlp(bi), r, t);
      for (size_t i = 0; i < mid.size(); ++i) out[t][i] += mid[i];
    }
    return out;
  }

  const ModelConfig& c_;
  const ParamLayout& layout_;
  const Vec& p_;
  std::vector<float> inv_freq_;
  Dropout drop_;
  mutable int64_t seq_ = 0;  // of the logits() call running
};

// ---------------------------------------------------------------------------------------------
// Per-variant checks

const Variant kVariants[] = {
    {"llama_gqa_untied", Family::Llama},
    {"llama_biases_llama3_rope_tied", Family::Llama, 2, 0, true, true, true},
    {"qwen3_qk_norm", Family::Qwen3},
    {"gpt2", Family::Gpt2, 2, 0, true},
    {"nanochat", Family::NanoChat},
    {"nanochat_mtp2", Family::NanoChat, 2, 2},
    {"llama_mtp1_one_layer", Family::Llama, 1, 1, false, true},
    {"gpt2_mtp1", Family::Gpt2, 3, 1, true},
};

class TrainGraphFamilies : public ::testing::TestWithParam<Variant> {};

constexpr int64_t kRows = 2, kSeq = 6;

TEST_P(TrainGraphFamilies, ForwardMatchesFloat64Reference) {
  const ModelConfig c = make_config(GetParam());
  TrainGraph<double> graph(c, kRows, kSeq, 2);
  const Vec p = random_params(graph.layout(), 1);
  const Batch b = random_batch(kRows, kSeq, c.vocab_size, 2, true);
  const Reference ref(c, graph.layout(), p);

  const auto want = ref.logits(b.inputs, kSeq);
  Vec got(want.size() * want[0].size());
  graph.forward_logits(p, b.inputs, {got, {}, {}});
  for (size_t h = 0; h < want.size(); ++h) {
    for (size_t i = 0; i < want[h].size(); ++i) {
      ASSERT_NEAR(got[h * want[h].size() + i], want[h][i], 1e-11) << "head " << h << " index " << i;
    }
  }

  Vec loss_sum, weight_sum;
  ref.loss(b, kSeq, loss_sum, weight_sum);
  const auto losses = graph.forward_loss(p, b.view());
  ASSERT_EQ(losses.size(), loss_sum.size());
  for (size_t h = 0; h < losses.size(); ++h) {
    EXPECT_NEAR(losses[h].loss_sum, loss_sum[h], 1e-10) << "head " << h;
    EXPECT_DOUBLE_EQ(losses[h].weight_sum, weight_sum[h]) << "head " << h;
    EXPECT_GT(losses[h].tokens, 0);
  }
}

// A dropout draw with a step and a first row other than 0 (the index offset a later
// micro-batch has), so the test covers every input of the mask.
Dropout test_dropout(float p = 0.3f) { return Dropout{p, 0xC0FFEEull, 7, 1}; }

// forward_backward's gradient against central differences of the objective it minimises (with
// `dropout`: the same mask in every evaluation, which the counter-based draw guarantees).
void check_gradient(const Variant& variant, const Dropout& dropout) {
  const ModelConfig c = make_config(variant);
  TrainGraph<double> graph(c, kRows, kSeq, 2);
  Vec p = random_params(graph.layout(), 3);
  const Batch b = random_batch(kRows, kSeq, c.vocab_size, 4, true);
  const TrainBatch view = b.view();
  const std::vector<double> norms = loss_weight_totals(c, view, kSeq);
  std::vector<float> mtp_weights;
  for (int32_t k = 1; k <= c.n_mtp_heads; ++k) mtp_weights.push_back(0.5f * static_cast<float>(k));

  // J = Σ_h c_h · loss_sum_h / N_h
  Vec scratch(p.size(), 0.0);
  const auto objective = [&] {
    const auto losses = dropout.active() ? graph.forward_backward(p, scratch, view, norms,
                                                                  mtp_weights, nullptr, dropout)
                                         : graph.forward_loss(p, view);
    double j = 0;
    for (size_t h = 0; h < losses.size(); ++h) {
      j += (h == 0 ? 1.0 : mtp_weights[h - 1]) * losses[h].loss_sum / norms[h];
    }
    return j;
  };
  Vec grads(p.size(), 0.0);
  graph.forward_backward(p, grads, view, norms, mtp_weights, nullptr, dropout);

  std::mt19937 gen(5);
  int checked = 0;
  for (const ParamSpec& s : graph.layout().specs()) {
    for (int trial = 0; trial < 2; ++trial) {
      const int64_t i = s.offset + static_cast<int64_t>(gen() % s.numel);
      const double keep = p[i], h = 1e-5;
      p[i] = keep + h;
      const double up = objective();
      p[i] = keep - h;
      const double down = objective();
      p[i] = keep;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grads[i], numeric, 1e-8 + 1e-6 * std::abs(numeric))
          << s.name << " element " << i - s.offset;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * static_cast<int>(graph.layout().specs().size()));
}

TEST_P(TrainGraphFamilies, GradientMatchesFiniteDifferences) { check_gradient(GetParam(), {}); }

TEST_P(TrainGraphFamilies, DropoutGradientMatchesFiniteDifferences) {
  check_gradient(GetParam(), test_dropout());
}

// The loss of a training forward with dropout against the float64 reference drawing the same
// masks; evaluation (forward_loss) never drops.
TEST_P(TrainGraphFamilies, DropoutLossMatchesFloat64Reference) {
  const ModelConfig c = make_config(GetParam());
  TrainGraph<double> graph(c, kRows, kSeq, 2);
  const Vec p = random_params(graph.layout(), 11);
  const Batch b = random_batch(kRows, kSeq, c.vocab_size, 12, true);
  Reference ref(c, graph.layout(), p);
  Vec clean_sum, weight_sum, dropped_sum;
  ref.loss(b, kSeq, clean_sum, weight_sum);
  ref.set_dropout(test_dropout());
  ref.loss(b, kSeq, dropped_sum, weight_sum);

  const std::vector<double> norms = loss_weight_totals(c, b.view(), kSeq);
  Vec grads(p.size(), 0.0);
  const auto losses =
      graph.forward_backward(p, grads, b.view(), norms, {}, nullptr, test_dropout());
  ASSERT_EQ(losses.size(), dropped_sum.size());
  for (size_t h = 0; h < losses.size(); ++h) {
    EXPECT_NEAR(losses[h].loss_sum, dropped_sum[h], 1e-10) << "head " << h;
    EXPECT_GT(std::abs(dropped_sum[h] - clean_sum[h]), 1e-3) << "dropout changed nothing";
  }
  const auto eval = graph.forward_loss(p, b.view());
  for (size_t h = 0; h < eval.size(); ++h) {
    EXPECT_NEAR(eval[h].loss_sum, clean_sum[h], 1e-10) << "head " << h;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, TrainGraphFamilies, ::testing::ValuesIn(kVariants),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------------------------
// Loss semantics

struct StepResult {
  std::vector<HeadLoss> losses;
  Vec grads;
};

StepResult run_step(TrainGraph<double>& graph, const Vec& p, const Batch& b,
                    std::span<const double> norms, std::span<const float> mtp = {}) {
  StepResult r;
  r.grads.assign(p.size(), 0.0);
  r.losses = graph.forward_backward(p, r.grads, b.view(), norms, mtp);
  return r;
}

void expect_same_grads(const Vec& a, const Vec& b, double tol, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, max_mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    max_mag = std::max(max_mag, std::abs(a[i]));
  }
  EXPECT_GT(max_mag, 0.0) << what;
  EXPECT_LE(max_diff, tol * max_mag) << what;
}

TEST(TrainGraphSemantics, MaskedTokensContributeNothing) {
  const ModelConfig c = make_config({"nanochat_mtp2", Family::NanoChat, 2, 2});
  TrainGraph<double> graph(c, kRows, kSeq, 2);
  const Vec p = random_params(graph.layout(), 6);
  Batch b = random_batch(kRows, kSeq, c.vocab_size, 7, true);
  const auto norms = loss_weight_totals(c, b.view(), kSeq);
  const StepResult base = run_step(graph, p, b, norms);
  // New targets and weights wherever the mask is 0 (and where the target is -1, a new mask).
  for (size_t i = 0; i < b.inputs.size(); ++i) {
    if (b.mask[i] == 0) {
      b.targets[i] = (b.targets[i] + 5) % c.vocab_size;
      b.weights[i] = 9.0f;
    } else if (b.targets[i] < 0) {
      b.mask[i] = 0;
    }
  }
  EXPECT_EQ(loss_weight_totals(c, b.view(), kSeq), norms);
  const StepResult changed = run_step(graph, p, b, norms);
  for (size_t h = 0; h < base.losses.size(); ++h) {
    EXPECT_EQ(changed.losses[h].loss_sum, base.losses[h].loss_sum);
    EXPECT_EQ(changed.losses[h].tokens, base.losses[h].tokens);
  }
  EXPECT_EQ(changed.grads, base.grads);
}

TEST(TrainGraphSemantics, WeightTwoEqualsADuplicatedToken) {
  const ModelConfig c = make_config({"llama", Family::Llama, 2, 1});
  TrainGraph<double> graph(c, 3, kSeq, 2);
  const Vec p = random_params(graph.layout(), 8);
  Batch two = random_batch(2, kSeq, c.vocab_size, 9, false);
  two.mask.assign(two.inputs.size(), 1);
  two.weights.assign(two.inputs.size(), 1.0f);
  const size_t token = 3;  // row 0, position 3: the main head's target; MTP head 1 at position 2
  two.weights[token] = 2.0f;
  // The same, with row 0 repeated as a third row in which only that token counts (weight 1).
  Batch dup = two;
  dup.weights[token] = 1.0f;
  dup.inputs.insert(dup.inputs.end(), two.inputs.begin(), two.inputs.begin() + kSeq);
  dup.targets.insert(dup.targets.end(), two.targets.begin(), two.targets.begin() + kSeq);
  dup.mask.insert(dup.mask.end(), kSeq, 1);
  dup.weights.insert(dup.weights.end(), kSeq, 0.0f);
  dup.weights[2 * kSeq + token] = 1.0f;

  const auto norms = loss_weight_totals(c, two.view(), kSeq);
  EXPECT_EQ(loss_weight_totals(c, dup.view(), kSeq), norms);
  const StepResult a = run_step(graph, p, two, norms);
  const StepResult b = run_step(graph, p, dup, norms);
  for (size_t h = 0; h < a.losses.size(); ++h) {
    EXPECT_NEAR(a.losses[h].loss_sum, b.losses[h].loss_sum, 1e-12);
    EXPECT_DOUBLE_EQ(a.losses[h].weight_sum, b.losses[h].weight_sum);
  }
  expect_same_grads(a.grads, b.grads, 1e-12, "weight 2 vs duplicate");
}

TEST(TrainGraphSemantics, MicroBatchesSumToTheFullBatchGradient) {
  const ModelConfig c = make_config({"gpt2_mtp", Family::Gpt2, 2, 1, true});
  const int64_t rows = 4;
  TrainGraph<double> full_graph(c, rows, kSeq, 2);
  TrainGraph<double> micro_graph(c, rows / 2, kSeq, 2);
  const Vec p = random_params(full_graph.layout(), 10);
  const Batch b = random_batch(rows, kSeq, c.vocab_size, 11, true);
  const auto norms = loss_weight_totals(c, b.view(), kSeq);
  const std::vector<float> mtp = {0.3f};
  const StepResult full = run_step(full_graph, p, b, norms, mtp);

  Vec summed(p.size(), 0.0);
  double loss0 = 0, weight0 = 0;
  for (int half = 0; half < 2; ++half) {
    const size_t n = static_cast<size_t>(rows / 2 * kSeq), off = half * n;
    Batch part;
    part.inputs.assign(b.inputs.begin() + off, b.inputs.begin() + off + n);
    part.targets.assign(b.targets.begin() + off, b.targets.begin() + off + n);
    part.mask.assign(b.mask.begin() + off, b.mask.begin() + off + n);
    part.weights.assign(b.weights.begin() + off, b.weights.begin() + off + n);
    const auto losses = micro_graph.forward_backward(p, summed, part.view(), norms, mtp);
    loss0 += losses[0].loss_sum;
    weight0 += losses[0].weight_sum;
  }
  EXPECT_NEAR(loss0 / weight0, full.losses[0].loss_sum / full.losses[0].weight_sum, 1e-13);
  expect_same_grads(summed, full.grads, 1e-12, "micro-batches vs full batch");
}

// Masks are indexed over the whole step's batch, so grad-accumulation micro-batches (each with its
// first row) draw the full batch's mask and their gradients sum to the full batch's.
TEST(TrainGraphSemantics, DropoutMicroBatchesSumToTheFullBatchGradient) {
  const ModelConfig c = make_config({"gpt2_mtp1", Family::Gpt2, 3, 1, true});
  constexpr int64_t rows = 4, half = 2;
  TrainGraph<double> full(c, rows, kSeq, 2), micro(c, half, kSeq, 2);
  const Vec p = random_params(full.layout(), 21);
  const Batch b = random_batch(rows, kSeq, c.vocab_size, 22, true);
  const std::vector<double> norms = loss_weight_totals(c, b.view(), kSeq);
  const Dropout whole{0.25f, 99, 3, 0};
  Vec want(p.size(), 0.0), got(p.size(), 0.0);
  const auto l_full = full.forward_backward(p, want, b.view(), norms, {}, nullptr, whole);
  double loss_parts = 0;
  for (int64_t part = 0; part < rows / half; ++part) {
    const size_t lo = static_cast<size_t>(part * half * kSeq), len = half * kSeq;
    const TrainBatch v{std::span(b.inputs).subspan(lo, len), std::span(b.targets).subspan(lo, len),
                       std::span(b.mask).subspan(lo, len), std::span(b.weights).subspan(lo, len)};
    Dropout d = whole;
    d.first_row = part * half;
    loss_parts += micro.forward_backward(p, got, v, norms, {}, nullptr, d)[0].loss_sum;
  }
  EXPECT_NEAR(loss_parts, l_full[0].loss_sum, 1e-12 * std::abs(l_full[0].loss_sum));
  expect_same_grads(got, want, 1e-12, "dropout micro-batches");
}

// One float32 forward_backward: the main head's loss sum and the gradient.
std::pair<double, std::vector<float>> float_step(TrainGraph<float>& graph,
                                                 const std::vector<float>& p, const Batch& b,
                                                 std::span<const double> norms,
                                                 const Dropout& dropout) {
  std::vector<float> grads(p.size(), 0.0f);
  const double loss =
      graph.forward_backward(p, grads, b.view(), norms, {}, nullptr, dropout)[0].loss_sum;
  return {loss, std::move(grads)};
}

// p = 0 is no dropout at all, bit for bit, whatever the seed, step and row.
TEST(TrainGraphSemantics, ZeroDropoutIsBitIdentical) {
  const ModelConfig c = make_config({"nanochat_mtp2", Family::NanoChat, 2, 2});
  TrainGraph<float> graph(c, kRows, kSeq, 2);
  const Vec pd = random_params(graph.layout(), 31);
  std::vector<float> p;
  for (const double v : pd) p.push_back(static_cast<float>(v));
  const Batch b = random_batch(kRows, kSeq, c.vocab_size, 32, true);
  const std::vector<double> norms = loss_weight_totals(c, b.view(), kSeq);
  const auto plain = float_step(graph, p, b, norms, {});
  const auto zero = float_step(graph, p, b, norms, {0.0f, 5, 9, 3});
  const auto dropped = float_step(graph, p, b, norms, {0.1f, 5, 9, 3});
  EXPECT_EQ(plain.first, zero.first);
  EXPECT_TRUE(plain.second == zero.second) << "p = 0 changed the gradient";
  EXPECT_NE(plain.first, dropped.first);
  EXPECT_FALSE(plain.second == dropped.second) << "p = 0.1 changed nothing";
  EXPECT_THROW(float_step(graph, p, b, norms, {1.0f, 5, 9, 3}), kiln::Error);
}

// The mask itself: the dropped fraction of 2^20 elements is within 5 binomial standard
// deviations of p, and masks of other sites, steps and seeds are independent (they overlap in
// p² of the elements, within the same bound).
TEST(TrainDropoutMask, FractionAndIndependence) {
  constexpr uint64_t n = uint64_t{1} << 20;
  for (const float p : {0.1f, 0.2f, 0.5f}) {
    const uint32_t threshold = dropout_threshold(p);
    EXPECT_EQ(threshold, static_cast<uint32_t>(std::floor(double(p) * 4294967296.0)));
    const uint64_t a = dropout_site_key(1337, 10, dropout_site_attention(2));
    const uint64_t others[] = {dropout_site_key(1337, 10, dropout_site_mlp(2)),
                               dropout_site_key(1337, 11, dropout_site_attention(2)),
                               dropout_site_key(1338, 10, dropout_site_attention(2)),
                               dropout_site_key(1337, 10, kDropoutSiteEmbedding)};
    const double sd = std::sqrt(double(p) * (1 - p) / n);
    int64_t dropped = 0;
    for (uint64_t i = 0; i < n; ++i) dropped += !dropout_keep(a, i, threshold);
    EXPECT_NEAR(double(dropped) / n, p, 5 * sd) << "p " << p;
    for (const uint64_t b : others) {
      ASSERT_NE(a, b);
      int64_t both = 0;
      for (uint64_t i = 0; i < n; ++i) {
        both += !dropout_keep(a, i, threshold) && !dropout_keep(b, i, threshold);
      }
      const double q = double(p) * p;
      EXPECT_NEAR(double(both) / n, q, 5 * std::sqrt(q * (1 - q) / n)) << "p " << p;
    }
  }
  EXPECT_EQ(dropout_threshold(0.0f), 0u);  // p = 0 keeps every element
  EXPECT_EQ(dropout_scale<double>(0.25f), 1.0 / 0.75);
}

TEST(TrainGraphSemantics, FloatResultsAreBitIdenticalAcrossThreadCounts) {
  const ModelConfig c = make_config({"qwen3", Family::Qwen3, 2, 1});
  const int64_t rows = 3, seq = 37;
  TrainGraph<float> one(c, rows, seq, 1), two(c, rows, seq, 2);
  std::vector<float> p(one.layout().total());
  init_params(c, one.layout(), 42, p);
  const Batch b = random_batch(rows, seq, c.vocab_size, 12, true);
  const auto norms = loss_weight_totals(c, b.view(), seq);
  std::vector<float> g1(p.size(), 0.0f), g2(p.size(), 0.0f);
  const auto l1 = one.forward_backward(p, g1, b.view(), norms, {});
  const auto l2 = two.forward_backward(p, g2, b.view(), norms, {});
  EXPECT_EQ(l1[0].loss_sum, l2[0].loss_sum);
  EXPECT_EQ(l1[1].loss_sum, l2[1].loss_sum);
  EXPECT_EQ(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)), 0);
}

TEST(TrainGraphSemantics, RejectsBadBatchesAndNormalisers) {
  const ModelConfig c = make_config({"llama", Family::Llama});
  TrainGraph<double> graph(c, kRows, kSeq, 1);
  const Vec p = random_params(graph.layout(), 13);
  Vec g(p.size(), 0.0);
  Batch b = random_batch(kRows, kSeq, c.vocab_size, 14, true);
  const auto status_of = [&](const Batch& batch, std::vector<double> norms) {
    try {
      graph.forward_backward(p, g, batch.view(), norms, {});
    } catch (const Error& e) {
      return e.status();
    }
    return KILN_OK;
  };
  EXPECT_EQ(status_of(b, {0.0}), KILN_ERR_INVALID_ARGUMENT);       // total weight 0
  EXPECT_EQ(status_of(b, {1.0, 1.0}), KILN_ERR_INVALID_ARGUMENT);  // one normaliser per head
  Batch bad = b;
  bad.inputs[2] = c.vocab_size;
  EXPECT_EQ(status_of(bad, {1.0}), KILN_ERR_OUT_OF_RANGE);
  bad = b;
  bad.targets[2] = -2;
  EXPECT_EQ(status_of(bad, {1.0}), KILN_ERR_OUT_OF_RANGE);
  bad = b;
  bad.weights[1] = -1.0f;
  EXPECT_EQ(status_of(bad, {1.0}), KILN_ERR_INVALID_ARGUMENT);
  bad = b;
  bad.inputs.resize(kSeq + 1);
  EXPECT_EQ(status_of(bad, {1.0}), KILN_ERR_INVALID_ARGUMENT);
  std::atomic<bool> cancel{true};
  try {
    graph.forward_loss(p, b.view(), &cancel);
    ADD_FAILURE() << "not cancelled";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_CANCELLED);
  }
}

// ---------------------------------------------------------------------------------------------
// Layout and init

TEST(TrainLayout, CanonicalNamesPerFamily) {
  const ModelConfig gpt2 = make_config({"gpt2", Family::Gpt2, 1, 1, true});
  const ParamLayout l = make_param_layout(gpt2);
  for (const char* name :
       {"model.embed_tokens.weight", "model.embed_positions.weight",
        "model.layers.0.input_layernorm.bias", "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.o_proj.bias", "model.layers.0.mlp.up_proj.bias",
        "model.layers.0.mlp.down_proj.weight", "model.mtp_heads.1.post_attention_layernorm.weight",
        "model.norm.bias"}) {
    EXPECT_NE(l.find(name), nullptr) << name;
  }
  EXPECT_EQ(l.find("lm_head.weight"), nullptr);
  EXPECT_EQ(l.find("model.layers.0.mlp.gate_proj.weight"), nullptr);
  EXPECT_EQ(l.at("model.embed_positions.weight").role, ParamRole::Position);

  const ParamLayout n = make_param_layout(make_config({"nanochat", Family::NanoChat}));
  EXPECT_EQ(n.find("model.norm.weight"), nullptr);  // parameter-free norms have no tensor
  EXPECT_EQ(n.find("model.layers.0.input_layernorm.weight"), nullptr);
  EXPECT_EQ(n.at("lm_head.weight").role, ParamRole::Head);
  EXPECT_EQ(n.at("model.layers.1.self_attn.k_proj.weight").shape,
            (std::vector<int64_t>{8, 12}));  // kv_heads × head_dim, hidden

  const ParamLayout q = make_param_layout(make_config({"qwen3", Family::Qwen3}));
  EXPECT_EQ(q.at("model.layers.1.self_attn.q_norm.weight").shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(q.at("model.layers.1.self_attn.o_proj.weight").shape, (std::vector<int64_t>{12, 24}));
}

TEST(TrainInit, SeededPerFamilyAndOrderIndependent) {
  ModelConfig c = make_config({"nanochat", Family::NanoChat});
  c.hidden_size = 64;
  c.intermediate_size = 256;
  c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 16;
  c.vocab_size = 512;
  const ParamLayout l = make_param_layout(c);
  std::vector<float> a(l.total()), b(l.total()), d(l.total());
  init_params(c, l, 7, a);
  init_params(c, l, 7, b);
  init_params(c, l, 8, d);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, d);
  const auto stats = [&](const std::vector<float>& v, const char* name) {
    const ParamSpec& s = l.at(name);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < s.numel; ++i)
      sum += v[s.offset + i], sq += v[s.offset + i] * v[s.offset + i];
    const double mean = sum / s.numel;
    return std::make_pair(mean, std::sqrt(sq / s.numel - mean * mean));
  };
  // nanochat: embedding N(0,1); c_fc σ = 1/sqrt(64) · min(1, sqrt(256/64)) = 0.125; projections
  // and lm_head zero.
  EXPECT_NEAR(stats(a, "model.embed_tokens.weight").second, 1.0, 0.02);
  EXPECT_NEAR(stats(a, "model.layers.0.mlp.up_proj.weight").second, 0.125, 0.004);
  EXPECT_NEAR(stats(a, "model.layers.0.mlp.up_proj.weight").first, 0.0, 0.004);
  EXPECT_EQ(stats(a, "model.layers.0.mlp.down_proj.weight").second, 0.0);
  EXPECT_EQ(stats(a, "model.layers.0.self_attn.o_proj.weight").second, 0.0);
  EXPECT_EQ(stats(a, "lm_head.weight").second, 0.0);

  // A tensor's values depend on its name and the seed only: the same tensor in a model with MTP
  // heads (a different layout) gets the same values.
  ModelConfig with_mtp = c;
  with_mtp.n_mtp_heads = 1;
  const ParamLayout lm = make_param_layout(with_mtp);
  std::vector<float> m(lm.total());
  init_params(with_mtp, lm, 7, m);
  const ParamSpec& s0 = l.at("model.layers.1.self_attn.q_proj.weight");
  const ParamSpec& s1 = lm.at("model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(0, std::memcmp(a.data() + s0.offset, m.data() + s1.offset, s0.numel * sizeof(float)));

  // GPT-2: residual projections N(0, (0.02/sqrt(2·L))²), LayerNorm weight 1, bias 0.
  ModelConfig g = make_config({"gpt2", Family::Gpt2, 2, 0, true});
  g.hidden_size = 96, g.intermediate_size = 384, g.n_heads = 4, g.n_kv_heads = 4, g.head_dim = 24;
  const ParamLayout gl = make_param_layout(g);
  std::vector<float> gv(gl.total());
  init_params(g, gl, 1, gv);
  const auto gstats = [&](const char* name) {
    const ParamSpec& s = gl.at(name);
    double sq = 0;
    for (int64_t i = 0; i < s.numel; ++i) sq += gv[s.offset + i] * gv[s.offset + i];
    return std::sqrt(sq / s.numel);
  };
  EXPECT_NEAR(gstats("model.layers.0.mlp.down_proj.weight"), 0.01, 0.0005);
  EXPECT_NEAR(gstats("model.layers.0.mlp.up_proj.weight"), 0.02, 0.001);
  EXPECT_EQ(gv[gl.at("model.layers.1.post_attention_layernorm.weight").offset], 1.0f);
  EXPECT_EQ(gv[gl.at("model.layers.1.post_attention_layernorm.bias").offset], 0.0f);
}

}  // namespace
}  // namespace kiln::train

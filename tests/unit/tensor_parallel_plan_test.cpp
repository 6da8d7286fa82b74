// Tensor parallelism on the CPU: the shard plan's ranges for real model shapes and its errors,
// and the proof that the split is right — a random Qwen2-style layer (q/k/v biases, o_proj bias,
// GQA, optionally Qwen3's q/k norm and Phi-3's fused q/k/v tensor) computed the plain way in
// float64 and as the sum over ranks of each rank's partial o_proj and down_proj outputs, from the
// slices ShardedWeights (the code the CUDA ranks upload from) cuts. The float64 layer below is
// written from the HF modelling code (LlamaAttention / Qwen2MLP), independently of kiln's
// executors.
#include "model/tensor_parallel_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "formats/quant/ggml_type.hpp"
#include "model/tensor_parallel_weights.hpp"

namespace kiln {
namespace {

ModelConfig shape(const char* arch, int32_t hidden, int32_t heads, int32_t kv_heads,
                  int32_t head_dim, int32_t intermediate) {
  ModelConfig c;
  c.architecture = arch;
  c.traits = *find_arch_traits(arch);
  c.vocab_size = 64;
  c.hidden_size = hidden;
  c.n_layers = 1;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.intermediate_size = intermediate;
  c.max_position_embeddings = 64;
  return c;
}

template <typename Fn>
void expect_error(kiln_status status, const std::vector<std::string>& parts, Fn&& fn) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    for (const std::string& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
    }
  }
}

// The invariants every plan must keep, checked from the config alone: q heads and FFN columns
// partition their ranges in rank order; every q head of a rank reads (HF's GQA: kv = h / group)
// a KV head the rank holds, at the same local index that a uniform group of the local sizes
// gives (what an unsplit executor computes from shard_config).
void check_plan(const ModelConfig& c, int32_t tp) {
  SCOPED_TRACE(c.architecture + " tp " + std::to_string(tp));
  const int64_t group = c.n_heads / c.n_kv_heads;
  int64_t next_q = 0, next_ffn = 0;
  for (int32_t r = 0; r < tp; ++r) {
    const TensorParallelShard s = plan_tensor_parallel(c, tp, r);
    EXPECT_EQ(s.q_heads.begin, next_q);
    EXPECT_EQ(s.q_heads.count, c.n_heads / tp);
    EXPECT_EQ(s.ffn_columns.begin, next_ffn);
    EXPECT_GT(s.ffn_columns.count, 0);
    next_q = s.q_heads.end();
    next_ffn = s.ffn_columns.end();
    const ModelConfig local = shard_config(c, s);
    const int64_t local_group = local.n_heads / local.n_kv_heads;
    EXPECT_EQ(local.n_heads % local.n_kv_heads, 0);
    for (int64_t h = s.q_heads.begin; h < s.q_heads.end(); ++h) {
      const int64_t kv = h / group;
      EXPECT_GE(kv, s.kv_heads.begin);
      EXPECT_LT(kv, s.kv_heads.end());
      EXPECT_EQ(kv - s.kv_heads.begin, (h - s.q_heads.begin) / local_group);
    }
    EXPECT_EQ(s.q_rows().begin, s.q_heads.begin * c.head_dim);
    EXPECT_EQ(s.kv_rows().count, s.kv_heads.count * c.head_dim);
  }
  EXPECT_EQ(next_q, c.n_heads);
  EXPECT_EQ(next_ffn, c.intermediate_size);
}

TEST(TensorParallelPlan, RealShapesSplitAsDocumented) {
  // Llama-2-7B: 32 heads, 32 KV heads, intermediate 11008 = 2 · 43 · 128.
  const ModelConfig llama7b = shape("LlamaForCausalLM", 4096, 32, 32, 128, 11008);
  for (int32_t tp : {1, 2, 4, 8}) check_plan(llama7b, tp);
  TensorParallelShard s = plan_tensor_parallel(llama7b, 2, 1);
  EXPECT_EQ(s.q_heads, (IndexRange{16, 16}));
  EXPECT_EQ(s.kv_heads, (IndexRange{16, 16}));
  EXPECT_EQ(s.ffn_columns, (IndexRange{5504, 5504}));
  EXPECT_EQ(ffn_alignment(11008, 2), 128);

  // Qwen2.5-7B: 28 heads, 4 KV heads, intermediate 18944 = 74 · 256.
  const ModelConfig qwen7b = shape("Qwen2ForCausalLM", 3584, 28, 4, 128, 18944);
  for (int32_t tp : {1, 2, 4}) check_plan(qwen7b, tp);
  s = plan_tensor_parallel(qwen7b, 4, 3);
  EXPECT_EQ(s.q_heads, (IndexRange{21, 7}));
  EXPECT_EQ(s.kv_heads, (IndexRange{3, 1}));
  EXPECT_EQ(s.q_rows(), (IndexRange{21 * 128, 7 * 128}));
  EXPECT_EQ(s.ffn_columns, (IndexRange{14208, 4736}));  // 18944 / 4, 128-aligned
  EXPECT_EQ(ffn_alignment(18944, 2), 256);

  // Fewer KV heads than ranks: 8 heads, 2 KV heads, 4 ranks. Ranks 0 and 1 hold KV head 0.
  const ModelConfig gqa = shape("Qwen2ForCausalLM", 64, 8, 2, 8, 96);
  check_plan(gqa, 4);
  check_plan(gqa, 8);
  for (int32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(plan_tensor_parallel(gqa, 4, r).kv_heads, (IndexRange{r / 2, 1}));
  }
  // Multi-query attention over 8 ranks: every rank holds the one KV head.
  const ModelConfig mqa = shape("LlamaForCausalLM", 64, 8, 1, 8, 64);
  check_plan(mqa, 8);
}

TEST(TensorParallelPlan, UnevenIntermediateGivesAlignedRangesToEveryRank) {
  // 50 = 2 · 25: over 2 ranks equal shares of 25; over 4 ranks no power of two gives equal
  // shares and only single columns make a unit at most an eighth of a share: 50 units dealt out
  // in order, [0,12) [12,25) [25,37) [37,50). 1001 over 4: 32-column units (32 of them, the last
  // short), 8 per rank: [0,256) [256,512) [512,768) [768,1001).
  const ModelConfig c = shape("LlamaForCausalLM", 32, 8, 2, 4, 50);
  check_plan(c, 2);
  check_plan(c, 4);
  EXPECT_EQ(ffn_alignment(50, 2), 1);
  EXPECT_EQ(ffn_alignment(50, 4), 1);
  const IndexRange want[] = {{0, 12}, {12, 13}, {25, 12}, {37, 13}};
  for (int32_t r = 0; r < 4; ++r) EXPECT_EQ(plan_tensor_parallel(c, 4, r).ffn_columns, want[r]);
  const ModelConfig odd = shape("LlamaForCausalLM", 32, 8, 2, 4, 1001);
  check_plan(odd, 4);
  EXPECT_EQ(ffn_alignment(1001, 4), 32);
  EXPECT_EQ(plan_tensor_parallel(odd, 4, 2).ffn_columns, (IndexRange{512, 256}));
  EXPECT_EQ(plan_tensor_parallel(odd, 4, 3).ffn_columns, (IndexRange{768, 233}));
}

TEST(TensorParallelPlan, RefusesSplitsThatDoNotFit) {
  const ModelConfig qwen05b = shape("Qwen2ForCausalLM", 896, 14, 2, 64, 4864);
  expect_error(KILN_ERR_INVALID_ARGUMENT, {"tensor_parallel is 0"},
               [&] { validate_tensor_parallel(qwen05b, 0); });
  expect_error(KILN_ERR_INVALID_ARGUMENT, {"num_attention_heads 14", "tensor_parallel 4"},
               [&] { validate_tensor_parallel(qwen05b, 4); });
  // 14 heads split over 7 ranks, but 2 KV heads neither divide 7 nor are divided by it.
  expect_error(KILN_ERR_INVALID_ARGUMENT, {"num_key_value_heads 2", "tensor_parallel 7"},
               [&] { validate_tensor_parallel(qwen05b, 7); });
  expect_error(KILN_ERR_INVALID_ARGUMENT, {"intermediate_size 2", "tensor_parallel 4"},
               [&] { validate_tensor_parallel(shape("LlamaForCausalLM", 8, 4, 4, 2, 2), 4); });
  expect_error(KILN_ERR_INVALID_ARGUMENT, {"rank 2", "[0, 2)"},
               [&] { plan_tensor_parallel(qwen05b, 2, 2); });
  ModelConfig gpt2 = shape("GPT2LMHeadModel", 64, 4, 4, 16, 256);
  gpt2.traits.family = ArchFamily::Gpt2;
  expect_error(KILN_ERR_UNSUPPORTED, {"GPT-2"}, [&] { validate_tensor_parallel(gpt2, 2); });
  EXPECT_NO_THROW(validate_tensor_parallel(gpt2, 1));
}

// ---- the float64 proof of the split --------------------------------------------------------

struct OwnedTensor {
  TensorView view;
  std::vector<float> values;
};

class RandomLayer {
 public:
  RandomLayer(const ModelConfig& c, bool fused_qkv, uint32_t seed) : rng_(seed) {
    const int64_t h = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
    LayerWeights& l = weights_.layers.emplace_back();
    l.attn_norm = vec("input_layernorm", h, 1.0);
    l.ffn_norm = vec("post_attention_layernorm", h, 1.0);
    if (fused_qkv) {
      const TensorView& t = add("qkv_proj", {q + 2 * kv, h}, 0.3, 0.0);
      l.wq = {&t, 0, q, h};
      l.wk = {&t, q, kv, h};
      l.wv = {&t, q + kv, kv, h};
    } else {
      l.wq = mat("q_proj", q, h);
      l.wk = mat("k_proj", kv, h);
      l.wv = mat("v_proj", kv, h);
    }
    l.bq = vec("q_proj.bias", q, 0.0);
    l.bk = vec("k_proj.bias", kv, 0.0);
    l.bv = vec("v_proj.bias", kv, 0.0);
    l.bo = vec("o_proj.bias", h, 0.0);
    if (c.qk_norm == QkNormKind::BeforeRopeWeighted) {
      l.q_norm = vec("q_norm", c.head_dim, 1.0);
      l.k_norm = vec("k_norm", c.head_dim, 1.0);
    }
    l.wo = mat("o_proj", h, q);
    l.w_gate = mat("gate_proj", c.intermediate_size, h);
    l.w_up = mat("up_proj", c.intermediate_size, h);
    l.w_down = mat("down_proj", h, c.intermediate_size);
  }
  const TransformerWeights& weights() const { return weights_; }
  std::vector<double> input(int64_t n) {
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<double> x(static_cast<size_t>(n) * weights_.layers[0].attn_norm.rows);
    for (double& v : x) v = d(rng_);
    return x;
  }

 private:
  const TensorView& add(const std::string& name, std::vector<int64_t> shape, double scale,
                        double offset) {
    OwnedTensor& t = tensors_.emplace_back();
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::normal_distribution<float> d(0.0f, 1.0f);
    t.values.resize(static_cast<size_t>(n));
    for (float& v : t.values) v = static_cast<float>(offset + scale * d(rng_));
    t.view.name = name;
    t.view.dtype = DType::F32;
    t.view.shape = std::move(shape);
    t.view.data = reinterpret_cast<const uint8_t*>(t.values.data());
    t.view.nbytes = t.values.size() * sizeof(float);
    t.view.file = "random";
    return t.view;
  }
  WeightRef mat(const std::string& name, int64_t rows, int64_t cols) {
    return {&add(name, {rows, cols}, 1.0 / std::sqrt(static_cast<double>(cols)), 0.0), 0, rows,
            cols};
  }
  WeightRef vec(const std::string& name, int64_t n, double offset) {
    return {&add(name, {n}, 0.2, offset), 0, n, 1};
  }

  std::mt19937 rng_;
  std::deque<OwnedTensor> tensors_;
  TransformerWeights weights_;
};

// A block's values in float64, row-major [rows × cols].
std::vector<double> values(const WeightRef& r) {
  std::vector<double> out(static_cast<size_t>(r.rows * r.cols));
  const auto* f = reinterpret_cast<const float*>(r.data());
  for (size_t i = 0; i < out.size(); ++i) out[i] = f[i];
  return out;
}

// y[n × rows] = x[n × cols] · Wᵀ (+ b)
std::vector<double> linear(const std::vector<double>& x, const WeightRef& w,
                           const WeightRef* bias = nullptr) {
  const std::vector<double> wv = values(w);
  const int64_t n = static_cast<int64_t>(x.size()) / w.cols;
  std::vector<double> y(static_cast<size_t>(n * w.rows));
  const std::vector<double> b = bias && bias->present() ? values(*bias) : std::vector<double>();
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t o = 0; o < w.rows; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < w.cols; ++i) s += x[t * w.cols + i] * wv[o * w.cols + i];
      y[t * w.rows + o] = s;
    }
  }
  return y;
}

// RMSNorm over rows of `width`, times the weight.
std::vector<double> rms_norm(const std::vector<double>& x, const WeightRef& weight, double eps) {
  const std::vector<double> g = values(weight);
  const int64_t width = weight.rows, n = static_cast<int64_t>(x.size()) / width;
  std::vector<double> y(x.size());
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0.0;
    for (int64_t i = 0; i < width; ++i) ss += x[t * width + i] * x[t * width + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(width) + eps);
    for (int64_t i = 0; i < width; ++i) y[t * width + i] = x[t * width + i] * inv * g[i];
  }
  return y;
}

// Rotate-half RoPE of head `h` (of `heads` per row) at position t, inv_freq θ^(-2i/d).
void rope(std::vector<double>& x, int64_t heads, int64_t d, double theta) {
  const int64_t n = static_cast<int64_t>(x.size()) / (heads * d);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      double* v = &x[(t * heads + h) * d];
      for (int64_t i = 0; i < d / 2; ++i) {
        const double a = static_cast<double>(t) * std::pow(theta, -2.0 * i / d);
        const double x1 = v[i], x2 = v[i + d / 2];
        v[i] = x1 * std::cos(a) - x2 * std::sin(a);
        v[i + d / 2] = x2 * std::cos(a) + x1 * std::sin(a);
      }
    }
  }
}

// The attention block up to o_proj (without its bias): what one rank contributes, or the whole
// layer's when given unsplit weights. Head counts come from the blocks' shapes.
std::vector<double> attention_partial(const ModelConfig& c, const LayerWeights& l,
                                      const std::vector<double>& x) {
  const int64_t d = c.head_dim, hq = l.wq.rows / d, hkv = l.wk.rows / d;
  const int64_t n = static_cast<int64_t>(x.size()) / c.hidden_size;
  const std::vector<double> h = rms_norm(x, l.attn_norm, c.rms_norm_eps);
  std::vector<double> q = linear(h, l.wq, &l.bq), k = linear(h, l.wk, &l.bk),
                      v = linear(h, l.wv, &l.bv);
  if (l.q_norm.present()) {
    q = rms_norm(q, l.q_norm, c.rms_norm_eps);
    k = rms_norm(k, l.k_norm, c.rms_norm_eps);
  }
  rope(q, hq, d, c.rope_theta);
  rope(k, hkv, d, c.rope_theta);
  std::vector<double> attn(static_cast<size_t>(n * hq * d), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t head = 0; head < hq; ++head) {
      const int64_t kvh = head / (hq / hkv);
      std::vector<double> p(static_cast<size_t>(t + 1));
      double mx = -1e300;
      for (int64_t s = 0; s <= t; ++s) {
        double dot = 0.0;
        for (int64_t i = 0; i < d; ++i)
          dot += q[(t * hq + head) * d + i] * k[(s * hkv + kvh) * d + i];
        p[s] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, p[s]);
      }
      double z = 0.0;
      for (double& e : p) z += (e = std::exp(e - mx));
      for (int64_t s = 0; s <= t; ++s) {
        for (int64_t i = 0; i < d; ++i) {
          attn[(t * hq + head) * d + i] += p[s] / z * v[(s * hkv + kvh) * d + i];
        }
      }
    }
  }
  return linear(attn, l.wo);
}

// The MLP up to down_proj: down(silu(gate(h)) · up(h)).
std::vector<double> mlp_partial(const ModelConfig& c, const LayerWeights& l,
                                const std::vector<double>& x) {
  const std::vector<double> h = rms_norm(x, l.ffn_norm, c.rms_norm_eps);
  const std::vector<double> g = linear(h, l.w_gate), u = linear(h, l.w_up);
  std::vector<double> a(g.size());
  for (size_t i = 0; i < g.size(); ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return linear(a, l.w_down);
}

void add_into(std::vector<double>& y, const std::vector<double>& d) {
  for (size_t i = 0; i < y.size(); ++i) y[i] += d[i];
}
void add_bias(std::vector<double>& y, const WeightRef& b) {
  const std::vector<double> bv = values(b);
  for (size_t i = 0; i < y.size(); ++i) y[i] += bv[i % bv.size()];
}

// The layer the plain way, or over `tp` ranks with the two all-reduces as sums in rank order; the
// residual and o_proj's bias are added once, after each sum.
std::vector<double> layer_output(const ModelConfig& c, const TransformerWeights& full,
                                 const std::vector<double>& x, int32_t tp) {
  const LayerWeights& l = full.layers[0];
  std::vector<double> x1 = x, attn_sum(x.size(), 0.0), mlp_sum(x.size(), 0.0);
  if (tp == 0) {
    add_into(x1, attention_partial(c, l, x));
  } else {
    for (int32_t r = 0; r < tp; ++r) {
      const ShardedWeights rank(full, plan_tensor_parallel(c, tp, r));
      add_into(attn_sum, attention_partial(c, rank.weights().layers[0], x));
    }
    add_into(x1, attn_sum);
  }
  add_bias(x1, l.bo);
  std::vector<double> x2 = x1;
  if (tp == 0) {
    add_into(x2, mlp_partial(c, l, x1));
  } else {
    for (int32_t r = 0; r < tp; ++r) {
      const TensorParallelShard s = plan_tensor_parallel(c, tp, r);
      const ShardedWeights rank(full, s);
      const LayerWeights& rl = rank.weights().layers[0];
      // The slices have the shapes an unsplit executor of shard_config expects.
      const ModelConfig local = shard_config(c, s);
      EXPECT_EQ(rl.wq.rows, local.n_heads * c.head_dim);
      EXPECT_EQ(rl.wk.rows, local.n_kv_heads * c.head_dim);
      EXPECT_EQ(rl.wo.cols, local.n_heads * c.head_dim);
      EXPECT_EQ(rl.w_down.cols, local.intermediate_size);
      EXPECT_EQ(rl.w_gate.rows, local.intermediate_size);
      add_into(mlp_sum, mlp_partial(c, rl, x1));
    }
    add_into(x2, mlp_sum);
  }
  return x2;
}

void expect_split_equals_plain(ModelConfig c, bool fused, std::initializer_list<int32_t> tps) {
  RandomLayer layer(c, fused, 1234);
  const std::vector<double> x = layer.input(5);
  const std::vector<double> plain = layer_output(c, layer.weights(), x, 0);
  double scale = 0.0;
  for (double v : plain) scale = std::max(scale, std::abs(v));
  for (int32_t tp : tps) {
    const std::vector<double> split = layer_output(c, layer.weights(), x, tp);
    double worst = 0.0;
    for (size_t i = 0; i < plain.size(); ++i)
      worst = std::max(worst, std::abs(split[i] - plain[i]));
    std::printf("%s fused=%d tp=%d: max |split - plain| = %.3g (max |plain| %.3g)\n",
                c.architecture.c_str(), fused ? 1 : 0, tp, worst, scale);
    // Only the order of float64 additions differs: a few ulps of the output's scale.
    EXPECT_LT(worst, 1e-12 * scale) << "tp " << tp;
  }
}

TEST(TensorParallelSplit, Qwen2LayerSumOfRanksEqualsUnsplitLayer) {
  // 8 q heads over 2 KV heads (group 4), intermediate 50 (uneven over 4 ranks), biases.
  expect_split_equals_plain(shape("Qwen2ForCausalLM", 32, 8, 2, 4, 50), false, {1, 2, 4, 8});
}

TEST(TensorParallelSplit, FusedQkvAndQkNormSplitToo) {
  ModelConfig phi3 = shape("Phi3ForCausalLM", 32, 4, 4, 8, 64);
  expect_split_equals_plain(phi3, true, {1, 2, 4});
  ModelConfig qwen3 = shape("Qwen3ForCausalLM", 32, 8, 4, 4, 48);
  qwen3.qk_norm = QkNormKind::BeforeRopeWeighted;
  expect_split_equals_plain(qwen3, false, {2, 4, 8});
}

TEST(TensorParallelSplit, AWrongSliceIsCaught) {
  // The check above can fail: a shard whose KV heads are off by one gives a different layer.
  const ModelConfig c = shape("Qwen2ForCausalLM", 32, 8, 4, 4, 32);
  RandomLayer layer(c, false, 99);
  const std::vector<double> x = layer.input(3);
  TensorParallelShard good = plan_tensor_parallel(c, 2, 0);
  TensorParallelShard bad = good;
  bad.kv_heads.begin = 1;
  const ShardedWeights a(layer.weights(), good), b(layer.weights(), bad);
  const std::vector<double> pa = attention_partial(c, a.weights().layers[0], x);
  const std::vector<double> pb = attention_partial(c, b.weights().layers[0], x);
  double diff = 0.0;
  for (size_t i = 0; i < pa.size(); ++i) diff = std::max(diff, std::abs(pa[i] - pb[i]));
  EXPECT_GT(diff, 1e-3);
}

// Column slices of a GGUF block format copy whole blocks; a range inside a block is refused.
TEST(TensorParallelSplit, QuantisedColumnSlicesCopyWholeBlocks) {
  constexpr int64_t kRows = 3, kCols = 64;  // Q8_0: 32 columns in 34 bytes per block
  std::vector<uint8_t> bytes(kRows * 2 * 34);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  TensorView t;
  t.name = "down_proj";
  t.dtype = DType::GGML;
  t.ggml_type = quant::GgmlType::Q8_0;
  t.shape = {kRows, kCols};
  t.data = bytes.data();
  t.nbytes = bytes.size();
  TransformerWeights w;
  LayerWeights& l = w.layers.emplace_back();
  l.w_down = {&t, 0, kRows, kCols};
  TensorParallelShard s;
  s.world_size = 2;
  s.rank = 1;
  s.head_dim = 1;
  s.ffn_columns = {32, 32};
  const ShardedWeights sharded(w, s);
  const WeightRef& d = sharded.weights().layers[0].w_down;
  ASSERT_EQ(d.cols, 32);
  ASSERT_EQ(d.nbytes(), static_cast<size_t>(kRows * 34));
  for (int64_t r = 0; r < kRows; ++r) {
    EXPECT_EQ(std::memcmp(d.data() + r * 34, bytes.data() + r * 68 + 34, 34), 0) << "row " << r;
  }
  s.ffn_columns = {16, 48};
  expect_error(KILN_ERR_UNSUPPORTED, {"down_proj", "q8_0", "[16, 64)"},
               [&] { const ShardedWeights bad(w, s); });
}

}  // namespace
}  // namespace kiln

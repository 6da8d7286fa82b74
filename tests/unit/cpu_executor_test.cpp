// The CPU transformer on tiny random models vs a float64 forward pass written here from the HF
// Llama-family math (its own RMSNorm, RoPE, attention and MLP loops). Weights are hand-built
// TensorViews over test-owned memory, so no file parsing is involved.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_transformer.hpp"
#include "core/error.hpp"
#include "test_support.hpp"

namespace kiln::cpu {
namespace {

using kiln::test::relative_l2;

enum class Storage { F32, F32Misaligned, BF16 };

struct Variant {
  const char* name;
  bool qk_norm = false;
  bool tied = false;
  bool o_bias = false;
  bool fused = false;  // Phi3-style qkv_proj / gate_up_proj, referenced as row slices
  float partial_rotary = 1.0f;
  Storage storage = Storage::F32;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

using Matrix = std::vector<double>;  // row-major; what the model computes with, exactly

// One stored tensor: its bytes (in the variant's storage) and the values those bytes decode to.
class TensorPool {
 public:
  const TensorView* add(const std::string& name, std::vector<int64_t> shape,
                        const std::vector<float>& values, Storage storage, Matrix& decoded) {
    auto& bytes = buffers_.emplace_back();
    TensorView view;
    view.name = name;
    view.shape = std::move(shape);
    view.file = "test-memory";
    decoded.resize(values.size());
    if (storage == Storage::BF16) {
      view.dtype = DType::BF16;
      bytes.resize(values.size() * 2);
      for (size_t i = 0; i < values.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &values[i], 4);
        const auto half = static_cast<uint16_t>(bits >> 16);  // truncation is a valid bf16 value
        std::memcpy(bytes.data() + 2 * i, &half, 2);
        const uint32_t back = static_cast<uint32_t>(half) << 16;
        float f;
        std::memcpy(&f, &back, 4);
        decoded[i] = f;
      }
      view.data = bytes.data();
    } else {
      view.dtype = DType::F32;
      const size_t offset = storage == Storage::F32Misaligned ? 2 : 0;
      bytes.resize(values.size() * 4 + offset);
      std::memcpy(bytes.data() + offset, values.data(), values.size() * 4);
      for (size_t i = 0; i < values.size(); ++i) decoded[i] = values[i];
      view.data = bytes.data() + offset;
    }
    view.nbytes = values.size() * (storage == Storage::BF16 ? 2 : 4);
    views_.push_back(std::move(view));
    n_elements_ += static_cast<int64_t>(values.size());
    return &views_.back();
  }
  int64_t n_elements() const { return n_elements_; }

 private:
  std::deque<std::vector<uint8_t>> buffers_;
  std::deque<TensorView> views_;
  int64_t n_elements_ = 0;
};

struct RefLayer {
  Matrix attn_norm, wq, wk, wv, wo, bq, bk, bv, bo, q_norm, k_norm, ffn_norm, w_gate, w_up, w_down;
};

// A random model: config, weights as views, the same values in double, and RoPE frequencies.
struct TestModel {
  ModelConfig config;
  TensorPool pool;
  TransformerWeights weights;
  Matrix embed, final_norm, lm_head;
  std::vector<RefLayer> layers;
  std::vector<float> inv_freq;
  int64_t rot_dim = 0;

  explicit TestModel(const Variant& v, uint32_t seed = 1234) {
    config.architecture = "TestForCausalLM";
    config.traits = ArchTraits{"TestForCausalLM", true, v.qk_norm, v.fused, v.fused, true};
    config.qk_norm = v.qk_norm ? QkNormKind::BeforeRopeWeighted : QkNormKind::None;
    config.vocab_size = 37;
    config.hidden_size = 48;
    config.n_layers = 2;
    config.n_heads = 4;
    config.n_kv_heads = 2;
    config.head_dim = 12;
    config.intermediate_size = 67;
    config.max_position_embeddings = 64;
    config.rms_norm_eps = 1e-5f;
    config.rope_theta = 10000.0f;
    config.partial_rotary_factor = v.partial_rotary;
    config.tie_word_embeddings = v.tied;
    config.attention_bias = v.o_bias;

    rot_dim = static_cast<int64_t>(config.head_dim * v.partial_rotary);
    for (int64_t i = 0; i < rot_dim / 2; ++i) {
      inv_freq.push_back(
          static_cast<float>(1.0 / std::pow(double{config.rope_theta}, 2.0 * i / rot_dim)));
    }

    std::mt19937 gen(seed);
    auto uniform = [&](size_t n, double lo, double hi) {
      std::uniform_real_distribution<float> d(static_cast<float>(lo), static_cast<float>(hi));
      std::vector<float> out(n);
      for (auto& x : out) x = d(gen);
      return out;
    };
    const int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
    const int64_t qd = config.n_heads * config.head_dim, kvd = config.n_kv_heads * config.head_dim;
    const Storage s = v.storage;
    auto matrix = [&](const std::string& name, int64_t rows, int64_t cols, Matrix& decoded) {
      const double a = 1.0 / std::sqrt(static_cast<double>(cols));
      const TensorView* t = pool.add(name, {rows, cols}, uniform(rows * cols, -a, a), s, decoded);
      return WeightRef{t, 0, rows, cols};
    };
    auto vec = [&](const std::string& name, int64_t n, double lo, double hi, Matrix& decoded) {
      const TensorView* t = pool.add(name, {n}, uniform(n, lo, hi), s, decoded);
      return WeightRef{t, 0, n, 1};
    };
    // Row block [row_begin, row_begin + rows) of a decoded matrix.
    auto rows_of = [](const Matrix& m, int64_t cols, int64_t begin, int64_t rows) {
      return Matrix(m.begin() + begin * cols, m.begin() + (begin + rows) * cols);
    };

    {
      const TensorView* t =
          pool.add("model.embed_tokens.weight", {V, H}, uniform(V * H, -1, 1), s, embed);
      weights.embed = WeightRef{t, 0, V, H};
    }
    weights.final_norm = vec("model.norm.weight", H, 0.8, 1.2, final_norm);
    if (v.tied) {
      weights.lm_head = weights.embed;
      lm_head = embed;
    } else {
      weights.lm_head = matrix("lm_head.weight", V, H, lm_head);
    }
    for (int l = 0; l < config.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      LayerWeights lw;
      RefLayer r;
      lw.attn_norm = vec(p + "input_layernorm.weight", H, 0.8, 1.2, r.attn_norm);
      if (v.fused) {
        Matrix qkv;
        const WeightRef all = matrix(p + "self_attn.qkv_proj.weight", qd + 2 * kvd, H, qkv);
        lw.wq = WeightRef{all.tensor, 0, qd, H};
        lw.wk = WeightRef{all.tensor, qd, kvd, H};
        lw.wv = WeightRef{all.tensor, qd + kvd, kvd, H};
        r.wq = rows_of(qkv, H, 0, qd);
        r.wk = rows_of(qkv, H, qd, kvd);
        r.wv = rows_of(qkv, H, qd + kvd, kvd);
      } else {
        lw.wq = matrix(p + "self_attn.q_proj.weight", qd, H, r.wq);
        lw.wk = matrix(p + "self_attn.k_proj.weight", kvd, H, r.wk);
        lw.wv = matrix(p + "self_attn.v_proj.weight", kvd, H, r.wv);
      }
      lw.bq = vec(p + "self_attn.q_proj.bias", qd, -0.3, 0.3, r.bq);
      lw.bk = vec(p + "self_attn.k_proj.bias", kvd, -0.3, 0.3, r.bk);
      lw.bv = vec(p + "self_attn.v_proj.bias", kvd, -0.3, 0.3, r.bv);
      lw.wo = matrix(p + "self_attn.o_proj.weight", H, qd, r.wo);
      if (v.o_bias) lw.bo = vec(p + "self_attn.o_proj.bias", H, -0.3, 0.3, r.bo);
      if (v.qk_norm) {
        lw.q_norm = vec(p + "self_attn.q_norm.weight", config.head_dim, 0.5, 1.5, r.q_norm);
        lw.k_norm = vec(p + "self_attn.k_norm.weight", config.head_dim, 0.5, 1.5, r.k_norm);
      }
      lw.ffn_norm = vec(p + "post_attention_layernorm.weight", H, 0.8, 1.2, r.ffn_norm);
      if (v.fused) {
        Matrix gu;
        const WeightRef all = matrix(p + "mlp.gate_up_proj.weight", 2 * I, H, gu);
        lw.w_gate = WeightRef{all.tensor, 0, I, H};
        lw.w_up = WeightRef{all.tensor, I, I, H};
        r.w_gate = rows_of(gu, H, 0, I);
        r.w_up = rows_of(gu, H, I, I);
      } else {
        lw.w_gate = matrix(p + "mlp.gate_proj.weight", I, H, r.w_gate);
        lw.w_up = matrix(p + "mlp.up_proj.weight", I, H, r.w_up);
      }
      lw.w_down = matrix(p + "mlp.down_proj.weight", H, I, r.w_down);
      weights.layers.push_back(lw);
      layers.push_back(std::move(r));
    }
  }

  CpuTransformer build(int n_threads = 2) const {
    return CpuTransformer(config, weights, inv_freq, n_threads);
  }
};

// ---------------------------------------------------------------------------------------------
// float64 reference forward, all positions from 0.

void ref_rms_norm(double* v, const Matrix& w, int64_t dim, double eps) {
  double ms = 0;
  for (int64_t i = 0; i < dim; ++i) ms += v[i] * v[i];
  const double inv = 1.0 / std::sqrt(ms / static_cast<double>(dim) + eps);
  for (int64_t i = 0; i < dim; ++i) v[i] = v[i] * inv * w[i];
}

// out[rows × n] = in[rows × k] · Wᵀ (+ b)
Matrix ref_linear(const Matrix& in, const Matrix& w, const Matrix* b, int64_t rows, int64_t k,
                  int64_t n) {
  Matrix out(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = (b && !b->empty()) ? (*b)[j] : 0.0;
      for (int64_t i = 0; i < k; ++i) acc += in[r * k + i] * w[j * k + i];
      out[r * n + j] = acc;
    }
  }
  return out;
}

void ref_rope(double* head, int64_t pos, int64_t rot_dim, const std::vector<float>& inv_freq) {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq[i];
    const double a = head[i], b = head[i + half];
    head[i] = a * std::cos(angle) - b * std::sin(angle);
    head[i + half] = b * std::cos(angle) + a * std::sin(angle);
  }
}

// Logits for every position of `ids` ([n × vocab]).
std::vector<float> reference_forward(const TestModel& m, const std::vector<int32_t>& ids) {
  const ModelConfig& c = m.config;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nh = c.n_heads, nkv = c.n_kv_heads, qd = nh * hd, kvd = nkv * hd;
  const double eps = c.rms_norm_eps;

  Matrix x(static_cast<size_t>(n * H));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < H; ++i) x[t * H + i] = m.embed[ids[t] * H + i];
  }
  for (const RefLayer& L : m.layers) {
    Matrix h = x;
    for (int64_t t = 0; t < n; ++t) ref_rms_norm(&h[t * H], L.attn_norm, H, eps);
    Matrix q = ref_linear(h, L.wq, &L.bq, n, H, qd);
    Matrix k = ref_linear(h, L.wk, &L.bk, n, H, kvd);
    Matrix v = ref_linear(h, L.wv, &L.bv, n, H, kvd);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t head = 0; head < nh; ++head) {
        if (c.traits.qk_norm) ref_rms_norm(&q[t * qd + head * hd], L.q_norm, hd, eps);
        ref_rope(&q[t * qd + head * hd], t, m.rot_dim, m.inv_freq);
      }
      for (int64_t head = 0; head < nkv; ++head) {
        if (c.traits.qk_norm) ref_rms_norm(&k[t * kvd + head * hd], L.k_norm, hd, eps);
        ref_rope(&k[t * kvd + head * hd], t, m.rot_dim, m.inv_freq);
      }
    }
    Matrix attn(static_cast<size_t>(n * qd), 0.0);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t head = 0; head < nh; ++head) {
        const int64_t kvh = head / (nh / nkv);
        std::vector<double> w(static_cast<size_t>(t + 1));
        double mx = -INFINITY, z = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += q[t * qd + head * hd + d] * k[j * kvd + kvh * hd + d];
          w[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, w[j]);
        }
        for (auto& e : w) z += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= t; ++j) {
          for (int64_t d = 0; d < hd; ++d) {
            attn[t * qd + head * hd + d] += w[j] / z * v[j * kvd + kvh * hd + d];
          }
        }
      }
    }
    const Matrix o = ref_linear(attn, L.wo, &L.bo, n, qd, H);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];

    h = x;
    for (int64_t t = 0; t < n; ++t) ref_rms_norm(&h[t * H], L.ffn_norm, H, eps);
    const Matrix g = ref_linear(h, L.w_gate, nullptr, n, H, I);
    Matrix u = ref_linear(h, L.w_up, nullptr, n, H, I);
    for (size_t i = 0; i < u.size(); ++i) u[i] *= g[i] / (1.0 + std::exp(-g[i]));
    const Matrix d = ref_linear(u, L.w_down, nullptr, n, I, H);
    for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
  }
  for (int64_t t = 0; t < n; ++t) ref_rms_norm(&x[t * H], m.final_norm, H, eps);
  const Matrix logits = ref_linear(x, m.lm_head, nullptr, n, H, c.vocab_size);
  return std::vector<float>(logits.begin(), logits.end());
}

const std::vector<int32_t> kIds = {3, 17, 0, 36, 5, 5, 22, 9, 14};  // 9 tokens, a repeat
constexpr double kTolerance = 1e-5;

const Variant kVariants[] = {
    {.name = "untied"},
    {.name = "tied", .tied = true},
    {.name = "qk_norm+o_bias", .qk_norm = true, .o_bias = true},
    {.name = "qk_norm+tied", .qk_norm = true, .tied = true},
    {.name = "fused+partial_rotary", .fused = true, .partial_rotary = 0.5f},
    {.name = "bf16", .tied = true, .storage = Storage::BF16},
    {.name = "f32_misaligned", .o_bias = true, .storage = Storage::F32Misaligned},
};

class CpuExecutor : public testing::TestWithParam<Variant> {};

TEST_P(CpuExecutor, BatchLogitsForAllPositionsMatchFloat64Reference) {
  const TestModel model(GetParam());
  const CpuTransformer exec = model.build();
  const auto state = exec.create_state(16);
  const int64_t V = model.config.vocab_size;
  std::vector<float> logits(kIds.size() * V, NAN);
  exec.forward(*state, kIds, 0, logits.data(), true, nullptr);
  const auto ref = reference_forward(model, kIds);
  EXPECT_LE(relative_l2(logits.data(), ref.data(), logits.size()), kTolerance);
  // Each row on its own, so one good row cannot hide a bad one.
  for (size_t t = 0; t < kIds.size(); ++t) {
    EXPECT_LE(relative_l2(&logits[t * V], &ref[t * V], V), kTolerance) << "row " << t;
  }
}

TEST_P(CpuExecutor, IncrementalDecodingMatchesBatchRows) {
  const TestModel model(GetParam());
  const CpuTransformer exec = model.build();
  const int64_t V = model.config.vocab_size;
  const int n = static_cast<int>(kIds.size());

  std::vector<float> batch(n * V);
  {
    const auto state = exec.create_state(n);
    exec.forward(*state, kIds, 0, batch.data(), true, nullptr);
  }
  const auto ref = reference_forward(model, kIds);

  for (bool prefill_logits : {true, false}) {
    SCOPED_TRACE(prefill_logits ? "prefill with logits" : "prefill without logits");
    const auto state = exec.create_state(n);  // exactly full at the end
    std::vector<float> last(V, NAN);
    const std::span<const int32_t> ids(kIds);
    exec.forward(*state, ids.first(5), 0, prefill_logits ? last.data() : nullptr, false, nullptr);
    if (prefill_logits) {
      EXPECT_LE(relative_l2(last.data(), &batch[4 * V], V), kTolerance);
    }
    for (int pos = 5; pos < n; ++pos) {
      exec.forward(*state, ids.subspan(pos, 1), pos, last.data(), false, nullptr);
      EXPECT_LE(relative_l2(last.data(), &batch[pos * V], V), kTolerance) << "position " << pos;
      EXPECT_LE(relative_l2(last.data(), &ref[pos * V], V), kTolerance) << "position " << pos;
    }
  }
}

TEST_P(CpuExecutor, ThreadCountDoesNotChangeBits) {
  const TestModel model(GetParam());
  const int64_t V = model.config.vocab_size;
  std::vector<float> one(kIds.size() * V), two(kIds.size() * V);
  for (auto [threads, out] : {std::pair{1, &one}, std::pair{2, &two}}) {
    const CpuTransformer exec = model.build(threads);
    const auto state = exec.create_state(16);
    exec.forward(*state, kIds, 0, out->data(), true, nullptr);
  }
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

TEST_P(CpuExecutor, CountsEachDistinctParameterOnce) {
  const TestModel model(GetParam());
  EXPECT_EQ(model.build().n_parameters(), model.pool.n_elements());
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuExecutor, testing::ValuesIn(kVariants),
                         [](const testing::TestParamInfo<Variant>& info) {
                           std::string name = info.param.name;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// ---------------------------------------------------------------------------------------------
// Errors

kiln_status status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.status();
  }
  return KILN_OK;
}

TEST(CpuExecutorErrors, CancelFlagThrowsCancelledAndTheSessionStaysUsable) {
  const TestModel model(Variant{.name = "untied"});
  const CpuTransformer exec = model.build();
  const auto state = exec.create_state(16);
  const int64_t V = model.config.vocab_size;
  std::vector<float> logits(V);
  const std::span<const int32_t> ids(kIds);
  exec.forward(*state, ids.first(3), 0, nullptr, false, nullptr);

  std::atomic<bool> cancel{true};
  EXPECT_EQ(
      status_of([&] { exec.forward(*state, ids.subspan(3, 4), 3, logits.data(), false, &cancel); }),
      KILN_ERR_CANCELLED);
  // Retrying the same positions after the cancel gives the right answer.
  cancel = false;
  exec.forward(*state, ids.subspan(3, 4), 3, logits.data(), false, &cancel);
  const auto ref = reference_forward(model, std::vector<int32_t>(kIds.begin(), kIds.begin() + 7));
  EXPECT_LE(relative_l2(logits.data(), &ref[6 * V], V), kTolerance);
}

TEST(CpuExecutorErrors, ProgressCallbackCanCancelTheLoad) {
  const TestModel model(Variant{.name = "bf16", .storage = Storage::BF16});
  int calls = 0;
  const ProgressFn stop_at_first = [&](float fraction, const char*) {
    ++calls;
    EXPECT_GT(fraction, 0.0f);
    return false;
  };
  EXPECT_EQ(status_of([&] {
              CpuTransformer(model.config, model.weights, model.inv_freq, 1, {}, stop_at_first);
            }),
            KILN_ERR_CANCELLED);
  EXPECT_EQ(calls, 1);
}

TEST(CpuExecutorErrors, WrongWeightShapeIsAFormatErrorNamingTheTensor) {
  TestModel model(Variant{.name = "untied"});
  model.weights.layers[1].wk.rows -= 1;
  try {
    model.build();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_FORMAT);
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn.k_proj.weight"),
              std::string::npos)
        << e.what();
  }
  TestModel missing(Variant{.name = "qk_norm", .qk_norm = true});
  missing.weights.layers[0].k_norm = WeightRef{};
  EXPECT_EQ(status_of([&] { missing.build(); }), KILN_ERR_FORMAT);
}

TEST(CpuExecutorErrors, HugeContextIsOutOfMemoryWithTheBytes) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer aborts on an impossible allocation instead of throwing";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "AddressSanitizer aborts on an impossible allocation instead of throwing";
#endif
#endif
  const TestModel model(Variant{.name = "untied"});
  const CpuTransformer exec = model.build();
  // 2 caches × 2 layers × 2^31 positions × 24 floats: ~824 GB.
  try {
    const auto state = exec.create_state(std::numeric_limits<int32_t>::max());
    GTEST_SKIP() << "this host's overcommit policy granted the allocation";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_OUT_OF_MEMORY);
    EXPECT_NE(std::string(e.what()).find("824633720448"), std::string::npos) << e.what();
  }
}

TEST(CpuExecutorErrors, PositionsPastTheContextAreRejected) {
  const TestModel model(Variant{.name = "untied"});
  const CpuTransformer exec = model.build();
  const auto state = exec.create_state(4);
  const std::span<const int32_t> ids(kIds);
  EXPECT_EQ(status_of([&] { exec.forward(*state, ids.first(5), 0, nullptr, false, nullptr); }),
            KILN_ERR_CONTEXT_FULL);
  const std::vector<int32_t> bad = {37};
  EXPECT_EQ(status_of([&] { exec.forward(*state, bad, 0, nullptr, false, nullptr); }),
            KILN_ERR_OUT_OF_RANGE);
}

}  // namespace
}  // namespace kiln::cpu

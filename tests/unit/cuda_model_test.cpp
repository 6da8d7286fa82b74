// The CUDA executor on small random models against the CPU executor (itself checked against a
// float64 forward pass in cpu_executor_test), prefill and step-by-step decode; the out-of-memory
// paths under a device-memory cap; load cancellation; two sessions from two threads; the backend
// factory. Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <atomic>
#include <cmath>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_transformer.hpp"
#include "backend/cuda/cuda_transformer.hpp"
#include "backend/cuda/device_memory.hpp"
#include "core/error.hpp"
#include "cuda_test_util.hpp"
#include "test_support.hpp"

namespace kiln {
std::unique_ptr<Backend> make_cuda_backend(int device_index, uint64_t memory_limit,
                                           std::string* why_not);
}

namespace kiln::cuda {
namespace {

using kiln::test::relative_l2;

enum class Storage { F32, F16, BF16 };

struct Variant {
  const char* name;
  bool qkv_bias = false, o_bias = false, qk_norm = false, fused = false, tied = false;
  float partial_rotary = 1.0f;
  Storage storage = Storage::BF16;
  int32_t n_heads = 4, n_kv_heads = 2, head_dim = 16;
  // 2048 and up: the decode step runs RMSNorm as its own kernel and the products over rows this
  // long split each row over several warps (kernels/gemv.cu).
  int32_t hidden = 72, intermediate = 131;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

uint16_t f32_to_f16_bits(float f) {  // round to nearest; values here are normal and small
  uint32_t b;
  std::memcpy(&b, &f, 4);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((b >> 23) & 0xFF) - 127 + 15;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  const uint32_t mant = (b & 0x7FFFFFu) + 0x1000u;  // round half up at bit 13
  return static_cast<uint16_t>(sign | ((exp << 10) + (mant >> 13)));
}

// Stored tensors over test-owned bytes.
class TensorPool {
 public:
  const TensorView* add(const std::string& name, std::vector<int64_t> shape,
                        const std::vector<float>& values, Storage storage) {
    auto& bytes = buffers_.emplace_back();
    TensorView view;
    view.name = name;
    view.shape = std::move(shape);
    view.file = "test-memory";
    const size_t n = values.size();
    if (storage == Storage::F32) {
      view.dtype = DType::F32;
      bytes.resize(n * 4);
      std::memcpy(bytes.data(), values.data(), n * 4);
    } else {
      view.dtype = storage == Storage::F16 ? DType::F16 : DType::BF16;
      bytes.resize(n * 2);
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h =
            storage == Storage::F16 ? f32_to_f16_bits(values[i]) : test::to_bf16_bits(values[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    view.data = bytes.data();
    view.nbytes = bytes.size();
    views_.push_back(std::move(view));
    return &views_.back();
  }

 private:
  std::deque<std::vector<uint8_t>> buffers_;
  std::deque<TensorView> views_;
};

struct TestModel {
  ModelConfig config;
  TensorPool pool;
  TransformerWeights weights;
  std::vector<float> inv_freq;

  explicit TestModel(const Variant& v, uint32_t seed = 77) {
    config.architecture = "TestForCausalLM";
    config.traits = ArchTraits{"TestForCausalLM", v.qkv_bias, v.qk_norm, v.fused, v.fused, true};
    config.qk_norm = v.qk_norm ? QkNormKind::BeforeRopeWeighted : QkNormKind::None;
    config.vocab_size = 61;
    config.hidden_size = v.hidden;
    config.n_layers = 3;
    config.n_heads = v.n_heads;
    config.n_kv_heads = v.n_kv_heads;
    config.head_dim = v.head_dim;
    config.intermediate_size = v.intermediate;
    config.max_position_embeddings = 1024;
    config.rms_norm_eps = 1e-5f;
    config.rope_theta = 10000.0f;
    config.partial_rotary_factor = v.partial_rotary;
    config.tie_word_embeddings = v.tied;
    config.attention_bias = v.o_bias;
    const auto rot = static_cast<int64_t>(static_cast<float>(v.head_dim) * v.partial_rotary);
    for (int64_t i = 0; i < rot / 2; ++i) {
      inv_freq.push_back(static_cast<float>(1.0 / std::pow(1e4, 2.0 * double(i) / double(rot))));
    }

    std::mt19937 gen(seed);
    auto uniform = [&](int64_t n, double lo, double hi) {
      std::uniform_real_distribution<float> d(static_cast<float>(lo), static_cast<float>(hi));
      std::vector<float> out(static_cast<size_t>(n));
      for (auto& x : out) x = d(gen);
      return out;
    };
    const int64_t H = config.hidden_size, I = config.intermediate_size, V = config.vocab_size;
    const int64_t qd = int64_t{v.n_heads} * v.head_dim, kvd = int64_t{v.n_kv_heads} * v.head_dim;
    auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
      const double a = 1.7 / std::sqrt(static_cast<double>(cols));
      return WeightRef{pool.add(name, {rows, cols}, uniform(rows * cols, -a, a), v.storage), 0,
                       rows, cols};
    };
    auto vec = [&](const std::string& name, int64_t n, double lo, double hi) {
      return WeightRef{pool.add(name, {n}, uniform(n, lo, hi), v.storage), 0, n, 1};
    };
    weights.embed = WeightRef{pool.add("embed", {V, H}, uniform(V * H, -1, 1), v.storage), 0, V, H};
    weights.final_norm = vec("norm", H, 0.8, 1.2);
    weights.lm_head = v.tied ? weights.embed : matrix("lm_head", V, H);
    for (int l = 0; l < config.n_layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      LayerWeights lw;
      lw.attn_norm = vec(p + "input_layernorm", H, 0.8, 1.2);
      if (v.fused) {
        const WeightRef all = matrix(p + "qkv_proj", qd + 2 * kvd, H);
        lw.wq = WeightRef{all.tensor, 0, qd, H};
        lw.wk = WeightRef{all.tensor, qd, kvd, H};
        lw.wv = WeightRef{all.tensor, qd + kvd, kvd, H};
      } else {
        lw.wq = matrix(p + "q_proj", qd, H);
        lw.wk = matrix(p + "k_proj", kvd, H);
        lw.wv = matrix(p + "v_proj", kvd, H);
      }
      if (v.qkv_bias) {
        lw.bq = vec(p + "q_bias", qd, -0.3, 0.3);
        lw.bk = vec(p + "k_bias", kvd, -0.3, 0.3);
        lw.bv = vec(p + "v_bias", kvd, -0.3, 0.3);
      }
      lw.wo = matrix(p + "o_proj", H, qd);
      if (v.o_bias) lw.bo = vec(p + "o_bias", H, -0.3, 0.3);
      if (v.qk_norm) {
        lw.q_norm = vec(p + "q_norm", v.head_dim, 0.5, 1.5);
        lw.k_norm = vec(p + "k_norm", v.head_dim, 0.5, 1.5);
      }
      lw.ffn_norm = vec(p + "post_attention_layernorm", H, 0.8, 1.2);
      if (v.fused) {
        const WeightRef all = matrix(p + "gate_up_proj", 2 * I, H);
        lw.w_gate = WeightRef{all.tensor, 0, I, H};
        lw.w_up = WeightRef{all.tensor, I, I, H};
      } else {
        lw.w_gate = matrix(p + "gate_proj", I, H);
        lw.w_up = matrix(p + "up_proj", I, H);
      }
      lw.w_down = matrix(p + "down_proj", H, I);
      weights.layers.push_back(lw);
    }
  }
};

std::shared_ptr<DeviceAllocator> uncapped() { return DeviceAllocator::create(0, 0, "test GPU"); }

std::vector<int32_t> random_ids(size_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = d(gen);
  return ids;
}

// Prefill `prompt` (logits of every row), then decode `extra` one at a time (last-row logits).
std::vector<std::vector<float>> run(const ModelExecutor& exec, SessionState& state,
                                    const std::vector<int32_t>& prompt,
                                    const std::vector<int32_t>& extra, int32_t vocab) {
  std::vector<std::vector<float>> out;
  out.emplace_back(prompt.size() * vocab, NAN);
  exec.forward(state, prompt, 0, out.back().data(), true, nullptr);
  for (size_t i = 0; i < extra.size(); ++i) {
    out.emplace_back(vocab, NAN);
    exec.forward(state, std::span(&extra[i], 1), static_cast<int32_t>(prompt.size() + i),
                 out.back().data(), false, nullptr);
  }
  return out;
}

class CudaModel : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

TEST_P(CudaModel, LogitsMatchTheCpuExecutorInPrefillAndDecode) {
  const Variant v = GetParam();
  TestModel m(v);
  const cpu::CpuTransformer cpu(m.config, m.weights, m.inv_freq, 2);
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  EXPECT_EQ(gpu.n_parameters(), cpu.n_parameters());
  const auto prompt = random_ids(21, m.config.vocab_size, 5);
  const auto extra = random_ids(6, m.config.vocab_size, 6);
  auto cpu_state = cpu.create_state(64);
  auto gpu_state = gpu.create_state(64);
  const auto want = run(cpu, *cpu_state, prompt, extra, m.config.vocab_size);
  const auto got = run(gpu, *gpu_state, prompt, extra, m.config.vocab_size);
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = relative_l2(got[i].data(), want[i].data(), want[i].size());
    // BF16 weights (when stored wider), BF16 matrix inputs and BF16 KV cache.
    EXPECT_LE(err, 1e-2) << (i == 0 ? "prefill" : "decode step " + std::to_string(i));
    EXPECT_FALSE(std::isnan(err));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CudaModel,
    ::testing::Values(
        Variant{"plain"}, Variant{"qwen2_biases", true}, Variant{"o_bias", false, true},
        Variant{"qwen3_qk_norm", false, false, true},
        Variant{"phi3_fused", false, false, false, true},
        Variant{"tied", false, false, false, false, true},
        Variant{"partial_rotary", false, false, false, false, false, 0.5f},
        Variant{"f32_storage", true, false, false, false, false, 1.0f, Storage::F32},
        Variant{"f16_storage", false, false, false, false, false, 1.0f, Storage::F16},
        Variant{"gqa7_dim64", true, false, false, false, true, 1.0f, Storage::BF16, 14, 2, 64},
        Variant{"mha_dim128", false, false, true, false, false, 1.0f, Storage::BF16, 2, 2, 128},
        Variant{"wide_hidden", true, false, true, false, false, 1.0f, Storage::BF16, 16, 4, 128,
                2048, 4104}),
    [](const auto& info) { return std::string(info.param.name); });

class CudaExecutor : public ::testing::Test {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

TEST_F(CudaExecutor, LongContextDecodeCrossesAttentionSplits) {
  TestModel m(Variant{"long", true});
  const cpu::CpuTransformer cpu(m.config, m.weights, m.inv_freq, 2);
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  const auto prompt = random_ids(600, m.config.vocab_size, 8);  // > 2 splits of 256 keys
  const auto extra = random_ids(3, m.config.vocab_size, 9);
  auto cs = cpu.create_state(700);
  auto gs = gpu.create_state(700);
  const auto want = run(cpu, *cs, prompt, extra, m.config.vocab_size);
  const auto got = run(gpu, *gs, prompt, extra, m.config.vocab_size);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_LE(relative_l2(got[i].data(), want[i].data(), want[i].size()), 1e-2) << i;
  }
}

TEST_F(CudaExecutor, ChunkedPrefillMatchesOnePrefill) {
  TestModel m(Variant{"chunks", true});
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  const auto ids = random_ids(150, m.config.vocab_size, 10);
  const int32_t V = m.config.vocab_size;
  auto one = gpu.create_state(160);
  std::vector<float> whole(V);
  gpu.forward(*one, ids, 0, whole.data(), false, nullptr);
  auto chunked = gpu.create_state(160);
  std::vector<float> last(V);
  gpu.forward(*chunked, std::span(ids).first(100), 0, nullptr, false, nullptr);
  gpu.forward(*chunked, std::span(ids).subspan(100), 100, last.data(), false, nullptr);
  EXPECT_LE(relative_l2(last.data(), whole.data(), V), 1e-5);
}

// Decode steps with logits replay a captured CUDA graph; without logits they run eagerly; a batch
// larger than any before reallocates the activations and must drop the captured graph.
TEST_F(CudaExecutor, CapturedDecodeStepMatchesEagerStepsAndSurvivesBufferGrowth) {
  TestModel m(Variant{"graph", true});
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  const int32_t V = m.config.vocab_size;
  const auto ids = random_ids(60, V, 21);
  auto step = [&](SessionState& s, size_t t, float* out) {
    gpu.forward(s, std::span(ids).subspan(t, 1), static_cast<int32_t>(t), out, false, nullptr);
  };
  // Reference: the whole sequence as one prefill.
  auto whole = gpu.create_state(64);
  std::vector<float> want(V);
  gpu.forward(*whole, ids, 0, want.data(), false, nullptr);

  auto s = gpu.create_state(64);
  std::vector<float> got(V, NAN);
  gpu.forward(*s, std::span(ids).first(10), 0, nullptr, false, nullptr);
  for (size_t t = 10; t < 13; ++t) step(*s, t, got.data());  // captured, then replayed
  for (size_t t = 13; t < 15; ++t) step(*s, t, nullptr);     // eager, no logits
  gpu.forward(*s, std::span(ids).subspan(15, 40), 15, nullptr, false, nullptr);  // grows buffers
  for (size_t t = 55; t < 60; ++t) step(*s, t, got.data());  // recaptured at new addresses
  EXPECT_LE(relative_l2(got.data(), want.data(), V), 1e-2);
  // The same calls on a fresh session (capturing its own graphs) give the same logits.
  auto s2 = gpu.create_state(64);
  std::vector<float> again(V, NAN);
  gpu.forward(*s2, std::span(ids).first(10), 0, nullptr, false, nullptr);
  for (size_t t = 10; t < 13; ++t) step(*s2, t, again.data());
  for (size_t t = 13; t < 15; ++t) step(*s2, t, nullptr);
  gpu.forward(*s2, std::span(ids).subspan(15, 40), 15, nullptr, false, nullptr);
  for (size_t t = 55; t < 60; ++t) step(*s2, t, again.data());
  EXPECT_LE(relative_l2(again.data(), got.data(), V), 1e-6);
}

TEST_F(CudaExecutor, LoadUnderATinyCapFailsCleanlyThenLoadsWithoutACap) {
  TestModel m(Variant{"oom"});
  auto capped = DeviceAllocator::create(0, 4096, "test GPU");
  try {
    CudaTransformer gpu(m.config, m.weights, m.inv_freq, capped);
    FAIL() << "loading under a 4096-byte cap succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_OUT_OF_MEMORY) << e.what();
    const std::string msg = e.what();
    EXPECT_NE(msg.find("asked for"), std::string::npos) << msg;
    EXPECT_NE(msg.find("available under the device memory cap of 4096"), std::string::npos) << msg;
  }
  EXPECT_EQ(capped->in_use(), 0u) << "a failed load must free every partial allocation";

  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  auto state = gpu.create_state(32);
  std::vector<float> logits(m.config.vocab_size, NAN);
  gpu.forward(*state, random_ids(7, m.config.vocab_size, 1), 0, logits.data(), false, nullptr);
  for (float f : logits) ASSERT_TRUE(std::isfinite(f));
}

TEST_F(CudaExecutor, SessionThatDoesNotFitFailsAndASmallerOneWorks) {
  TestModel m(Variant{"oom_session"});
  // 8 MiB: the model (~0.3 MB), a session's 4 MiB cuBLAS workspace and a small cache fit.
  auto allocator = DeviceAllocator::create(0, 8 << 20, "test GPU");
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, allocator);
  const uint64_t model_bytes = allocator->in_use();
  // K and V of 3 layers × 32 values × 2 bytes = 384 bytes per token: 100k tokens (38 MB) do not.
  try {
    (void)gpu.create_state(100000);
    FAIL() << "a KV cache over the cap was allocated";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_OUT_OF_MEMORY) << e.what();
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
  }
  EXPECT_EQ(allocator->in_use(), model_bytes);
  auto state = gpu.create_state(64);
  std::vector<float> logits(m.config.vocab_size, NAN);
  gpu.forward(*state, random_ids(9, m.config.vocab_size, 2), 0, logits.data(), false, nullptr);
  for (float f : logits) ASSERT_TRUE(std::isfinite(f));
}

TEST_F(CudaExecutor, TheDeviceReportsItsOwnOutOfMemory) {
  auto allocator = uncapped();
  try {
    (void)allocator->allocate(size_t{1} << 50, "an impossible buffer");  // 1 PiB
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_OUT_OF_MEMORY);
    EXPECT_NE(std::string(e.what()).find("available on the device"), std::string::npos) << e.what();
  }
  EXPECT_EQ(allocator->in_use(), 0u);
  EXPECT_NO_THROW((void)allocator->allocate(1024, "a small buffer"));
}

TEST_F(CudaExecutor, ProgressCallbackCanCancelTheUpload) {
  TestModel m(Variant{"cancel_load"});
  auto allocator = uncapped();
  int calls = 0;
  float last = -1;
  bool monotonic = true;
  const ProgressFn stop_half_way = [&](float f, const char*) {
    monotonic = monotonic && f >= last;
    last = f;
    return ++calls < 10;
  };
  try {
    CudaTransformer gpu(m.config, m.weights, m.inv_freq, allocator, stop_half_way);
    FAIL() << "cancelled load returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_CANCELLED) << e.what();
  }
  EXPECT_EQ(calls, 10);
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(allocator->in_use(), 0u);

  float final_fraction = 0;
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, allocator,
                            [&](float f, const char*) { return (final_fraction = f), true; });
  EXPECT_FLOAT_EQ(final_fraction, 1.0f);
}

TEST_F(CudaExecutor, CancelledForwardThrowsAndTheSessionStaysUsable) {
  TestModel m(Variant{"cancel"});
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  const auto ids = random_ids(12, m.config.vocab_size, 3);
  const int32_t V = m.config.vocab_size;
  auto state = gpu.create_state(32);
  std::vector<float> want(V), got(V);
  gpu.forward(*state, ids, 0, want.data(), false, nullptr);
  const std::atomic<bool> cancel{true};
  try {
    gpu.forward(*state, ids, 0, got.data(), false, &cancel);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_CANCELLED);
  }
  gpu.forward(*state, ids, 0, got.data(), false, nullptr);
  EXPECT_EQ(got, want);
}

TEST_F(CudaExecutor, TwoSessionsOnOneModelFromTwoThreads) {
  TestModel m(Variant{"threads", true});
  const CudaTransformer gpu(m.config, m.weights, m.inv_freq, uncapped());
  const int32_t V = m.config.vocab_size;
  const std::vector<int32_t> prompts[2] = {random_ids(40, V, 11), random_ids(33, V, 12)};
  const std::vector<int32_t> extras[2] = {random_ids(20, V, 13), random_ids(20, V, 14)};
  std::vector<std::vector<float>> alone[2];
  for (int i = 0; i < 2; ++i) {
    auto s = gpu.create_state(128);
    alone[i] = run(gpu, *s, prompts[i], extras[i], V);
  }
  std::vector<std::vector<float>> together[2];
  std::string errors[2];
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] = std::thread([&, i] {
      try {
        auto s = gpu.create_state(128);
        for (int rep = 0; rep < 3; ++rep) together[i] = run(gpu, *s, prompts[i], extras[i], V);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(errors[i], "") << "thread " << i;
    ASSERT_EQ(together[i].size(), alone[i].size());
    for (size_t k = 0; k < alone[i].size(); ++k) {
      EXPECT_LE(relative_l2(together[i][k].data(), alone[i][k].data(), alone[i][k].size()), 1e-6)
          << "thread " << i << " step " << k;
    }
  }
}

TEST_F(CudaExecutor, BackendFactoryNamesTheDeviceAndRefusesABadIndex) {
  std::string why;
  EXPECT_EQ(make_cuda_backend(9999, 0, &why), nullptr);
  EXPECT_NE(why.find("out of range"), std::string::npos) << why;
  auto backend = make_cuda_backend(0, 0, &why);
  ASSERT_NE(backend, nullptr) << why;
  EXPECT_EQ(backend->kind(), KILN_BACKEND_CUDA);
  EXPECT_EQ(backend->device_name().rfind("CUDA: ", 0), 0u) << backend->device_name();
}

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaModel, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif

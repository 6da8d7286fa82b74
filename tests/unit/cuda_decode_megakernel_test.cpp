// The decode megakernel (kernels/decode_megakernel.cu): every layer of a one-token forward in one
// persistent kernel. Checked on small random models of awkward sizes (hidden not a multiple of
// 128, GQA 6/2, head_dim 64 and 128, with and without q/k/v and o biases, q/k norm, partial
// rotary, fused projections) decoding token by token against the CPU executor (itself checked
// against a float64 forward pass in cpu_executor_test) and against the per-kernel CUDA step
// (KILN_CUDA_MEGAKERNEL=0); for bit-identical logits when the same token is decoded twice; over
// contexts longer than many attention chunks. The last test times both paths on the Qwen2.5-0.5B
// layer shape and prints µs per token. Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cpu/cpu_transformer.hpp"
#include "backend/cuda/cuda_transformer.hpp"
#include "core/error.hpp"
#include "cuda_test_model.hpp"
#include "cuda_test_util.hpp"
#include "test_support.hpp"

namespace kiln::cuda {
namespace {

using kiln::test::relative_l2;
using test_model::random_ids;
using test_model::Storage;
using test_model::TestModel;
using test_model::uncapped;
using test_model::Variant;

// The executor as loaded with KILN_CUDA_MEGAKERNEL set to `value` (the switch is read at load).
std::unique_ptr<CudaTransformer> load_with_megakernel(const TestModel& m, const char* value) {
  const char* before = std::getenv("KILN_CUDA_MEGAKERNEL");
  const std::string saved = before ? before : "";
  setenv("KILN_CUDA_MEGAKERNEL", value, 1);
  auto exec = std::make_unique<CudaTransformer>(m.config, m.weights, m.inv_freq, uncapped());
  if (before) {
    setenv("KILN_CUDA_MEGAKERNEL", saved.c_str(), 1);
  } else {
    unsetenv("KILN_CUDA_MEGAKERNEL");
  }
  return exec;
}

// Prefill `prompt` (no logits), then decode `extra` one token at a time: the logits of each step.
std::vector<std::vector<float>> decode_steps(const ModelExecutor& exec, SessionState& state,
                                             const std::vector<int32_t>& prompt,
                                             const std::vector<int32_t>& extra, int32_t vocab) {
  exec.forward(state, prompt, 0, nullptr, false, nullptr);
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < extra.size(); ++i) {
    out.emplace_back(vocab, NAN);
    exec.forward(state, std::span(&extra[i], 1), static_cast<int32_t>(prompt.size() + i),
                 out.back().data(), false, nullptr);
  }
  return out;
}

class Megakernel : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

TEST_P(Megakernel, DecodeMatchesTheCpuExecutorAndThePerKernelStep) {
  const Variant v = GetParam();
  TestModel m(v);
  const int32_t V = m.config.vocab_size;
  const cpu::CpuTransformer cpu(m.config, m.weights, m.inv_freq, 2);
  const auto per_kernel = load_with_megakernel(m, "0");
  const auto mega = load_with_megakernel(m, "1");
  ASSERT_FALSE(per_kernel->uses_decode_megakernel());
  ASSERT_TRUE(mega->uses_decode_megakernel()) << "the megakernel should take " << v.name;

  const auto prompt = random_ids(5, V, 31);
  const auto extra = random_ids(26, V, 32);
  auto cs = cpu.create_state(64);
  auto ps = per_kernel->create_state(64);
  auto ms = mega->create_state(64);
  const auto want = decode_steps(cpu, *cs, prompt, extra, V);
  const auto ref = decode_steps(*per_kernel, *ps, prompt, extra, V);
  const auto got = decode_steps(*mega, *ms, prompt, extra, V);
  EXPECT_TRUE(mega->decode_megakernel_active(*ms))
      << "the session fell back to the per-kernel step";
  double worst_cpu = 0.0, worst_ref = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e_cpu = relative_l2(got[i].data(), want[i].data(), V);
    const double e_ref = relative_l2(got[i].data(), ref[i].data(), V);
    EXPECT_LE(e_cpu, 1e-2) << "decode step " << i << " vs CPU";
    EXPECT_LE(e_ref, 2e-3) << "decode step " << i << " vs the per-kernel CUDA step";
    EXPECT_FALSE(std::isnan(e_cpu) || std::isnan(e_ref)) << "decode step " << i;
    worst_cpu = std::max(worst_cpu, e_cpu);
    worst_ref = std::max(worst_ref, e_ref);
  }
  std::printf("[megakernel %s] worst relative L2 over %zu steps: vs CPU %.3e, vs per-kernel %.3e\n",
              v.name, want.size(), worst_cpu, worst_ref);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Megakernel,
                         ::testing::Values(Variant{.name = "h200_gqa3_d64_qkv_bias",
                                                   .qkv_bias = true,
                                                   .n_heads = 6,
                                                   .n_kv_heads = 2,
                                                   .head_dim = 64,
                                                   .hidden = 200,
                                                   .intermediate = 344},
                                           Variant{.name = "h328_gqa3_d128_qk_norm",
                                                   .qk_norm = true,
                                                   .n_heads = 6,
                                                   .n_kv_heads = 2,
                                                   .head_dim = 128,
                                                   .hidden = 328,
                                                   .intermediate = 584},
                                           Variant{.name = "h200_partial_rotary_o_bias_tied",
                                                   .o_bias = true,
                                                   .tied = true,
                                                   .partial_rotary = 0.5f,
                                                   .n_heads = 6,
                                                   .n_kv_heads = 2,
                                                   .head_dim = 64,
                                                   .hidden = 200,
                                                   .intermediate = 344},
                                           Variant{.name = "h328_phi3_fused_f32_storage",
                                                   .fused = true,
                                                   .storage = Storage::F32,
                                                   .n_heads = 6,
                                                   .n_kv_heads = 2,
                                                   .head_dim = 64,
                                                   .hidden = 328,
                                                   .intermediate = 600},
                                           Variant{.name = "h200_mha_d128_all",
                                                   .qkv_bias = true,
                                                   .o_bias = true,
                                                   .qk_norm = true,
                                                   .n_heads = 2,
                                                   .n_kv_heads = 2,
                                                   .head_dim = 128,
                                                   .hidden = 200,
                                                   .intermediate = 1000}),
                         [](const auto& info) { return std::string(info.param.name); });

class MegakernelExecutor : public ::testing::Test {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

// A shape the megakernel does not take (intermediate not a multiple of 8) keeps the per-kernel
// step, whatever the switch says.
TEST_F(MegakernelExecutor, UnsupportedShapeKeepsThePerKernelStep) {
  TestModel m(Variant{.name = "odd_intermediate", .intermediate = 131});
  const auto exec = load_with_megakernel(m, "1");
  EXPECT_FALSE(exec->uses_decode_megakernel());
}

TEST_F(MegakernelExecutor, AnyOtherSwitchValueIsRejected) {
  TestModel m(Variant{.name = "switch", .hidden = 200, .intermediate = 344});
  try {
    load_with_megakernel(m, "yes");
    FAIL() << "KILN_CUDA_MEGAKERNEL=yes was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("KILN_CUDA_MEGAKERNEL"), std::string::npos) << e.what();
  }
}

// Same token at the same position: the same bits, in another session and when the step is
// redone in the same session (its cache row rewritten with the same values).
TEST_F(MegakernelExecutor, SameTokenTwiceGivesBitIdenticalLogits) {
  TestModel m(Variant{.name = "determinism",
                      .qkv_bias = true,
                      .n_heads = 6,
                      .n_kv_heads = 2,
                      .head_dim = 64,
                      .hidden = 200,
                      .intermediate = 344});
  const int32_t V = m.config.vocab_size;
  const auto mega = load_with_megakernel(m, "1");
  ASSERT_TRUE(mega->uses_decode_megakernel());
  const auto prompt = random_ids(300, V, 41);  // two attention chunks of 256 keys
  const auto extra = random_ids(24, V, 42);
  auto a = mega->create_state(400);
  auto b = mega->create_state(400);
  const auto first = decode_steps(*mega, *a, prompt, extra, V);
  const auto second = decode_steps(*mega, *b, prompt, extra, V);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(std::memcmp(first[i].data(), second[i].data(), V * sizeof(float)), 0)
        << "decode step " << i << " differs between two sessions";
  }
  const int32_t last_pos = static_cast<int32_t>(prompt.size() + extra.size() - 1);
  std::vector<float> again(V, NAN);
  mega->forward(*a, std::span(&extra.back(), 1), last_pos, again.data(), false, nullptr);
  EXPECT_EQ(std::memcmp(again.data(), first.back().data(), V * sizeof(float)), 0)
      << "redoing the last step changed its logits";
}

// 700 cached keys and more: three attention chunks of 256 (kMegakernelSplitKeys); some
// steps without logits (run eagerly, not from the captured graph).
TEST_F(MegakernelExecutor, LongContextAcrossManyAttentionChunks) {
  TestModel m(Variant{.name = "long",
                      .qkv_bias = true,
                      .qk_norm = true,
                      .n_heads = 6,
                      .n_kv_heads = 2,
                      .head_dim = 64,
                      .hidden = 328,
                      .intermediate = 584});
  const int32_t V = m.config.vocab_size;
  const cpu::CpuTransformer cpu(m.config, m.weights, m.inv_freq, 2);
  const auto per_kernel = load_with_megakernel(m, "0");
  const auto mega = load_with_megakernel(m, "1");
  ASSERT_TRUE(mega->uses_decode_megakernel());
  const auto prompt = random_ids(700, V, 51);
  const auto extra = random_ids(24, V, 52);
  auto cs = cpu.create_state(800);
  auto ps = per_kernel->create_state(800);
  auto ms = mega->create_state(800);
  // The prompt, then three steps without logits (run eagerly, not from the captured graph),
  // then 24 with logits.
  const auto eager = random_ids(3, V, 53);
  for (const ModelExecutor* e :
       std::initializer_list<const ModelExecutor*>{&cpu, per_kernel.get(), mega.get()}) {
    SessionState& st = e == &cpu ? *cs : e == per_kernel.get() ? *ps : *ms;
    e->forward(st, prompt, 0, nullptr, false, nullptr);
    for (size_t j = 0; j < eager.size(); ++j) {
      const auto p = static_cast<int32_t>(prompt.size() + j);
      e->forward(st, std::span(&eager[j], 1), p, nullptr, false, nullptr);
    }
  }
  double worst_cpu = 0.0, worst_ref = 0.0;
  for (size_t i = 0; i < extra.size(); ++i) {
    const auto pos = static_cast<int32_t>(prompt.size() + eager.size() + i);
    std::vector<float> want(V, NAN), ref(V, NAN), got(V, NAN);
    cpu.forward(*cs, std::span(&extra[i], 1), pos, want.data(), false, nullptr);
    per_kernel->forward(*ps, std::span(&extra[i], 1), pos, ref.data(), false, nullptr);
    mega->forward(*ms, std::span(&extra[i], 1), pos, got.data(), false, nullptr);
    const double e_cpu = relative_l2(got.data(), want.data(), V);
    const double e_ref = relative_l2(got.data(), ref.data(), V);
    EXPECT_LE(e_cpu, 1e-2) << "step at position " << pos << " vs CPU";
    EXPECT_LE(e_ref, 2e-3) << "step at position " << pos << " vs the per-kernel CUDA step";
    worst_cpu = std::max(worst_cpu, std::isnan(e_cpu) ? 1.0 : e_cpu);
    worst_ref = std::max(worst_ref, std::isnan(e_ref) ? 1.0 : e_ref);
  }
  EXPECT_TRUE(mega->decode_megakernel_active(*ms));
  std::printf(
      "[megakernel long] worst relative L2 at 703..726 keys: vs CPU %.3e, vs per-kernel %.3e\n",
      worst_cpu, worst_ref);
}

// Greedy generation on the Qwen2.5-0.5B shape (hidden 896, 24 layers, 14/2 heads of 64, ffn 4864,
// qkv bias, tied 151936-word embedding) with random weights, both paths in one process: prints
// µs per token (graph replay + device argmax, as kiln-bench's tg) and checks that the two paths'
// logits agree at the end; the megakernel with and without its L2 prefetch
// (KILN_CUDA_MEGAKERNEL_PREFETCH). Set KILN_MEGAKERNEL_BENCH_TOKENS to change the 128 timed tokens.
TEST_F(MegakernelExecutor, TimingOnTheQwen05bShape) {
  TestModel m(Variant{.name = "qwen05b",
                      .qkv_bias = true,
                      .tied = true,
                      .n_heads = 14,
                      .n_kv_heads = 2,
                      .head_dim = 64,
                      .hidden = 896,
                      .intermediate = 4864,
                      .n_layers = 24,
                      .vocab = 151936});
  const int32_t V = m.config.vocab_size;
  const char* env = std::getenv("KILN_MEGAKERNEL_BENCH_TOKENS");
  const int tokens = env ? std::atoi(env) : 128;
  const auto prompt = random_ids(64, V, 61);
  // Paths: 0 per-kernel, 1 megakernel without the L2 prefetch, 2 megakernel (default).
  constexpr int kPaths = 3;
  double us_per_token[kPaths] = {};
  std::vector<float> last_logits[kPaths];
  std::vector<int32_t> generated[kPaths];
  for (int path = 0; path < kPaths; ++path) {
    const auto exec = load_with_megakernel(m, path == 0 ? "0" : "1");
    ASSERT_EQ(exec->uses_decode_megakernel(), path > 0);
    // Read when the session makes its megakernel state (its first one-token forward).
    setenv("KILN_CUDA_MEGAKERNEL_PREFETCH", path == 1 ? "0" : "1", 1);
    auto s = exec->create_state(1024);
    exec->forward(*s, prompt, 0, nullptr, false, nullptr);
    DeviceSampleRequest greedy;
    int32_t next = prompt.back();
    int32_t pos = static_cast<int32_t>(prompt.size());
    auto step = [&] {
      const auto drawn = exec->forward_sample(*s, std::span(&next, 1), pos++, greedy, nullptr);
      if (!drawn) throw std::runtime_error("no device sampling (KILN_CUDA_HOST_SAMPLING=1?)");
      next = *drawn;
    };
    for (int w = 0; w < 8; ++w) step();  // capture the graph, warm up
    unsetenv("KILN_CUDA_MEGAKERNEL_PREFETCH");
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < tokens; ++t) {
      step();
      generated[path].push_back(next);
    }
    const auto t1 = std::chrono::steady_clock::now();
    us_per_token[path] = std::chrono::duration<double, std::micro>(t1 - t0).count() / tokens;
    // Every path ends on the same fixed token at the same position, for the logits check.
    last_logits[path].assign(V, NAN);
    const int32_t probe = 17;
    exec->forward(*s, std::span(&probe, 1), pos, last_logits[path].data(), false, nullptr);
    if (path > 0) {
      EXPECT_TRUE(exec->decode_megakernel_active(*s));
    }
  }
  size_t same = 0;
  while (same < generated[0].size() && generated[0][same] == generated[2][same]) ++same;
  std::printf(
      "[megakernel timing, Qwen2.5-0.5B shape, %d tokens after a 64-token prompt] per-kernel "
      "%.1f us/token (%.1f tok/s); megakernel without L2 prefetch %.1f us/token (%.1f tok/s); "
      "megakernel %.1f us/token (%.1f tok/s), speedup %.2fx; greedy tokens identical for the "
      "first %zu of %d\n",
      tokens, us_per_token[0], 1e6 / us_per_token[0], us_per_token[1], 1e6 / us_per_token[1],
      us_per_token[2], 1e6 / us_per_token[2], us_per_token[0] / us_per_token[2], same, tokens);
  // The prefetch changes no arithmetic: both megakernel runs generate the same tokens.
  EXPECT_EQ(generated[1], generated[2]);
  // The contexts differ once the greedy paths part, so this compares only when they did not.
  if (same == generated[0].size()) {
    EXPECT_LE(relative_l2(last_logits[2].data(), last_logits[0].data(), V), 2e-3);
  }
}

}  // namespace
}  // namespace kiln::cuda

#endif  // KILN_HAVE_CUDA

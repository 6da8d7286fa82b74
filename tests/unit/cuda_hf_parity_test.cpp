// Whole-model logits of the CUDA backend against Hugging Face transformers' float32 reference
// (tests/fixtures/hf/*/ and the bundled models/kjv-tiny: ref.json ids, logits.bin [24 × vocab]),
// through the real loading path (config.json, safetensors, resolve_transformer_weights). BF16
// weights, matrix inputs and KV cache: relative L2 ≤ 1e-2. Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "cuda_test_util.hpp"
#include "formats/safetensors.hpp"
#include "model/config.hpp"
#include "test_support.hpp"

namespace kiln {
std::unique_ptr<Backend> make_cuda_backend(int device_index, uint64_t memory_limit,
                                           std::string* why_not);
}

namespace kiln {
namespace {

using kiln::test::relative_l2;
namespace fs = std::filesystem;

fs::path fixture_dir(const std::string& name) {
  return name == "kjv-tiny" ? kiln::test::source_dir() / "models" / "kjv-tiny"
                            : kiln::test::fixtures_dir() / "hf" / name;
}

class CudaHfParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

TEST_P(CudaHfParity, LogitsMatchTransformersInPrefillAndDecode) {
  const fs::path dir = fixture_dir(GetParam());
  const auto ref = nlohmann::json::parse(kiln::test::read_file(dir / "ref.json"));
  const auto ids = ref.at("ids").get<std::vector<int32_t>>();
  const std::vector<float> want = kiln::test::read_f32_file(dir / "logits.bin");

  std::string why;
  const auto backend = make_cuda_backend(0, 0, &why);
  ASSERT_NE(backend, nullptr) << why;
  const ModelConfig config = load_model_config(dir);
  std::shared_ptr<const WeightSet> weights = WeightSet::open_dir(dir);
  const auto exec = backend->load_model(config, weights, {});
  const int32_t V = config.vocab_size;
  ASSERT_EQ(want.size(), ids.size() * static_cast<size_t>(V));

  // Prefill: every position in one pass (the flash prefill kernel).
  auto state = exec->create_state(64);
  std::vector<float> got(want.size(), NAN);
  exec->forward(*state, ids, 0, got.data(), true, nullptr);
  const double prefill_err = relative_l2(got.data(), want.data(), want.size());
  EXPECT_LE(prefill_err, 1e-2);

  // Decode: the first half as a prompt, then one token at a time (the split-K decode kernel).
  const size_t half = ids.size() / 2;
  auto state2 = exec->create_state(64);
  std::vector<float> stepped(want.size(), NAN);
  exec->forward(*state2, std::span(ids).first(half), 0, stepped.data(), true, nullptr);
  for (size_t t = half; t < ids.size(); ++t) {
    exec->forward(*state2, std::span(ids).subspan(t, 1), static_cast<int32_t>(t),
                  stepped.data() + t * V, false, nullptr);
  }
  const double decode_err =
      relative_l2(stepped.data() + half * V, want.data() + half * V, (ids.size() - half) * V);
  EXPECT_LE(decode_err, 1e-2);

  // Argmax agreement per position, reported (BF16 may flip near-ties, so not asserted).
  int argmax_equal = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const auto row = [&](const std::vector<float>& v) { return v.begin() + t * V; };
    argmax_equal += std::max_element(row(got), row(got) + V) - row(got) ==
                    std::max_element(row(want), row(want) + V) - row(want);
  }
  std::printf("[ parity   ] %-9s prefill rel L2 %.3e, decode rel L2 %.3e, argmax %d/%zu\n",
              GetParam().c_str(), prefill_err, decode_err, argmax_equal, ids.size());
  RecordProperty("prefill_rel_l2", std::to_string(prefill_err));
  RecordProperty("decode_rel_l2", std::to_string(decode_err));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaHfParity,
                         ::testing::Values("llama2", "llama3", "mistral", "phi3", "qwen2", "qwen3",
                                           "kjv-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace kiln

#else

TEST(CudaHfParity, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif

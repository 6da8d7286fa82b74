// The CUDA executor on llama.cpp's own GGUF files of the tiny-qwen2 model
// (tests/fixtures/gguf/tiny-qwen2, made by llama.cpp's converter and quantizer; see its
// manifest.json): logits of a 16-token prompt in one prefill pass and token by token (the captured
// decode step) against llama.cpp's logits for the same file, and the device bytes the layer
// matrices take (block-quantised ones exactly as stored). Without a GPU (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "backend/cuda/cuda_transformer.hpp"
#include "backend/cuda/device_memory.hpp"
#include "cuda_test_util.hpp"
#include "formats/gguf.hpp"
#include "formats/gguf_model.hpp"
#include "model/config.hpp"
#include "model/transformer_weights.hpp"
#include "test_support.hpp"

namespace kiln::cuda {
namespace {

using kiln::test::relative_l2;
namespace fs = std::filesystem;

fs::path gguf_dir() { return kiln::test::fixtures_dir() / "gguf" / "tiny-qwen2"; }

struct Case {
  std::string type;
  // Bound on rel L2 vs llama.cpp's logits for the same file. Quantised types: the CPU path's bound
  // (tests/abi/gguf_parity_test.cpp; llama.cpp's 8-bit activations and F16 KV cache dominate it),
  // the weights being exact here too. f32/f16: the CUDA backend computes with BF16 weights, so the
  // bound of its HF parity test (cuda_hf_parity_test, 1e-2) applies. Margin check (CPU executor,
  // float32 activations, on the dequantised weights): 0.98-1.34 % from llama.cpp exactly, 1.05-1.39
  // % with the layer matrices and head rounded to BF16 as the prefill's scratch rounds them.
  double vs_llamacpp;
  bool lossy;  // also required: closer to llama.cpp than half of llama.cpp's distance from HF
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.type; }

class CudaGguf : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

TEST_P(CudaGguf, LogitsMatchLlamaCppInPrefillAndDecode) {
  const Case& c = GetParam();
  const auto manifest = nlohmann::json::parse(kiln::test::read_file(gguf_dir() / "manifest.json"));
  const auto ids = manifest.at("token_ids").get<std::vector<int32_t>>();
  const double llamacpp_vs_hf = manifest.at("diff_vs_hf_f32")
                                    .at("llamacpp_" + c.type + "_logits.bin")
                                    .at("rel_l2")
                                    .get<double>();
  const std::vector<float> want =
      kiln::test::read_f32_file(gguf_dir() / ("llamacpp_" + c.type + "_logits.bin"));

  std::shared_ptr<const GgufFile> file =
      GgufFile::open(gguf_dir() / ("tiny-qwen2-" + c.type + ".gguf"));
  const ModelConfig config = gguf_model_config(*file);
  std::shared_ptr<const WeightSet> weights = gguf_weights_as_stored(file, config, {});
  const TransformerWeights resolved = resolve_transformer_weights(config, *weights);
  auto allocator = DeviceAllocator::create(0, 0, "test device");
  // The float path of the quantised products: exact weights, as the bounds above assume.
  const CudaTransformer exec(config, resolved, rope_inverse_frequencies(config), allocator, {},
                             false, QuantDot::kFloat);
  const int32_t V = config.vocab_size;
  ASSERT_EQ(want.size(), ids.size() * static_cast<size_t>(V));

  // Device bytes of the layer matrices: block formats as stored (the file's bytes for those
  // tensors), float ones as BF16.
  int64_t file_bytes = 0, file_weights = 0;
  const std::regex matrix(
      R"(blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight)");
  bool all_quantised = true;
  for (const GgufTensor& t : file->tensors()) {
    if (!std::regex_match(t.name, matrix)) continue;
    file_bytes += static_cast<int64_t>(t.nbytes);
    file_weights += t.numel();
    if (t.type == quant::GgmlType::F32 || t.type == quant::GgmlType::F16 ||
        t.type == quant::GgmlType::BF16) {
      all_quantised = false;
    }
  }
  const CudaTransformer::LayerMatrixStorage storage = exec.layer_matrix_storage();
  EXPECT_EQ(storage.weights, file_weights);
  const double bytes_per_weight =
      static_cast<double>(storage.device_bytes) / static_cast<double>(storage.weights);
  std::printf(
      "[ gguf     ] %-7s layer matrices: %lld weights, %lld device bytes = %.4f bytes/weight "
      "(file %.4f)\n",
      c.type.c_str(), static_cast<long long>(storage.weights),
      static_cast<long long>(storage.device_bytes), bytes_per_weight,
      static_cast<double>(file_bytes) / static_cast<double>(file_weights));
  RecordProperty("device_bytes_per_weight", std::to_string(bytes_per_weight));
  if (c.type == "q4_k_m") {
    // llama.cpp's Q4_K_M mix on this model: q4_K, with attn_v and ffn_down of the last layer in
    // q6_K (0.598 bytes per weight in the file); the issue's bound for the device is 0.6.
    EXPECT_LE(bytes_per_weight, 0.6);
  }
  if (all_quantised) {
    EXPECT_EQ(storage.quantized_weights, storage.weights) << "every layer matrix stays quantised";
    EXPECT_EQ(storage.device_bytes, file_bytes) << "quantised matrices take the file's bytes";
  } else {
    EXPECT_EQ(storage.quantized_weights, 0);
    EXPECT_EQ(storage.device_bytes, 2 * storage.weights) << "float matrices are BF16";
  }

  // Prefill: all 16 positions in one pass (dequantise-to-BF16 scratch + cuBLAS).
  auto state = exec.create_state(64);
  std::vector<float> got(want.size(), NAN);
  exec.forward(*state, ids, 0, got.data(), true, nullptr);
  const double prefill_err = relative_l2(got.data(), want.data(), want.size());

  // Decode: every token alone from position 0 (the fused kernels in the captured decode step).
  auto state2 = exec.create_state(64);
  std::vector<float> stepped(want.size(), NAN);
  for (size_t t = 0; t < ids.size(); ++t) {
    exec.forward(*state2, std::span(ids).subspan(t, 1), static_cast<int32_t>(t),
                 stepped.data() + t * V, false, nullptr);
  }
  const double decode_err = relative_l2(stepped.data(), want.data(), want.size());
  std::printf(
      "[ gguf     ] %-7s vs llama.cpp: prefill rel L2 %.3e, decode rel L2 %.3e "
      "(llama.cpp vs HF %.3e, bound %.3g)\n",
      c.type.c_str(), prefill_err, decode_err, llamacpp_vs_hf, c.vs_llamacpp);
  RecordProperty("prefill_rel_l2", std::to_string(prefill_err));
  RecordProperty("decode_rel_l2", std::to_string(decode_err));
  EXPECT_LE(prefill_err, c.vs_llamacpp) << c.type << " prefill";
  EXPECT_LE(decode_err, c.vs_llamacpp) << c.type << " token-by-token decode";
  if (c.lossy) {
    EXPECT_LE(prefill_err, 0.5 * llamacpp_vs_hf)
        << c.type << ": kiln should reproduce llama.cpp's quantisation error, not another one";
    EXPECT_LE(decode_err, 0.5 * llamacpp_vs_hf) << c.type << " (decode)";
  }

  // Decode on the integer path (the default: int8 x, kernels/quant_dot_int8.cuh). llama.cpp's 8-bit
  // activations (with its F16 KV cache) put its logits 0.98-1.34 % from those of exact float32
  // activations on the same weights (the margin check above); kiln's int8 x is the same
  // approximation, so it may move the decode's logits from the float path's by about as much
  // (bound 2 %, 1.5x the largest), and from llama.cpp by at most the float bound plus that.
  // f32 / f16 have no quantised matrix: both paths are the same there.
  constexpr double kInt8Activations = 0.02;
  const CudaTransformer exec_int8(config, resolved, rope_inverse_frequencies(config), allocator, {},
                                  false, QuantDot::kInt8);
  auto state3 = exec_int8.create_state(64);
  std::vector<float> stepped_int8(want.size(), NAN);
  for (size_t t = 0; t < ids.size(); ++t) {
    exec_int8.forward(*state3, std::span(ids).subspan(t, 1), static_cast<int32_t>(t),
                      stepped_int8.data() + t * V, false, nullptr);
  }
  const double int8_err = relative_l2(stepped_int8.data(), want.data(), want.size());
  const double int8_vs_float = relative_l2(stepped_int8.data(), stepped.data(), want.size());
  std::printf(
      "[ gguf     ] %-7s int8 decode: vs llama.cpp %.3e, vs the float path %.3e (bound %.3g)\n",
      c.type.c_str(), int8_err, int8_vs_float, kInt8Activations);
  RecordProperty("decode_int8_rel_l2", std::to_string(int8_err));
  EXPECT_FALSE(std::isnan(int8_err));
  EXPECT_LE(int8_vs_float, kInt8Activations) << c.type << " int8 decode vs float decode";
  EXPECT_LE(int8_err, c.vs_llamacpp + kInt8Activations) << c.type << " int8 decode";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGguf,
                         ::testing::Values(Case{"f32", 1e-2, false}, Case{"f16", 1e-2, false},
                                           Case{"q8_0", 0.015, false}, Case{"q4_0", 0.02, true},
                                           Case{"q4_k_m", 0.02, true}, Case{"q5_k_m", 0.02, true},
                                           Case{"q6_k", 0.02, true}),
                         [](const auto& info) { return info.param.type; });

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaGguf, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif

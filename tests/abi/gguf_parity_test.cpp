// GGUF parity through the public ABI: kiln_model_load on llama.cpp's own GGUF files of the
// tiny-qwen2 model (tests/fixtures/gguf/tiny-qwen2, made by llama.cpp's converter and quantizer),
// compared with HF transformers float32 logits and with llama.cpp's logits for the same file
// (CPU backend). Every expected number comes from those two programs; the per-type tolerance
// against HF is llama.cpp's own error for that file, from the fixture's manifest.json.
#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

fs::path gguf_dir() { return fixtures() / "gguf" / "tiny-qwen2"; }

struct GgufCase {
  std::string type;    // "q4_k_m": file tiny-qwen2-<type>.gguf, llamacpp_<type>_logits.bin
  double vs_llamacpp;  // bound on rel L2 vs llama.cpp's logits for the same file
  bool greedy_equals_hf;
};
void PrintTo(const GgufCase& c, std::ostream* os) { *os << c.type; }

// On the CPU kiln keeps quantised weights as stored: decoding (and batches under 8 tokens) use
// integer dot products against activations rounded to 8 bits per block, as llama.cpp does (q8_0 /
// q8_K), while this 16-token prompt goes through exactly dequantised tiles and sgemm. KV cache
// and the rest stay float32; llama.cpp rounds its KV cache to f16 and its activations to 8 bits,
// which alone moves its logits about 1% (rel L2) on this model: see q8_0, whose weights are
// nearly exact. The bounds are that floor with a margin; for the lossy types the test also
// requires kiln to sit on llama.cpp's side of the quantisation error (closer to llama.cpp than
// half of llama.cpp's distance from HF), which only an exact reading of the blocks achieves.
std::vector<GgufCase> cases() {
  return {{"f32", 4e-4, true},   {"f16", 7e-4, true},     {"q8_0", 0.015, true},
          {"q4_0", 0.02, false}, {"q4_k_m", 0.02, false}, {"q5_k_m", 0.02, false},
          {"q6_k", 0.02, false}};
}

struct HfReference {
  std::vector<int32_t> ids, greedy;
  std::vector<float> logits;
  std::string prompt_text;
};

HfReference hf_reference() {
  const auto j = nlohmann::json::parse(read_file(gguf_dir() / "manifest.json"));
  HfReference r;
  r.ids = j.at("token_ids").get<std::vector<int32_t>>();
  r.greedy = j.at("greedy_continuation_ids").get<std::vector<int32_t>>();
  r.prompt_text = j.at("prompt_text").get<std::string>();
  r.logits = read_f32(gguf_dir() / "hf_f32_logits.bin");
  return r;
}

double llamacpp_error_vs_hf(const std::string& type) {
  const auto j = nlohmann::json::parse(read_file(gguf_dir() / "manifest.json"));
  return j.at("diff_vs_hf_f32").at("llamacpp_" + type + "_logits.bin").at("rel_l2").get<double>();
}

fs::path gguf_file(const std::string& type) {
  return gguf_dir() / ("tiny-qwen2-" + type + ".gguf");
}

class GgufParity : public ::testing::TestWithParam<GgufCase> {};

TEST_P(GgufParity, LogitsMatchLlamaCppAndHfWithinLlamaCppsOwnError) {
  const GgufCase& c = GetParam();
  const HfReference hf = hf_reference();
  const std::vector<float> llamacpp = read_f32(gguf_dir() / ("llamacpp_" + c.type + "_logits.bin"));
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), gguf_file(c.type));
  ASSERT_TRUE(model);
  kiln_model_info info;
  info.struct_size = sizeof info;
  KILN_ASSERT_OK(kiln_model_get_info(model.get(), &info));
  EXPECT_STREQ(info.architecture, "Qwen2ForCausalLM");
  ASSERT_EQ(hf.logits.size(), hf.ids.size() * size_t(info.vocab_size));
  ASSERT_EQ(llamacpp.size(), hf.logits.size());

  auto session = make_session(model.get());
  std::vector<float> logits(hf.logits.size(), std::nanf(""));
  size_t n = 0;
  KILN_ASSERT_OK(kiln_forward(session.get(), hf.ids.data(), hf.ids.size(), KILN_LOGITS_ALL,
                              logits.data(), logits.size(), &n));
  ASSERT_EQ(n, hf.logits.size());

  const double vs_hf = rel_l2(logits, hf.logits);
  const double vs_llamacpp = rel_l2(logits, llamacpp);
  const double llamacpp_vs_hf = llamacpp_error_vs_hf(c.type);
  std::printf("[gguf] %-7s kiln vs HF %.3g | kiln vs llama.cpp %.3g | llama.cpp vs HF %.3g\n",
              c.type.c_str(), vs_hf, vs_llamacpp, llamacpp_vs_hf);
  RecordProperty("rel_l2_vs_hf", std::to_string(vs_hf));
  RecordProperty("rel_l2_vs_llamacpp", std::to_string(vs_llamacpp));
  EXPECT_LE(vs_hf, llamacpp_vs_hf * 1.1 + 1e-5) << c.type << ": kiln vs HF float32";
  EXPECT_LE(vs_llamacpp, c.vs_llamacpp) << c.type << ": kiln vs llama.cpp, same file";
  if (!c.greedy_equals_hf) {
    EXPECT_LE(vs_llamacpp, 0.5 * llamacpp_vs_hf)
        << c.type << ": kiln should reproduce llama.cpp's quantisation error, not another one";
  }
}

// Only the near-lossless types (f32, f16, q8_0) are expected to reproduce HF's argmax.
class GgufGreedy : public ::testing::TestWithParam<GgufCase> {};

TEST_P(GgufGreedy, ContinuationMatchesHf) {
  const GgufCase& c = GetParam();
  const HfReference hf = hf_reference();
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), gguf_file(c.type));
  ASSERT_TRUE(model);
  auto session = make_session(model.get());
  kiln_sampling_options greedy;
  kiln_sampling_options_default(&greedy, sizeof greedy);
  greedy.temperature = 0;
  kiln_generate_options g;
  kiln_generate_options_default(&g, sizeof g);
  g.sampling = &greedy;
  g.max_tokens = static_cast<int32_t>(hf.greedy.size());
  g.ignore_eos = 1;
  std::vector<int32_t> out(hf.greedy.size(), -1);
  g.output_ids = out.data();
  g.output_ids_capacity = out.size();
  kiln_generate_result res;
  res.struct_size = sizeof res;
  KILN_ASSERT_OK(kiln_generate_ids(session.get(), hf.ids.data(), hf.ids.size(), &g, &res));
  EXPECT_EQ(out, hf.greedy) << c.type;
}

INSTANTIATE_TEST_SUITE_P(TinyQwen2, GgufParity, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.type; });

std::vector<GgufCase> near_lossless_cases() {
  std::vector<GgufCase> out;
  for (const GgufCase& c : cases()) {
    if (c.greedy_equals_hf) out.push_back(c);
  }
  return out;
}
INSTANTIATE_TEST_SUITE_P(TinyQwen2, GgufGreedy, ::testing::ValuesIn(near_lossless_cases()),
                         [](const auto& info) { return info.param.type; });

// The tokenizer rebuilt from tokenizer.ggml.* gives HF's ids for the manifest's prompt.
TEST(GgufTokenizer, PromptIdsMatchHf) {
  const HfReference hf = hf_reference();
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), gguf_file("q8_0"));
  ASSERT_TRUE(model);
  std::vector<int32_t> ids(256);
  size_t n = 0;
  KILN_ASSERT_OK(kiln_tokenize(model.get(), hf.prompt_text.data(), hf.prompt_text.size(), 0,
                               ids.data(), ids.size(), &n));
  ASSERT_GE(n, hf.ids.size());
  ids.resize(hf.ids.size());
  EXPECT_EQ(ids, hf.ids);
}

TEST(GgufLoad, NonGgufFileIsUnsupportedAndTruncatedGgufIsFormat) {
  auto rt = make_cpu_runtime();
  const fs::path dir = fs::temp_directory_path() / ("kiln-abi-gguf-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream(dir / "notes.txt") << "not a model";
    const std::string bytes = read_file(gguf_file("q4_0"));
    std::ofstream(dir / "cut.gguf", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  kiln_model* m = nullptr;
  EXPECT_EQ(kiln_model_load(rt.get(), (dir / "notes.txt").c_str(), nullptr, &m),
            KILN_ERR_UNSUPPORTED);
  EXPECT_EQ(m, nullptr);
  EXPECT_EQ(kiln_model_load(rt.get(), (dir / "cut.gguf").c_str(), nullptr, &m), KILN_ERR_FORMAT);
  EXPECT_NE(std::string(kiln_last_error()).find("cut.gguf"), std::string::npos)
      << kiln_last_error();
  EXPECT_EQ(m, nullptr);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kiln_abi_test

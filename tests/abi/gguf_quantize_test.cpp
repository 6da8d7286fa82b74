// kiln_model_quantize through the public ABI: the tiny Qwen2 HF checkpoint (tests/fixtures/
// tiny-qwen2, float32) converted to GGUF F16 / Q8_0 / Q4_K_M and reloaded by kiln_model_load.
// References: HF transformers' float32 logits for that checkpoint, and llama.cpp's own error
// against them for llama.cpp's files of the same model and types (the gguf fixture's manifest).
//
// Tolerances. kiln's quantisers round to nearest without llama.cpp's K-quant scale search, so a
// kiln Q4_K_M file may be somewhat less accurate than llama.cpp's; the bound is 1.5× llama.cpp's
// own rel-L2 error for the same type on this model (for F16 the rounding is the same, round to
// nearest even, so the bound is llama.cpp's F16 error with a 1.5× margin too). The quantised
// reload also runs with kiln's 8-bit activations for the decode check (greedy), for which only
// the near-lossless types must reproduce HF's continuation.
#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

fs::path hf_dir() { return fixtures() / "tiny-qwen2"; }
fs::path gguf_fixture_dir() { return fixtures() / "gguf" / "tiny-qwen2"; }

struct QuantCase {
  kiln_quantize_type type;
  std::string name;  // llama.cpp's file type name in the manifest
  bool greedy_equals_hf;
};
void PrintTo(const QuantCase& c, std::ostream* os) { *os << c.name; }

fs::path temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("kiln-abi-quant-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

kiln_status quantize(kiln_runtime* rt, const fs::path& src, const fs::path& dst, int type) {
  kiln_quantize_options o;
  kiln_quantize_options_default(&o, sizeof o);
  o.type = static_cast<kiln_quantize_type>(type);
  o.n_threads = 2;
  return kiln_model_quantize(rt, src.c_str(), dst.c_str(), &o);
}

class Quantize : public ::testing::TestWithParam<QuantCase> {};

TEST_P(Quantize, ReloadedLogitsStayWithinLlamaCppsErrorForTheSameType) {
  const QuantCase& c = GetParam();
  const auto manifest = nlohmann::json::parse(read_file(gguf_fixture_dir() / "manifest.json"));
  const auto ids = manifest.at("token_ids").get<std::vector<int32_t>>();
  const auto greedy_ref = manifest.at("greedy_continuation_ids").get<std::vector<int32_t>>();
  const double llamacpp = manifest.at("diff_vs_hf_f32")
                              .at("llamacpp_" + c.name + "_logits.bin")
                              .at("rel_l2")
                              .get<double>();
  const std::vector<float> hf = read_f32(hf_dir() / "hf_f32_logits.bin");

  auto rt = make_cpu_runtime();
  const fs::path out = temp_path("tiny-qwen2-" + c.name + ".gguf");
  int progress_calls = 0;
  kiln_quantize_options o;
  kiln_quantize_options_default(&o, sizeof o);
  EXPECT_EQ(o.type, KILN_QUANTIZE_Q4_K_M);
  o.type = c.type;
  o.progress_fn = [](float, const char*, void* ud) {
    ++*static_cast<int*>(ud);
    return 0;
  };
  o.progress_user_data = &progress_calls;
  KILN_ASSERT_OK(kiln_model_quantize(rt.get(), hf_dir().c_str(), out.c_str(), &o));
  EXPECT_GT(progress_calls, 0);

  auto model = load(rt.get(), out);
  ASSERT_TRUE(model);
  // The tokenizer written from tokenizer.json gives HF's ids.
  const std::string prompt = manifest.at("prompt_text");
  std::vector<int32_t> got_ids(256);
  size_t n_ids = 0;
  KILN_ASSERT_OK(kiln_tokenize(model.get(), prompt.data(), prompt.size(), 0, got_ids.data(),
                               got_ids.size(), &n_ids));
  got_ids.resize(ids.size());
  EXPECT_EQ(got_ids, ids);

  auto session = make_session(model.get());
  std::vector<float> logits(hf.size());
  size_t n = 0;
  KILN_ASSERT_OK(kiln_forward(session.get(), ids.data(), ids.size(), KILN_LOGITS_ALL, logits.data(),
                              logits.size(), &n));
  ASSERT_EQ(n, hf.size());
  const double err = rel_l2(logits, hf);
  std::printf("[quantize] %-7s kiln file vs HF %.4g | llama.cpp's file vs HF %.4g\n",
              c.name.c_str(), err, llamacpp);
  RecordProperty("rel_l2_vs_hf", std::to_string(err));
  EXPECT_LE(err, 1.5 * llamacpp) << c.name;

  if (c.greedy_equals_hf) {
    auto s2 = make_session(model.get());
    kiln_sampling_options greedy;
    kiln_sampling_options_default(&greedy, sizeof greedy);
    greedy.temperature = 0;
    kiln_generate_options g;
    kiln_generate_options_default(&g, sizeof g);
    g.sampling = &greedy;
    g.max_tokens = static_cast<int32_t>(greedy_ref.size());
    g.ignore_eos = 1;
    std::vector<int32_t> cont(greedy_ref.size(), -1);
    g.output_ids = cont.data();
    g.output_ids_capacity = cont.size();
    kiln_generate_result res;
    res.struct_size = sizeof res;
    KILN_ASSERT_OK(kiln_generate_ids(s2.get(), ids.data(), ids.size(), &g, &res));
    EXPECT_EQ(cont, greedy_ref) << c.name;
  }
  fs::remove(out);
}

INSTANTIATE_TEST_SUITE_P(TinyQwen2, Quantize,
                         ::testing::Values(QuantCase{KILN_QUANTIZE_F16, "f16", true},
                                           QuantCase{KILN_QUANTIZE_Q8_0, "q8_0", true},
                                           QuantCase{KILN_QUANTIZE_Q4_K_M, "q4_k_m", false}),
                         [](const auto& info) { return info.param.name; });

// Rows that are not whole 256-element super-blocks (tests/fixtures/hf/qwen2: hidden 64, ffn 160):
// Q4_K_M falls back to q5_0 (and Q6_K to q8_0) as llama.cpp's does. The reload stays within the
// Q4_K_M bound above: 1.5× llama.cpp's own Q4_K_M error on tiny-qwen2.
TEST(Quantize, Q4_K_MFallbackTypesReloadWithinTheQ4_K_MBound) {
  const fs::path dir = fixtures() / "hf" / "qwen2";
  const auto ref = nlohmann::json::parse(read_file(dir / "ref.json"));
  const auto ids = ref.at("ids").get<std::vector<int32_t>>();
  const std::vector<float> hf = read_f32(dir / "logits.bin");
  const auto manifest = nlohmann::json::parse(read_file(gguf_fixture_dir() / "manifest.json"));
  const double bound =
      1.5 *
      manifest.at("diff_vs_hf_f32").at("llamacpp_q4_k_m_logits.bin").at("rel_l2").get<double>();
  auto rt = make_cpu_runtime();
  const fs::path out = temp_path("qwen2-64-q4_k_m.gguf");
  KILN_ASSERT_OK(quantize(rt.get(), dir, out, KILN_QUANTIZE_Q4_K_M));
  auto model = load(rt.get(), out);
  ASSERT_TRUE(model);
  auto session = make_session(model.get());
  std::vector<float> logits(hf.size());
  size_t n = 0;
  KILN_ASSERT_OK(kiln_forward(session.get(), ids.data(), ids.size(), KILN_LOGITS_ALL, logits.data(),
                              logits.size(), &n));
  ASSERT_EQ(n, hf.size());
  const double err = rel_l2(logits, hf);
  std::printf("[quantize] q4_k_m with q5_0/q8_0 fallbacks (hidden 64) vs HF %.4g, bound %.4g\n",
              err, bound);
  EXPECT_LE(err, bound);
  fs::remove(out);
}

// A GGUF source: llama.cpp's F32 file re-written as Q8_0 behaves like the HF conversion.
TEST(Quantize, GgufSourceIsRequantised) {
  auto rt = make_cpu_runtime();
  const fs::path out = temp_path("from-gguf-q8_0.gguf");
  KILN_ASSERT_OK(
      quantize(rt.get(), gguf_fixture_dir() / "tiny-qwen2-f32.gguf", out, KILN_QUANTIZE_Q8_0));
  auto model = load(rt.get(), out);
  ASSERT_TRUE(model);
  const auto manifest = nlohmann::json::parse(read_file(gguf_fixture_dir() / "manifest.json"));
  const auto ids = manifest.at("token_ids").get<std::vector<int32_t>>();
  const std::vector<float> hf = read_f32(hf_dir() / "hf_f32_logits.bin");
  auto session = make_session(model.get());
  std::vector<float> logits(hf.size());
  size_t n = 0;
  KILN_ASSERT_OK(kiln_forward(session.get(), ids.data(), ids.size(), KILN_LOGITS_ALL, logits.data(),
                              logits.size(), &n));
  const double llamacpp =
      manifest.at("diff_vs_hf_f32").at("llamacpp_q8_0_logits.bin").at("rel_l2").get<double>();
  EXPECT_LE(rel_l2(logits, hf), 1.5 * llamacpp);
  fs::remove(out);
}

TEST(Quantize, BadInputsGiveSpecificStatusesAndLeaveTheDestinationAlone) {
  auto rt = make_cpu_runtime();
  const fs::path existing = temp_path("existing.gguf");
  std::ofstream(existing) << "keep me";
  EXPECT_EQ(quantize(rt.get(), temp_path("no-such-model"), existing, KILN_QUANTIZE_Q8_0),
            KILN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(kiln_last_error()).find("no-such-model"), std::string::npos);
  EXPECT_EQ(quantize(rt.get(), hf_dir(), existing, 99), KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("kiln_quantize_options.type"), std::string::npos);
  const fs::path no_dir = temp_path("no-such-dir") / "out.gguf";
  EXPECT_EQ(quantize(rt.get(), hf_dir(), no_dir, KILN_QUANTIZE_Q8_0), KILN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(kiln_last_error()).find("no-such-dir"), std::string::npos)
      << kiln_last_error();
  // A directory where the file should go: the final rename fails.
  const fs::path in_the_way = temp_path("a-directory");
  fs::create_directories(in_the_way / "inside");
  EXPECT_EQ(quantize(rt.get(), hf_dir(), in_the_way, KILN_QUANTIZE_Q8_0), KILN_ERR_IO);
  EXPECT_NE(std::string(kiln_last_error()).find("a-directory"), std::string::npos)
      << kiln_last_error();
  EXPECT_TRUE(fs::is_directory(in_the_way / "inside"));
  // Llama 3's RoPE scaling has no GGUF key kiln writes (llama.cpp stores it as a tensor).
  EXPECT_EQ(quantize(rt.get(), fixtures() / "hf" / "llama3", existing, KILN_QUANTIZE_Q8_0),
            KILN_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(kiln_last_error()).find("RoPE"), std::string::npos);
  // Cancelled from the progress callback: the destination is untouched, no temporary is left.
  kiln_quantize_options o;
  kiln_quantize_options_default(&o, sizeof o);
  o.progress_fn = [](float f, const char*, void*) { return f > 0.5f ? 1 : 0; };
  EXPECT_EQ(kiln_model_quantize(rt.get(), hf_dir().c_str(), existing.c_str(), &o),
            KILN_ERR_CANCELLED);
  EXPECT_EQ(read_file(existing), "keep me");
  for (const auto& e : fs::directory_iterator(existing.parent_path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  }
  EXPECT_EQ(kiln_model_quantize(nullptr, hf_dir().c_str(), existing.c_str(), nullptr),
            KILN_ERR_INVALID_ARGUMENT);
  fs::remove_all(existing.parent_path());
}

}  // namespace
}  // namespace kiln_abi_test

// Reference parity through the public ABI: kiln's CPU logits and greedy continuations against HF
// transformers float32 outputs made by tests/fixtures/make_hf_fixtures.py (and, for tiny-qwen2,
// the shared fixture made with transformers on the GPU machine). Not self-checks: every expected
// number here was computed by PyTorch.
#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

struct ParityCase {
  std::string name;
  fs::path dir;
};
void PrintTo(const ParityCase& c, std::ostream* os) { *os << c.name; }

std::vector<ParityCase> parity_cases() {
  std::vector<ParityCase> cases;
  for (const char* arch :
       {"llama3", "llama2", "mistral", "qwen2", "qwen3", "phi3", "gpt2", "nanochat"}) {
    cases.push_back({arch, fixtures() / "hf" / arch});
  }
  cases.push_back({"tiny_qwen2_shared", fixtures() / "tiny-qwen2"});
  cases.push_back({"kjv_tiny_default", source_dir() / "models" / "kjv-tiny"});
  return cases;
}

struct Reference {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;
  std::vector<float> logits;
};

Reference read_reference(const fs::path& dir) {
  Reference r;
  if (fs::exists(dir / "ref.json")) {
    auto j = nlohmann::json::parse(read_file(dir / "ref.json"));
    r.ids = j.at("ids").get<std::vector<int32_t>>();
    r.greedy = j.at("greedy_ids").get<std::vector<int32_t>>();
    r.logits = read_f32(dir / "logits.bin");
  } else {
    auto j = nlohmann::json::parse(read_file(dir / "hf_ref.json"));
    r.ids = j.at("token_ids").get<std::vector<int32_t>>();
    r.greedy = j.at("greedy_continuation_ids").get<std::vector<int32_t>>();
    r.logits = read_f32(dir / "hf_f32_logits.bin");
  }
  return r;
}

class Parity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(Parity, LogitsOfEveryPositionMatchTransformers) {
  const auto& c = GetParam();
  ASSERT_TRUE(fs::exists(c.dir / "config.json")) << "fixture missing: " << c.dir;
  Reference ref = read_reference(c.dir);
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), c.dir);
  ASSERT_TRUE(model);
  kiln_model_info info;
  info.struct_size = sizeof info;
  KILN_ASSERT_OK(kiln_model_get_info(model.get(), &info));
  ASSERT_EQ(ref.logits.size(), ref.ids.size() * size_t(info.vocab_size));

  auto session = make_session(model.get());
  std::vector<float> logits(ref.logits.size(), std::nanf(""));
  size_t n = 0;
  KILN_ASSERT_OK(kiln_forward(session.get(), ref.ids.data(), ref.ids.size(), KILN_LOGITS_ALL,
                              logits.data(), logits.size(), &n));
  ASSERT_EQ(n, ref.logits.size());
  const double err = rel_l2(logits, ref.logits);
  EXPECT_LE(err, 1e-4) << c.name << ": relative L2 error vs HF float32 logits";
  RecordProperty("rel_l2", std::to_string(err));
  std::printf("[parity] %-18s %-20s rel_l2 = %.3g\n", c.name.c_str(), info.architecture, err);

  // Decoding one token at a time must agree with the batch (the KV cache path).
  auto inc = make_session(model.get());
  std::vector<float> row(info.vocab_size);
  std::vector<float> rows;
  for (int32_t id : ref.ids) {
    KILN_ASSERT_OK(kiln_forward(inc.get(), &id, 1, KILN_LOGITS_LAST, row.data(), row.size(), &n));
    rows.insert(rows.end(), row.begin(), row.end());
  }
  EXPECT_LE(rel_l2(rows, ref.logits), 1e-4) << c.name << ": token-by-token decode";
}

TEST_P(Parity, GreedyContinuationMatchesTransformers) {
  const auto& c = GetParam();
  ASSERT_TRUE(fs::exists(c.dir / "config.json")) << "fixture missing: " << c.dir;
  Reference ref = read_reference(c.dir);
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), c.dir);
  ASSERT_TRUE(model);
  auto session = make_session(model.get());

  kiln_sampling_options greedy;
  kiln_sampling_options_default(&greedy, sizeof greedy);
  greedy.temperature = 0;
  kiln_generate_options g;
  kiln_generate_options_default(&g, sizeof g);
  g.sampling = &greedy;
  g.max_tokens = static_cast<int32_t>(ref.greedy.size());
  g.ignore_eos = 1;  // transformers' min_new_tokens made the reference ignore EOS too
  std::vector<int32_t> out(ref.greedy.size(), -1);
  g.output_ids = out.data();
  g.output_ids_capacity = out.size();
  kiln_generate_result res;
  res.struct_size = sizeof res;
  KILN_ASSERT_OK(kiln_generate_ids(session.get(), ref.ids.data(), ref.ids.size(), &g, &res));
  EXPECT_EQ(res.n_generated, static_cast<int32_t>(ref.greedy.size()));
  EXPECT_EQ(res.stop_reason, KILN_STOP_MAX_TOKENS);
  EXPECT_EQ(out, ref.greedy) << c.name;
}

INSTANTIATE_TEST_SUITE_P(HfFixtures, Parity, ::testing::ValuesIn(parity_cases()),
                         [](const auto& info) { return info.param.name; });

// The shared tiny-qwen2 fixture also pins the tokenizer: the first 16 ids of its prompt text.
TEST(ParityTokenizer, TinyQwen2PromptIdsMatchHf) {
  auto j = nlohmann::json::parse(read_file(fixtures() / "tiny-qwen2" / "hf_ref.json"));
  const std::string text = j.at("prompt_text").get<std::string>();
  const auto expected = j.at("token_ids").get<std::vector<int32_t>>();
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), fixtures() / "tiny-qwen2");
  ASSERT_TRUE(model);
  std::vector<int32_t> ids(256);
  size_t n = 0;
  KILN_ASSERT_OK(
      kiln_tokenize(model.get(), text.data(), text.size(), 0, ids.data(), ids.size(), &n));
  ASSERT_GE(n, expected.size());
  ids.resize(expected.size());
  EXPECT_EQ(ids, expected);
  // And those ids decode to the recorded prefix.
  std::string decoded(256, '\0');
  size_t len = 0;
  KILN_ASSERT_OK(kiln_detokenize(model.get(), expected.data(), expected.size(), 0, decoded.data(),
                                 decoded.size(), &len));
  decoded.resize(len);
  EXPECT_EQ(decoded, j.at("prompt_decoded").get<std::string>());
}

}  // namespace
}  // namespace kiln_abi_test

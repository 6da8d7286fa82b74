// The tokenizer rebuilt from GGUF metadata must give the ids of the HF tokenizer.json it came
// from: on llama.cpp's own tiny-qwen2 GGUF (pre "qwen2"), and on GGUF tokenizer metadata written
// here from the Llama 3 and Qwen3 tokenizer.json fixtures the way llama.cpp's converter writes it
// (tokens by id, merges as "a b", special added tokens as control = 3).
#include "formats/gguf_tokenizer.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/gguf.hpp"
#include "gguf_test_writer.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> corpus() {
  std::vector<std::string> texts = {"Hello world", "<|endoftext|>Hi<|endoftext|>",
                                    "numbers 1234567 and 3.14159", "emoji 🦀 and ünïcödé",
                                    "  spaces\t\ttabs\n\nnewlines  "};
  std::ifstream in(test::fixtures_dir() / "tokenizers" / "corpus.jsonl");
  std::string line;
  while (std::getline(in, line)) texts.push_back(json::parse(line).at("text").get<std::string>());
  return texts;
}

void expect_same_ids(const Tokenizer& gguf, const Tokenizer& hf, const std::string& what) {
  int compared = 0;
  for (const std::string& text : corpus()) {
    for (bool parse_special : {false, true}) {
      EXPECT_EQ(gguf.encode(text, true, parse_special), hf.encode(text, true, parse_special))
          << what << ": \"" << text << "\" parse_special=" << parse_special;
      ++compared;
    }
    const auto ids = hf.encode(text, false, false);
    EXPECT_EQ(gguf.decode(ids, false), hf.decode(ids, false)) << what << ": " << text;
  }
  EXPECT_GT(compared, 100);
  EXPECT_EQ(gguf.vocab_size(), hf.vocab_size());
  EXPECT_EQ(gguf.bos_id(), hf.bos_id());
  EXPECT_EQ(gguf.eos_id(), hf.eos_id());
  EXPECT_EQ(gguf.adds_bos(), hf.adds_bos());
}

TEST(GgufTokenizer, LlamaCppsQwen2FileMatchesItsTokenizerJson) {
  const fs::path dir = test::fixtures_dir() / "gguf" / "tiny-qwen2";
  const auto f = GgufFile::open(dir / "tiny-qwen2-q8_0.gguf");
  const auto gguf = gguf_tokenizer(*f);
  ASSERT_NE(gguf, nullptr);
  const auto hf = Tokenizer::from_files(dir / "tokenizer.json", dir / "tokenizer_config.json");
  expect_same_ids(*gguf, *hf, "tiny-qwen2");
  EXPECT_TRUE(gguf->is_special(0));
}

// GGUF tokenizer metadata as llama.cpp's converter writes it for an HF byte-level BPE tokenizer.
std::string gguf_from_tokenizer_json(const json& tok, const json& cfg, const std::string& pre) {
  std::map<int64_t, std::string> by_id;
  for (const auto& [token, id] : tok["model"]["vocab"].items()) by_id[id.get<int64_t>()] = token;
  std::map<int64_t, int32_t> types;
  for (const auto& a : tok["added_tokens"]) {
    by_id[a["id"].get<int64_t>()] = a["content"].get<std::string>();
    types[a["id"].get<int64_t>()] = a["special"].get<bool>() ? 3 : 4;
  }
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;
  for (int64_t id = 0; id <= by_id.rbegin()->first; ++id) {
    tokens.push_back(by_id.count(id) ? by_id[id] : "[PAD" + std::to_string(id) + "]");
    token_types.push_back(types.count(id) ? types[id] : 1);
  }
  std::vector<std::string> merges;
  for (const auto& m : tok["model"]["merges"]) {
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  test::GgufWriter w;
  w.kv_str("tokenizer.ggml.model", "gpt2");
  w.kv_str("tokenizer.ggml.pre", pre);
  w.kv_strings("tokenizer.ggml.tokens", tokens);
  w.kv_i32s("tokenizer.ggml.token_type", token_types);
  w.kv_strings("tokenizer.ggml.merges", merges);
  const auto id_of = [&](const char* key) -> std::optional<uint32_t> {
    if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
    const std::string t =
        cfg[key].is_string() ? cfg[key].get<std::string>() : cfg[key]["content"].get<std::string>();
    for (size_t i = 0; i < tokens.size(); ++i)
      if (tokens[i] == t) return static_cast<uint32_t>(i);
    return std::nullopt;
  };
  if (auto id = id_of("bos_token")) w.kv_u32("tokenizer.ggml.bos_token_id", *id);
  if (auto id = id_of("eos_token")) w.kv_u32("tokenizer.ggml.eos_token_id", *id);
  w.kv_bool("tokenizer.ggml.add_bos_token", cfg.value("add_bos_token", false));
  return w.build();
}

void check_family(const std::string& family, const std::string& pre) {
  const fs::path dir = test::fixtures_dir() / "tokenizers" / family;
  const fs::path tok_path = test::gunzip_fixture(dir / "tokenizer.json.gz");
  const json tok = json::parse(test::read_file(tok_path));
  const json cfg = json::parse(test::read_file(dir / "tokenizer_config.json"));
  const fs::path gguf_path = test::temp_dir("gguf-tok-" + family) / "tok.gguf";
  test::write_file(gguf_path, gguf_from_tokenizer_json(tok, cfg, pre));
  const auto f = GgufFile::open(gguf_path);
  const auto gguf = gguf_tokenizer(*f);
  const auto hf = Tokenizer::from_files(tok_path, dir / "tokenizer_config.json");
  expect_same_ids(*gguf, *hf, family);
}

TEST(GgufTokenizer, Llama3MetadataWithLlamaBpePreMatchesHf) { check_family("llama3", "llama-bpe"); }
TEST(GgufTokenizer, Qwen3MetadataWithQwen2PreMatchesHf) { check_family("qwen3", "qwen2"); }

TEST(GgufTokenizer, UnsupportedModelsAndPreTokenizersAreNamed) {
  const auto message_of = [](const test::GgufWriter& w) -> std::pair<kiln_status, std::string> {
    const std::string b = w.build();
    const auto f = GgufFile::parse(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "t.gguf");
    try {
      gguf_tokenizer(*f);
    } catch (const Error& e) {
      return {e.status(), e.what()};
    }
    return {KILN_OK, ""};
  };
  test::GgufWriter spm;
  spm.kv_str("tokenizer.ggml.model", "llama");
  auto [st1, m1] = message_of(spm);
  EXPECT_EQ(st1, KILN_ERR_UNSUPPORTED);
  EXPECT_NE(m1.find("\"llama\""), std::string::npos) << m1;

  test::GgufWriter pre;
  pre.kv_str("tokenizer.ggml.model", "gpt2");
  pre.kv_str("tokenizer.ggml.pre", "deepseek-coder");
  pre.kv_strings("tokenizer.ggml.tokens", {"a"});
  pre.kv_strings("tokenizer.ggml.merges", {});
  auto [st2, m2] = message_of(pre);
  EXPECT_EQ(st2, KILN_ERR_UNSUPPORTED);
  EXPECT_NE(m2.find("deepseek-coder"), std::string::npos) << m2;

  test::GgufWriter types;
  types.kv_str("tokenizer.ggml.model", "gpt2");
  types.kv_strings("tokenizer.ggml.tokens", {"a", "b"});
  types.kv_strings("tokenizer.ggml.merges", {});
  types.kv_i32s("tokenizer.ggml.token_type", {1});
  auto [st3, m3] = message_of(types);
  EXPECT_EQ(st3, KILN_ERR_FORMAT);
  EXPECT_NE(m3.find("token_type has 1 entries"), std::string::npos) << m3;

  test::GgufWriter none;
  none.kv_str("general.architecture", "qwen2");
  const std::string b = none.build();
  EXPECT_EQ(
      gguf_tokenizer(*GgufFile::parse(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "n")),
      nullptr);
}

}  // namespace
}  // namespace kiln

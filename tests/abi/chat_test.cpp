// kiln_chat_render / kiln_chat_render_tokens through the public C ABI, on the tiny Qwen2 model with
// Qwen2.5's real chat template; the expected text is HF's render (tests/fixtures/chat/expected).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kiln.h"

namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A copy of tiny-qwen2 whose tokenizer_config.json carries Qwen2.5's chat template.
fs::path model_with_template() {
  const fs::path src = fs::path(KILN_FIXTURES_DIR) / "tiny-qwen2";
  const fs::path dst = fs::temp_directory_path() / ("kiln_chat_abi_" + std::to_string(::getpid()));
  fs::create_directories(dst);
  for (const auto& entry : fs::directory_iterator(src)) {
    fs::copy_file(entry.path(), dst / entry.path().filename(),
                  fs::copy_options::overwrite_existing);
  }
  auto config = nlohmann::ordered_json::parse(read(src / "tokenizer_config.json"));
  config["chat_template"] =
      read(fs::path(KILN_FIXTURES_DIR) / "chat" / "templates" / "qwen2.5.jinja");
  std::ofstream(dst / "tokenizer_config.json") << config.dump();
  return dst;
}

class ChatAbi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(kiln_runtime_create(nullptr, &runtime_), KILN_OK) << kiln_last_error();
    dir_ = model_with_template();
    ASSERT_EQ(kiln_model_load(runtime_, dir_.c_str(), nullptr, &model_), KILN_OK)
        << kiln_last_error();
  }
  void TearDown() override {
    kiln_model_free(model_);
    kiln_runtime_free(runtime_);
    fs::remove_all(dir_);
  }
  kiln_runtime* runtime_ = nullptr;
  kiln_model* model_ = nullptr;
  fs::path dir_;
};

TEST_F(ChatAbi, RenderMatchesHfAndFollowsTheBufferRule) {
  const auto expected = nlohmann::json::parse(
      read(fs::path(KILN_FIXTURES_DIR) / "chat" / "expected" / "hf_renders.json"));
  const std::string want = expected["renders"]["qwen2.5"]["system_user_gen"]["text"];
  const kiln_chat_message messages[] = {{"system", "You are a terse assistant.", nullptr, nullptr},
                                        {"user", "What is 2+2?", nullptr, nullptr}};
  kiln_chat_options opts;
  ASSERT_EQ(kiln_chat_options_default(&opts, sizeof opts), KILN_OK);
  EXPECT_EQ(opts.add_generation_prompt, 1);
  size_t needed = 0;
  EXPECT_EQ(kiln_chat_render(model_, messages, 2, &opts, nullptr, 0, &needed),
            KILN_ERR_BUFFER_TOO_SMALL);
  ASSERT_EQ(needed, want.size());
  std::string text(needed, '\0');
  ASSERT_EQ(kiln_chat_render(model_, messages, 2, &opts, text.data(), text.size(), &needed),
            KILN_OK)
      << kiln_last_error();
  EXPECT_EQ(text, want);
}

TEST_F(ChatAbi, ErrorsAreStatusesWithMessages) {
  const kiln_chat_message messages[] = {{"user", "hi", nullptr, nullptr}};
  kiln_chat_options opts;
  ASSERT_EQ(kiln_chat_options_default(&opts, sizeof opts), KILN_OK);
  size_t needed = 0;
  opts.template_override = "{{ raise_exception('no users allowed') }}";
  EXPECT_EQ(kiln_chat_render(model_, messages, 1, &opts, nullptr, 0, &needed),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kiln_last_error()).find("no users allowed"), std::string::npos);
  opts.template_override = "{% if %}";
  EXPECT_EQ(kiln_chat_render(model_, messages, 1, &opts, nullptr, 0, &needed), KILN_ERR_FORMAT);
  EXPECT_NE(std::string(kiln_last_error()).find("line 1"), std::string::npos);
  opts.template_override = nullptr;
  opts.tools_json = "[not json";
  EXPECT_EQ(kiln_chat_render(model_, messages, 1, &opts, nullptr, 0, &needed),
            KILN_ERR_INVALID_ARGUMENT);
  opts.tools_json = nullptr;
  opts.struct_size = 3;
  EXPECT_EQ(kiln_chat_render(model_, messages, 1, &opts, nullptr, 0, &needed),
            KILN_ERR_VERSION_MISMATCH);
  EXPECT_EQ(kiln_chat_render(nullptr, messages, 1, nullptr, nullptr, 0, &needed),
            KILN_ERR_INVALID_ARGUMENT);
}

TEST_F(ChatAbi, RenderTokensMasksAssistantContent) {
  const kiln_chat_message messages[] = {{"user", "Hi", nullptr, nullptr},
                                        {"assistant", "Hello there", nullptr, nullptr}};
  kiln_chat_options opts;
  ASSERT_EQ(kiln_chat_options_default(&opts, sizeof opts), KILN_OK);
  opts.add_generation_prompt = 0;
  size_t n = 0;
  ASSERT_EQ(kiln_chat_render_tokens(model_, messages, 2, &opts, nullptr, nullptr, 0, &n),
            KILN_ERR_BUFFER_TOO_SMALL);
  std::vector<int32_t> ids(n);
  std::vector<uint8_t> mask(n);
  ASSERT_EQ(kiln_chat_render_tokens(model_, messages, 2, &opts, ids.data(), mask.data(), n, &n),
            KILN_OK)
      << kiln_last_error();
  std::vector<int32_t> masked;
  for (size_t i = 0; i < n; ++i) {
    if (mask[i]) masked.push_back(ids[i]);
  }
  size_t len = 0;
  kiln_detokenize(model_, masked.data(), masked.size(), 0, nullptr, 0, &len);
  std::string text(len, '\0');
  ASSERT_EQ(kiln_detokenize(model_, masked.data(), masked.size(), 0, text.data(), len, &len),
            KILN_OK);
  EXPECT_EQ(text, "Hello there<|im_end|>");  // the reply and its end-of-turn token
}

}  // namespace

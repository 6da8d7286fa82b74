// Chat-template engine: error reporting, budgets against hostile templates, and the assistant mask.
#include <gtest/gtest.h>

#include "chat/chat_template.hpp"
#include "chat/conversation.hpp"
#include "core/error.hpp"
#include "test_support.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln::chat {
namespace {

kiln_status status_of(const std::function<void()>& fn, std::string* message = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.status();
  }
  return KILN_OK;
}

std::string render(const std::string& source, const RenderLimits& limits = {}) {
  return ChatTemplate(source).render(Dict{}, limits, 0);
}

TEST(ChatEngine, ParseErrorsReportLineAndColumn) {
  std::string msg;
  EXPECT_EQ(status_of([] { ChatTemplate("line one\n  {% if x %}\n{{ x + }}\n{% endif %}"); }, &msg),
            KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("line 3, column 8"), std::string::npos) << msg;
  EXPECT_EQ(status_of([] { ChatTemplate("{% for x in y %}no end"); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("endfor"), std::string::npos) << msg;
  EXPECT_EQ(status_of([] { ChatTemplate("ok\n{{ 'unterminated }}"); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("line 2, column 4"), std::string::npos) << msg;
  EXPECT_EQ(status_of([] { ChatTemplate("{% frobnicate %}"); }, &msg), KILN_ERR_FORMAT);
  EXPECT_NE(msg.find("frobnicate"), std::string::npos) << msg;
}

TEST(ChatEngine, RaiseExceptionSurfacesTheTemplatesMessage) {
  std::string msg;
  EXPECT_EQ(status_of([] { render("{{ raise_exception('Roles must alternate!') }}"); }, &msg),
            KILN_ERR_INVALID_ARGUMENT);
  EXPECT_NE(msg.find("Roles must alternate!"), std::string::npos) << msg;
}

TEST(ChatEngine, BudgetsStopRunawayTemplates) {
  RenderLimits limits;
  limits.max_steps = 100000;
  std::string msg;
  // A loop nest that would take 10^12 iterations.
  const std::string nest =
      "{% for a in range(1000000) %}{% for b in range(1000000) %}{{ '' }}{% endfor %}{% endfor %}";
  EXPECT_EQ(status_of([&] { render(nest, limits); }, &msg), KILN_ERR_OUT_OF_RANGE);
  EXPECT_NE(msg.find("budget"), std::string::npos) << msg;
  limits.max_steps = 5'000'000;
  limits.max_output_bytes = 1 << 20;
  // Output that doubles until it is huge.
  const std::string blowup =
      "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% "
      "endfor %}";
  EXPECT_EQ(status_of([&] { render(blowup, limits); }, &msg), KILN_ERR_OUT_OF_RANGE);
  EXPECT_EQ(
      status_of([&] { render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", limits); }, &msg),
      KILN_ERR_OUT_OF_RANGE);
  EXPECT_NE(msg.find("nested deeper"), std::string::npos) << msg;
}

TEST(ChatEngine, AssistantMaskCoversAssistantContentAndItsEndOfTurn) {
  const auto dir = test::fixtures_dir() / "tokenizers" / "qwen3";
  const auto tokenizer = Tokenizer::from_files(test::gunzip_fixture(dir / "tokenizer.json.gz"),
                                               dir / "tokenizer_config.json");
  const ChatTemplateConfig config = load_chat_template_config(dir / "tokenizer_config.json", "");
  ASSERT_FALSE(config.chat_template.empty());
  ChatRequest request;
  request.add_generation_prompt = false;
  const std::vector<std::string> answers = {"Hello! How can I help?", "Grüße — 2+2 = 4 🙂"};
  request.messages = {{"system", std::string("Be kind."), "", ""},
                      {"user", std::string("Hi"), "", ""},
                      {"assistant", answers[0], "", ""},
                      {"user", std::string("Sum?"), "", ""},
                      {"assistant", answers[1], "", ""}};
  const RenderedTokens r = render_conversation_tokens(config, request, *tokenizer);
  ASSERT_EQ(r.ids.size(), r.mask.size());
  // The ids are the whole render, tokenized as HF tokenizes the text (independent path).
  const std::string text = render_conversation(config, request);
  EXPECT_EQ(r.ids, tokenizer->encode(text, false, true));
  // Each run of mask=1 decodes to one assistant answer and its end-of-turn token, in order
  // (nanochat's convention: the model learns to stop), and nothing else is masked.
  std::vector<std::string> spans;
  for (size_t i = 0; i < r.ids.size(); ++i) {
    if (!r.mask[i]) continue;
    if (i == 0 || !r.mask[i - 1]) spans.emplace_back();
    spans.back() += tokenizer->decode(std::span<const int32_t>(&r.ids[i], 1), false);
  }
  // Qwen3 writes an empty think block before the last reply (HF's render shows it); it is part of
  // what the template writes for that reply.
  EXPECT_EQ(spans,
            (std::vector<std::string>{answers[0] + "<|im_end|>",
                                      "<think>\n\n</think>\n\n" + answers[1] + "<|im_end|>"}));
}

TEST(ChatEngine, AssistantMaskRefusesRepliesWrittenOutsideTheMessageLoop) {
  const auto dir = test::fixtures_dir() / "tokenizers" / "qwen3";
  const auto tokenizer = Tokenizer::from_files(test::gunzip_fixture(dir / "tokenizer.json.gz"),
                                               dir / "tokenizer_config.json");
  ChatRequest request;
  request.messages = {{"user", std::string("Hi"), "", ""},
                      {"assistant", std::string("Hello"), "", ""}};
  std::string msg;
  // The reply is written after the loop, so no stretch of output can be attributed to it.
  request.template_override =
      "{% for m in messages %}{% if m.role == 'user' %}U:{{ m.content }}\n{% endif %}{% endfor "
      "%}A:{{ messages[1].content }}";
  EXPECT_EQ(status_of([&] { render_conversation_tokens({}, request, *tokenizer); }, &msg),
            KILN_ERR_UNSUPPORTED);
  EXPECT_NE(msg.find("messages[1]"), std::string::npos) << msg;
  // The reply is written in two places with another message in between.
  request.template_override =
      "{% for m in messages %}{{ m.content }}{% endfor %}{% for m in messages %}{{ m.content }}{% "
      "endfor %}";
  EXPECT_EQ(status_of([&] { render_conversation_tokens({}, request, *tokenizer); }, &msg),
            KILN_ERR_UNSUPPORTED);
  EXPECT_NE(msg.find("separate places"), std::string::npos) << msg;
}

TEST(ChatEngine, LoadsNamedTemplatesFromAList) {
  const auto dir = test::temp_dir("chat_named");
  test::write_file(
      dir / "tokenizer_config.json",
      R"({"bos_token": "<s>", "chat_template": [{"name": "default", "template": "D{{ bos_token }}"},)"
      R"( {"name": "tool_use", "template": "T"}]})");
  EXPECT_EQ(load_chat_template_config(dir / "tokenizer_config.json", "").chat_template,
            "D{{ bos_token }}");
  EXPECT_EQ(load_chat_template_config(dir / "tokenizer_config.json", "tool_use").chat_template,
            "T");
  EXPECT_EQ(status_of([&] { load_chat_template_config(dir / "tokenizer_config.json", "nope"); }),
            KILN_ERR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace kiln::chat

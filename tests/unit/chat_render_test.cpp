// Chat templates: kiln's Jinja engine against HF transformers' apply_chat_template renders of real
// templates (tests/fixtures/chat, made by tools/gpu/make_chat_fixtures.py).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "chat/conversation.hpp"
#include "core/error.hpp"
#include "test_support.hpp"

namespace kiln::chat {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // key order matters: tojson keeps it

fs::path chat_dir() { return test::fixtures_dir() / "chat"; }

ChatRequest request_from(const json& conv, std::time_t now) {
  ChatRequest r;
  r.add_generation_prompt = conv["add_generation_prompt"].get<bool>();
  for (const auto& m : conv["messages"]) {
    ChatMessage msg;
    msg.role = m["role"].get<std::string>();
    if (m.contains("content") && !m["content"].is_null())
      msg.content = m["content"].get<std::string>();
    if (m.contains("tool_calls")) msg.tool_calls_json = m["tool_calls"].dump();
    json extra = json::object();
    for (const auto& [k, v] : m.items()) {
      if (k != "role" && k != "content" && k != "tool_calls") extra[k] = v;
    }
    if (!extra.empty()) msg.extra_json = extra.dump();
    r.messages.push_back(std::move(msg));
  }
  if (conv.contains("tools")) r.tools_json = conv["tools"].dump();
  if (conv.contains("extra")) r.extra_context_json = conv["extra"].dump();
  r.now = now;
  return r;
}

TEST(ChatRender, EveryTemplateAndConversationMatchesHf) {
  const json expected = json::parse(test::read_file(chat_dir() / "expected" / "hf_renders.json"));
  const json conversations = json::parse(test::read_file(chat_dir() / "conversations.json"));
  const json special = json::parse(test::read_file(chat_dir() / "special_tokens.json"));
  // The fixture pinned strftime_now to fixed_now (UTC midnight); noon keeps the same local date.
  const std::time_t now = expected["fixed_now"].get<std::time_t>() + 12 * 3600;
  int matched = 0, total = 0;
  for (const auto& [name, renders] : expected["renders"].items()) {
    ChatTemplateConfig config;
    config.chat_template = test::read_file(chat_dir() / "templates" / (name + ".jinja"));
    config.bos_token = special[name]["bos_token"].get<std::string>();
    config.eos_token = special[name]["eos_token"].get<std::string>();
    for (const auto& conv : conversations) {
      const std::string conv_name = conv["name"].get<std::string>();
      SCOPED_TRACE(name + " × " + conv_name);
      const json& want = renders[conv_name];
      ++total;
      const ChatRequest request = request_from(conv, now);
      if (want.contains("text")) {
        std::string got;
        try {
          got = render_conversation(config, request);
        } catch (const Error& e) {
          ADD_FAILURE() << "render failed: " << e.what();
          continue;
        }
        EXPECT_EQ(got, want["text"].get<std::string>());
        if (got == want["text"].get<std::string>()) ++matched;
      } else {
        try {
          render_conversation(config, request);
          ADD_FAILURE() << "HF raised '" << want["error"] << "' but kiln rendered";
        } catch (const Error& e) {
          EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
          EXPECT_NE(std::string(e.what()).find(want["error"].get<std::string>()), std::string::npos)
              << e.what();
          ++matched;
        }
      }
    }
  }
  EXPECT_EQ(matched, total);
  std::printf("chat templates: %d of %d template x conversation renders match HF\n", matched,
              total);
}

}  // namespace
}  // namespace kiln::chat

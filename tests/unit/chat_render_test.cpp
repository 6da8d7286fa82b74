// Chat templates: kiln's Jinja engine against HF transformers' apply_chat_template renders of real
// templates (tests/fixtures/chat, made by tools/gpu/make_chat_fixtures.py), and the assistant mask
// of render_conversation_tokens against spans read off those renders.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "chat/conversation.hpp"
#include "core/error.hpp"
#include "test_support.hpp"
#include "tokenizer/tokenizer.hpp"

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

// How a template family marks an assistant turn in its rendered text: the header that opens it
// and the tokens that can end it. Read off the templates and HF's renders, not off kiln's code.
struct TurnMarkers {
  std::string template_name, tokenizer_dir;
  std::vector<std::string> headers;
  std::vector<std::string> ends;
  // The tokenizer's normalizer prepends "▁" to each stretch of text between added tokens
  // (SentencePiece's legacy behaviour, Prepend in tokenizer.json): the ids spell one space more
  // than the render right after <s>, </s> and the like.
  bool prepends_space_after_added_tokens = false;
};

// The byte ranges of `text` that a training mask should cover: after each assistant header, up to
// and including the first end-of-turn token (the convention of nanochat and HF {% generation %}).
// A header with no end after it is the generation prompt: nothing to learn there.
std::vector<std::pair<size_t, size_t>> expected_spans(const std::string& text,
                                                      const TurnMarkers& m) {
  std::vector<std::pair<size_t, size_t>> spans;
  for (const std::string& header : m.headers) {
    for (size_t at = text.find(header); at != std::string::npos; at = text.find(header, at + 1)) {
      const size_t body = at + header.size();
      size_t end = std::string::npos;
      for (const std::string& e : m.ends) {
        const size_t hit = text.find(e, body);
        if (hit != std::string::npos) end = std::min(end, hit + e.size());
      }
      if (end != std::string::npos) spans.emplace_back(body, end);
    }
  }
  std::sort(spans.begin(), spans.end());
  return spans;
}

TEST(ChatRender, AssistantMaskCoversTheRepliesOfHfRenders) {
  const json expected = json::parse(test::read_file(chat_dir() / "expected" / "hf_renders.json"));
  const json conversations = json::parse(test::read_file(chat_dir() / "conversations.json"));
  const json special = json::parse(test::read_file(chat_dir() / "special_tokens.json"));
  const std::time_t now = expected["fixed_now"].get<std::time_t>() + 12 * 3600;
  const std::vector<TurnMarkers> families = {
      {"qwen3", "qwen3", {"<|im_start|>assistant\n"}, {"<|im_end|>"}},
      {"qwen2.5", "qwen3", {"<|im_start|>assistant\n"}, {"<|im_end|>"}},
      {"llama3", "llama3", {"<|start_header_id|>assistant<|end_header_id|>\n\n"}, {"<|eot_id|>"}},
      {"llama3.3", "llama3", {"<|start_header_id|>assistant<|end_header_id|>\n\n"}, {"<|eot_id|>"}},
      {"gpt-oss", "gptoss", {"<|start|>assistant"}, {"<|end|>", "<|return|>", "<|call|>"}},
      // Mistral's replies follow [/INST], or [/TOOL_RESULTS] when they answer a tool result.
      {"mistral-nemo", "mistral", {"[/INST]", "[/TOOL_RESULTS]"}, {"</s>"}, true},
  };
  int conversations_checked = 0;
  int whole_encode_matched = 0, whole_encode_crosses_edge = 0;
  for (const TurnMarkers& family : families) {
    const auto dir = test::fixtures_dir() / "tokenizers" / family.tokenizer_dir;
    const auto tokenizer = Tokenizer::from_files(test::gunzip_fixture(dir / "tokenizer.json.gz"),
                                                 dir / "tokenizer_config.json");
    ChatTemplateConfig config;
    config.chat_template =
        test::read_file(chat_dir() / "templates" / (family.template_name + ".jinja"));
    config.bos_token = special[family.template_name]["bos_token"].get<std::string>();
    config.eos_token = special[family.template_name]["eos_token"].get<std::string>();
    for (const auto& conv : conversations) {
      const std::string conv_name = conv["name"].get<std::string>();
      const json& want = expected["renders"][family.template_name][conv_name];
      if (!want.contains("text")) continue;  // HF raised: nothing to mask
      SCOPED_TRACE(family.template_name + " × " + conv_name);
      const std::string hf_text = want["text"].get<std::string>();
      const RenderedTokens r =
          render_conversation_tokens(config, request_from(conv, now), *tokenizer);
      ASSERT_EQ(r.ids.size(), r.mask.size());
      // Where each token of `ids` starts in the text they spell, plus the end.
      const auto spell = [&](const std::vector<int32_t>& ids, std::string& spelled) {
        std::vector<size_t> offsets;
        bool after_added_token = true;  // the input's start counts as one for Prepend
        for (const int32_t id : ids) {
          offsets.push_back(spelled.size());
          std::string bytes = tokenizer->token_bytes(id);
          const bool added = tokenizer->is_special(id);
          if (family.prepends_space_after_added_tokens && after_added_token && !added &&
              !bytes.empty() && bytes.front() == ' ') {
            bytes.erase(0, 1);
          }
          after_added_token = added;
          spelled += bytes;
        }
        offsets.push_back(spelled.size());
        return offsets;
      };
      // The ids spell HF's render exactly; token_offsets[k] is where token k starts in it.
      std::string spelled;
      const std::vector<size_t> token_offsets = spell(r.ids, spelled);
      ASSERT_EQ(spelled, hf_text);
      const auto spans = expected_spans(hf_text, family);
      // Encoding the render stretch by stretch gives the ids of encoding it whole (which the
      // tokenizer conformance tests hold to HF's ids) — unless the whole encode has a token
      // across a span's edge (Mistral's "]<" in "[/INST]<think>"): then no ids can both equal
      // it and mask the reply exactly.
      const std::vector<int32_t> whole =
          tokenizer->encode(hf_text, /*add_special=*/false, /*parse_special=*/true);
      std::string whole_spelled;
      const std::vector<size_t> whole_offsets = spell(whole, whole_spelled);
      ASSERT_EQ(whole_spelled, hf_text);
      bool whole_crosses_edge = false;
      for (size_t k = 0; k < whole.size(); ++k) {
        for (const auto& [sb, se] : spans) {
          for (const size_t edge : {sb, se}) {
            whole_crosses_edge =
                whole_crosses_edge || (whole_offsets[k] < edge && whole_offsets[k + 1] > edge);
          }
        }
      }
      if (whole_crosses_edge) {
        ++whole_encode_crosses_edge;
      } else {
        EXPECT_EQ(r.ids, whole);
        ++whole_encode_matched;
      }
      size_t masked = 0;
      for (size_t k = 0; k < r.ids.size(); ++k) {
        const size_t b = token_offsets[k], e = token_offsets[k + 1];
        bool inside = false, straddles = false;
        for (const auto& [sb, se] : spans) {
          inside = inside || (b >= sb && e <= se);
          straddles = straddles || (b < se && e > sb && !(b >= sb && e <= se));
        }
        EXPECT_FALSE(straddles) << "token " << k << " crosses an assistant span's edge";
        EXPECT_EQ(r.mask[k], inside ? 1 : 0)
            << "token " << k << " '" << hf_text.substr(b, e - b) << "' at byte " << b;
        masked += r.mask[k];
      }
      if (!spans.empty()) {
        EXPECT_GT(masked, 0u);
        ++conversations_checked;
      }
    }
  }
  EXPECT_GE(conversations_checked, 6 * 4);  // every family has 4 conversations with replies
  std::printf(
      "chat masks: ids equal the whole-render encode in %d renders; in %d the whole "
      "encode has a token across a reply's edge\n",
      whole_encode_matched, whole_encode_crosses_edge);
  // Only Mistral's vocabulary merges a reply's first byte with "]" of [/INST].
  EXPECT_LE(whole_encode_crosses_edge, 2);
}

// Qwen3 rewrites assistant content: it drops the <think> part of replies before the last user
// message and re-emits the last reply's reasoning in its own format. The masked text is what HF's
// render shows for each reply (tests/fixtures/chat/expected, qwen3 × thinking_history), read by
// eye.
TEST(ChatRender, Qwen3MaskFollowsTheRewrittenThinkingReplies) {
  const json conversations = json::parse(test::read_file(chat_dir() / "conversations.json"));
  const auto dir = test::fixtures_dir() / "tokenizers" / "qwen3";
  const auto tokenizer = Tokenizer::from_files(test::gunzip_fixture(dir / "tokenizer.json.gz"),
                                               dir / "tokenizer_config.json");
  const ChatTemplateConfig config = load_chat_template_config(dir / "tokenizer_config.json", "");
  ASSERT_FALSE(config.chat_template.empty());
  const json* conv = nullptr;
  for (const auto& c : conversations) {
    if (c["name"] == "thinking_history") conv = &c;
  }
  ASSERT_NE(conv, nullptr);
  const RenderedTokens r = render_conversation_tokens(config, request_from(*conv, 0), *tokenizer);
  std::vector<std::string> replies;
  for (size_t k = 0; k < r.ids.size(); ++k) {
    if (!r.mask[k]) continue;
    if (k == 0 || !r.mask[k - 1]) replies.emplace_back();
    replies.back() += tokenizer->token_bytes(r.ids[k]);
  }
  const std::vector<std::string> want = {"x = 2<|im_end|>",
                                         "<think>\nSubtract 2.\n</think>\n\nx = 1<|im_end|>"};
  EXPECT_EQ(replies, want);
}

}  // namespace
}  // namespace kiln::chat

#include "chat/conversation.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <sstream>
#include <string_view>
#include <vector>

#include "chat/chat_template.hpp"
#include "chat/json_convert.hpp"
#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln::chat {

namespace {

std::optional<std::string> token_text(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

Value message_value(const ChatMessage& m, size_t index) {
  Dict d;
  d.set("role", Value(m.role));
  if (m.content) {
    d.set("content", Value(*m.content));
  } else {
    d.set("content", Value(None{}));
  }
  const std::string where = "messages[" + std::to_string(index) + "]";
  if (!m.tool_calls_json.empty()) {
    Value calls = parse_json_argument(m.tool_calls_json, (where + ".tool_calls_json").c_str());
    if (!calls.is_list())
      fail(KILN_ERR_INVALID_ARGUMENT, where + ".tool_calls_json must be a JSON array");
    d.set("tool_calls", calls);
  }
  if (!m.extra_json.empty()) {
    Value extra = parse_json_argument(m.extra_json, (where + ".extra_json").c_str());
    if (!extra.is_dict())
      fail(KILN_ERR_INVALID_ARGUMENT, where + ".extra_json must be a JSON object");
    for (const auto& [k, v] : extra.dict().items) d.set(k, v);
  }
  return Value(std::move(d));
}

// `trace`, when given, receives which message each stretch of the output was written for.
std::string render_impl(const ChatTemplateConfig& config, const ChatRequest& request,
                        MessageTrace* trace) {
  const std::string& source =
      request.template_override.empty() ? config.chat_template : request.template_override;
  if (source.empty()) {
    fail(
        KILN_ERR_INVALID_ARGUMENT,
        "this model has no chat template (tokenizer_config.json has no chat_template); pass one in "
        "kiln_chat_options.template_override");
  }
  const ChatTemplate tmpl(source);
  Dict context;
  List messages;
  for (size_t i = 0; i < request.messages.size(); ++i) {
    messages.push_back(message_value(request.messages[i], i));
    if (trace) trace->messages.push_back(&messages.back().dict());
  }
  context.set("messages", Value(std::move(messages)));
  context.set("add_generation_prompt", Value(request.add_generation_prompt));
  if (!request.tools_json.empty()) {
    Value tools = parse_json_argument(request.tools_json, "tools_json");
    if (!tools.is_list()) fail(KILN_ERR_INVALID_ARGUMENT, "tools_json must be a JSON array");
    context.set("tools", tools);
  } else {
    context.set("tools", Value(None{}));  // HF passes tools=None
  }
  if (config.bos_token) context.set("bos_token", Value(*config.bos_token));
  if (config.eos_token) context.set("eos_token", Value(*config.eos_token));
  if (!request.extra_context_json.empty()) {
    Value extra = parse_json_argument(request.extra_context_json, "extra_context_json");
    if (!extra.is_dict())
      fail(KILN_ERR_INVALID_ARGUMENT, "extra_context_json must be a JSON object");
    for (const auto& [k, v] : extra.dict().items) context.set(k, v);
  }
  return tmpl.render(context, request.limits, request.now ? *request.now : std::time(nullptr),
                     trace);
}

// The text the template writes to open an assistant reply, found by rendering the messages
// before the first assistant one: what add_generation_prompt=true adds to that render, or, for a
// template that writes the prompt regardless (Llama 3's original one), what it writes after the
// last message. Empty when there is no message before the first reply or those renders fail (a
// template may refuse a conversation that ends early); the whole turn is then body.
std::string assistant_header(const ChatTemplateConfig& config, const ChatRequest& request) {
  size_t first = 0;
  while (first < request.messages.size() && request.messages[first].role != "assistant") ++first;
  if (first == 0 || first == request.messages.size()) return {};
  ChatRequest with = request;
  with.messages.resize(first);
  with.add_generation_prompt = true;
  ChatRequest without = with;
  without.add_generation_prompt = false;
  MessageTrace trace;
  std::string a, b;
  try {
    a = render_impl(config, with, &trace);
    b = render_impl(config, without, nullptr);
  } catch (const Error&) {
    return {};
  }
  if (a.size() > b.size() && a.compare(0, b.size(), b) == 0) return a.substr(b.size());
  size_t messages_end = 0;
  for (const MessageTrace::Span& span : trace.spans)
    messages_end = std::max(messages_end, span.end);
  return messages_end > 0 ? a.substr(messages_end) : std::string();
}

// How much of an assistant turn is the header: its common prefix with `header`, all of it, or
// else cut back to a line end. The cut keeps a reply that starts like the header's continuation
// (Qwen3's generation prompt may end in "<think>\n\n</think>\n\n"; a reply "<tool_call>" shares
// "<t") from losing its first bytes.
size_t header_length(std::string_view turn, std::string_view header) {
  size_t common = 0;
  while (common < turn.size() && common < header.size() && turn[common] == header[common]) {
    ++common;
  }
  if (common == header.size()) return common;
  const size_t newline = header.substr(0, common).rfind('\n');
  return newline == std::string_view::npos ? 0 : newline + 1;
}

// Where the body of an assistant turn ends: after its last special token (the end-of-turn token:
// <|im_end|>, <|eot_id|>, </s>, <|return|>, ...), which belongs to the body because the model must
// learn to emit it (nanochat's render_conversation masks assistant_end as 1; HF templates put it
// inside {% generation %}). What follows it (a newline) is template text. A turn without special
// tokens ends at its last non-whitespace byte.
size_t turn_body_end(std::string_view turn, size_t body_begin, const Tokenizer& tokenizer) {
  const std::string_view body = turn.substr(body_begin);
  const std::vector<int32_t> ids =
      tokenizer.encode(body, /*add_special=*/false, /*parse_special=*/true);
  for (size_t k = ids.size(); k-- > 0;) {
    if (!tokenizer.is_special(ids[k])) continue;
    const std::string token = tokenizer.decode(std::span<const int32_t>(&ids[k], 1), false);
    const size_t at = token.empty() ? std::string_view::npos : body.rfind(token);
    if (at != std::string_view::npos) return body_begin + at + token.size();
    break;
  }
  size_t end = turn.size();
  while (end > body_begin && std::isspace(static_cast<unsigned char>(turn[end - 1]))) --end;
  return end;
}

}  // namespace

ChatTemplateConfig load_chat_template_config(const std::filesystem::path& path,
                                             const std::string& name) {
  ChatTemplateConfig config;
  std::ifstream in(path, std::ios::binary);
  if (!in) return config;
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(KILN_ERR_FORMAT, "'" + path.string() + "' is not valid JSON: " + e.what());
  }
  config.bos_token = token_text(j, "bos_token");
  config.eos_token = token_text(j, "eos_token");
  const std::string wanted = name.empty() ? "default" : name;
  if (j.contains("chat_template")) {
    const auto& t = j["chat_template"];
    if (t.is_string()) {
      if (!name.empty() && name != "default") {
        fail(
            KILN_ERR_INVALID_ARGUMENT,
            "'" + path.string() + "' has a single chat_template; no template named '" + name + "'");
      }
      config.chat_template = t.get<std::string>();
    } else if (t.is_array()) {
      for (const auto& item : t) {
        if (!item.is_object() || !item.contains("name") || !item.contains("template") ||
            !item["name"].is_string() || !item["template"].is_string()) {
          fail(KILN_ERR_FORMAT,
               "'" + path.string() +
                   "': chat_template list entries need string 'name' and 'template'");
        }
        config.template_names.push_back(item["name"].get<std::string>());
        if (item["name"] == wanted) config.chat_template = item["template"].get<std::string>();
      }
      if (config.chat_template.empty()) {
        std::string names;
        for (const auto& n : config.template_names) names += (names.empty() ? "" : ", ") + n;
        fail(KILN_ERR_INVALID_ARGUMENT, "'" + path.string() + "' has no chat template named '" +
                                            wanted + "' (it has: " + names + ")");
      }
    } else if (!t.is_null()) {
      fail(KILN_ERR_FORMAT, "'" + path.string() + "': chat_template must be a string or a list");
    }
  }
  return config;
}

std::string render_conversation(const ChatTemplateConfig& config, const ChatRequest& request) {
  return render_impl(config, request, nullptr);
}

RenderedTokens render_conversation_tokens(const ChatTemplateConfig& config,
                                          const ChatRequest& request, const Tokenizer& tokenizer) {
  MessageTrace trace;
  const std::string text = render_impl(config, request, &trace);
  const std::string header = assistant_header(config, request);

  // The stretches of `text` that get mask 1, in order.
  std::vector<std::pair<size_t, size_t>> marked;
  for (size_t i = 0; i < request.messages.size(); ++i) {
    if (request.messages[i].role != "assistant") continue;
    size_t begin = std::string::npos, end = 0;
    for (const MessageTrace::Span& span : trace.spans) {
      if (span.message != i) continue;
      if (begin != std::string::npos && span.begin != end) {
        fail(KILN_ERR_UNSUPPORTED, "the chat template writes messages[" + std::to_string(i) +
                                       "] (assistant) in separate places, so its tokens "
                                       "cannot be masked");
      }
      if (begin == std::string::npos) begin = span.begin;
      end = span.end;
    }
    if (begin == std::string::npos) {
      fail(KILN_ERR_UNSUPPORTED,
           "the chat template writes nothing for messages[" + std::to_string(i) +
               "] (assistant) while looping over the messages, so its tokens cannot be masked");
    }
    const std::string_view turn(text.data() + begin, end - begin);
    const size_t body_begin = header_length(turn, header);
    const size_t body_end = turn_body_end(turn, body_begin, tokenizer);
    if (body_end > body_begin) marked.emplace_back(begin + body_begin, begin + body_end);
  }

  RenderedTokens out;
  const auto add = [&](size_t from, size_t to, bool assistant) {
    if (to <= from) return;
    // Each stretch is encoded as the continuation of the text before it, so that the ids are
    // those of encoding the whole text (SentencePiece-style tokenizers mark the input's start).
    const std::string_view all(text);
    const std::vector<int32_t> ids = tokenizer.encode_continuation(
        all.substr(0, from), all.substr(from, to - from), /*parse_special=*/true);
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.mask.insert(out.mask.end(), ids.size(), assistant ? 1 : 0);
  };
  size_t pos = 0;
  for (const auto& [from, to] : marked) {
    add(pos, from, false);
    add(from, to, true);
    pos = to;
  }
  add(pos, text.size(), false);
  return out;
}

}  // namespace kiln::chat

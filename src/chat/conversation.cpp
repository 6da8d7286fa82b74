#include "chat/conversation.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "chat/chat_template.hpp"
#include "chat/json_convert.hpp"
#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace kiln::chat {

namespace {

// Private-use code points around the sentinel words: they never occur in real text by accident.
constexpr const char* kBegin = "\xEE\x80\x80kiln-assistant-begin\xEE\x80\x80";
constexpr const char* kEnd = "\xEE\x80\x80kiln-assistant-end\xEE\x80\x80";

std::optional<std::string> token_text(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

Value message_value(const ChatMessage& m, size_t index, const std::string* content_override) {
  Dict d;
  d.set("role", Value(m.role));
  if (content_override) {
    d.set("content", Value(*content_override));
  } else if (m.content) {
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

// With `mark_assistant`, assistant content is wrapped in sentinels (whitespace kept outside).
std::string render_impl(const ChatTemplateConfig& config, const ChatRequest& request,
                        bool mark_assistant) {
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
    const ChatMessage& m = request.messages[i];
    if (mark_assistant && m.role == "assistant" && m.content) {
      const std::string& c = *m.content;
      if (c.find(kBegin) != std::string::npos || c.find(kEnd) != std::string::npos) {
        fail(KILN_ERR_INVALID_ARGUMENT,
             "messages[" + std::to_string(i) + "] contains kiln's mask sentinel text");
      }
      size_t b = 0, e = c.size();
      while (b < e && std::isspace(static_cast<unsigned char>(c[b]))) ++b;
      while (e > b && std::isspace(static_cast<unsigned char>(c[e - 1]))) --e;
      const std::string marked = c.substr(0, b) + kBegin + c.substr(b, e - b) + kEnd + c.substr(e);
      messages.push_back(message_value(m, i, &marked));
    } else {
      messages.push_back(message_value(m, i, nullptr));
    }
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
  return tmpl.render(context, request.limits, request.now ? *request.now : std::time(nullptr));
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
  return render_impl(config, request, false);
}

RenderedTokens render_conversation_tokens(const ChatTemplateConfig& config,
                                          const ChatRequest& request, const Tokenizer& tokenizer) {
  const std::string plain = render_impl(config, request, false);
  const std::string marked = render_impl(config, request, true);
  // Cut the marked text into (text, is_assistant) segments.
  std::vector<std::pair<std::string, bool>> segments;
  const std::string begin(kBegin), end(kEnd);
  size_t pos = 0;
  while (pos <= marked.size()) {
    const size_t b = marked.find(begin, pos);
    const size_t stray_end = marked.find(end, pos);
    if (stray_end != std::string::npos && (b == std::string::npos || stray_end < b)) {
      fail(KILN_ERR_UNSUPPORTED,
           "the chat template splits or drops the start of an assistant message's content, "
           "so its tokens cannot be masked");
    }
    if (b == std::string::npos) {
      segments.emplace_back(marked.substr(pos), false);
      break;
    }
    const size_t e = marked.find(end, b + begin.size());
    const size_t next_begin = marked.find(begin, b + begin.size());
    if (e == std::string::npos || (next_begin != std::string::npos && next_begin < e)) {
      fail(KILN_ERR_UNSUPPORTED,
           "the chat template splits or drops the end of an assistant message's content, "
           "so its tokens cannot be masked");
    }
    segments.emplace_back(marked.substr(pos, b - pos), false);
    segments.emplace_back(marked.substr(b + begin.size(), e - b - begin.size()), true);
    pos = e + end.size();
  }
  std::string joined;
  for (const auto& [text, assistant] : segments) joined += text;
  if (joined != plain) {
    fail(KILN_ERR_UNSUPPORTED,
         "the chat template transforms assistant content (the render differs once the "
         "content is marked), so its tokens cannot be masked");
  }
  RenderedTokens out;
  for (const auto& [text, assistant] : segments) {
    if (text.empty()) continue;
    const std::vector<int32_t> ids =
        tokenizer.encode(text, /*add_special=*/false, /*parse_special=*/true);
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.mask.insert(out.mask.end(), ids.size(), assistant ? 1 : 0);
  }
  return out;
}

}  // namespace kiln::chat

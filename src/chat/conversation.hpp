// Conversation rendering: a model's chat template (tokenizer_config.json) + messages → prompt text,
// and → token ids with the per-token assistant mask used for training (as nanochat's
// render_conversation returns).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "chat/interpreter.hpp"

namespace kiln {
class Tokenizer;
}

namespace kiln::chat {

struct ChatMessage {
  std::string role;
  std::optional<std::string> content;  // nullopt → None
  std::string tool_calls_json;         // "" or a JSON array → message.tool_calls
  std::string extra_json;              // "" or a JSON object merged into the message
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
  std::string tools_json;          // "" or a JSON array → tools
  std::string extra_context_json;  // "" or a JSON object of extra template variables
  std::string template_override;   // "" = the model's template
  std::string template_name;       // "" = "default" when the config holds named templates
  std::optional<std::time_t> now;  // strftime_now's clock; nullopt = current time
  RenderLimits limits;
};

// The chat-template part of tokenizer_config.json.
struct ChatTemplateConfig {
  std::string chat_template;                // the selected template ("" if none)
  std::vector<std::string> template_names;  // names when chat_template is a list
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
};

// Reads tokenizer_config.json. A missing file gives an empty config. chat_template may be a
// string or a list of {"name", "template"}; `name` picks one ("" → "default").
ChatTemplateConfig load_chat_template_config(const std::filesystem::path& tokenizer_config_json,
                                             const std::string& name);

// Renders the conversation. Throws KILN_ERR_INVALID_ARGUMENT when there is no template (naming
// the file and the template_override option), plus ChatTemplate's errors.
std::string render_conversation(const ChatTemplateConfig& config, const ChatRequest& request);

struct RenderedTokens {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // 1 = the token comes from an assistant message's content
};

// Renders and tokenizes, marking the tokens of assistant content. Method: the conversation is
// rendered twice, once plainly and once with private sentinel strings around each assistant
// message's content (leading/trailing whitespace kept outside them, so `trim` behaves the same).
// The sentinels are removed and the result must equal the plain render byte for byte; then the
// text is cut into segments at the sentinels, each segment is encoded on its own (special tokens
// parsed, no BOS/EOS added: the template writes them) and the assistant segments get mask 1.
// A template that moves, drops or splits assistant content (so the sentinels do not pair up, or
// the texts differ) gives KILN_ERR_UNSUPPORTED naming the message.
RenderedTokens render_conversation_tokens(const ChatTemplateConfig& config,
                                          const ChatRequest& request, const Tokenizer& tokenizer);

}  // namespace kiln::chat

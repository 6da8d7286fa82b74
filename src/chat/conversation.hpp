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
  std::vector<uint8_t> mask;  // 1 = the token is part of an assistant reply (see below)
};

// Renders and tokenizes, marking the tokens of each assistant reply. Method: the template is
// rendered once with a MessageTrace, which attributes each stretch of the output to the message
// the template was looping over when it wrote it — so a template that rewrites the content (Qwen3
// drops the <think> part of earlier replies and re-formats the last one) is followed as it is.
// Of an assistant message's stretch, the leading header (its common prefix with the generation
// prompt the template writes after the messages before the first assistant one, cut back to a
// line end unless all of it matches) gets 0; the body —
// whatever the template wrote for the reply, content, reasoning and tool calls, up to and
// including its last special token, the end-of-turn token (<|im_end|>, <|eot_id|>, </s>), as
// nanochat's render_conversation and HF's {% generation %} blocks count it — gets 1; what follows
// (a newline) gets 0. The text is cut at the body's edges and each piece is encoded on its own
// (special tokens parsed, no BOS/EOS added: the template writes them), so the ids decode to the
// render. An assistant message the template writes nothing for, or writes in two places, gives
// KILN_ERR_UNSUPPORTED naming it.
RenderedTokens render_conversation_tokens(const ChatTemplateConfig& config,
                                          const ChatRequest& request, const Tokenizer& tokenizer);

}  // namespace kiln::chat

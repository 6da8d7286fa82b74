// C ABI: chat templates (kiln_chat_*). The engine lives in src/chat/.
#include <string>
#include <vector>

#include "chat/conversation.hpp"
#include "shim.hpp"

using kiln::capi::check_struct_size;
using kiln::capi::copy_out;
using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {

kiln_chat_options default_chat_options() {
  kiln_chat_options o{};
  o.struct_size = sizeof(kiln_chat_options);
  o.add_generation_prompt = 1;
  const kiln::chat::RenderLimits limits;
  o.max_steps = limits.max_steps;
  o.max_output_bytes = limits.max_output_bytes;
  return o;
}

struct PreparedChat {
  kiln::chat::ChatTemplateConfig config;
  kiln::chat::ChatRequest request;
};

PreparedChat prepare(const kiln_model* model, const kiln_chat_message* messages, size_t n_messages,
                     const kiln_chat_options* options) {
  require_non_null(model, "model");
  if (n_messages > 0) require_non_null(messages, "messages");
  check_struct_size(options, "kiln_chat_options");
  const kiln_chat_options opts = options ? *options : default_chat_options();
  PreparedChat p;
  p.config = kiln::chat::load_chat_template_config(model->impl->directory / "tokenizer_config.json",
                                                   opts.template_name ? opts.template_name : "");
  auto& r = p.request;
  for (size_t i = 0; i < n_messages; ++i) {
    const kiln_chat_message& m = messages[i];
    if (!m.role)
      kiln::fail(KILN_ERR_INVALID_ARGUMENT, "messages[" + std::to_string(i) + "].role is NULL");
    kiln::chat::ChatMessage msg;
    msg.role = m.role;
    if (m.content) msg.content = std::string(m.content);
    if (m.tool_calls_json) msg.tool_calls_json = m.tool_calls_json;
    if (m.extra_json) msg.extra_json = m.extra_json;
    r.messages.push_back(std::move(msg));
  }
  r.add_generation_prompt = opts.add_generation_prompt != 0;
  if (opts.tools_json) r.tools_json = opts.tools_json;
  if (opts.extra_context_json) r.extra_context_json = opts.extra_context_json;
  if (opts.template_override) r.template_override = opts.template_override;
  if (opts.now_unix_seconds != 0) r.now = static_cast<std::time_t>(opts.now_unix_seconds);
  if (opts.max_steps == 0 || opts.max_output_bytes == 0) {
    kiln::fail(KILN_ERR_INVALID_ARGUMENT,
               "kiln_chat_options: max_steps and max_output_bytes must be > 0");
  }
  r.limits.max_steps = opts.max_steps;
  r.limits.max_output_bytes = opts.max_output_bytes;
  return p;
}

}  // namespace

extern "C" {

KILN_API kiln_status kiln_chat_options_default(kiln_chat_options* options, size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_chat_options", default_chat_options());
  });
}

KILN_API kiln_status kiln_chat_render(const kiln_model* model, const kiln_chat_message* messages,
                                      size_t n_messages, const kiln_chat_options* options,
                                      char* text, size_t capacity, size_t* text_len) {
  return guarded([&] {
    require_non_null(text_len, "text_len");
    const PreparedChat p = prepare(model, messages, n_messages, options);
    const std::string out = kiln::chat::render_conversation(p.config, p.request);
    copy_out(out.data(), out.size(), 1, text, capacity, text_len, "chat text");
  });
}

KILN_API kiln_status kiln_chat_render_tokens(const kiln_model* model,
                                             const kiln_chat_message* messages, size_t n_messages,
                                             const kiln_chat_options* options, int32_t* ids,
                                             uint8_t* mask, size_t capacity, size_t* n_ids) {
  return guarded([&] {
    require_non_null(n_ids, "n_ids");
    const PreparedChat p = prepare(model, messages, n_messages, options);
    const auto rendered = kiln::chat::render_conversation_tokens(p.config, p.request,
                                                                 model->impl->require_tokenizer());
    *n_ids = rendered.ids.size();  // reported even when the mask buffer is the one too small
    size_t needed = 0;
    copy_out(rendered.mask.data(), rendered.mask.size(), 1, mask, capacity, &needed,
             "assistant mask");
    copy_out(rendered.ids.data(), rendered.ids.size(), sizeof(int32_t), ids, capacity, n_ids,
             "token ids");
  });
}

}  // extern "C"

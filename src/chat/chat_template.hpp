// ChatTemplate: a parsed Jinja2 chat template (the subset HF chat templates use), rendered the way
// transformers' apply_chat_template renders it.
#pragma once

#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include "chat/ast.hpp"
#include "chat/interpreter.hpp"
#include "chat/value.hpp"

namespace kiln::chat {

class ChatTemplate {
 public:
  // Parses; throws kiln::Error(KILN_ERR_FORMAT) with line and column on a syntax error.
  explicit ChatTemplate(std::string_view source);

  // Renders with `context` (messages, tools, add_generation_prompt, bos_token, ...) plus the
  // globals raise_exception, strftime_now (at `now`), namespace, range and dict. Throws
  // KILN_ERR_INVALID_ARGUMENT (raise_exception, type errors), KILN_ERR_OUT_OF_RANGE (budgets),
  // KILN_ERR_FORMAT (unknown filter/test).
  // `trace`, when given, records which message each stretch of the output was written for.
  std::string render(const Dict& context, const RenderLimits& limits, std::time_t now,
                     MessageTrace* trace = nullptr) const;

 private:
  std::shared_ptr<const TemplateAst> ast_;
};

}  // namespace kiln::chat

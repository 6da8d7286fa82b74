#include "chat/chat_template.hpp"

#include "chat/builtins.hpp"
#include "chat/parser.hpp"

namespace kiln::chat {

ChatTemplate::ChatTemplate(std::string_view source)
    : ast_(std::make_shared<const TemplateAst>(parse_template(source))) {}

std::string ChatTemplate::render(const Dict& context, const RenderLimits& limits, std::time_t now,
                                 MessageTrace* trace) const {
  Dict full;
  add_globals(full);
  for (const auto& [k, v] : context.items) full.set(k, v);
  Interpreter interpreter(limits, now);
  return interpreter.render(*ast_, full, trace);
}

}  // namespace kiln::chat

// Fuzzes the Jinja chat-template engine: the input is the template source, parsed and rendered
// with a fixed conversation (system/user/assistant, a tool list) under tight render budgets so a
// hostile template ends in KILN_ERR_OUT_OF_RANGE rather than a timeout.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "chat/chat_template.hpp"
#include "fuzz_expect_error.hpp"

namespace {

using kiln::chat::Dict;
using kiln::chat::List;
using kiln::chat::Value;

Value message(const char* role, const char* content) {
  Dict d;
  d.set("role", Value(std::string(role)));
  d.set("content", Value(std::string(content)));
  return Value(std::move(d));
}

Dict conversation() {
  List messages{message("system", "You are helpful."), message("user", "Hi <b>there</b>"),
                message("assistant", "Hello!"), message("user", "2+2?")};
  Dict function;
  function.set("name", Value(std::string("add")));
  function.set("description", Value(std::string("Adds two numbers")));
  Dict tool;
  tool.set("type", Value(std::string("function")));
  tool.set("function", Value(std::move(function)));
  Dict context;
  context.set("messages", Value(std::move(messages)));
  context.set("tools", Value(List{Value(std::move(tool))}));
  context.set("add_generation_prompt", Value(true));
  context.set("bos_token", Value(std::string("<s>")));
  context.set("eos_token", Value(std::string("</s>")));
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Built per run: a template may mutate the context (messages.append), and runs must not leak
  // state into one another.
  const Dict context = conversation();
  // Budgets far below the defaults: enough for every real template, small enough that a loop
  // bomb fails in milliseconds.
  kiln::chat::RenderLimits limits;
  limits.max_steps = 200'000;
  limits.max_output_bytes = 1u << 20;
  limits.max_call_depth = 32;
  const std::string_view source(reinterpret_cast<const char*>(data), size);
  kiln::fuzz::expect_success_or_kiln_error([&] {
    const kiln::chat::ChatTemplate chat_template(source);
    (void)chat_template.render(context, limits, 1'700'000'000);
  });
  return 0;
}

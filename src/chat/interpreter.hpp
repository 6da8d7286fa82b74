// Interpreter: evaluates a TemplateAst against a context, with Jinja2's scoping (for-loop bodies
// and macros get their own scope; if-blocks do not; namespace() objects carry state out of loops)
// and with budgets, so a hostile template cannot hang or exhaust memory: evaluation steps, output
// bytes and call depth are capped (KILN_ERR_OUT_OF_RANGE naming the limit and the line).
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "chat/ast.hpp"
#include "chat/value.hpp"

namespace kiln::chat {

struct RenderLimits {
  uint64_t max_steps = 5'000'000;       // expression and statement evaluations
  size_t max_output_bytes = 16u << 20;  // bytes written to any output buffer, in total
  int max_call_depth = 64;              // nested macro calls
};

// Which conversation message the template was iterating over when it wrote each stretch of the
// final output. Messages are recognised by identity (the Dict objects of the context's message
// list), so slices such as messages[1:] or messages[::-1] still count; a stretch written while
// loops over two messages are nested belongs to the inner one. Output written outside any loop
// over a message, or into a buffer that is not the final output (a macro's, a {% set %} block's)
// and copied out later, belongs to none.
struct MessageTrace {
  struct Span {
    size_t begin = 0, end = 0;  // bytes of the rendered text
    size_t message = 0;         // index into `messages`
  };
  std::vector<const Dict*> messages;  // in: the message dicts to follow
  std::vector<Span> spans;            // out: in output order, adjacent ones of a message merged
};

class Interpreter {
 public:
  Interpreter(const RenderLimits& limits, std::time_t now);

  // `trace`, when given, is filled in as the output is written (see MessageTrace).
  std::string render(const TemplateAst& ast, const Dict& context, MessageTrace* trace = nullptr);

  // Used by builtins.
  std::time_t now() const { return now_; }
  const RenderLimits& limits() const { return limits_; }
  void check_size(size_t bytes, const Expr& at) const;
  Value call_value(const Value& callee, CallArgs& args, const Expr& at);
  [[noreturn]] void runtime_error(const Expr& at, const std::string& what) const;

 private:
  struct Scope {
    std::unordered_map<std::string, Value> vars;
    Scope* parent = nullptr;
  };
  enum class Flow { Normal, Break, Continue };

  Flow exec_body(const Body& body, Scope& scope, std::string& out);
  Flow exec(const Node& node, Scope& scope, std::string& out);
  void exec_for(const Node& node, Scope& scope, std::string& out);
  std::optional<size_t> traced_message(const Value& item) const;
  void exec_set(const Node& node, Scope& scope);
  Value make_macro(const Node& node);

  Value eval(const Expr& e, Scope& scope);
  Value eval_binary(const Expr& e, Scope& scope);
  Value eval_call(const Expr& e, Scope& scope);
  Value eval_attr(const Value& obj, const std::string& name);
  Value eval_index(const Value& obj, const Value& key, const Expr& at);
  Value eval_slice(const Value& obj, const Value& start, const Value& stop, const Value& step,
                   const Expr& at);
  CallArgs eval_args(const Expr& e, Scope& scope, size_t first_arg);

  Value lookup(const std::string& name, Scope& scope) const;
  void step(int line);
  void append(std::string& out, const std::string& text, int line);

  RenderLimits limits_;
  std::time_t now_;
  uint64_t steps_ = 0;
  size_t output_bytes_ = 0;
  int call_depth_ = 0;
  Scope* root_ = nullptr;
  const std::string* root_out_ = nullptr;  // the buffer render() returns
  MessageTrace* trace_ = nullptr;
  std::vector<size_t> message_stack_;  // messages whose loop iterations are running, innermost last
  std::vector<std::shared_ptr<const Node>> keep_alive_;
};

}  // namespace kiln::chat

// Filters, tests, methods and globals of the chat-template interpreter, with Python semantics.
#pragma once

#include <string>

#include "chat/ast.hpp"
#include "chat/interpreter.hpp"
#include "chat/value.hpp"

namespace kiln::chat {

// `value | name(args)`. Unknown filter → KILN_ERR_FORMAT naming it.
Value apply_filter(Interpreter& in, const std::string& name, const Value& value, CallArgs& args,
                   const Expr& at);
// `value is name(args)`. Unknown test → KILN_ERR_FORMAT naming it.
bool apply_test(Interpreter& in, const std::string& name, const Value& value, const CallArgs& args,
                const Expr& at);
// `obj.name(args)` for str, list and dict methods; false when obj has no such method.
bool call_method(Interpreter& in, const Value& obj, const std::string& name, CallArgs& args,
                 const Expr& at, Value& result);
// Globals every template sees: raise_exception, strftime_now, namespace, range, dict.
void add_globals(Dict& context);

}  // namespace kiln::chat

#include "chat/interpreter.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "chat/builtins.hpp"
#include "core/error.hpp"

namespace kiln::chat {

Interpreter::Interpreter(const RenderLimits& limits, std::time_t now)
    : limits_(limits), now_(now) {}

std::string Interpreter::render(const TemplateAst& ast, const Dict& context, MessageTrace* trace) {
  Scope root;
  for (const auto& [k, v] : context.items) root.vars[k] = v;
  root_ = &root;
  std::string out;
  root_out_ = &out;
  trace_ = trace;
  message_stack_.clear();
  exec_body(ast.body, root, out);
  root_ = nullptr;
  root_out_ = nullptr;
  trace_ = nullptr;
  return out;
}

void Interpreter::runtime_error(const Expr& at, const std::string& what) const {
  fail(KILN_ERR_INVALID_ARGUMENT, "chat template error at line " + std::to_string(at.line) +
                                      ", column " + std::to_string(at.column) + ": " + what);
}

void Interpreter::step(int line) {
  if (++steps_ > limits_.max_steps) {
    fail(KILN_ERR_OUT_OF_RANGE,
         "chat template exceeded its budget of " + std::to_string(limits_.max_steps) +
             " evaluation steps (at line " + std::to_string(line) +
             "); a runaway loop? raise max_steps if the template is legitimate");
  }
}

void Interpreter::check_size(size_t bytes, const Expr& at) const {
  if (bytes > limits_.max_output_bytes) {
    fail(KILN_ERR_OUT_OF_RANGE, "chat template built a value of " + std::to_string(bytes) +
                                    " bytes at line " + std::to_string(at.line) +
                                    ", over the output budget of " +
                                    std::to_string(limits_.max_output_bytes) + " bytes");
  }
}

void Interpreter::append(std::string& out, const std::string& text, int line) {
  output_bytes_ += text.size();
  if (output_bytes_ > limits_.max_output_bytes) {
    fail(KILN_ERR_OUT_OF_RANGE, "chat template output exceeded its budget of " +
                                    std::to_string(limits_.max_output_bytes) + " bytes (at line " +
                                    std::to_string(line) + ")");
  }
  if (trace_ && &out == root_out_ && !message_stack_.empty() && !text.empty()) {
    const size_t message = message_stack_.back();
    auto& spans = trace_->spans;
    if (!spans.empty() && spans.back().message == message && spans.back().end == out.size()) {
      spans.back().end += text.size();
    } else {
      spans.push_back({out.size(), out.size() + text.size(), message});
    }
  }
  out += text;
}

Value Interpreter::lookup(const std::string& name, Scope& scope) const {
  for (const Scope* s = &scope; s; s = s->parent) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  return Value();
}

Interpreter::Flow Interpreter::exec_body(const Body& body, Scope& scope, std::string& out) {
  for (const NodePtr& node : body) {
    const Flow flow = exec(*node, scope, out);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const Node& node, Scope& scope, std::string& out) {
  step(node.line);
  switch (node.kind) {
    case NodeKind::Text:
      append(out, node.text, node.line);
      return Flow::Normal;
    case NodeKind::Output:
      append(out, to_str(eval(*node.expr, scope)), node.line);
      return Flow::Normal;
    case NodeKind::If:
      for (const auto& [cond, body] : node.branches) {
        if (eval(*cond, scope).truthy()) return exec_body(body, scope, out);
      }
      return exec_body(node.else_body, scope, out);
    case NodeKind::For:
      exec_for(node, scope, out);
      return Flow::Normal;
    case NodeKind::Set:
      exec_set(node, scope);
      return Flow::Normal;
    case NodeKind::SetBlock: {
      std::string captured;
      const Flow flow = exec_body(node.body, scope, captured);
      scope.vars[node.targets[0]] = Value(std::move(captured));
      return flow;
    }
    case NodeKind::Macro:
      scope.vars[node.text] = make_macro(node);
      return Flow::Normal;
    case NodeKind::Break:
      return Flow::Break;
    case NodeKind::Continue:
      return Flow::Continue;
    case NodeKind::Scope:
      return exec_body(node.body, scope, out);
  }
  return Flow::Normal;
}

namespace {

List iterate(const Value& v) {
  if (v.is_list()) return v.list();
  if (v.is_dict()) {
    List keys;
    for (const auto& [k, item] : v.dict().items) keys.emplace_back(k);
    return keys;
  }
  if (v.is_string()) {
    List chars;
    for (std::string_view cp : code_points(v.as_string())) chars.emplace_back(std::string(cp));
    return chars;
  }
  return {};
}

}  // namespace

std::optional<size_t> Interpreter::traced_message(const Value& item) const {
  if (!trace_ || !item.is_dict()) return std::nullopt;
  const auto& messages = trace_->messages;
  const auto it = std::find(messages.begin(), messages.end(), &item.dict());
  if (it == messages.end()) return std::nullopt;
  return static_cast<size_t>(it - messages.begin());
}

void Interpreter::exec_for(const Node& node, Scope& scope, std::string& out) {
  const Value iterable = eval(*node.expr, scope);
  if (!iterable.is_list() && !iterable.is_dict() && !iterable.is_string() &&
      !iterable.is_undefined() && !iterable.is_none()) {
    runtime_error(*node.expr, std::string("'") + iterable.type_name() + "' object is not iterable");
  }
  if (iterable.is_none()) runtime_error(*node.expr, "'NoneType' object is not iterable");
  List items = iterate(iterable);

  Scope body_scope;
  body_scope.parent = &scope;
  auto bind = [&](const Value& item) {
    if (node.targets.size() == 1) {
      body_scope.vars[node.targets[0]] = item;
      return;
    }
    const List parts = iterate(item);
    if (parts.size() != node.targets.size()) {
      runtime_error(*node.expr, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                                    std::to_string(node.targets.size()) + " loop variables");
    }
    for (size_t i = 0; i < parts.size(); ++i) body_scope.vars[node.targets[i]] = parts[i];
  };
  if (node.condition) {
    List kept;
    for (const Value& item : items) {
      step(node.line);
      bind(item);
      if (eval(*node.condition, body_scope).truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    exec_body(node.else_body, scope, out);
    return;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    body_scope.vars.clear();
    bind(items[static_cast<size_t>(i)]);
    Dict loop;
    loop.set("index", Value(i + 1));
    loop.set("index0", Value(i));
    loop.set("revindex", Value(n - i));
    loop.set("revindex0", Value(n - i - 1));
    loop.set("first", Value(i == 0));
    loop.set("last", Value(i == n - 1));
    loop.set("length", Value(n));
    loop.set("previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value());
    loop.set("nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value());
    body_scope.vars["loop"] = Value(std::move(loop));
    const std::optional<size_t> message = traced_message(items[static_cast<size_t>(i)]);
    if (message) message_stack_.push_back(*message);
    const Flow flow = exec_body(node.body, body_scope, out);
    if (message) message_stack_.pop_back();
    if (flow == Flow::Break) break;
  }
}

void Interpreter::exec_set(const Node& node, Scope& scope) {
  Value value = eval(*node.expr, scope);
  if (!node.attr.empty()) {
    Value owner = lookup(node.text, scope);
    if (!owner.is_dict() || !owner.dict().is_namespace) {
      runtime_error(*node.expr, "cannot assign attribute '" + node.attr + "' of '" + node.text +
                                    "': only namespace() objects accept attribute assignment");
    }
    owner.dict().set(node.attr, std::move(value));
    return;
  }
  if (node.targets.size() == 1) {
    scope.vars[node.targets[0]] = std::move(value);
    return;
  }
  const List parts = iterate(value);
  if (parts.size() != node.targets.size()) {
    runtime_error(*node.expr, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                                  std::to_string(node.targets.size()) + " names");
  }
  for (size_t i = 0; i < parts.size(); ++i) scope.vars[node.targets[i]] = parts[i];
}

Value Interpreter::make_macro(const Node& node) {
  auto callable = std::make_shared<Callable>();
  callable->name = node.text;
  const Node* macro = &node;
  callable->call = [this, macro](Interpreter&, CallArgs& args) -> Value {
    if (++call_depth_ > limits_.max_call_depth) {
      fail(KILN_ERR_OUT_OF_RANGE, "chat template macro '" + macro->text + "' nested deeper than " +
                                      std::to_string(limits_.max_call_depth) + " calls (at line " +
                                      std::to_string(macro->line) + ")");
    }
    Scope local;
    local.parent = root_;
    for (size_t i = 0; i < macro->params.size(); ++i) {
      const auto& [param, def] = macro->params[i];
      if (i < args.positional.size()) {
        local.vars[param] = args.positional[i];
      } else if (const Value* kw = args.kwarg(param)) {
        local.vars[param] = *kw;
      } else if (def) {
        local.vars[param] = eval(*def, local);
      } else {
        local.vars[param] = Value();
      }
    }
    std::string out;
    exec_body(macro->body, local, out);
    --call_depth_;
    return Value(std::move(out));
  };
  return Value(std::shared_ptr<const Callable>(std::move(callable)));
}

CallArgs Interpreter::eval_args(const Expr& e, Scope& scope, size_t first_arg) {
  CallArgs args;
  for (size_t i = first_arg; i < e.args.size(); ++i)
    args.positional.push_back(eval(*e.args[i], scope));
  for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, scope));
  return args;
}

Value Interpreter::call_value(const Value& callee, CallArgs& args, const Expr& at) {
  if (!callee.is_callable())
    runtime_error(at, std::string("'") + callee.type_name() + "' object is not callable");
  return callee.callable().call(*this, args);
}

Value Interpreter::eval(const Expr& e, Scope& scope) {
  step(e.line);
  switch (e.kind) {
    case ExprKind::Literal:
      return e.literal;
    case ExprKind::Name:
      return lookup(e.name, scope);
    case ExprKind::ListLit: {
      List list;
      for (const ExprPtr& item : e.args) list.push_back(eval(*item, scope));
      return Value(std::move(list));
    }
    case ExprKind::DictLit: {
      Dict dict;
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        const Value key = eval(*e.args[i], scope);
        dict.set(to_str(key), eval(*e.args[i + 1], scope));
      }
      return Value(std::move(dict));
    }
    case ExprKind::Attr:
      return eval_attr(eval(*e.args[0], scope), e.name);
    case ExprKind::Index:
      return eval_index(eval(*e.args[0], scope), eval(*e.args[1], scope), e);
    case ExprKind::Slice: {
      const Value obj = eval(*e.args[0], scope);
      auto opt = [&](size_t i) { return e.args[i] ? eval(*e.args[i], scope) : Value(None{}); };
      return eval_slice(obj, opt(1), opt(2), opt(3), e);
    }
    case ExprKind::Call:
      return eval_call(e, scope);
    case ExprKind::Filter: {
      const Value subject = eval(*e.args[0], scope);
      CallArgs args = eval_args(e, scope, 1);
      return apply_filter(*this, e.name, subject, args, e);
    }
    case ExprKind::Test: {
      const Value subject = eval(*e.args[0], scope);
      const CallArgs args = eval_args(e, scope, 1);
      return Value(apply_test(*this, e.name, subject, args, e) != e.negated);
    }
    case ExprKind::Not:
      return Value(!eval(*e.args[0], scope).truthy());
    case ExprKind::Negate: {
      const Value v = eval(*e.args[0], scope);
      if (v.is_int()) return Value(-v.as_int());
      if (v.is_float()) return Value(-v.as_float());
      if (v.is_bool()) return Value(-static_cast<int64_t>(v.as_bool()));
      runtime_error(e, std::string("bad operand type for unary -: '") + v.type_name() + "'");
    }
    case ExprKind::And: {
      Value a = eval(*e.args[0], scope);
      return a.truthy() ? eval(*e.args[1], scope) : a;
    }
    case ExprKind::Or: {
      Value a = eval(*e.args[0], scope);
      return a.truthy() ? a : eval(*e.args[1], scope);
    }
    case ExprKind::Cond:
      if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
      return e.args[2] ? eval(*e.args[2], scope) : Value();
    case ExprKind::Binary:
      return eval_binary(e, scope);
  }
  return Value();
}

Value Interpreter::eval_call(const Expr& e, Scope& scope) {
  const Expr& callee = *e.args[0];
  if (callee.kind == ExprKind::Attr) {
    const Value obj = eval(*callee.args[0], scope);
    CallArgs args = eval_args(e, scope, 1);
    Value result;
    if (call_method(*this, obj, callee.name, args, e, result)) return result;
    const Value fn = eval_attr(obj, callee.name);
    if (fn.is_undefined()) {
      runtime_error(
          e, std::string("'") + obj.type_name() + "' object has no method '" + callee.name + "'");
    }
    return call_value(fn, args, e);
  }
  const Value fn = eval(callee, scope);
  if (fn.is_undefined() && callee.kind == ExprKind::Name) {
    runtime_error(e, "'" + callee.name + "' is undefined (not a function this engine provides)");
  }
  CallArgs args = eval_args(e, scope, 1);
  return call_value(fn, args, e);
}

Value Interpreter::eval_attr(const Value& obj, const std::string& name) {
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().find(name)) return *v;
  }
  return Value();
}

namespace {

// Python's index normalization: negative counts from the end; out of range → nullopt.
bool normalize_index(int64_t& i, size_t size) {
  const int64_t n = static_cast<int64_t>(size);
  if (i < 0) i += n;
  return i >= 0 && i < n;
}

}  // namespace

Value Interpreter::eval_index(const Value& obj, const Value& key, const Expr& at) {
  if (obj.is_dict()) {
    if (!key.is_string()) return Value();
    if (const Value* v = obj.dict().find(key.as_string())) return *v;
    return Value();
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.is_int() ? key.as_int() : int64_t{key.as_bool()};
    if (obj.is_list()) {
      if (!normalize_index(i, obj.list().size())) return Value();
      return obj.list()[static_cast<size_t>(i)];
    }
    const auto cps = code_points(obj.as_string());
    if (!normalize_index(i, cps.size())) return Value();
    return Value(std::string(cps[static_cast<size_t>(i)]));
  }
  if (obj.is_undefined() || obj.is_none() || key.is_string()) return Value();
  runtime_error(at, std::string("'") + obj.type_name() + "' object is not subscriptable by " +
                        key.type_name());
}

Value Interpreter::eval_slice(const Value& obj, const Value& start_v, const Value& stop_v,
                              const Value& step_v, const Expr& at) {
  auto as_opt = [&](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_int()) runtime_error(at, std::string("slice ") + what + " must be an integer");
    return v.as_int();
  };
  const int64_t step = as_opt(step_v, "step").value_or(1);
  if (step == 0) runtime_error(at, "slice step cannot be zero");
  std::vector<Value> items;
  std::vector<std::string_view> cps;
  size_t size = 0;
  if (obj.is_list()) {
    size = obj.list().size();
  } else if (obj.is_string()) {
    cps = code_points(obj.as_string());
    size = cps.size();
  } else {
    runtime_error(at, std::string("'") + obj.type_name() + "' object cannot be sliced");
  }
  // Python's slice.indices().
  const int64_t n = static_cast<int64_t>(size);
  auto clamp = [&](std::optional<int64_t> v, int64_t def) {
    if (!v) return def;
    int64_t x = *v;
    if (x < 0) x += n;
    if (step > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t start = clamp(as_opt(start_v, "start"), step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(as_opt(stop_v, "stop"), step > 0 ? n : -1);
  List list;
  std::string str;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (obj.is_list()) {
      list.push_back(obj.list()[static_cast<size_t>(i)]);
    } else {
      str += cps[static_cast<size_t>(i)];
    }
  }
  if (obj.is_list()) return Value(std::move(list));
  return Value(std::move(str));
}

namespace {

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

bool contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    return item.is_string() && container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const Value& v : container.list()) {
      if (equals(v, item)) return true;
    }
    return false;
  }
  if (container.is_dict())
    return item.is_string() && container.dict().find(item.as_string()) != nullptr;
  return false;
}

}  // namespace

Value Interpreter::eval_binary(const Expr& e, Scope& scope) {
  const Value a = eval(*e.args[0], scope);
  const Value b = eval(*e.args[1], scope);
  const std::string& op = e.name;
  if (op == "==") return Value(equals(a, b));
  if (op == "!=") return Value(!equals(a, b));
  if (op == "in" || op == "not in") {
    if (!b.is_string() && !b.is_list() && !b.is_dict()) {
      runtime_error(e, std::string("argument of type '") + b.type_name() + "' is not iterable");
    }
    return Value(contains(b, a) == (op == "in"));
  }
  if (op == "~") {
    std::string s = to_str(a) + to_str(b);
    check_size(s.size(), e);
    return Value(std::move(s));
  }
  const bool a_num = a.is_number() || a.is_bool();
  const bool b_num = b.is_number() || b.is_bool();
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int cmp;
    if (a_num && b_num) {
      const double x = a.as_number(), y = b.as_number();
      cmp = x < y ? -1 : x > y ? 1 : 0;
    } else if (a.is_string() && b.is_string()) {
      cmp = a.as_string().compare(b.as_string());
    } else {
      runtime_error(e, "'" + op + "' not supported between instances of '" + a.type_name() +
                           "' and '" + b.type_name() + "'");
    }
    if (op == "<") return Value(cmp < 0);
    if (op == ">") return Value(cmp > 0);
    if (op == "<=") return Value(cmp <= 0);
    return Value(cmp >= 0);
  }
  if (a_num && b_num) {
    const bool ints = !a.is_float() && !b.is_float();
    const int64_t ai = a.is_int() ? a.as_int() : int64_t(a.as_number());
    const int64_t bi = b.is_int() ? b.as_int() : int64_t(b.as_number());
    const double x = a.as_number(), y = b.as_number();
    if (op == "+") return ints ? Value(ai + bi) : Value(x + y);
    if (op == "-") return ints ? Value(ai - bi) : Value(x - y);
    if (op == "*") return ints ? Value(ai * bi) : Value(x * y);
    if (op == "/") {
      if (y == 0) runtime_error(e, "division by zero");
      return Value(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) runtime_error(e, "integer division or modulo by zero");
      if (ints) return op == "//" ? Value(floor_div(ai, bi)) : Value(ai - floor_div(ai, bi) * bi);
      const double q = std::floor(x / y);
      return op == "//" ? Value(q) : Value(x - q * y);
    }
    if (op == "**") {
      if (ints && bi >= 0) {
        const double r = std::pow(x, y);
        if (std::fabs(r) > 9.2e18) runtime_error(e, "integer power result too large");
        int64_t result = 1;
        for (int64_t k = 0; k < bi; ++k) result *= ai;
        return Value(result);
      }
      return Value(std::pow(x, y));
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) {
    check_size(a.as_string().size() + b.as_string().size(), e);
    return Value(a.as_string() + b.as_string());
  }
  if (op == "+" && a.is_list() && b.is_list()) {
    List list = a.list();
    list.insert(list.end(), b.list().begin(), b.list().end());
    return Value(std::move(list));
  }
  if (op == "*" && (a.is_string() || a.is_list()) && b.is_int()) {
    const int64_t count = std::max<int64_t>(0, b.as_int());
    if (a.is_string()) {
      check_size(a.as_string().size() * static_cast<size_t>(count), e);
      std::string s;
      for (int64_t k = 0; k < count; ++k) s += a.as_string();
      return Value(std::move(s));
    }
    check_size(a.list().size() * static_cast<size_t>(count), e);
    List list;
    for (int64_t k = 0; k < count; ++k) list.insert(list.end(), a.list().begin(), a.list().end());
    return Value(std::move(list));
  }
  runtime_error(e, "unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                       b.type_name() + "'");
}

}  // namespace kiln::chat

// Value: the dynamic value of the chat-template (Jinja subset) interpreter. It follows Python's
// semantics where templates can observe them (truthiness, equality, str(), repr()), because HF
// renders chat templates with Python's Jinja2 and kiln must produce the same bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kiln::chat {

class Value;
class Interpreter;
using List = std::vector<Value>;

// A dict keeps insertion order (Python dicts do, and tojson/items() expose it).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace() objects accept `set ns.attr = ...`

  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(std::string key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  const Value* kwarg(std::string_view name) const;
};

// Something a template can call: a macro, or a global such as raise_exception().
struct Callable {
  std::string name;
  std::function<Value(Interpreter&, CallArgs&)> call;
};

struct Undefined {};
struct None {};

class Value {
 public:
  using Storage =
      std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<List>,
                   std::shared_ptr<Dict>, std::shared_ptr<const Callable>>;

  Value() : v_(Undefined{}) {}
  Value(None n) : v_(n) {}
  Value(bool b) : v_(b) {}
  Value(int64_t i) : v_(i) {}
  Value(int i) : v_(static_cast<int64_t>(i)) {}
  Value(double d) : v_(d) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(List l) : v_(std::make_shared<List>(std::move(l))) {}
  Value(Dict d) : v_(std::make_shared<Dict>(std::move(d))) {}
  Value(std::shared_ptr<const Callable> c) : v_(std::move(c)) {}

  bool is_undefined() const { return std::holds_alternative<Undefined>(v_); }
  bool is_none() const { return std::holds_alternative<None>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float(); }  // bools are not numbers here
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<std::shared_ptr<List>>(v_); }
  bool is_dict() const { return std::holds_alternative<std::shared_ptr<Dict>>(v_); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<const Callable>>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_float() const { return std::get<double>(v_); }
  // Numeric value of an int, float or bool (Python's True == 1).
  double as_number() const;
  const std::string& as_string() const { return std::get<std::string>(v_); }
  List& list() const { return *std::get<std::shared_ptr<List>>(v_); }
  Dict& dict() const { return *std::get<std::shared_ptr<Dict>>(v_); }
  const Callable& callable() const { return *std::get<std::shared_ptr<const Callable>>(v_); }

  bool truthy() const;
  // Python type name, for error messages ("str", "list", "dict", "NoneType", ...).
  const char* type_name() const;

 private:
  Storage v_;
};

// Python ==, deep for lists and dicts; 1 == 1.0 == True.
bool equals(const Value& a, const Value& b);
// Python str(x): what {{ x }} prints. Undefined prints as "".
std::string to_str(const Value& v);
// Python repr(x), used inside str() of lists and dicts.
std::string to_repr(const Value& v);
// Python repr of a float ("1.0", "0.1", "1e-05", "1.2345678901234568e+17").
std::string float_repr(double d);

// UTF-8 helpers: Python indexes strings by code point.
std::vector<std::string_view> code_points(std::string_view s);

}  // namespace kiln::chat

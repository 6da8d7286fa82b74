#include "chat/builtins.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "chat/json_convert.hpp"
#include "core/error.hpp"

namespace kiln::chat {

namespace {

bool is_py_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  auto strip_this = [&](char c) {
    if (!chars || chars->is_none()) return is_py_space(c);
    return chars->as_string().find(c) != std::string::npos;
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip_this(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip_this(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::string ascii_case(std::string s, bool upper) {
  for (char& c : s) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return s;
}

std::string title_case(const std::string& s) {
  std::string out = s;
  bool prev_alpha = false;
  for (char& c : out) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alpha)
      c = prev_alpha ? static_cast<char>(std::tolower(c)) : static_cast<char>(std::toupper(c));
    prev_alpha = alpha;
  }
  return out;
}

List split(const std::string& s, const Value* sep, int64_t maxsplit) {
  List out;
  if (!sep || sep->is_none()) {  // runs of whitespace, no empty strings
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && is_py_space(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        std::string rest = s.substr(i);
        while (!rest.empty() && is_py_space(rest.back())) rest.pop_back();
        out.emplace_back(rest);
        return out;
      }
      size_t j = i;
      while (j < s.size() && !is_py_space(s[j])) ++j;
      out.emplace_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }
  const std::string& d = sep->as_string();
  size_t pos = 0;
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    const size_t hit = s.find(d, pos);
    if (hit == std::string::npos) break;
    out.emplace_back(s.substr(pos, hit - pos));
    pos = hit + d.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

const Value& arg(const CallArgs& args, size_t i, const char* kw) {
  static const Value kUndefined;
  if (i < args.positional.size()) return args.positional[i];
  if (kw) {
    if (const Value* v = args.kwarg(kw)) return *v;
  }
  return kUndefined;
}

void require_string(Interpreter& in, const Value& v, const char* what, const Expr& at) {
  if (!v.is_string())
    in.runtime_error(at, std::string(what) + " expects a string, got " + v.type_name());
}

int64_t length_of(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(code_points(v.as_string()).size());
  if (v.is_list()) return static_cast<int64_t>(v.list().size());
  if (v.is_dict()) return static_cast<int64_t>(v.dict().items.size());
  return 0;
}

List as_list(const Value& v) {
  if (v.is_list()) return v.list();
  if (v.is_dict()) {
    List keys;
    for (const auto& [k, item] : v.dict().items) keys.emplace_back(k);
    return keys;
  }
  if (v.is_string()) {
    List chars;
    for (auto cp : code_points(v.as_string())) chars.emplace_back(std::string(cp));
    return chars;
  }
  return {};
}

// Jinja's attribute lookup for filters: "a.b" walks dicts; integer parts index lists.
Value get_attribute_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_dict()) {
      const Value* next = cur.dict().find(part);
      cur = next ? *next : Value();
    } else if (cur.is_list() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      // An index too large for size_t is past the end like any other (std::stoul would throw).
      size_t i = 0;
      const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), i);
      cur = ec == std::errc() && i < cur.list().size() ? cur.list()[i] : Value();
    } else {
      return Value();
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

// select/reject/selectattr/rejectattr: (filter args after the attribute) = test name, test args.
List select_items(Interpreter& in, const Value& seq, const CallArgs& args, size_t first,
                  const std::string* attr, bool keep_when, const Expr& at) {
  std::string test = "truthy";
  CallArgs test_args;
  if (first < args.positional.size()) {
    require_string(in, args.positional[first], "select test name", at);
    test = args.positional[first].as_string();
    test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1,
                                args.positional.end());
  }
  List out;
  for (const Value& item : as_list(seq)) {
    const Value subject = attr ? get_attribute_path(item, *attr) : item;
    const bool ok =
        test == "truthy" ? subject.truthy() : apply_test(in, test, subject, test_args, at);
    if (ok == keep_when) out.push_back(item);
  }
  return out;
}

}  // namespace

Value apply_filter(Interpreter& in, const std::string& name, const Value& value, CallArgs& args,
                   const Expr& at) {
  if (name == "trim") {
    require_string(in, value, "trim", at);
    const Value& chars = arg(args, 0, "chars");
    return Value(
        strip_chars(value.as_string(), chars.is_undefined() ? nullptr : &chars, true, true));
  }
  if (name == "tojson") {
    const Value& indent = arg(args, 0, "indent");
    std::optional<int> ind;
    if (indent.is_int()) ind = static_cast<int>(indent.as_int());
    std::string s = to_json(value, ind);
    in.check_size(s.size(), at);
    return Value(std::move(s));
  }
  if (name == "length" || name == "count") {
    if (!value.is_string() && !value.is_list() && !value.is_dict() && !value.is_undefined()) {
      in.runtime_error(at, std::string("object of type '") + value.type_name() + "' has no len()");
    }
    return Value(length_of(value));
  }
  if (name == "upper" || name == "lower") return Value(ascii_case(to_str(value), name == "upper"));
  if (name == "title") return Value(title_case(to_str(value)));
  if (name == "capitalize") {
    std::string s = ascii_case(to_str(value), false);
    if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 32);
    return Value(std::move(s));
  }
  if (name == "default" || name == "d") {
    const Value& def = arg(args, 0, "default_value");
    const bool boolean = arg(args, 1, "boolean").truthy();
    if (value.is_undefined() || (boolean && !value.truthy()))
      return def.is_undefined() ? Value(std::string()) : def;
    return value;
  }
  if (name == "join") {
    const Value& sep = arg(args, 0, "d");
    const Value& attr = arg(args, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : as_list(value)) {
      if (!first) out += sep.is_undefined() ? "" : to_str(sep);
      first = false;
      out += to_str(attr.is_string() ? get_attribute_path(item, attr.as_string()) : item);
      in.check_size(out.size(), at);
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    const List items = as_list(value);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return Value(as_list(value));
  if (name == "reverse") {
    if (value.is_string()) {
      auto cps = code_points(value.as_string());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    List items = as_list(value);
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "items" || name == "dictitems") {
    List out;
    if (value.is_dict()) {
      for (const auto& [k, v] : value.dict().items) out.emplace_back(List{Value(k), v});
    } else if (!value.is_undefined()) {
      in.runtime_error(at, std::string("items filter expects a mapping, got ") + value.type_name());
    }
    return Value(std::move(out));
  }
  if (name == "replace") {
    const Value& from = arg(args, 0, "old");
    const Value& to = arg(args, 1, "new");
    const Value& count = arg(args, 2, "count");
    std::string s =
        replace_all(to_str(value), to_str(from), to_str(to), count.is_int() ? count.as_int() : -1);
    in.check_size(s.size(), at);
    return Value(std::move(s));
  }
  if (name == "string") return Value(to_str(value));
  if (name == "safe" || name == "e" || name == "escape") {
    if (name == "safe") return value;
    in.runtime_error(
        at, "the escape filter is not supported (chat templates render without autoescape)");
  }
  if (name == "int") {
    if (value.is_int()) return value;
    if (value.is_float()) return Value(static_cast<int64_t>(value.as_float()));
    if (value.is_bool()) return Value(int64_t{value.as_bool()});
    if (value.is_string()) {
      char* end = nullptr;
      const std::string s = strip_chars(value.as_string(), nullptr, true, true);
      const long long v = std::strtoll(s.c_str(), &end, 10);
      if (end && *end == '\0' && !s.empty()) return Value(static_cast<int64_t>(v));
      const double d = std::strtod(s.c_str(), &end);
      if (end && *end == '\0' && !s.empty()) return Value(static_cast<int64_t>(d));
    }
    const Value& def = arg(args, 0, "default");
    return def.is_undefined() ? Value(int64_t{0}) : def;
  }
  if (name == "float") {
    if (value.is_number() || value.is_bool()) return Value(value.as_number());
    if (value.is_string()) {
      char* end = nullptr;
      const std::string s = strip_chars(value.as_string(), nullptr, true, true);
      const double d = std::strtod(s.c_str(), &end);
      if (end && *end == '\0' && !s.empty()) return Value(d);
    }
    const Value& def = arg(args, 0, "default");
    return def.is_undefined() ? Value(0.0) : def;
  }
  if (name == "abs") {
    if (value.is_int()) return Value(value.as_int() < 0 ? -value.as_int() : value.as_int());
    if (value.is_float()) return Value(std::fabs(value.as_float()));
    in.runtime_error(at, std::string("bad operand type for abs(): '") + value.type_name() + "'");
  }
  if (name == "map") {
    List out;
    const Value* attr = args.kwarg("attribute");
    for (const Value& item : as_list(value)) {
      if (attr) {
        Value v = get_attribute_path(item, to_str(*attr));
        if (v.is_undefined()) {
          if (const Value* def = args.kwarg("default")) v = *def;
        }
        out.push_back(std::move(v));
      } else {
        if (args.positional.empty() || !args.positional[0].is_string()) {
          in.runtime_error(at, "map expects a filter name or attribute=");
        }
        CallArgs rest;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        out.push_back(apply_filter(in, args.positional[0].as_string(), item, rest, at));
      }
    }
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject") {
    return Value(select_items(in, value, args, 0, nullptr, name == "select", at));
  }
  if (name == "selectattr" || name == "rejectattr") {
    const Value& attr = arg(args, 0, nullptr);
    require_string(in, attr, name.c_str(), at);
    return Value(select_items(in, value, args, 1, &attr.as_string(), name == "selectattr", at));
  }
  if (name == "unique") {
    List out;
    for (const Value& item : as_list(value)) {
      bool seen = false;
      for (const Value& o : out) seen = seen || equals(o, item);
      if (!seen) out.push_back(item);
    }
    return Value(std::move(out));
  }
  fail(KILN_ERR_FORMAT, "chat template uses the filter '" + name + "' (line " +
                            std::to_string(at.line) + ", column " + std::to_string(at.column) +
                            "), which kiln does not implement");
}

bool apply_test(Interpreter& in, const std::string& name, const Value& value, const CallArgs& args,
                const Expr& at) {
  const Value& other = arg(args, 0, nullptr);
  if (name == "defined") return !value.is_undefined();
  if (name == "undefined") return value.is_undefined();
  if (name == "none") return value.is_none();
  if (name == "string") return value.is_string();
  if (name == "mapping") return value.is_dict();
  if (name == "iterable") return value.is_list() || value.is_dict() || value.is_string();
  if (name == "sequence") return value.is_list() || value.is_dict() || value.is_string();
  if (name == "number") return value.is_number() || value.is_bool();
  if (name == "integer") return value.is_int();
  if (name == "float") return value.is_float();
  if (name == "boolean") return value.is_bool();
  if (name == "true") return value.is_bool() && value.as_bool();
  if (name == "false") return value.is_bool() && !value.as_bool();
  if (name == "callable") return value.is_callable();
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas")
    return equals(value, other);
  if (name == "ne" || name == "!=") return !equals(value, other);
  if (name == "lower")
    return value.is_string() && ascii_case(value.as_string(), false) == value.as_string();
  if (name == "upper")
    return value.is_string() && ascii_case(value.as_string(), true) == value.as_string();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!value.is_int()) in.runtime_error(at, "test '" + name + "' expects an integer");
    if (name == "divisibleby") {
      if (!other.is_int() || other.as_int() == 0)
        in.runtime_error(at, "divisibleby expects a non-zero integer");
      return value.as_int() % other.as_int() == 0;
    }
    return (value.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "in") {
    if (other.is_list()) {
      for (const Value& v : other.list()) {
        if (equals(v, value)) return true;
      }
      return false;
    }
    if (other.is_string())
      return value.is_string() && other.as_string().find(value.as_string()) != std::string::npos;
    if (other.is_dict())
      return value.is_string() && other.dict().find(value.as_string()) != nullptr;
    return false;
  }
  if (name == "lt" || name == "gt" || name == "le" || name == "ge") {
    if (!(value.is_number() && other.is_number()))
      in.runtime_error(at, "test '" + name + "' expects numbers");
    const double a = value.as_number(), b = other.as_number();
    return name == "lt" ? a < b : name == "gt" ? a > b : name == "le" ? a <= b : a >= b;
  }
  fail(KILN_ERR_FORMAT, "chat template uses the test '" + name + "' (line " +
                            std::to_string(at.line) + ", column " + std::to_string(at.column) +
                            "), which kiln does not implement");
}

namespace {

bool string_method(Interpreter& in, const std::string& s, const std::string& name, CallArgs& args,
                   const Expr& at, Value& out) {
  const Value& a0 = arg(args, 0, nullptr);
  if (name == "startswith" || name == "endswith") {
    auto check = [&](const std::string& p) {
      if (p.size() > s.size()) return false;
      return name == "startswith" ? s.compare(0, p.size(), p) == 0
                                  : s.compare(s.size() - p.size(), p.size(), p) == 0;
    };
    bool result = false;
    if (a0.is_list()) {
      for (const Value& p : a0.list()) result = result || (p.is_string() && check(p.as_string()));
    } else {
      require_string(in, a0, name.c_str(), at);
      result = check(a0.as_string());
    }
    out = Value(result);
    return true;
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    out = Value(
        strip_chars(s, a0.is_undefined() ? nullptr : &a0, name != "rstrip", name != "lstrip"));
    return true;
  }
  if (name == "split") {
    const Value& sep = arg(args, 0, "sep");
    const Value& maxsplit = arg(args, 1, "maxsplit");
    if (sep.is_string() && sep.as_string().empty()) in.runtime_error(at, "split: empty separator");
    out = Value(
        split(s, sep.is_undefined() ? nullptr : &sep, maxsplit.is_int() ? maxsplit.as_int() : -1));
    return true;
  }
  if (name == "replace") {
    const Value& count = arg(args, 2, nullptr);
    std::string r = replace_all(s, to_str(a0), to_str(arg(args, 1, nullptr)),
                                count.is_int() ? count.as_int() : -1);
    in.check_size(r.size(), at);
    out = Value(std::move(r));
    return true;
  }
  if (name == "upper" || name == "lower") {
    out = Value(ascii_case(s, name == "upper"));
    return true;
  }
  if (name == "title") {
    out = Value(title_case(s));
    return true;
  }
  if (name == "capitalize") {
    std::string r = ascii_case(s, false);
    if (!r.empty() && r[0] >= 'a' && r[0] <= 'z') r[0] = static_cast<char>(r[0] - 32);
    out = Value(std::move(r));
    return true;
  }
  if (name == "find") {
    require_string(in, a0, "find", at);
    const size_t pos = s.find(a0.as_string());
    out = Value(pos == std::string::npos
                    ? int64_t{-1}
                    : static_cast<int64_t>(code_points(s.substr(0, pos)).size()));
    return true;
  }
  if (name == "join") {
    std::string r;
    bool first = true;
    for (const Value& item : as_list(a0)) {
      if (!first) r += s;
      first = false;
      r += to_str(item);
      in.check_size(r.size(), at);
    }
    out = Value(std::move(r));
    return true;
  }
  return false;
}

}  // namespace

bool call_method(Interpreter& in, const Value& obj, const std::string& name, CallArgs& args,
                 const Expr& at, Value& result) {
  if (obj.is_string()) return string_method(in, obj.as_string(), name, args, at, result);
  if (obj.is_dict() && !obj.dict().is_namespace) {
    const Dict& d = obj.dict();
    if (name == "items" || name == "keys" || name == "values") {
      List out;
      for (const auto& [k, v] : d.items) {
        if (name == "items") out.emplace_back(List{Value(k), v});
        if (name == "keys") out.emplace_back(k);
        if (name == "values") out.push_back(v);
      }
      result = Value(std::move(out));
      return true;
    }
    if (name == "get") {
      const Value& key = arg(args, 0, nullptr);
      const Value* v = key.is_string() ? d.find(key.as_string()) : nullptr;
      const Value& def = arg(args, 1, nullptr);
      result = v ? *v : def.is_undefined() ? Value(None{}) : def;
      return true;
    }
  }
  return false;
}

void add_globals(Dict& context) {
  auto add = [&](const char* name, std::function<Value(Interpreter&, CallArgs&)> fn) {
    auto c = std::make_shared<Callable>();
    c->name = name;
    c->call = std::move(fn);
    context.set(name, Value(std::shared_ptr<const Callable>(std::move(c))));
  };
  add("raise_exception", [](Interpreter&, CallArgs& args) -> Value {
    const std::string message = args.positional.empty() ? "" : to_str(args.positional[0]);
    fail(KILN_ERR_INVALID_ARGUMENT, "chat template raised an exception: " + message);
  });
  add("strftime_now", [](Interpreter& in, CallArgs& args) -> Value {
    const std::string format = args.positional.empty() ? "" : to_str(args.positional[0]);
    const std::time_t now = in.now();
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
    return Value(std::string(buf, n));
  });
  add("namespace", [](Interpreter&, CallArgs& args) -> Value {
    Dict ns;
    ns.is_namespace = true;
    if (!args.positional.empty() && args.positional[0].is_dict()) {
      for (const auto& [k, v] : args.positional[0].dict().items) ns.set(k, v);
    }
    for (auto& [k, v] : args.keyword) ns.set(k, v);
    return Value(std::move(ns));
  });
  add("dict", [](Interpreter&, CallArgs& args) -> Value {
    Dict d;
    for (auto& [k, v] : args.keyword) d.set(k, v);
    return Value(std::move(d));
  });
  add("range", [](Interpreter& in, CallArgs& args) -> Value {
    int64_t start = 0, stop = 0, step = 1;
    auto geti = [&](size_t i) {
      return args.positional[i].is_int() ? args.positional[i].as_int() : int64_t{0};
    };
    if (args.positional.size() == 1) {
      stop = geti(0);
    } else if (args.positional.size() >= 2) {
      start = geti(0);
      stop = geti(1);
      if (args.positional.size() >= 3) step = geti(2);
    }
    if (step == 0) fail(KILN_ERR_INVALID_ARGUMENT, "chat template: range() step must not be zero");
    const int64_t span =
        step > 0 ? (stop - start + step - 1) / step : (start - stop - step - 1) / -step;
    if (span > static_cast<int64_t>(in.limits().max_steps)) {
      fail(KILN_ERR_OUT_OF_RANGE, "chat template: range() of " + std::to_string(span) +
                                      " items exceeds the evaluation budget of " +
                                      std::to_string(in.limits().max_steps) + " steps");
    }
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
    return Value(std::move(out));
  });
}

}  // namespace kiln::chat

#include "chat/json_convert.hpp"

#include <cstdio>

#include "core/error.hpp"

namespace kiln::chat {

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value(None{});
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List list;
      list.reserve(j.size());
      for (const auto& item : j) list.push_back(from_json(item));
      return Value(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      for (const auto& [k, item] : j.items()) dict.set(k, from_json(item));
      return Value(std::move(dict));
    }
    default:
      fail(KILN_ERR_INVALID_ARGUMENT, "unsupported JSON value (binary data) in chat input");
  }
}

Value parse_json_argument(const std::string& text, const char* what) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " is not valid JSON: " + e.what());
  }
  return from_json(j);
}

namespace {

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append_json(std::string& out, const Value& v, std::optional<int> indent, int depth) {
  auto newline = [&](int level) {
    out += '\n';
    out.append(static_cast<size_t>(*indent) * static_cast<size_t>(level), ' ');
  };
  const char* item_sep = indent ? "," : ", ";
  if (v.is_undefined() || v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    const double d = v.as_float();
    out += d != d                        ? "NaN"
           : d > 1.7976931348623157e308  ? "Infinity"
           : d < -1.7976931348623157e308 ? "-Infinity"
                                         : float_repr(d);
  } else if (v.is_string()) {
    append_json_string(out, v.as_string());
  } else if (v.is_list()) {
    const List& list = v.list();
    if (list.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < list.size(); ++i) {
      if (i) out += item_sep;
      if (indent) newline(depth + 1);
      append_json(out, list[i], indent, depth + 1);
    }
    if (indent) newline(depth);
    out += ']';
  } else if (v.is_dict()) {
    const Dict& dict = v.dict();
    if (dict.items.empty()) {
      out += "{}";
      return;
    }
    out += '{';
    bool first = true;
    for (const auto& [k, item] : dict.items) {
      if (!first) out += item_sep;
      first = false;
      if (indent) newline(depth + 1);
      append_json_string(out, k);
      out += ": ";
      append_json(out, item, indent, depth + 1);
    }
    if (indent) newline(depth);
    out += '}';
  } else {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "tojson: a " + std::string(v.type_name()) + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, std::optional<int> indent) {
  std::string out;
  append_json(out, v, indent, 0);
  return out;
}

}  // namespace kiln::chat

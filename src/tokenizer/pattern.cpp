#include "tokenizer/pattern.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.hpp"

namespace kiln::tok {

namespace {
struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using CodePtr = std::unique_ptr<pcre2_code, CodeDeleter>;
using MatchDataPtr = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

size_t utf8_char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}
}  // namespace

struct Pattern::Compiled {
  CodePtr code;
  bool jit = false;
};

Pattern::Pattern(std::string literal, std::unique_ptr<Compiled> compiled)
    : literal_(std::move(literal)), compiled_(std::move(compiled)) {}
Pattern::Pattern(Pattern&&) noexcept = default;
Pattern& Pattern::operator=(Pattern&&) noexcept = default;
Pattern::~Pattern() = default;

Pattern Pattern::literal(std::string text) { return Pattern(std::move(text), nullptr); }

Pattern Pattern::regex(const std::string& expression, const std::string& where) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  CodePtr code(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(expression.data()), expression.size(),
                             PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr));
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    fail(KILN_ERR_FORMAT, "tokenizer JSON field " + where + ": regex does not compile at offset " +
                              std::to_string(error_offset) + ": " +
                              reinterpret_cast<const char*>(message));
  }
  auto compiled = std::make_unique<Compiled>();
  // JIT is an optimisation only: when it is unavailable pcre2_match interprets the same code.
  compiled->jit = pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE) == 0;
  compiled->code = std::move(code);
  return Pattern(expression, std::move(compiled));
}

Pattern Pattern::from_json(const Json& value, const std::string& path) {
  if (value.is_object() && value.contains("String")) {
    return literal(json_string(value["String"], path + ".String"));
  }
  if (value.is_object() && value.contains("Regex")) {
    return regex(json_string(value["Regex"], path + ".Regex"), path + ".Regex");
  }
  json_format_error(path, "{\"String\": ...} or {\"Regex\": ...}", value);
}

std::vector<Span> Pattern::find_all(std::string_view text) const {
  std::vector<Span> spans;
  if (!compiled_) {
    if (literal_.empty()) return spans;
    size_t pos = text.find(literal_);
    while (pos != std::string_view::npos) {
      spans.push_back({pos, pos + literal_.size()});
      pos = text.find(literal_, pos + literal_.size());
    }
    return spans;
  }
  MatchDataPtr data(pcre2_match_data_create_from_pattern(compiled_->code.get(), nullptr));
  if (!data) fail(KILN_ERR_OUT_OF_MEMORY, "PCRE2 match data allocation failed");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    int rc = PCRE2_ERROR_JIT_STACKLIMIT;
    if (compiled_->jit) {
      rc = pcre2_jit_match(compiled_->code.get(), subject, text.size(), start, 0, data.get(),
                           nullptr);
    }
    // The interpreter keeps its backtracking state on the heap, so it also covers inputs that
    // overflow the JIT's fixed 32 KiB stack.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(compiled_->code.get(), subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                       data.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      fail(KILN_ERR_INTERNAL, "PCRE2 match failed for pattern " + literal_ + ": " +
                                  reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      spans.push_back({begin, end});
      start = end;
    } else {  // empty match: step over one character, as Oniguruma's iterator does
      start = begin + utf8_char_length(static_cast<unsigned char>(text[begin]));
    }
  }
  return spans;
}

std::string Pattern::replace_all(std::string_view text, std::string_view content) const {
  std::string out;
  out.reserve(text.size());
  size_t last = 0;
  for (const Span& span : find_all(text)) {
    out.append(text.substr(last, span.begin - last));
    out.append(content);
    last = span.end;
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace kiln::tok

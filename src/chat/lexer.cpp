#include "chat/lexer.hpp"

#include <cctype>

#include "core/error.hpp"

namespace kiln::chat {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Token> run() {
    size_t text_start = 0;
    bool strip_next_all = false;     // previous tag ended with '-'
    bool trim_next_newline = false;  // previous tag was a block/comment (trim_blocks)
    while (true) {
      const size_t tag = find_tag(text_start);
      const size_t text_end = tag == std::string::npos ? src_.size() : tag;
      std::string text = src_.substr(text_start, text_end - text_start);
      size_t removed_front = 0;
      if (strip_next_all) {
        while (removed_front < text.size() && is_space(text[removed_front])) ++removed_front;
      } else if (trim_next_newline && !text.empty() && text[0] == '\n') {
        removed_front = 1;
      }
      text.erase(0, removed_front);
      // Jinja's line_starting: the text begins the template or follows a consumed newline.
      const size_t effective_start = text_start + removed_front;
      const bool line_start = effective_start == 0 || src_[effective_start - 1] == '\n';
      if (tag != std::string::npos) {
        const char kind = src_[tag + 1];
        const char modifier = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
        if (modifier == '-') {
          while (!text.empty() && is_space(text.back())) text.pop_back();
        } else if ((kind == '%' || kind == '#') && modifier != '+') {
          // lstrip_blocks: drop the line's leading spaces/tabs before the tag.
          const size_t nl = text.rfind('\n');
          const size_t from = nl == std::string::npos ? 0 : nl + 1;
          if (nl != std::string::npos || line_start) {
            bool blank = true;
            for (size_t k = from; k < text.size(); ++k)
              blank = blank && (text[k] == ' ' || text[k] == '\t');
            if (blank) text.erase(from);
          }
        }
      }
      if (!text.empty()) push(TokenType::Text, std::move(text), text_start);
      if (tag == std::string::npos) break;

      const char kind = src_[tag + 1];
      size_t pos = tag + 2;
      if (pos < src_.size() && (src_[pos] == '-' || src_[pos] == '+')) ++pos;
      bool ends_with_strip = false;
      if (kind == '#') {
        const size_t close = src_.find("#}", pos);
        if (close == std::string::npos) error(tag, "unterminated comment '{#' (no matching '#}')");
        ends_with_strip = close > pos && src_[close - 1] == '-';
        text_start = close + 2;
      } else {
        push(kind == '{' ? TokenType::VarBegin : TokenType::BlockBegin, kind == '{' ? "{{" : "{%",
             tag);
        pos = lex_expression(pos, kind == '{' ? '}' : '%', ends_with_strip, tag);
        text_start = pos;
        if (kind == '%' && is_raw_block()) text_start = lex_raw(text_start);
      }
      strip_next_all = ends_with_strip;
      trim_next_newline = kind != '{';
    }
    push(TokenType::End, "", src_.size());
    return std::move(tokens_);
  }

 private:
  size_t find_tag(size_t from) const {
    size_t pos = from;
    while (true) {
      pos = src_.find('{', pos);
      if (pos == std::string::npos || pos + 1 >= src_.size()) return std::string::npos;
      const char next = src_[pos + 1];
      if (next == '{' || next == '%' || next == '#') return pos;
      ++pos;
    }
  }

  void line_col(size_t offset, int& line, int& col) const {
    line = 1;
    col = 1;
    for (size_t i = 0; i < offset && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
  }

  [[noreturn]] void error(size_t offset, const std::string& what) const {
    int line, col;
    line_col(offset, line, col);
    fail(KILN_ERR_FORMAT, "chat template syntax error at line " + std::to_string(line) +
                              ", column " + std::to_string(col) + ": " + what);
  }

  void push(TokenType type, std::string value, size_t offset) {
    // Line/column are computed incrementally: tokens arrive in source order.
    while (cursor_ < offset && cursor_ < src_.size()) {
      if (src_[cursor_] == '\n') {
        ++line_;
        col_ = 1;
      } else {
        ++col_;
      }
      ++cursor_;
    }
    tokens_.push_back(Token{type, std::move(value), line_, col_});
  }

  // Tokenizes an expression until its closing delimiter; returns the offset after it.
  size_t lex_expression(size_t pos, char closer, bool& ends_with_strip, size_t tag_offset) {
    while (true) {
      while (pos < src_.size() && is_space(src_[pos])) ++pos;
      if (pos >= src_.size()) {
        error(tag_offset, std::string("unterminated tag: no matching '") + closer + "}'");
      }
      const char c = src_[pos];
      // Closing delimiter, with optional whitespace-control modifier.
      if ((c == '-' || c == '+') && pos + 2 < src_.size() && src_[pos + 1] == closer &&
          src_[pos + 2] == '}') {
        ends_with_strip = c == '-';
        push(closer == '}' ? TokenType::VarEnd : TokenType::BlockEnd, "", pos);
        return pos + 3;
      }
      if (c == closer && pos + 1 < src_.size() && src_[pos + 1] == '}') {
        push(closer == '}' ? TokenType::VarEnd : TokenType::BlockEnd, "", pos);
        return pos + 2;
      }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t end = pos;
        while (end < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_'))
          ++end;
        push(TokenType::Name, src_.substr(pos, end - pos), pos);
        pos = end;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t end = pos;
        bool is_float = false;
        while (end < src_.size() &&
               (std::isdigit(static_cast<unsigned char>(src_[end])) || src_[end] == '_'))
          ++end;
        if (end + 1 < src_.size() && src_[end] == '.' &&
            std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
          is_float = true;
          ++end;
          while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
        }
        if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
          size_t e = end + 1;
          if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
          if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
            is_float = true;
            end = e;
            while (end < src_.size() && std::isdigit(static_cast<unsigned char>(src_[end]))) ++end;
          }
        }
        std::string digits;
        for (size_t k = pos; k < end; ++k) {
          if (src_[k] != '_') digits += src_[k];
        }
        push(is_float ? TokenType::Float : TokenType::Integer, digits, pos);
        pos = end;
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "(", ")", "[",
                                           "]",  "{",  "}",  ".",  ",",  ":",  "|", "+", "-",
                                           "*",  "/",  "%",  "~",  "=",  "<",  ">"};
        bool matched = false;
        for (const char* op : kOps) {
          const std::string_view sv(op);
          if (src_.compare(pos, sv.size(), sv) == 0) {
            push(TokenType::Operator, std::string(sv), pos);
            pos += sv.size();
            matched = true;
            break;
          }
        }
        if (!matched) error(pos, std::string("unexpected character '") + c + "'");
      }
    }
  }

  // Python string literal escapes: \n \t \r \\ \' \" \xHH \uXXXX \UXXXXXXXX; others stay verbatim.
  size_t lex_string(size_t pos) {
    const char quote = src_[pos];
    const size_t start = pos;
    ++pos;
    std::string out;
    while (true) {
      if (pos >= src_.size()) error(start, "unterminated string literal");
      const char c = src_[pos];
      if (c == quote) break;
      if (c == '\\' && pos + 1 < src_.size()) {
        const char e = src_[pos + 1];
        pos += 2;
        switch (e) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case '\\':
            out += '\\';
            break;
          case '\'':
            out += '\'';
            break;
          case '"':
            out += '"';
            break;
          case '0':
            out += '\0';
            break;
          case 'x':
          case 'u':
          case 'U': {
            const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (pos + n > src_.size()) error(pos, "truncated escape in string literal");
            // Exactly n hex digits, as Python requires ("truncated \xXX escape" otherwise), and
            // a Unicode scalar value, so the rendered text stays valid UTF-8.
            uint32_t cp = 0;
            for (size_t i = 0; i < n; ++i) {
              const int digit = hex_digit(src_[pos + i]);
              if (digit < 0) {
                error(pos, std::string("\\") + e + " escape needs " + std::to_string(n) +
                               " hex digits, got '" + std::string(src_.substr(pos, n)) + "'");
              }
              cp = cp * 16 + static_cast<uint32_t>(digit);
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
              error(pos, "escape \\" + std::string(1, e) + std::string(src_.substr(pos, n)) +
                             " is not a Unicode scalar value");
            }
            append_utf8(out, cp);
            pos += n;
            break;
          }
          default:
            out += '\\';
            out += e;
        }
        continue;
      }
      out += c;
      ++pos;
    }
    push(TokenType::String, std::move(out), start);
    return pos + 1;
  }

  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // True when the block just lexed is "{% raw %}".
  bool is_raw_block() const {
    const size_t n = tokens_.size();
    return n >= 3 && tokens_[n - 1].type == TokenType::BlockEnd &&
           tokens_[n - 2].type == TokenType::Name && tokens_[n - 2].value == "raw" &&
           tokens_[n - 3].type == TokenType::BlockBegin;
  }

  // Emits the verbatim text up to "{% endraw %}" and drops the raw block's tokens.
  size_t lex_raw(size_t pos) {
    tokens_.resize(tokens_.size() - 3);
    size_t search = pos;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos) error(pos, "unterminated '{% raw %}' block");
      size_t k = open + 2;
      if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) ++k;
      while (k < src_.size() && is_space(src_[k])) ++k;
      if (src_.compare(k, 6, "endraw") == 0) {
        std::string text = src_.substr(pos, open - pos);
        if (src_[open + 2] == '-') {
          while (!text.empty() && is_space(text.back())) text.pop_back();
        }
        if (!text.empty()) push(TokenType::Text, std::move(text), pos);
        size_t close = src_.find("%}", k);
        if (close == std::string::npos) error(open, "unterminated '{% endraw %}' tag");
        return close + 2;
      }
      search = open + 2;
    }
  }

  std::string src_;
  std::vector<Token> tokens_;
  size_t cursor_ = 0;
  int line_ = 1;
  int col_ = 1;
};

}  // namespace

std::vector<Token> tokenize_template(std::string_view source) {
  return Lexer(normalize_newlines(source)).run();
}

}  // namespace kiln::chat

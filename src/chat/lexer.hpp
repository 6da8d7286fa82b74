// Lexer for the Jinja2 subset used by chat templates. Whitespace is handled exactly as HF's
// environment configures Jinja2 (transformers chat_template_utils: trim_blocks=True,
// lstrip_blocks=True, keep_trailing_newline=False):
//  - "{%-" / "{{-" / "{#-" strip all whitespace before the tag, "-%}" / "-}}" / "-#}" after it;
//  - trim_blocks: the first newline after a block or comment tag is removed;
//  - lstrip_blocks: spaces/tabs from the start of a line up to a block or comment tag are removed
//    ("{%+" opts out);
//  - one trailing newline of the template is dropped; "\r\n" and "\r" become "\n".
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln::chat {

enum class TokenType {
  Text,        // template text (value = the text, whitespace control applied)
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,        // identifier or keyword
  String,      // string literal (value = decoded text)
  Integer,
  Float,
  Operator,  // ( ) [ ] { } . , : | + - * / // % ** ~ = == != < > <= >=
  End
};

struct Token {
  TokenType type;
  std::string value;
  int line;
  int column;
};

// Throws kiln::Error(KILN_ERR_FORMAT) naming line and column for unterminated tags, strings or
// comments and for characters that are not part of the expression syntax.
std::vector<Token> tokenize_template(std::string_view source);

}  // namespace kiln::chat

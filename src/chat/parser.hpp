// Parser: tokens of the Jinja2 subset → TemplateAst. Precedence follows Jinja2's parser
// (jinja2/parser.py): conditional < or < and < not < comparison/in < + - < ~ < * / // % < ** <
// unary minus < postfix (attribute, subscript, call, filter, test).
#pragma once

#include <string_view>

#include "chat/ast.hpp"

namespace kiln::chat {

// Throws kiln::Error(KILN_ERR_FORMAT) with line and column on any syntax error, unknown
// statement, unclosed block, or nesting deeper than the parser's limit.
TemplateAst parse_template(std::string_view source);

}  // namespace kiln::chat

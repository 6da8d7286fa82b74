// Syntax tree of a parsed chat template: expressions (Expr) and statements (Node).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/value.hpp"

namespace kiln::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  Literal,  // literal
  Name,     // name
  ListLit,  // args = items
  DictLit,  // args = key0, value0, key1, value1, ...
  Attr,     // args[0].name
  Index,    // args[0][args[1]]
  Slice,    // args[0][args[1]:args[2]:args[3]] (null children = omitted)
  Call,     // args[0](args[1..], kwargs)
  Filter,   // args[0] | name(args[1..], kwargs)
  Test,     // args[0] is [not] name(args[1..])
  Not,      // not args[0]
  Negate,   // -args[0]
  Binary,   // args[0] name args[1]  (+ - * / // % ** ~ == != < > <= >= in "not in")
  And,      // args[0] and args[1]
  Or,       // args[0] or args[1]
  Cond      // args[0] if args[1] else args[2] (args[2] may be null → undefined)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  int column = 0;
  std::string name;
  Value literal;
  bool negated = false;  // Test: "is not"
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class NodeKind {
  Text,      // text
  Output,    // {{ expr }}
  If,        // branches + else_body
  For,       // targets in expr [if cond]: body [else else_body]
  Set,       // targets = expr, or attr_owner.attr = expr
  SetBlock,  // {% set target %}body{% endset %}
  Macro,     // {% macro name(params) %}body{% endmacro %}
  Break,
  Continue,
  Scope  // a body run in place ({% generation %}, HF's assistant-mask marker)
};

struct Node {
  NodeKind kind;
  int line = 0;
  int column = 0;
  std::string text;                                // Text; Set attribute owner; Macro name
  std::string attr;                                // Set: attribute of a namespace
  std::vector<std::string> targets;                // For/Set/SetBlock names
  ExprPtr expr;                                    // Output/For iterable/Set value
  ExprPtr condition;                               // For filter
  std::vector<std::pair<ExprPtr, Body>> branches;  // If
  Body body;
  Body else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // Macro (default may be null)
};

struct TemplateAst {
  Body body;
};

}  // namespace kiln::chat

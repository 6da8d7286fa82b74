#include "chat/parser.hpp"

#include <cstdlib>
#include <set>

#include "chat/lexer.hpp"
#include "core/error.hpp"

namespace kiln::chat {

namespace {

constexpr int kMaxNesting = 256;  // a hostile template cannot exhaust the stack

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  TemplateAst run() {
    TemplateAst ast;
    std::string stop;
    ast.body = parse_body({}, stop);
    if (!stop.empty()) error(peek(), "unexpected '{% " + stop + " %}'");
    return ast;
  }

 private:
  // ---- token helpers ----
  const Token& peek(size_t ahead = 0) const {
    return toks_[std::min(pos_ + ahead, toks_.size() - 1)];
  }
  const Token& next() {
    const Token& t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).type == TokenType::Operator && peek(ahead).value == op;
  }
  bool is_name(const char* n, size_t ahead = 0) const {
    return peek(ahead).type == TokenType::Name && peek(ahead).value == n;
  }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op))
      error(peek(), std::string("expected '") + op + "', got " + describe(peek()));
  }
  std::string expect_identifier() {
    if (peek().type != TokenType::Name) error(peek(), "expected a name, got " + describe(peek()));
    return next().value;
  }
  void expect_block_end() {
    if (peek().type != TokenType::BlockEnd) error(peek(), "expected '%}', got " + describe(peek()));
    next();
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case TokenType::End:
        return "end of template";
      case TokenType::VarEnd:
        return "'}}'";
      case TokenType::BlockEnd:
        return "'%}'";
      case TokenType::String:
        return "string '" + t.value + "'";
      default:
        return "'" + t.value + "'";
    }
  }
  [[noreturn]] void error(const Token& at, const std::string& what) const {
    fail(KILN_ERR_FORMAT, "chat template syntax error at line " + std::to_string(at.line) +
                              ", column " + std::to_string(at.column) + ": " + what);
  }
  void enter(const Token& at) {
    if (++depth_ > kMaxNesting)
      error(at, "nesting deeper than " + std::to_string(kMaxNesting) + " levels");
  }
  void leave() { --depth_; }

  // ---- statements ----
  // Parses nodes until a block tag whose keyword is in `stops` (consumed up to the keyword;
  // returned in `stop`), or the end of the template (stop = "").
  Body parse_body(const std::set<std::string>& stops, std::string& stop) {
    Body body;
    stop.clear();
    while (true) {
      const Token& t = peek();
      if (t.type == TokenType::End) {
        if (!stops.empty()) {
          std::string closer = *stops.begin();
          for (const std::string& s : stops) {
            if (s.rfind("end", 0) == 0) closer = s;
          }
          error(t, "unexpected end of template: missing '{% " + closer + " %}'");
        }
        return body;
      }
      if (t.type == TokenType::Text) {
        auto node = make_node(NodeKind::Text, t);
        node->text = t.value;
        next();
        body.push_back(std::move(node));
      } else if (t.type == TokenType::VarBegin) {
        next();
        auto node = make_node(NodeKind::Output, t);
        node->expr = parse_expression();
        if (peek().type != TokenType::VarEnd)
          error(peek(), "expected '}}', got " + describe(peek()));
        next();
        body.push_back(std::move(node));
      } else if (t.type == TokenType::BlockBegin) {
        const Token& kw = peek(1);
        if (kw.type != TokenType::Name) error(kw, "expected a statement keyword after '{%'");
        if (stops.count(kw.value)) {
          next();
          next();
          stop = kw.value;
          return body;
        }
        next();
        body.push_back(parse_statement());
      } else {
        error(t, "unexpected " + describe(t));
      }
    }
  }

  NodePtr make_node(NodeKind kind, const Token& at) {
    auto node = std::make_unique<Node>();
    node->kind = kind;
    node->line = at.line;
    node->column = at.column;
    return node;
  }

  NodePtr parse_statement() {
    const Token kw = next();
    enter(kw);
    NodePtr node;
    if (kw.value == "if") {
      node = parse_if(kw);
    } else if (kw.value == "for") {
      node = parse_for(kw);
    } else if (kw.value == "set") {
      node = parse_set(kw);
    } else if (kw.value == "macro") {
      node = parse_macro(kw);
    } else if (kw.value == "break" || kw.value == "continue") {
      node = make_node(kw.value == "break" ? NodeKind::Break : NodeKind::Continue, kw);
      expect_block_end();
    } else if (kw.value == "generation") {
      node = make_node(NodeKind::Scope, kw);
      expect_block_end();
      std::string stop;
      node->body = parse_body({"endgeneration"}, stop);
      expect_block_end();
    } else {
      error(kw, "unknown or unsupported statement '" + kw.value + "'");
    }
    leave();
    return node;
  }

  NodePtr parse_if(const Token& kw) {
    auto node = make_node(NodeKind::If, kw);
    ExprPtr cond = parse_expression();
    expect_block_end();
    while (true) {
      std::string stop;
      Body body = parse_body({"elif", "else", "endif"}, stop);
      node->branches.emplace_back(std::move(cond), std::move(body));
      if (stop == "elif") {
        cond = parse_expression();
        expect_block_end();
        continue;
      }
      if (stop == "else") {
        expect_block_end();
        node->else_body = parse_body({"endif"}, stop);
      }
      expect_block_end();
      return node;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> targets;
    const bool paren = accept_op("(");
    targets.push_back(expect_identifier());
    while (accept_op(",")) targets.push_back(expect_identifier());
    if (paren) expect_op(")");
    return targets;
  }

  NodePtr parse_for(const Token& kw) {
    auto node = make_node(NodeKind::For, kw);
    node->targets = parse_targets();
    if (!accept_name("in")) error(peek(), "expected 'in' in for loop, got " + describe(peek()));
    node->expr = parse_condexpr(false);  // "if" here starts the loop filter
    if (accept_name("if")) node->condition = parse_expression();
    if (is_name("recursive")) error(peek(), "recursive for loops are not supported");
    expect_block_end();
    std::string stop;
    node->body = parse_body({"else", "endfor"}, stop);
    if (stop == "else") {
      expect_block_end();
      node->else_body = parse_body({"endfor"}, stop);
    }
    expect_block_end();
    return node;
  }

  NodePtr parse_set(const Token& kw) {
    auto node = make_node(NodeKind::Set, kw);
    const std::string first = expect_identifier();
    if (accept_op(".")) {
      node->text = first;
      node->attr = expect_identifier();
    } else {
      node->targets.push_back(first);
      while (accept_op(",")) node->targets.push_back(expect_identifier());
    }
    if (accept_op("=")) {
      node->expr = parse_tuple_or_expression();
      expect_block_end();
      return node;
    }
    if (!node->attr.empty() || node->targets.size() != 1)
      error(peek(), "a block set takes one plain name");
    expect_block_end();
    node->kind = NodeKind::SetBlock;
    std::string stop;
    node->body = parse_body({"endset"}, stop);
    expect_block_end();
    return node;
  }

  NodePtr parse_macro(const Token& kw) {
    auto node = make_node(NodeKind::Macro, kw);
    node->text = expect_identifier();
    expect_op("(");
    if (!is_op(")")) {
      do {
        std::string param = expect_identifier();
        ExprPtr def;
        if (accept_op("=")) def = parse_expression();
        node->params.emplace_back(std::move(param), std::move(def));
      } while (accept_op(","));
    }
    expect_op(")");
    expect_block_end();
    std::string stop;
    node->body = parse_body({"endmacro"}, stop);
    expect_block_end();
    return node;
  }

  // ---- expressions ----
  ExprPtr make_expr(ExprKind kind, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = at.line;
    e->column = at.column;
    return e;
  }

  ExprPtr parse_expression() { return parse_condexpr(true); }

  // `a, b` in a set statement builds a tuple (a list here).
  ExprPtr parse_tuple_or_expression() {
    const Token& at = peek();
    ExprPtr first = parse_expression();
    if (!is_op(",")) return first;
    auto list = make_expr(ExprKind::ListLit, at);
    list->args.push_back(std::move(first));
    while (accept_op(",")) list->args.push_back(parse_expression());
    return list;
  }

  ExprPtr parse_condexpr(bool allow_if) {
    const Token& at = peek();
    enter(at);
    ExprPtr e = parse_or();
    while (allow_if && is_name("if")) {
      next();
      auto cond = make_expr(ExprKind::Cond, at);
      cond->args.push_back(std::move(e));
      cond->args.push_back(parse_or());
      cond->args.push_back(accept_name("else") ? parse_condexpr(true) : nullptr);
      e = std::move(cond);
    }
    leave();
    return e;
  }

  ExprPtr binary(ExprKind kind, const Token& at, std::string op, ExprPtr a, ExprPtr b) {
    auto e = make_expr(kind, at);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      const Token at = next();
      e = binary(ExprKind::Or, at, "or", std::move(e), parse_and());
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      const Token at = next();
      e = binary(ExprKind::And, at, "and", std::move(e), parse_not());
    }
    return e;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const Token at = next();
      enter(at);
      auto e = make_expr(ExprKind::Not, at);
      e->args.push_back(parse_not());
      leave();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    while (true) {
      const Token at = peek();
      std::string op;
      if (at.type == TokenType::Operator &&
          (at.value == "==" || at.value == "!=" || at.value == "<" || at.value == ">" ||
           at.value == "<=" || at.value == ">=")) {
        op = at.value;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && is_name("in", 1)) {
        op = "not in";
        next();
        next();
      } else {
        return e;
      }
      e = binary(ExprKind::Binary, at, op, std::move(e), parse_math1());
    }
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token at = next();
      e = binary(ExprKind::Binary, at, at.value, std::move(e), parse_concat());
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      const Token at = next();
      e = binary(ExprKind::Binary, at, "~", std::move(e), parse_math2());
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token at = next();
      e = binary(ExprKind::Binary, at, at.value, std::move(e), parse_pow());
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      const Token at = next();
      e = binary(ExprKind::Binary, at, "**", std::move(e), parse_unary(true));
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    const Token at = peek();
    enter(at);
    ExprPtr e;
    if (accept_op("-")) {
      e = make_expr(ExprKind::Negate, at);
      e->args.push_back(parse_unary(false));
    } else if (accept_op("+")) {
      e = parse_unary(false);
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters_and_tests(std::move(e));
    leave();
    return e;
  }

  ExprPtr parse_primary() {
    const Token t = next();
    switch (t.type) {
      case TokenType::String: {
        auto e = make_expr(ExprKind::Literal, t);
        std::string s = t.value;
        while (peek().type == TokenType::String)
          s += next().value;  // adjacent literals concatenate
        e->literal = Value(std::move(s));
        return e;
      }
      case TokenType::Integer: {
        auto e = make_expr(ExprKind::Literal, t);
        e->literal = Value(static_cast<int64_t>(std::strtoll(t.value.c_str(), nullptr, 10)));
        return e;
      }
      case TokenType::Float: {
        auto e = make_expr(ExprKind::Literal, t);
        e->literal = Value(std::strtod(t.value.c_str(), nullptr));
        return e;
      }
      case TokenType::Name: {
        auto e = make_expr(ExprKind::Literal, t);
        if (t.value == "true" || t.value == "True") {
          e->literal = Value(true);
        } else if (t.value == "false" || t.value == "False") {
          e->literal = Value(false);
        } else if (t.value == "none" || t.value == "None") {
          e->literal = Value(None{});
        } else {
          e->kind = ExprKind::Name;
          e->name = t.value;
        }
        return e;
      }
      case TokenType::Operator:
        if (t.value == "(") {
          // Parenthesized expression or tuple.
          if (accept_op(")")) return make_expr(ExprKind::ListLit, t);
          ExprPtr inner = parse_expression();
          if (is_op(",")) {
            auto list = make_expr(ExprKind::ListLit, t);
            list->args.push_back(std::move(inner));
            while (accept_op(",")) {
              if (is_op(")")) break;
              list->args.push_back(parse_expression());
            }
            inner = std::move(list);
          }
          expect_op(")");
          return inner;
        }
        if (t.value == "[") {
          auto list = make_expr(ExprKind::ListLit, t);
          while (!is_op("]")) {
            list->args.push_back(parse_expression());
            if (!accept_op(",")) break;
          }
          expect_op("]");
          return list;
        }
        if (t.value == "{") {
          auto dict = make_expr(ExprKind::DictLit, t);
          while (!is_op("}")) {
            dict->args.push_back(parse_expression());
            expect_op(":");
            dict->args.push_back(parse_expression());
            if (!accept_op(",")) break;
          }
          expect_op("}");
          return dict;
        }
        break;
      default:
        break;
    }
    error(t, "unexpected " + describe(t) + " in expression");
  }

  void parse_call_args(Expr& call) {
    // '(' already consumed.
    while (!is_op(")")) {
      if (peek().type == TokenType::Name && is_op("=", 1)) {
        std::string key = next().value;
        next();
        call.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        call.args.push_back(parse_expression());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const Token at = peek();
      if (accept_op(".")) {
        auto attr = make_expr(ExprKind::Attr, at);
        const Token& name = peek();
        if (name.type == TokenType::Name) {
          attr->name = next().value;
        } else if (name.type == TokenType::Integer) {  // foo.0 means foo[0]
          attr->kind = ExprKind::Index;
          attr->args.push_back(std::move(e));
          attr->args.push_back(parse_primary());
          e = std::move(attr);
          continue;
        } else {
          error(name, "expected an attribute name after '.', got " + describe(name));
        }
        attr->args.push_back(std::move(e));
        e = std::move(attr);
      } else if (accept_op("[")) {
        e = parse_subscript(std::move(e), at);
      } else if (accept_op("(")) {
        auto call = make_expr(ExprKind::Call, at);
        call->args.push_back(std::move(e));
        parse_call_args(*call);
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr subject, const Token& at) {
    ExprPtr parts[3];
    int n_colons = 0;
    if (!is_op(":")) parts[0] = parse_expression();
    while (n_colons < 2 && accept_op(":")) {
      ++n_colons;
      if (!is_op(":") && !is_op("]")) parts[n_colons] = parse_expression();
    }
    expect_op("]");
    if (n_colons == 0) {
      auto e = make_expr(ExprKind::Index, at);
      e->args.push_back(std::move(subject));
      e->args.push_back(std::move(parts[0]));
      return e;
    }
    auto e = make_expr(ExprKind::Slice, at);
    e->args.push_back(std::move(subject));
    for (auto& p : parts) e->args.push_back(std::move(p));
    return e;
  }

  ExprPtr parse_filters_and_tests(ExprPtr e) {
    while (true) {
      const Token at = peek();
      if (accept_op("|")) {
        auto f = make_expr(ExprKind::Filter, at);
        f->name = expect_identifier();
        f->args.push_back(std::move(e));
        if (accept_op("(")) parse_call_args(*f);
        e = parse_postfix(std::move(f));
      } else if (is_name("is")) {
        next();
        auto t = make_expr(ExprKind::Test, at);
        t->negated = accept_name("not");
        t->name = expect_identifier();
        t->args.push_back(std::move(e));
        if (accept_op("(")) {
          parse_call_args(*t);
        } else if (starts_test_argument()) {
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  // Jinja's "is divisibleby 3" form: a bare argument that is not an operator keyword.
  bool starts_test_argument() const {
    const Token& t = peek();
    if (t.type == TokenType::String || t.type == TokenType::Integer || t.type == TokenType::Float)
      return true;
    if (t.type != TokenType::Name) return false;
    static const std::set<std::string> kStop = {"else", "or", "and", "if", "in", "is", "not"};
    return !kStop.count(t.value);
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

TemplateAst parse_template(std::string_view source) {
  return Parser(tokenize_template(source)).run();
}

}  // namespace kiln::chat

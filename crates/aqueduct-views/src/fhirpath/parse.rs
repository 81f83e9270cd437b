//! The FHIRPath subset's grammar: a lexer and a precedence-climbing parser into [`Expr`].
//!
//! Precedence follows the FHIRPath specification (lowest first): `implies`; `or` `xor`;
//! `and`; `in` `contains`; `=` `~` `!=` `!~`; `<` `<=` `>` `>=`; `|`; `is` `as`; `+` `-` `&`;
//! `*` `/` `div` `mod`; unary `+` `-`; then invocation (`.`) and indexing (`[]`).

use super::PathError;

/// A parsed FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `$this` or the implicit focus at the start of a path.
    This,
    /// `{}`: the empty collection.
    Empty,
    Str(String),
    Int(i64),
    Dec(f64),
    Bool(bool),
    /// `@2020-01-01`, `@2020-01-01T10:00:00Z` (date or dateTime literal, text after `@`).
    DateTime(String),
    /// `@T10:00` (time literal, text after `@T`).
    Time(String),
    /// `%name`: a constant of the view or an environment variable.
    Env(String),
    /// A member name applied to the focus (`name`, or `focus.name`).
    Member(Box<Expr>, String),
    /// A function call on a focus: `focus.name(args)`.
    Call(Box<Expr>, String, Vec<Expr>),
    Index(Box<Expr>, Box<Expr>),
    Unary(char, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `expr is Type` / `expr as Type`.
    TypeOp(bool, Box<Expr>, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Implies,
    Or,
    Xor,
    And,
    In,
    Contains,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    Lt,
    Le,
    Gt,
    Ge,
    Union,
    Add,
    Sub,
    Concat,
    Mul,
    Div,
    IntDiv,
    Mod,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A `` `quoted` `` identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(String),
    DateTime(String),
    Time(String),
    Env(String),
    Sym(&'static str),
}

const SYMBOLS: [&str; 19] = [
    "<=", ">=", "!=", "!~", "(", ")", "[", "]", "{", "}", ".", ",", "=", "~", "<", ">", "|", "+",
    "-",
];
const MORE_SYMBOLS: [&str; 4] = ["*", "/", "&", "$"];

/// Expressions nested deeper than this are refused (a stack-safe parser for any input).
const MAX_DEPTH: usize = 64;

fn lex(src: &str) -> Result<Vec<Tok>, PathError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |msg: String| PathError::Syntax {
        path: src.to_string(),
        message: msg,
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == '\'' || c == '`' {
            let quote = c;
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err(err("unterminated string or quoted identifier".into()));
                };
                i += 1;
                if ch == quote {
                    break;
                }
                if ch == '\\' {
                    let Some(&e) = chars.get(i) else {
                        return Err(err("unterminated escape".into()));
                    };
                    i += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'f' => s.push('\u{c}'),
                        'u' => {
                            let hex: String = chars.iter().skip(i).take(4).collect();
                            let code = u32::from_str_radix(&hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| err(format!("bad \\u escape `{hex}`")))?;
                            s.push(code);
                            i += 4;
                        }
                        other => s.push(other),
                    }
                } else {
                    s.push(ch);
                }
            }
            out.push(if quote == '`' {
                Tok::Quoted(s)
            } else {
                Tok::Str(s)
            });
            continue;
        }
        if c == '@' {
            i += 1;
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '-' | ':' | '.' | '+'))
            {
                // a `+`/`-` is part of a time zone only after a time
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if text.is_empty() {
                return Err(err("`@` must start a date, dateTime or time literal".into()));
            }
            if let Some(t) = text.strip_prefix('T') {
                out.push(Tok::Time(t.to_string()));
            } else if text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                out.push(Tok::DateTime(text));
            } else {
                return Err(err(format!("`@{text}` is not a date or time literal")));
            }
            continue;
        }
        if c == '%' {
            i += 1;
            if chars.get(i) == Some(&'`') || chars.get(i) == Some(&'\'') {
                let quote = chars[i];
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != quote {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(err("unterminated quoted variable name".into()));
                }
                out.push(Tok::Env(chars[start..i].iter().collect()));
                i += 1;
                continue;
            }
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if start == i {
                return Err(err("`%` must be followed by a variable name".into()));
            }
            out.push(Tok::Env(chars[start..i].iter().collect()));
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if let Some(sym) = SYMBOLS
            .iter()
            .chain(MORE_SYMBOLS.iter())
            .find(|s| rest.starts_with(**s))
        {
            out.push(Tok::Sym(sym));
            i += sym.chars().count();
            continue;
        }
        return Err(err(format!("unexpected character `{c}`")));
    }
    Ok(out)
}

/// Parses one FHIRPath expression of the subset.
pub fn parse(src: &str) -> Result<Expr, PathError> {
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    if p.toks.is_empty() {
        return Err(p.err("the expression is empty"));
    }
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(p.err(&format!("unexpected `{}`", p.describe())));
    }
    Ok(e)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

/// Binding power of each infix operator (higher binds tighter).
fn infix(tok: &Tok) -> Option<(u8, Infix)> {
    use BinOp::*;
    let op = match tok {
        Tok::Ident(s) => match s.as_str() {
            "implies" => (1, Infix::Bin(Implies)),
            "or" => (2, Infix::Bin(Or)),
            "xor" => (2, Infix::Bin(Xor)),
            "and" => (3, Infix::Bin(And)),
            "in" => (4, Infix::Bin(In)),
            "contains" => (4, Infix::Bin(Contains)),
            "is" => (8, Infix::Is),
            "as" => (8, Infix::As),
            "div" => (10, Infix::Bin(IntDiv)),
            "mod" => (10, Infix::Bin(Mod)),
            _ => return None,
        },
        Tok::Sym(s) => match *s {
            "=" => (5, Infix::Bin(Eq)),
            "~" => (5, Infix::Bin(Equiv)),
            "!=" => (5, Infix::Bin(Ne)),
            "!~" => (5, Infix::Bin(NotEquiv)),
            "<" => (6, Infix::Bin(Lt)),
            "<=" => (6, Infix::Bin(Le)),
            ">" => (6, Infix::Bin(Gt)),
            ">=" => (6, Infix::Bin(Ge)),
            "|" => (7, Infix::Bin(Union)),
            "+" => (9, Infix::Bin(Add)),
            "-" => (9, Infix::Bin(Sub)),
            "&" => (9, Infix::Bin(Concat)),
            "*" => (10, Infix::Bin(Mul)),
            "/" => (10, Infix::Bin(Div)),
            _ => return None,
        },
        _ => return None,
    };
    Some(op)
}

enum Infix {
    Bin(BinOp),
    Is,
    As,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> PathError {
        PathError::Syntax {
            path: self.src.to_string(),
            message: message.to_string(),
        }
    }

    fn describe(&self) -> String {
        match self.toks.get(self.pos) {
            None => "end of expression".into(),
            Some(Tok::Ident(s) | Tok::Quoted(s) | Tok::Num(s)) => s.clone(),
            Some(Tok::Str(s)) => format!("'{s}'"),
            Some(Tok::DateTime(s)) => format!("@{s}"),
            Some(Tok::Time(s)) => format!("@T{s}"),
            Some(Tok::Env(s)) => format!("%{s}"),
            Some(Tok::Sym(s)) => (*s).to_string(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), PathError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{sym}`, found `{}`", self.describe())))
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<Expr, PathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("the expression is nested too deeply"));
        }
        let mut lhs = self.unary()?;
        while let Some((bp, op)) = self.peek().and_then(infix) {
            if bp <= min_bp {
                break;
            }
            self.pos += 1;
            lhs = match op {
                Infix::Bin(op) => {
                    let rhs = self.expr(bp)?;
                    Expr::Binary(op, Box::new(lhs), Box::new(rhs))
                }
                Infix::Is | Infix::As => {
                    let ty = self.type_specifier()?;
                    Expr::TypeOp(matches!(op, Infix::Is), Box::new(lhs), ty)
                }
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn type_specifier(&mut self) -> Result<String, PathError> {
        let mut name = self.identifier()?;
        while self.eat_sym(".") {
            name.push('.');
            name.push_str(&self.identifier()?);
        }
        Ok(name)
    }

    fn identifier(&mut self) -> Result<String, PathError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(s) | Tok::Quoted(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.err(&format!("expected a name, found `{}`", self.describe()))),
        }
    }

    fn unary(&mut self) -> Result<Expr, PathError> {
        if self.eat_sym("-") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.err("the expression is nested too deeply"));
            }
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Unary('-', Box::new(e)));
        }
        if self.eat_sym("+") {
            return self.unary();
        }
        let mut e = self.term()?;
        loop {
            if self.eat_sym(".") {
                e = self.invocation(e)?;
            } else if self.eat_sym("[") {
                let idx = self.expr(0)?;
                self.expect_sym("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                break;
            }
        }
        Ok(e)
    }

    /// A member or function call applied to `focus`.
    fn invocation(&mut self, focus: Expr) -> Result<Expr, PathError> {
        if matches!(self.peek(), Some(Tok::Sym("$"))) {
            return Err(self.err("`$` may only start a path"));
        }
        let quoted = matches!(self.peek(), Some(Tok::Quoted(_)));
        let name = self.identifier()?;
        if !quoted && self.eat_sym("(") {
            let args = self.args()?;
            return Ok(Expr::Call(Box::new(focus), name, args));
        }
        Ok(Expr::Member(Box::new(focus), name))
    }

    fn args(&mut self) -> Result<Vec<Expr>, PathError> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr(0)?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect_sym(",")?;
        }
    }

    fn term(&mut self) -> Result<Expr, PathError> {
        let Some(tok) = self.toks.get(self.pos).cloned() else {
            return Err(self.err("the expression ends too early"));
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => Expr::Str(s),
            Tok::Num(n) => {
                if n.contains('.') {
                    Expr::Dec(
                        n.parse()
                            .map_err(|_| self.err(&format!("bad number `{n}`")))?,
                    )
                } else {
                    Expr::Int(
                        n.parse()
                            .map_err(|_| self.err(&format!("number `{n}` is too large")))?,
                    )
                }
            }
            Tok::DateTime(s) => Expr::DateTime(s),
            Tok::Time(s) => Expr::Time(s),
            Tok::Env(s) => Expr::Env(s),
            Tok::Sym("(") => {
                let e = self.expr(0)?;
                self.expect_sym(")")?;
                e
            }
            Tok::Sym("{") => {
                self.expect_sym("}")?;
                Expr::Empty
            }
            Tok::Sym("$") => {
                let name = self.identifier()?;
                match name.as_str() {
                    "this" => Expr::This,
                    other => return Err(self.err(&format!("`${other}` is not supported"))),
                }
            }
            Tok::Ident(s) if s == "true" => Expr::Bool(true),
            Tok::Ident(s) if s == "false" => Expr::Bool(false),
            Tok::Ident(name) => {
                if self.eat_sym("(") {
                    let args = self.args()?;
                    Expr::Call(Box::new(Expr::This), name, args)
                } else {
                    Expr::Member(Box::new(Expr::This), name)
                }
            }
            Tok::Quoted(name) => Expr::Member(Box::new(Expr::This), name),
            Tok::Sym(s) => return Err(self.err(&format!("unexpected `{s}`"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_functions_and_operators() {
        let e = parse("name.where(use = 'official').family.first()").unwrap();
        assert!(matches!(e, Expr::Call(_, ref f, _) if f == "first"));
        let e = parse("a.b + 2 * 3 = 8 and c").unwrap();
        assert!(matches!(e, Expr::Binary(BinOp::And, _, _)));
        let e = parse("name[%i].family").unwrap();
        assert!(matches!(e, Expr::Member(_, ref m) if m == "family"));
        assert!(parse("value.ofType(FHIR.Quantity)").is_ok());
        assert!(parse("value is Quantity").is_ok());
    }

    #[test]
    fn refuses_what_is_not_fhirpath() {
        for bad in [
            "@@", "", "a.", "a(", "name[0", "'open", "1 +", "a..b", "%", "$foo",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        let deep = "(".repeat(500) + "1" + &")".repeat(500);
        assert!(parse(&deep).is_err());
    }
}

//! `eval(...)` arithmetic on recipe variables, with Python's numeric semantics.
//!
//! SparseML evaluates `eval(expr)` with Python; recipes use it for arithmetic on their
//! top-level variables (`eval(num_epochs - 4)`, `eval(init_lr * 0.1)`). This evaluator
//! supports exactly that subset: integer and float literals, variable names, `+ - * /
//! // % **`, unary `+`/`-`, parentheses, and the functions `min`, `max`, `abs`,
//! `round`, `int`, `float`, `ceil` and `floor`. As in Python, `/` always gives a float,
//! `//` and `%` floor, and integer arithmetic stays integral.

use std::fmt;

/// A number as Python sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
}

impl Num {
    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl fmt::Display for Num {
    /// Formats so that YAML reads the same type back (`15` vs `15.0`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) if x.is_nan() => write!(f, ".nan"),
            Num::Float(x) if x.is_infinite() => {
                write!(f, "{}", if *x > 0.0 { ".inf" } else { "-.inf" })
            }
            Num::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The text is not a valid expression.
    #[error("cannot parse `{expr}` at character {pos}: {message}")]
    Syntax {
        /// The expression.
        expr: String,
        /// 0-based character position.
        pos: usize,
        /// What was expected.
        message: String,
    },
    /// A name that is not a variable.
    #[error("unknown variable `{name}` in `{expr}`")]
    UnknownVariable {
        /// The name.
        name: String,
        /// The expression.
        expr: String,
    },
    /// Division by zero or another arithmetic failure.
    #[error("`{expr}`: {message}")]
    Arithmetic {
        /// The expression.
        expr: String,
        /// What went wrong.
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Num),
    Name(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn tokenize(expr: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let syntax = |pos: usize, message: &str| ExprError::Syntax {
        expr: expr.to_string(),
        pos,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < chars.len()
                && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
            let num = if text.contains(['.', 'e', 'E']) {
                Num::Float(
                    text.parse()
                        .map_err(|_| syntax(start, "malformed number"))?,
                )
            } else {
                Num::Int(
                    text.parse()
                        .map_err(|_| syntax(start, "malformed integer"))?,
                )
            };
            out.push((Tok::Num(num), start));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Name(chars[start..i].iter().collect()), start));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let tok = match two.as_str() {
            "**" => Some(Tok::Op("**")),
            "//" => Some(Tok::Op("//")),
            _ => None,
        };
        if let Some(tok) = tok {
            out.push((tok, start));
            i += 2;
            continue;
        }
        let tok = match c {
            '+' => Tok::Op("+"),
            '-' => Tok::Op("-"),
            '*' => Tok::Op("*"),
            '/' => Tok::Op("/"),
            '%' => Tok::Op("%"),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            _ => return Err(syntax(start, &format!("unexpected character `{c}`"))),
        };
        out.push((tok, start));
        i += 1;
    }
    Ok(out)
}

/// Evaluates `expr`, looking variables up with `lookup` (which returns `None` for an
/// unknown name, or an error of its own, e.g. for a cyclic definition).
pub fn evaluate(
    expr: &str,
    lookup: &mut dyn FnMut(&str) -> Result<Option<Num>, ExprError>,
) -> Result<Num, ExprError> {
    let tokens = tokenize(expr)?;
    let mut p = ExprParser {
        expr,
        tokens,
        pos: 0,
        lookup,
    };
    let value = p.sum()?;
    if p.pos < p.tokens.len() {
        return Err(p.syntax("unexpected trailing input"));
    }
    Ok(value)
}

struct ExprParser<'a, 'l> {
    expr: &'a str,
    tokens: Vec<(Tok, usize)>,
    pos: usize,
    lookup: &'l mut dyn FnMut(&str) -> Result<Option<Num>, ExprError>,
}

impl ExprParser<'_, '_> {
    fn syntax(&self, message: &str) -> ExprError {
        let pos = self
            .tokens
            .get(self.pos)
            .map_or(self.expr.chars().count(), |t| t.1);
        ExprError::Syntax {
            expr: self.expr.to_string(),
            pos,
            message: message.to_string(),
        }
    }

    fn arith(&self, message: &str) -> ExprError {
        ExprError::Arithmetic {
            expr: self.expr.to_string(),
            message: message.to_string(),
        }
    }

    fn peek_op(&self) -> Option<&'static str> {
        match self.tokens.get(self.pos) {
            Some((Tok::Op(op), _)) => Some(op),
            _ => None,
        }
    }

    fn sum(&mut self) -> Result<Num, ExprError> {
        let mut acc = self.product()?;
        while let Some(op @ ("+" | "-")) = self.peek_op() {
            self.pos += 1;
            let rhs = self.product()?;
            acc = self.binary(op, acc, rhs)?;
        }
        Ok(acc)
    }

    fn product(&mut self) -> Result<Num, ExprError> {
        let mut acc = self.unary()?;
        while let Some(op @ ("*" | "/" | "//" | "%")) = self.peek_op() {
            self.pos += 1;
            let rhs = self.unary()?;
            acc = self.binary(op, acc, rhs)?;
        }
        Ok(acc)
    }

    fn unary(&mut self) -> Result<Num, ExprError> {
        match self.peek_op() {
            Some("-") => {
                self.pos += 1;
                Ok(match self.unary()? {
                    Num::Int(i) => Num::Int(-i),
                    Num::Float(f) => Num::Float(-f),
                })
            }
            Some("+") => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Num, ExprError> {
        let base = self.atom()?;
        if self.peek_op() == Some("**") {
            self.pos += 1;
            // Right-associative, and binds tighter than a unary minus on its left.
            let exp = self.unary()?;
            return self.binary("**", base, exp);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Num, ExprError> {
        let Some((tok, _)) = self.tokens.get(self.pos).cloned() else {
            return Err(self.syntax("expected a number, a variable or `(`"));
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(n),
            Tok::LParen => {
                let v = self.sum()?;
                self.expect(Tok::RParen, "expected `)`")?;
                Ok(v)
            }
            Tok::Name(name) if matches!(self.tokens.get(self.pos), Some((Tok::LParen, _))) => {
                self.pos += 1;
                let mut args = vec![self.sum()?];
                while matches!(self.tokens.get(self.pos), Some((Tok::Comma, _))) {
                    self.pos += 1;
                    args.push(self.sum()?);
                }
                self.expect(Tok::RParen, "expected `)` after the arguments")?;
                self.call(&name, &args)
            }
            Tok::Name(name) => match (self.lookup)(&name)? {
                Some(v) => Ok(v),
                None => Err(ExprError::UnknownVariable {
                    name,
                    expr: self.expr.to_string(),
                }),
            },
            _ => {
                self.pos -= 1;
                Err(self.syntax("expected a number, a variable or `(`"))
            }
        }
    }

    fn expect(&mut self, tok: Tok, message: &str) -> Result<(), ExprError> {
        if self.tokens.get(self.pos).map(|t| &t.0) == Some(&tok) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax(message))
        }
    }

    fn call(&self, name: &str, args: &[Num]) -> Result<Num, ExprError> {
        let one = || {
            if args.len() == 1 {
                Ok(args[0])
            } else {
                Err(self.arith(&format!("{name}() takes exactly one argument")))
            }
        };
        Ok(match name {
            "min" | "max" => {
                let mut best = args[0];
                for &a in &args[1..] {
                    let better = if name == "min" {
                        a.as_f64() < best.as_f64()
                    } else {
                        a.as_f64() > best.as_f64()
                    };
                    if better {
                        best = a;
                    }
                }
                best
            }
            "abs" => match one()? {
                Num::Int(i) => Num::Int(i.abs()),
                Num::Float(f) => Num::Float(f.abs()),
            },
            // Python's round() with one argument rounds half to even and returns an int.
            "round" => Num::Int(one()?.as_f64().round_ties_even() as i64),
            "int" => Num::Int(one()?.as_f64().trunc() as i64),
            "float" => Num::Float(one()?.as_f64()),
            "ceil" => Num::Int(one()?.as_f64().ceil() as i64),
            "floor" => Num::Int(one()?.as_f64().floor() as i64),
            _ => {
                return Err(self.arith(&format!(
                    "unknown function `{name}` (known: min, max, abs, round, int, float, ceil, floor)"
                )));
            }
        })
    }

    fn binary(&self, op: &str, a: Num, b: Num) -> Result<Num, ExprError> {
        use Num::{Float, Int};
        let zero = |x: Num| x.as_f64() == 0.0;
        if matches!(op, "/" | "//" | "%") && zero(b) {
            return Err(self.arith("division by zero"));
        }
        Ok(match (op, a, b) {
            ("+", Int(x), Int(y)) => Int(x.checked_add(y).ok_or_else(|| self.arith("overflow"))?),
            ("-", Int(x), Int(y)) => Int(x.checked_sub(y).ok_or_else(|| self.arith("overflow"))?),
            ("*", Int(x), Int(y)) => Int(x.checked_mul(y).ok_or_else(|| self.arith("overflow"))?),
            ("//", Int(x), Int(y)) => {
                Int(x.div_euclid(y) - i64::from(y < 0 && x.rem_euclid(y) != 0))
            }
            ("%", Int(x), Int(y)) => {
                let r = x % y;
                Int(if r != 0 && (r < 0) != (y < 0) {
                    r + y
                } else {
                    r
                })
            }
            ("**", Int(x), Int(y)) if y >= 0 => Int(u32::try_from(y)
                .ok()
                .and_then(|y| x.checked_pow(y))
                .ok_or_else(|| self.arith("overflow"))?),
            ("+", x, y) => Float(x.as_f64() + y.as_f64()),
            ("-", x, y) => Float(x.as_f64() - y.as_f64()),
            ("*", x, y) => Float(x.as_f64() * y.as_f64()),
            ("/", x, y) => Float(x.as_f64() / y.as_f64()),
            ("//", x, y) => Float((x.as_f64() / y.as_f64()).floor()),
            ("%", x, y) => {
                let (x, y) = (x.as_f64(), y.as_f64());
                Float(x - y * (x / y).floor())
            }
            ("**", x, y) => Float(x.as_f64().powf(y.as_f64())),
            _ => return Err(self.arith(&format!("unknown operator `{op}`"))),
        })
    }
}

/// If `text` is `eval(...)`, returns the inner expression.
pub fn eval_body(text: &str) -> Option<&str> {
    let t = text.trim();
    t.strip_prefix("eval(")?.strip_suffix(')')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(expr: &str) -> Result<Num, ExprError> {
        evaluate(expr, &mut |name| {
            Ok(match name {
                "epochs" => Some(Num::Int(30)),
                "lr" => Some(Num::Float(8e-5)),
                _ => None,
            })
        })
    }

    #[test]
    fn python_semantics() {
        // Values checked against CPython 3.11.
        assert_eq!(ev("epochs - 4"), Ok(Num::Int(26)));
        assert_eq!(ev("epochs / 4"), Ok(Num::Float(7.5)));
        assert_eq!(ev("epochs // 4"), Ok(Num::Int(7)));
        assert_eq!(ev("-7 // 2"), Ok(Num::Int(-4)));
        assert_eq!(ev("-7 % 3"), Ok(Num::Int(2)));
        assert_eq!(ev("7 % -3"), Ok(Num::Int(-2)));
        assert_eq!(ev("-2 ** 2"), Ok(Num::Int(-4)));
        assert_eq!(ev("2 ** 3 ** 2"), Ok(Num::Int(512)));
        assert_eq!(ev("2 ** -1"), Ok(Num::Float(0.5)));
        assert_eq!(ev("(1 + 2) * 3"), Ok(Num::Int(9)));
        assert_eq!(ev("round(2.5)"), Ok(Num::Int(2)));
        assert_eq!(ev("round(3.5)"), Ok(Num::Int(4)));
        assert_eq!(ev("max(2, epochs * 0.1)"), Ok(Num::Float(3.0)));
        assert_eq!(ev("lr * 0.1"), Ok(Num::Float(8e-5 * 0.1)));
        assert_eq!(ev("1e-3 + 1"), Ok(Num::Float(1.001)));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(matches!(ev("epochs +"), Err(ExprError::Syntax { .. })));
        assert!(
            matches!(ev("nope * 2"), Err(ExprError::UnknownVariable { name, .. }) if name == "nope")
        );
        assert!(matches!(ev("1 / 0"), Err(ExprError::Arithmetic { .. })));
        assert!(matches!(ev("1 $ 2"), Err(ExprError::Syntax { pos: 2, .. })));
        assert!(matches!(ev("sqrt(4)"), Err(ExprError::Arithmetic { .. })));
    }

    #[test]
    fn display_round_trips_through_yaml_typing() {
        use crate::recipe::yaml::{Typed, type_plain};
        assert_eq!(type_plain(&Num::Int(26).to_string()), Typed::Int(26));
        assert_eq!(
            type_plain(&Num::Float(15.0).to_string()),
            Typed::Float(15.0)
        );
        assert_eq!(
            type_plain(&Num::Float(8e-6).to_string()),
            Typed::Float(8e-6)
        );
        assert_eq!(eval_body(" eval(a + 1) "), Some("a + 1"));
        assert_eq!(eval_body("evaluate"), None);
    }
}

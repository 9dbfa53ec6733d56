//! Symbolic dims: normalized integer polynomials over named symbols.
//!
//! `Dim` keeps a sorted list of terms `coeff * sym1 * sym2 ...` with no zero coefficients and
//! no repeated monomials, so two dims are equal exactly when their polynomials are equal. That is
//! what lets `[b, s, 384] -> [b*s, 384]` stay symbolic and still be checked at build time.

use std::fmt;
use std::ops::{Add, Mul, Sub};

use crate::{DimBinding, IrError, Result};

/// A named symbol with inclusive bounds on the values it may be bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Symbol {
    pub name: String,
    pub min: i64,
    pub max: i64,
}

impl Symbol {
    /// Checks that `value` lies in the bounds, naming the symbol when it does not.
    pub fn check(&self, value: i64) -> Result<()> {
        if value < self.min || value > self.max {
            crate::bail!(
                Binding,
                "symbol `{}` = {value} is outside its bounds [{}, {}]",
                self.name,
                self.min,
                self.max
            );
        }
        Ok(())
    }
}

/// One monomial: `coeff * syms[0] * syms[1] ...`, `syms` sorted (repeats are powers).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
struct Term {
    syms: Vec<String>,
    coeff: i64,
}

/// A dimension: a constant, a symbol, or a normalized polynomial of symbols.
///
/// Arithmetic is checked: a coefficient that would overflow i64 makes the result an
/// *overflowed* dim, which is never a constant, never evaluates, and prints as `<overflow>`;
/// shape inference reports it as a `ShapeError` where it appears.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Dim {
    terms: Vec<Term>,
    overflow: bool,
}

impl Dim {
    pub fn constant(value: i64) -> Dim {
        Dim::from_terms(vec![Term {
            syms: vec![],
            coeff: value,
        }])
    }

    pub fn sym(name: &str) -> Dim {
        Dim::from_terms(vec![Term {
            syms: vec![name.to_string()],
            coeff: 1,
        }])
    }

    fn from_terms(mut terms: Vec<Term>) -> Dim {
        terms.sort_by(|a, b| a.syms.cmp(&b.syms));
        let mut out: Vec<Term> = Vec::with_capacity(terms.len());
        for t in terms {
            match out.last_mut() {
                Some(last) if last.syms == t.syms => match last.coeff.checked_add(t.coeff) {
                    Some(c) => last.coeff = c,
                    None => return Dim::overflowed(),
                },
                _ => out.push(t),
            }
        }
        out.retain(|t| t.coeff != 0);
        Dim {
            terms: out,
            overflow: false,
        }
    }

    /// The result of arithmetic whose coefficients do not fit in i64.
    fn overflowed() -> Dim {
        Dim {
            terms: Vec::new(),
            overflow: true,
        }
    }

    /// Whether arithmetic that made this dim overflowed i64.
    pub fn is_overflow(&self) -> bool {
        self.overflow
    }

    /// Parses the text form: integers, symbol names, `*`, `+`, `-` (e.g. `b*s`, `12*s + 1`).
    pub fn parse(text: &str) -> Result<Dim> {
        let bad = |why: &str| IrError::Shape(format!("cannot parse dim `{text}`: {why}"));
        let mut total = Dim::constant(0);
        let mut term = Dim::constant(1);
        let mut sign = 1i64;
        let mut expect_operand = true;
        let mut chars = text.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if expect_operand && (c.is_ascii_alphanumeric() || c == '_') {
                let mut tok = String::new();
                while let Some(&c) = chars
                    .peek()
                    .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
                {
                    tok.push(c);
                    chars.next();
                }
                let operand = if tok.starts_with(|c: char| c.is_ascii_digit()) {
                    Dim::constant(tok.parse().map_err(|_| bad("bad integer"))?)
                } else {
                    Dim::sym(&tok)
                };
                term = &term * &operand;
                expect_operand = false;
            } else if !expect_operand && c == '*' {
                chars.next();
                expect_operand = true;
            } else if !expect_operand && (c == '+' || c == '-') {
                chars.next();
                total = &total + &(&term * &Dim::constant(sign));
                term = Dim::constant(1);
                sign = if c == '-' { -1 } else { 1 };
                expect_operand = true;
            } else {
                return Err(bad(&format!("unexpected `{c}`")));
            }
        }
        if expect_operand {
            return Err(bad("expected a number or a symbol"));
        }
        Ok(&total + &(&term * &Dim::constant(sign)))
    }

    /// The value when the dim has no symbols.
    pub fn as_const(&self) -> Option<i64> {
        if self.overflow {
            return None;
        }
        match self.terms.as_slice() {
            [] => Some(0),
            [t] if t.syms.is_empty() => Some(t.coeff),
            _ => None,
        }
    }

    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// Symbols this dim mentions, sorted and deduplicated.
    pub fn symbols(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .terms
            .iter()
            .flat_map(|t| t.syms.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Evaluates with checked arithmetic; unbound symbols and overflow are errors.
    pub fn eval(&self, binding: &DimBinding) -> Result<i64> {
        let overflow = || IrError::Shape(format!("dim `{self}` overflows i64 under {binding}"));
        if self.overflow {
            return Err(IrError::Shape(
                "a size overflows i64 (checked when it was built)".into(),
            ));
        }
        let mut total: i64 = 0;
        for t in &self.terms {
            let mut v = t.coeff;
            for s in &t.syms {
                let x = binding
                    .get(s)
                    .ok_or_else(|| IrError::Binding(format!("symbol `{s}` is not bound")))?;
                v = v.checked_mul(x).ok_or_else(overflow)?;
            }
            total = total.checked_add(v).ok_or_else(overflow)?;
        }
        Ok(total)
    }

    /// `self / divisor` when it is exact for every binding: a constant or a single-term divisor
    /// that divides every term, or a divisor equal to `self`.
    pub fn div_exact(&self, divisor: &Dim) -> Option<Dim> {
        if self.overflow || divisor.overflow {
            return None;
        }
        if self == divisor && !self.terms.is_empty() {
            return Some(Dim::constant(1));
        }
        let [d] = divisor.terms.as_slice() else {
            return None;
        };
        if d.coeff == 0 {
            return None;
        }
        let mut terms = Vec::with_capacity(self.terms.len());
        for t in &self.terms {
            // checked_rem: i64::MIN % -1 overflows.
            if t.coeff.checked_rem(d.coeff)? != 0 {
                return None;
            }
            let mut syms = t.syms.clone();
            for s in &d.syms {
                let pos = syms.iter().position(|x| x == s)?;
                syms.remove(pos);
            }
            terms.push(Term {
                syms,
                coeff: t.coeff.checked_div(d.coeff)?,
            });
        }
        Some(Dim::from_terms(terms))
    }

    /// Product of dims (e.g. an element count).
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        dims.into_iter().fold(Dim::constant(1), |acc, d| &acc * d)
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::constant(v)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::sym(s)
    }
}

impl Add for &Dim {
    type Output = Dim;
    fn add(self, rhs: &Dim) -> Dim {
        if self.overflow || rhs.overflow {
            return Dim::overflowed();
        }
        Dim::from_terms(self.terms.iter().chain(&rhs.terms).cloned().collect())
    }
}

impl Sub for &Dim {
    type Output = Dim;
    fn sub(self, rhs: &Dim) -> Dim {
        if self.overflow || rhs.overflow {
            return Dim::overflowed();
        }
        let mut neg = Vec::with_capacity(rhs.terms.len());
        for t in &rhs.terms {
            let Some(coeff) = t.coeff.checked_neg() else {
                return Dim::overflowed();
            };
            neg.push(Term {
                syms: t.syms.clone(),
                coeff,
            });
        }
        Dim::from_terms(self.terms.iter().cloned().chain(neg).collect())
    }
}

impl Mul for &Dim {
    type Output = Dim;
    fn mul(self, rhs: &Dim) -> Dim {
        if self.overflow || rhs.overflow {
            return Dim::overflowed();
        }
        let mut terms = Vec::with_capacity(self.terms.len() * rhs.terms.len());
        for a in &self.terms {
            for b in &rhs.terms {
                let mut syms: Vec<String> = a.syms.iter().chain(&b.syms).cloned().collect();
                syms.sort_unstable();
                let Some(coeff) = a.coeff.checked_mul(b.coeff) else {
                    return Dim::overflowed();
                };
                terms.push(Term { syms, coeff });
            }
        }
        Dim::from_terms(terms)
    }
}

macro_rules! owned_ops {
    ($($tr:ident $f:ident),*) => {$(
        impl $tr for Dim {
            type Output = Dim;
            fn $f(self, rhs: Dim) -> Dim { (&self).$f(&rhs) }
        }
    )*};
}
owned_ops!(Add add, Sub sub, Mul mul);

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.overflow {
            return f.write_str("<overflow>");
        }
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Highest-degree terms first reads naturally: `b*s + 2*s + 1`.
        let mut terms: Vec<&Term> = self.terms.iter().collect();
        terms.sort_by(|a, b| b.syms.len().cmp(&a.syms.len()).then(a.syms.cmp(&b.syms)));
        for (i, t) in terms.iter().enumerate() {
            let mut coeff = i128::from(t.coeff);
            if i > 0 {
                f.write_str(if coeff < 0 { " - " } else { " + " })?;
                coeff = coeff.abs();
            }
            let syms = t.syms.join("*");
            match (coeff, syms.is_empty()) {
                (c, true) => write!(f, "{c}")?,
                (1, false) => f.write_str(&syms)?,
                (-1, false) => write!(f, "-{syms}")?,
                (c, false) => write!(f, "{c}*{syms}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Dim {
        Dim::sym("b")
    }
    fn s() -> Dim {
        Dim::sym("s")
    }

    #[test]
    fn normalizes_so_equal_polynomials_compare_equal() {
        let x = &(&b() * &s()) + &Dim::constant(2);
        let y = &Dim::constant(2) + &(&s() * &b());
        assert_eq!(x, y);
        assert_eq!((&b() - &b()).as_const(), Some(0));
        assert_eq!((&b() * &Dim::constant(0)), Dim::constant(0));
    }

    #[test]
    fn prints_readably() {
        let d = &(&(&b() * &s()) + &(&Dim::constant(2) * &s())) - &Dim::constant(1);
        assert_eq!(d.to_string(), "b*s + 2*s - 1");
        assert_eq!((&Dim::constant(12) * &s()).to_string(), "12*s");
        assert_eq!(Dim::constant(-3).to_string(), "-3");
    }

    #[test]
    fn eval_checks_unbound_and_overflow() {
        let d = &b() * &s();
        let bind = DimBinding::new().with("b", 4).with("s", 128);
        assert_eq!(d.eval(&bind).unwrap(), 512);
        let err = d.eval(&DimBinding::new().with("b", 4)).unwrap_err();
        assert!(err.to_string().contains("`s` is not bound"), "{err}");
        let big = DimBinding::new().with("b", i64::MAX).with("s", 2);
        assert!(matches!(d.eval(&big), Err(IrError::Shape(_))));
    }

    #[test]
    fn parses_its_own_text_form() {
        for text in ["b*s", "12*s", "b*s + 2*s - 1", "7", "s*s + 1"] {
            assert_eq!(Dim::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Dim::parse("2 * b * 3").unwrap(), &Dim::constant(6) * &b());
        for bad in ["", "b*", "*b", "b s", "b/2", "1x"] {
            assert!(Dim::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_that_overflows_is_marked_not_wrapped() {
        let big = Dim::constant(1 << 40);
        let prod = &(&big * &big) * &b();
        assert!(prod.is_overflow() && prod.as_const().is_none());
        assert_eq!(prod.to_string(), "<overflow>");
        assert!(prod.eval(&DimBinding::new().with("b", 1)).is_err());
        assert!((&prod + &b()).is_overflow() && (&b() - &prod).is_overflow());
        let min = Dim::constant(i64::MIN);
        assert!((&Dim::constant(0) - &min).is_overflow());
        assert!((&min + &Dim::constant(-1)).is_overflow());
        // i64::MIN % -1 would panic.
        assert_eq!(min.div_exact(&Dim::constant(-1)), None);
        assert_eq!((&big * &Dim::constant(3)).as_const(), Some(3 << 40));
    }

    #[test]
    fn exact_division() {
        let bs384 = &(&b() * &s()) * &Dim::constant(384);
        assert_eq!(bs384.div_exact(&Dim::constant(384)), Some(&b() * &s()));
        assert_eq!(bs384.div_exact(&b()), Some(&s() * &Dim::constant(384)));
        assert_eq!(bs384.div_exact(&Dim::constant(7)), None);
        assert_eq!(
            (&b() + &s()).div_exact(&(&b() + &s())),
            Some(Dim::constant(1))
        );
        assert_eq!((&b() + &s()).div_exact(&b()), None);
    }
}

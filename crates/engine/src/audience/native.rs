//! Rules of the common shape decided without CEL: comparisons of behaviour calls, audience
//! memberships and profile fields with literals, joined by `&&`, `||` and `!`.
//!
//! CEL costs a few microseconds per rule (a scope, a resolver, the profile converted to CEL
//! values) where these shapes need nanoseconds, and every event decides every audience that
//! reads it. Why not a second expression language: this only ever decides when CEL would
//! decide the same way. Anything it does not handle exactly (another operator, a missing
//! field, mixed types in `==`, an error on either side of `&&`) is left to CEL, for the whole
//! rule; a differential test holds the two together.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use serde_json::Value;
use waymark_core::ProfileState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
    /// `@b<i>`: a behaviour call's value; `@c<i>`, a calendar reading's, after them.
    Call(usize),
    /// `@a<i>`: membership of a referenced audience.
    Audience(usize),
    /// `profile.<path>`.
    Profile(Vec<String>),
    /// `context.<path>`: what a decision request sent (offers' rules only).
    Context(Vec<String>),
    Literal(Scalar),
}

/// A value as CEL types it: literals and whole JSON numbers are `int` (`uint` past
/// `i64::MAX`, see `expression::prepare`), other numbers `double`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar {
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
    Bool(bool),
}

impl Scalar {
    /// An integer or double, exactly enough to order against another.
    fn number(&self) -> Option<Number> {
        match self {
            Scalar::Int(i) => Some(Number::Whole(i128::from(*i))),
            Scalar::UInt(u) => Some(Number::Whole(i128::from(*u))),
            Scalar::Double(d) => Some(Number::Double(*d)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Whole(i128),
    Double(f64),
}

impl Number {
    fn partial_cmp(self, other: Number) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Number::Whole(a), Number::Whole(b)) => Some(a.cmp(&b)),
            (Number::Whole(a), Number::Double(b)) => (a as f64).partial_cmp(&b),
            (Number::Double(a), Number::Whole(b)) => a.partial_cmp(&(b as f64)),
            (Number::Double(a), Number::Double(b)) => a.partial_cmp(&b),
        }
    }
}

/// A rule in the shape decided natively.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Native {
    And(Box<Native>, Box<Native>),
    Or(Box<Native>, Box<Native>),
    Not(Box<Native>),
    Compare(Op, Operand, Operand),
    /// A boolean operand on its own (`@a0`, `events.any(...)`, `profile.traits.vip`).
    Truth(Operand),
}

/// What the rule reads, for one decision.
pub(super) struct Inputs<'a> {
    /// The calls' values; `None` before the person's events are read (see
    /// [`Outcome::Unknown`]).
    pub calls: Option<&'a [super::CallValue]>,
    pub audiences: &'a [bool],
    pub profile: &'a ProfileState,
    /// The request's `context`, for rules that read it.
    pub context: Option<&'a Value>,
}

/// Not decided here: ask CEL.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AskCel;

/// What CEL would answer: a boolean, or an error (the person is then not a member). Errors
/// combine as CEL's do: `false && error` is false, `true || error` is true, anything else
/// with an error is the error.
///
/// Before the calls' values are known, `Unknown` stands for any of these: the rule then
/// depends on the person's events. Whatever is decided without them (`false && unknown`)
/// is what would be decided with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Bool(bool),
    Error(String),
    Unknown,
}

/// An operand's value, or the error CEL gives for a field that is not there, or nothing
/// yet (a call before the events are read).
enum Resolved {
    Value(Scalar),
    Missing(String),
    Unknown,
}

impl Native {
    /// The native form of a rewritten rule with `calls` behaviour calls, if it has the
    /// shape.
    pub(super) fn compile(expr: &IdedExpr, calls: usize) -> Option<Native> {
        match &expr.expr {
            Expr::Call(call) if call.target.is_none() => {
                let args = &call.args;
                Some(match (call.func_name.as_str(), args.as_slice()) {
                    ("_&&_", [a, b]) => Native::And(
                        Box::new(Self::compile(a, calls)?),
                        Box::new(Self::compile(b, calls)?),
                    ),
                    ("_||_", [a, b]) => Native::Or(
                        Box::new(Self::compile(a, calls)?),
                        Box::new(Self::compile(b, calls)?),
                    ),
                    ("!_", [a]) => Native::Not(Box::new(Self::compile(a, calls)?)),
                    (name, [a, b]) => {
                        let op = match name {
                            "_==_" => Op::Eq,
                            "_!=_" => Op::Ne,
                            "_<_" => Op::Lt,
                            "_<=_" => Op::Le,
                            "_>_" => Op::Gt,
                            "_>=_" => Op::Ge,
                            _ => return None,
                        };
                        Native::Compare(op, operand(a, calls)?, operand(b, calls)?)
                    }
                    _ => return None,
                })
            }
            _ => Some(Native::Truth(operand(expr, calls)?)),
        }
    }

    /// The decision, where it is certainly CEL's.
    pub(super) fn decide(&self, inputs: &Inputs<'_>) -> Result<Outcome, AskCel> {
        use Outcome::{Bool, Error, Unknown};
        Ok(match self {
            // As CEL evaluates them: the left side, then (unless it settles it) the right;
            // either side false (true for `||`) settles it whatever the other is.
            Native::And(a, b) => match a.decide(inputs)? {
                Bool(false) => Bool(false),
                left => match (left, b.decide(inputs)?) {
                    (Bool(true), right) => right,
                    (_, Bool(false)) => Bool(false),
                    (Unknown, _) | (_, Unknown) => Unknown,
                    (Error(e), _) => Error(e),
                    (Bool(false), _) => Bool(false),
                },
            },
            Native::Or(a, b) => match a.decide(inputs)? {
                Bool(true) => Bool(true),
                left => match (left, b.decide(inputs)?) {
                    (Bool(false), right) => right,
                    (_, Bool(true)) => Bool(true),
                    (Unknown, _) | (_, Unknown) => Unknown,
                    (Error(e), _) => Error(e),
                    (Bool(true), _) => Bool(true),
                },
            },
            Native::Not(a) => match a.decide(inputs)? {
                Bool(b) => Bool(!b),
                other => other,
            },
            Native::Truth(o) => match resolve(o, inputs)? {
                Resolved::Value(Scalar::Bool(b)) => Bool(b),
                Resolved::Value(_) => return Err(AskCel),
                Resolved::Missing(missing) => Error(missing),
                Resolved::Unknown => Unknown,
            },
            Native::Compare(op, a, b) => match (resolve(a, inputs)?, resolve(b, inputs)?) {
                (Resolved::Unknown, _) | (_, Resolved::Unknown) => Unknown,
                (Resolved::Value(a), Resolved::Value(b)) => Bool(compare(*op, &a, &b)?),
                (Resolved::Missing(missing), _) | (_, Resolved::Missing(missing)) => Error(missing),
            },
        })
    }
}

fn operand(expr: &IdedExpr, calls: usize) -> Option<Operand> {
    match &expr.expr {
        Expr::Ident(name) => {
            let index = |prefix: &str| name.strip_prefix(prefix)?.parse::<usize>().ok();
            if let Some(i) = index("@b") {
                Some(Operand::Call(i))
            } else if let Some(i) = index("@c") {
                Some(Operand::Call(calls + i))
            } else {
                index("@a").map(Operand::Audience)
            }
        }
        Expr::Select(_) => waymark_core::audience::profile_path(expr)
            .map(Operand::Profile)
            .or_else(|| {
                waymark_core::audience::rule::variable_path(expr, "context")
                    .filter(|p| !p.is_empty())
                    .map(Operand::Context)
            }),
        Expr::Literal(literal) => Some(Operand::Literal(match literal {
            LiteralValue::Int(i) => Scalar::Int(*i.inner()),
            LiteralValue::Double(d) => Scalar::Double(*d.inner()),
            LiteralValue::String(s) => Scalar::Str(s.inner().to_owned()),
            LiteralValue::Boolean(b) => Scalar::Bool(*b.inner()),
            _ => return None,
        })),
        _ => None,
    }
}

fn scalar(value: &Value) -> Result<Scalar, AskCel> {
    match value {
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Scalar::Int(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Scalar::UInt(u))
            } else {
                n.as_f64().map(Scalar::Double).ok_or(AskCel)
            }
        }
        _ => Err(AskCel),
    }
}

/// An operand's value, where it is certainly CEL's.
fn resolve(operand: &Operand, inputs: &Inputs<'_>) -> Result<Resolved, AskCel> {
    let missing = |key: &str| Ok(Resolved::Missing(format!("No such key: {key}")));
    let value = |scalar: Scalar| Ok(Resolved::Value(scalar));
    match operand {
        Operand::Literal(s) => value(s.clone()),
        Operand::Audience(i) => value(Scalar::Bool(*inputs.audiences.get(*i).ok_or(AskCel)?)),
        Operand::Call(i) => match inputs.calls {
            Some(calls) => value(scalar(&calls.get(*i).ok_or(AskCel)?.value)?),
            None => Ok(Resolved::Unknown),
        },
        Operand::Profile(path) => {
            let p = inputs.profile;
            let (first, rest) = path.split_first().ok_or(AskCel)?;
            let mut at: &Value = match (first.as_str(), rest) {
                ("traits", [key, ..]) => match p.traits.get(key) {
                    Some(v) => v,
                    None => return missing(key),
                },
                ("event_count", []) => return value(scalar(&Value::from(p.event_count))?),
                ("first_seen", []) => return value(scalar(&Value::from(p.first_seen))?),
                ("last_seen", []) => return value(scalar(&Value::from(p.last_seen))?),
                ("id", []) => return value(Scalar::Str(p.id.clone())),
                _ => return Err(AskCel),
            };
            for field in rest.iter().skip(1) {
                // A field of something that is not an object is CEL's to report.
                let object = at.as_object().ok_or(AskCel)?;
                match object.get(field) {
                    Some(v) => at = v,
                    None => return missing(field),
                }
            }
            value(scalar(at)?)
        }
        Operand::Context(path) => {
            let mut at = inputs.context.ok_or(AskCel)?;
            for field in path {
                let object = at.as_object().ok_or(AskCel)?;
                match object.get(field) {
                    Some(v) => at = v,
                    None => return missing(field),
                }
            }
            value(scalar(at)?)
        }
    }
}

fn compare(op: Op, a: &Scalar, b: &Scalar) -> Result<bool, AskCel> {
    use std::cmp::Ordering;
    let equality = matches!(op, Op::Eq | Op::Ne);
    let ordering: Option<Ordering> = match (a, b) {
        (Scalar::Int(x), Scalar::Int(y)) => Some(x.cmp(y)),
        (Scalar::UInt(x), Scalar::UInt(y)) => Some(x.cmp(y)),
        (Scalar::Double(x), Scalar::Double(y)) => x.partial_cmp(y),
        (Scalar::Str(x), Scalar::Str(y)) => Some(x.cmp(y)),
        (Scalar::Bool(x), Scalar::Bool(y)) if equality => Some(x.cmp(y)),
        // Numbers of different types order as numbers in CEL; whether they are equal is
        // left to CEL.
        _ if !equality => match (a.number(), b.number()) {
            (Some(x), Some(y)) => x.partial_cmp(y),
            _ => return Err(AskCel),
        },
        _ => return Err(AskCel),
    };
    // NaN: left to CEL.
    let ordering = ordering.ok_or(AskCel)?;
    Ok(match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Lt => ordering == Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Gt => ordering == Ordering::Greater,
        Op::Ge => ordering != Ordering::Less,
    })
}

#[cfg(test)]
mod tests;

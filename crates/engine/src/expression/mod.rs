//! Expressions: CEL compiled once, the fields each reads, and evaluation over variables
//! converted on first use and reused by every expression of one input. Journeys evaluate
//! their entry, exit, branch and wait conditions here; anything else that decides over a
//! person (audiences, offers) is written on the same module.

mod reads;

use std::sync::OnceLock;

use cel::common::value::{CowVal, Val};
use serde::Serialize;
use waymark_core::time::Millis;

pub use reads::{FieldReads, Reads};

/// A compiled CEL expression.
#[derive(Debug)]
pub struct Expression {
    ast: cel::IdedExpr,
}

impl Expression {
    /// Compiles once; the error is CEL's, for the caller to place.
    pub fn compile(source: &str) -> Result<Self, String> {
        cel::Program::compile(source)
            .map(|program| Expression {
                ast: program.expression().clone(),
            })
            .map_err(|e| e.to_string())
    }

    /// An expression already parsed (and rewritten, as audience rules are: their
    /// behaviour calls become variables).
    pub fn from_ast(ast: cel::IdedExpr) -> Self {
        Expression { ast }
    }

    /// Whether the expression is `true` for these variables (and `now`, in milliseconds).
    /// Any other value, and any evaluation error (such as a missing field), is returned as
    /// why not, so it can be recorded.
    pub fn test(&self, variables: &dyn Variables, now: Millis) -> Result<bool, String> {
        match self.value(variables, now)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!("expression gave {other:?}, not a boolean")),
        }
    }

    /// The expression's value for these variables (and `now`).
    pub fn value(&self, variables: &dyn Variables, now: Millis) -> Result<cel::Value, String> {
        let now = Box::<dyn Val>::try_from(cel::Value::Int(now)).map_err(|e| e.to_string())?;
        let resolver = Resolver { variables, now };
        let mut scope = root().new_inner_scope();
        scope.set_variable_resolver(&resolver);
        cel::Value::resolve(&self.ast, &scope).map_err(|e| e.to_string())
    }

    fn ast(&self) -> &cel::IdedExpr {
        &self.ast
    }
}

/// The standard functions, registered once for every evaluation.
fn root() -> &'static cel::Context<'static, 'static> {
    static ROOT: OnceLock<cel::Context<'static, 'static>> = OnceLock::new();
    ROOT.get_or_init(cel::Context::default)
}

/// The variables an expression may read, by name (`now` is always there).
pub trait Variables: Sync {
    fn variable(&self, name: &str) -> Option<&Prepared>;

    /// The variable as JSON, where the caller has it so (rules of the common shape read
    /// it without CEL: `audience::native`).
    fn json(&self, _name: &str) -> Option<&serde_json::Value> {
        None
    }
}

/// A value converted for evaluation, or why it could not be.
#[derive(Debug)]
pub struct Prepared(Result<Box<dyn Val>, String>);

/// Converts a value for evaluation. Converting a whole event or profile is most of an
/// evaluation's cost: prune it to the [`FieldReads`] first.
pub fn prepare(value: &impl Serialize) -> Prepared {
    let converted = cel::to_value(value)
        .map(signed)
        .map_err(|e| e.to_string())
        .and_then(|v| Box::<dyn Val>::try_from(v).map_err(|e| e.to_string()));
    Prepared(converted)
}

/// Whole numbers as `int`, as the expression's own literals are: serde hands JSON's
/// non-negative whole numbers over as `uint`, and CEL has no `uint + int`, so
/// `profile.traits.age + 1` failed for everyone. Numbers past `i64::MAX` stay `uint`.
/// (Containers fresh from `to_value` are not shared, so they are changed in place. The
/// depth is that of parsed JSON, which serde_json bounds.)
fn signed(value: cel::Value) -> cel::Value {
    match value {
        cel::Value::UInt(u) => i64::try_from(u).map_or(cel::Value::UInt(u), cel::Value::Int),
        cel::Value::List(mut list) => {
            for item in std::sync::Arc::make_mut(&mut list).iter_mut() {
                *item = signed(std::mem::replace(item, cel::Value::Null));
            }
            cel::Value::List(list)
        }
        cel::Value::Map(mut map) => {
            for item in std::sync::Arc::make_mut(&mut map.map).values_mut() {
                *item = signed(std::mem::replace(item, cel::Value::Null));
            }
            cel::Value::Map(map)
        }
        other => other,
    }
}

/// A variable prepared when an expression first reads it and kept for the next ones.
#[derive(Default)]
pub struct Lazy(OnceLock<Prepared>);

impl Lazy {
    pub fn get(&self, make: impl FnOnce() -> Prepared) -> &Prepared {
        self.0.get_or_init(make)
    }

    /// Forgets the value (it changed): the next read prepares it again.
    pub fn clear(&mut self) {
        self.0 = OnceLock::new();
    }
}

struct Resolver<'v> {
    variables: &'v dyn Variables,
    now: Box<dyn Val>,
}

impl cel::context::VariableResolver for Resolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if variable == "now" {
            return Some(CowVal::Borrowed(self.now.as_ref()));
        }
        // A value that could not be converted reads as undeclared: the expression errs,
        // and the error is recorded like any other runtime error.
        let Prepared(value) = self.variables.variable(variable)?;
        value.as_ref().ok().map(|v| CowVal::Borrowed(v.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    struct Named(HashMap<&'static str, Prepared>);

    impl Variables for Named {
        fn variable(&self, name: &str) -> Option<&Prepared> {
            self.0.get(name)
        }
    }

    #[test]
    fn conditions_read_variables_and_now_and_errors_say_why() {
        let vars = Named(HashMap::from([(
            "profile",
            prepare(&json!({"traits": {"plan": "pro", "seats": 12}})),
        )]));
        let test = |source: &str| {
            Expression::compile(source)
                .expect("compiles")
                .test(&vars, 5_000)
        };
        assert_eq!(
            test("profile.traits.plan == 'pro' && profile.traits.seats > 10"),
            Ok(true)
        );
        assert_eq!(test("profile.traits.plan == 'free'"), Ok(false));
        assert_eq!(test("now == 5000"), Ok(true));
        // Whole JSON numbers are ints, like literals: arithmetic mixes them.
        assert_eq!(test("profile.traits.seats + 1 == 13"), Ok(true));
        assert_eq!(test("[profile.traits.seats][0] * 2 == 24"), Ok(true));
        let missing = test("profile.traits.absent == 1").expect_err("a missing field errs");
        assert!(missing.contains("absent"), "{missing}");
        let not_bool = test("profile.traits.seats").expect_err("not a boolean");
        assert!(not_bool.contains("not a boolean"), "{not_bool}");
        assert!(test("event.x == 1").is_err(), "an undeclared variable errs");
        assert!(Expression::compile("profile.traits.plan ==").is_err());
    }
}

//! Which parts of their variables (a journey's `event`, `profile` and `journey`) expressions
//! can read, so an input converts only those parts for CEL: converting the whole event (or profile) was
//! most of an evaluation's cost, while a condition typically reads one or two fields.
//!
//! Reads are found in the compiled expressions as field chains (`event.properties.currency`,
//! also inside `has(...)`, an index `event.properties["x"]` or a comprehension's range). A
//! variable used any other way (compared whole, passed whole to a function) is read whole.
//! A pruned value keeps, for every chain, the whole subtree at its end, and leaves out
//! what no chain reaches, so every chain selects exactly what it would in the full value:
//! the same value, or the same missing key.

use std::borrow::Cow;
use std::collections::HashMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use serde_json::{Map, Value};

/// What the expressions of a journey read of one variable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reads {
    /// Only these field chains (none: the variable is never read).
    #[default]
    Nothing,
    Paths(Vec<Vec<String>>),
    Whole,
}

impl Reads {
    fn add_path(&mut self, path: Vec<String>) {
        match self {
            Reads::Whole => {}
            Reads::Nothing => *self = Reads::Paths(vec![path]),
            Reads::Paths(paths) => {
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
    }

    /// Adds what `other` reads.
    pub fn union(&mut self, other: &Reads) {
        match other {
            Reads::Nothing => {}
            Reads::Whole => *self = Reads::Whole,
            Reads::Paths(paths) => {
                for p in paths {
                    self.add_path(p.clone());
                }
            }
        }
    }

    /// The part of `value` these reads can reach.
    pub fn prune<'v>(&self, value: &'v Value) -> Cow<'v, Value> {
        match self {
            Reads::Whole => Cow::Borrowed(value),
            Reads::Nothing => Cow::Owned(Value::Null),
            Reads::Paths(paths) => {
                let paths: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
                Cow::Owned(prune(value, &paths))
            }
        }
    }

    /// [`Reads::prune`] for a value that is an object.
    pub fn prune_object<'v>(&self, map: &'v Map<String, Value>) -> Cow<'v, Map<String, Value>> {
        match self {
            Reads::Whole => Cow::Borrowed(map),
            Reads::Nothing => Cow::Owned(Map::new()),
            Reads::Paths(paths) => {
                let paths: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
                Cow::Owned(prune_fields(map, &paths))
            }
        }
    }
}

fn prune(value: &Value, paths: &[&[String]]) -> Value {
    // A chain ending here reads the whole subtree; selecting a field of something that is
    // not a map fails the same way on a copy.
    let Value::Object(map) = value else {
        return value.clone();
    };
    if paths.iter().any(|p| p.is_empty()) {
        return value.clone();
    }
    Value::Object(prune_fields(map, paths))
}

/// The fields of `map` the (non-empty) paths reach.
fn prune_fields(map: &Map<String, Value>, paths: &[&[String]]) -> Map<String, Value> {
    let mut out = Map::new();
    for path in paths {
        let field = &path[0];
        if out.contains_key(field) {
            continue;
        }
        if let Some(child) = map.get(field) {
            let rest: Vec<&[String]> = paths
                .iter()
                .filter(|p| p[0] == *field)
                .map(|p| &p[1..])
                .collect();
            out.insert(field.clone(), prune(child, &rest));
        }
    }
    out
}

/// What a set of expressions reads of each variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldReads(HashMap<String, Reads>);

impl FieldReads {
    pub fn of<'e>(expressions: impl IntoIterator<Item = &'e super::Expression>) -> Self {
        let mut found: HashMap<String, Reads> = HashMap::new();
        for expression in expressions {
            walk(expression.ast(), &mut found);
        }
        FieldReads(found)
    }

    /// The reads of one variable (nothing, if no expression names it).
    pub fn of_var(&self, name: &str) -> &Reads {
        const NOTHING: &Reads = &Reads::Nothing;
        self.0.get(name).unwrap_or(NOTHING)
    }
}

/// `a.b.c` as (`a`, [`b`, `c`]), if the expression is a field chain on an identifier.
fn chain(mut expr: &IdedExpr) -> Option<(&str, Vec<String>)> {
    let mut fields = Vec::new();
    loop {
        match &expr.expr {
            Expr::Select(s) => {
                fields.push(s.field.clone());
                expr = &s.operand;
            }
            Expr::Ident(name) => {
                fields.reverse();
                return Some((name, fields));
            }
            _ => return None,
        }
    }
}

fn walk(expr: &IdedExpr, found: &mut HashMap<String, Reads>) {
    match &expr.expr {
        Expr::Select(s) => match chain(expr) {
            Some((root, path)) => found.entry(root.to_owned()).or_default().add_path(path),
            None => walk(&s.operand, found),
        },
        Expr::Ident(name) => {
            found.insert(name.clone(), Reads::Whole);
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, found);
            }
            for arg in &call.args {
                walk(arg, found);
            }
        }
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                walk(e, found);
            }
        }
        Expr::List(list) => {
            for e in &list.elements {
                walk(e, found);
            }
        }
        Expr::Map(m) => {
            for entry in &m.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    walk(&e.key, found);
                    walk(&e.value, found);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                match &entry.expr {
                    EntryExpr::StructField(f) => walk(&f.value, found),
                    EntryExpr::MapEntry(e) => {
                        walk(&e.key, found);
                        walk(&e.value, found);
                    }
                }
            }
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reads(sources: &[&str]) -> FieldReads {
        let expressions: Vec<super::super::Expression> = sources
            .iter()
            .map(|s| super::super::Expression::compile(s).expect("compiles"))
            .collect();
        FieldReads::of(&expressions)
    }

    fn paths(p: &[&[&str]]) -> Reads {
        Reads::Paths(
            p.iter()
                .map(|q| q.iter().map(|s| s.to_string()).collect())
                .collect(),
        )
    }

    #[test]
    fn field_chains_are_read_as_paths_and_other_uses_whole() {
        let r = reads(&[
            "event.properties.currency == 'EUR' && has(event.properties.price)",
            "profile.traits.plan in ['pro'] || journey.call.status == 200",
        ]);
        assert_eq!(
            *r.of_var("event"),
            paths(&[&["properties", "currency"], &["properties", "price"]])
        );
        assert_eq!(*r.of_var("profile"), paths(&[&["traits", "plan"]]));
        assert_eq!(*r.of_var("journey"), paths(&[&["call", "status"]]));

        let r = reads(&[
            "size(event) > 2",
            "event.properties.items.exists(i, i.sku == profile.traits.sku)",
        ]);
        assert_eq!(*r.of_var("event"), Reads::Whole);
        assert_eq!(*r.of_var("profile"), paths(&[&["traits", "sku"]]));
        assert_eq!(*r.of_var("journey"), Reads::Nothing);
    }

    /// Every expression gives the same answer on the pruned value as on the whole one,
    /// including the errors of missing keys and of selecting into a non-map.
    #[test]
    fn pruned_values_answer_like_whole_ones() {
        let event = json!({
            "event": "Product Viewed",
            "properties": {"currency": "EUR", "price": 12.5, "tags": ["a", "b"],
                           "nested": {"x": 1, "y": {"z": true}}, "name": "shoe"},
            "context": {"ip": "1.2.3.4"}
        });
        let sources = [
            "event.properties.currency == 'EUR'",
            "event.properties.missing == 1",
            "has(event.properties.price)",
            "has(event.properties.absent)",
            "'b' in event.properties.tags",
            "event.properties.nested.y.z",
            "event.properties.name.size() == 4",
            "event.properties.name.first == 's'",
            "size(event.properties.nested) == 2",
            "event.properties['price'] > 10.0",
            "event.nope.deeper == 1",
            "event.properties.tags.exists(t, t == 'a')",
        ];
        for source in sources {
            let program = cel::Program::compile(source).expect(source);
            let r = FieldReads::of([&super::super::Expression::compile(source).expect(source)]);
            let run = |value: &Value| {
                let mut ctx = cel::Context::default();
                ctx.add_variable("event", value.clone()).expect("variable");
                program.execute(&ctx).map_err(|e| e.to_string())
            };
            let pruned = r.of_var("event").prune(&event);
            assert_ne!(*pruned, event, "{source}: nothing was pruned");
            assert_eq!(run(&pruned), run(&event), "{source}");
        }
    }
}

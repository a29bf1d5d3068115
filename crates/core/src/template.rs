//! Templated JSON: the strings of a JSON value (a webhook body, its headers) are Handlebars
//! templates over `profile`, `event` and `journey`. Compiled once, rendered per person.
//!
//! A string that is nothing but one path (`"{{event.properties.total}}"`) is replaced by the
//! value at that path with its JSON type kept (a number stays a number; missing is `null`),
//! which is what a JSON API on the other end expects. Any other string is rendered as text,
//! without HTML escaping (the result is JSON-encoded, not put into HTML), and a missing value
//! renders as nothing.

pub(crate) mod helpers;

use handlebars::Handlebars;
use serde_json::{Map, Value};

/// Compiled templates of one journey (or one message), by name.
pub struct Templates {
    registry: Handlebars<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut registry = Handlebars::new();
        registry.register_escape_fn(handlebars::no_escape);
        helpers::register(&mut registry);
        Self { registry }
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("count", &self.registry.get_templates().len())
            .finish()
    }
}

/// Most bytes one rendered template (one field, one string of a JSON value) may produce.
/// Partials that each include another twice double the output per level; this stops that
/// (and a huge `#each`) long before memory does.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// What is wrong with a template source, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}

impl TemplateProblem {
    /// As a problem of the request field that holds the template.
    pub fn at(&self, field: impl Into<String>) -> crate::FieldError {
        let mut e = crate::FieldError::new("invalid_template", field, self.to_string());
        e.line = self.line;
        e.column = self.column;
        e
    }
}

/// Helpers Handlebars itself provides.
const BUILTIN_HELPERS: [&str; 17] = [
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

fn is_helper(name: &str) -> bool {
    BUILTIN_HELPERS.contains(&name) || helpers::HELPERS.contains(&name)
}

/// Whether `source` is a valid template that calls only helpers that exist. A mistake is
/// told in a person's words with its line and column, when the template is stored, not
/// when a message is sent.
pub fn check(source: &str) -> Result<(), TemplateProblem> {
    use handlebars::template::{Parameter, TemplateElement, TemplateMapping};
    use handlebars::{TemplateError, TemplateErrorReason};

    let template = handlebars::Template::compile(source).map_err(|e: TemplateError| {
        let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
        let message = match e.reason() {
            TemplateErrorReason::MismatchingClosedHelper(open, close) => {
                format!("{{{{#{open}}}}} is closed by {{{{/{close}}}}}")
            }
            TemplateErrorReason::MismatchingClosedDecorator(open, close) => {
                format!("{{{{#*{open}}}}} is closed by {{{{/{close}}}}}")
            }
            TemplateErrorReason::InvalidParam(param) => {
                format!("{param:?} is not a valid parameter")
            }
            TemplateErrorReason::NestedSubexpression => {
                "subexpressions inside subexpressions are not supported".to_owned()
            }
            // Pest's own words name grammar rules (`expected trailing_tilde_to_omit_whitespace`).
            _ => "this {{ is not closed by }}, or what is inside it is not a value, a helper call \
                  ({{name arg}}), a block ({{#if x}}...{{/if}}) or a partial ({{> name}})"
                .to_owned(),
        };
        TemplateProblem {
            line,
            column,
            message,
        }
    })?;
    // Every helper call in the template, nested blocks and subexpressions included, walked
    // with an explicit stack.
    let mut stack: Vec<(&TemplateElement, Option<&TemplateMapping>)> = template
        .elements
        .iter()
        .zip(template.mapping.iter().map(Some))
        .collect();
    while let Some((element, at)) = stack.pop() {
        let helper = match element {
            TemplateElement::Expression(h)
            | TemplateElement::HtmlExpression(h)
            | TemplateElement::HelperBlock(h) => h,
            _ => continue,
        };
        let called = !helper.params.is_empty() || !helper.hash.is_empty();
        if let Parameter::Name(name) = &helper.name
            && called
            && !is_helper(name)
        {
            let mut known: Vec<&str> = helpers::HELPERS.to_vec();
            known.sort_unstable();
            return Err(TemplateProblem {
                line: at.map(|m| m.0),
                column: at.map(|m| m.1),
                message: format!(
                    "no helper is called {name:?}; the helpers are {} and Handlebars' own (if, unless, each, with, lookup, eq, ...)",
                    known.join(", ")
                ),
            });
        }
        for param in helper.params.iter().chain(helper.hash.values()) {
            if let Parameter::Subexpression(sub) = param {
                stack.push((&sub.element, at));
            }
        }
        for inner in [&helper.template, &helper.inverse].into_iter().flatten() {
            stack.extend(inner.elements.iter().zip(inner.mapping.iter().map(Some)));
        }
    }
    Ok(())
}

/// Renders a registered template, refusing to produce more than [`MAX_RENDERED_BYTES`].
pub(crate) fn render_bounded(
    registry: &Handlebars<'static>,
    name: &str,
    data: &Value,
) -> Result<String, String> {
    struct Bounded {
        out: Vec<u8>,
        exceeded: bool,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.out.len() + buf.len() > MAX_RENDERED_BYTES {
                self.exceeded = true;
                return Err(std::io::Error::other("output limit"));
            }
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut bounded = Bounded {
        out: Vec::new(),
        exceeded: false,
    };
    match registry.render_to_write(name, data, &mut bounded) {
        Ok(()) => String::from_utf8(bounded.out).map_err(|e| e.to_string()),
        Err(_) if bounded.exceeded => Err(format!(
            "renders to more than {MAX_RENDERED_BYTES} bytes (1 MB)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn has_template(s: &str) -> bool {
    s.contains("{{")
}

/// `{{ a.b.0.c }}` alone, as path segments.
fn lone_path(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let valid = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    valid.then(|| inner.split('.').map(str::to_owned).collect())
}

#[derive(Debug, Clone)]
enum Part {
    Literal(Value),
    Path(Vec<String>),
    Text(String),
    Array(Vec<Part>),
    Object(Vec<(String, Part)>),
}

/// A JSON value whose strings may be templates.
#[derive(Debug, Clone)]
pub struct JsonTemplate {
    root: Part,
    reads_data: bool,
}

impl JsonTemplate {
    /// Whether rendering reads the data at all (a value with no template in it does not,
    /// and its caller can skip building the data).
    pub fn reads_data(&self) -> bool {
        self.reads_data
    }
}

impl Part {
    fn reads_data(&self) -> bool {
        match self {
            Part::Literal(_) => false,
            Part::Path(_) | Part::Text(_) => true,
            Part::Array(items) => items.iter().any(Part::reads_data),
            Part::Object(fields) => fields.iter().any(|(_, p)| p.reads_data()),
        }
    }
}

impl Templates {
    /// Compiles the templates in `value`; `name` must be unique among this set's templates.
    /// An error names the path inside `value` (`.items[2].title`) and what is wrong.
    pub fn json(&mut self, name: &str, value: &Value) -> Result<JsonTemplate, (String, String)> {
        let root = self.part(name, "", value)?;
        let reads_data = root.reads_data();
        Ok(JsonTemplate { root, reads_data })
    }

    fn part(&mut self, name: &str, at: &str, value: &Value) -> Result<Part, (String, String)> {
        Ok(match value {
            Value::String(s) if has_template(s) => match lone_path(s) {
                Some(path) => Part::Path(path),
                None => {
                    check(s).map_err(|e| (at.to_owned(), e.to_string()))?;
                    let id = format!("{name}{at}");
                    self.registry
                        .register_template_string(&id, s)
                        .map_err(|e| (at.to_owned(), e.to_string()))?;
                    Part::Text(id)
                }
            },
            Value::Array(items) => Part::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.part(name, &format!("{at}[{i}]"), v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Part::Object(
                fields
                    .iter()
                    .map(|(k, v)| {
                        Ok::<_, (String, String)>((
                            k.clone(),
                            self.part(name, &format!("{at}.{k}"), v)?,
                        ))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => Part::Literal(other.clone()),
        })
    }

    /// Renders a compiled value against `data` (`{"profile": .., "event": .., "journey": ..}`).
    /// Fails only if a helper fails; missing values are empty (or `null` for a lone path).
    pub fn render(&self, template: &JsonTemplate, data: &Value) -> Result<Value, String> {
        self.render_part(&template.root, data)
    }

    fn render_part(&self, part: &Part, data: &Value) -> Result<Value, String> {
        Ok(match part {
            Part::Literal(v) => v.clone(),
            Part::Path(path) => lookup(data, path).cloned().unwrap_or(Value::Null),
            Part::Text(id) => Value::String(
                render_bounded(&self.registry, id, data)
                    .map_err(|e| format!("template {id}: {e}"))?,
            ),
            Part::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|p| self.render_part(p, data))
                    .collect::<Result<_, _>>()?,
            ),
            Part::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, p)| Ok((k.clone(), self.render_part(p, data)?)))
                    .collect::<Result<Map<_, _>, String>>()?,
            ),
        })
    }
}

fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(data, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_render_lone_paths_keep_their_type_and_literals_stay() {
        let mut t = Templates::default();
        let body = json!({
            "greeting": "Hi {{profile.traits.first_name}} <3",
            "total": "{{event.properties.total}}",
            "missing": "{{event.properties.nope}}",
            "items": ["{{journey.entry.event}}", 3, true],
            "fixed": "no template here",
            "shout": "{{#if profile.traits.vip}}VIP{{else}}regular{{/if}}",
        });
        let compiled = t.json("n1.body", &body).expect("compiles");
        let data = json!({
            "profile": {"traits": {"first_name": "Ada & co", "vip": true}},
            "event": {"properties": {"total": 42.5}},
            "journey": {"entry": {"event": "Signed Up"}},
        });
        let out = t.render(&compiled, &data).expect("renders");
        assert_eq!(
            out,
            json!({
                "greeting": "Hi Ada & co <3",
                "total": 42.5,
                "missing": null,
                "items": ["Signed Up", 3, true],
                "fixed": "no template here",
                "shout": "VIP",
            })
        );
        assert!(compiled.reads_data());
        for (name, value) in [
            ("deep", json!({"a": [1, {"b": "{{event.x}}"}]})),
            ("text", json!("id {{profile.id}}")),
        ] {
            assert!(
                t.json(name, &value).expect("compiles").reads_data(),
                "{name}"
            );
        }
        let fixed = t
            .json("fixed", &json!({"n": 1, "tags": ["a"]}))
            .expect("compiles");
        assert!(!fixed.reads_data());
        assert_eq!(
            t.render(&fixed, &Value::Null).expect("renders"),
            json!({"n": 1, "tags": ["a"]})
        );
    }

    #[test]
    fn syntax_errors_name_the_path_inside_the_value() {
        let mut t = Templates::default();
        let err = t
            .json("n1.body", &json!({"a": [1, "{{#if x}}open"]}))
            .expect_err("unclosed block");
        assert_eq!(err.0, ".a[1]");
        assert!(check("{{#each}}").is_err());
        assert!(check("plain {{x}}").is_ok());
    }
}

//! The configuration's keys as its own structure declares them (the JSON Schema derived from
//! `Config`), so that every key has its environment form without a list kept by hand, and
//! an unknown `WAYMARK_*` variable or file key is an error that names it.

use serde_json::{Map, Value};

/// Environment variables with the prefix that are not configuration keys.
const NOT_CONFIGURATION: [&str; 2] = ["WAYMARK_LOG", "WAYMARK_CONFIG"];
/// Variables the test suites pass to the processes they start.
const TEST_PREFIX: &str = "WAYMARK_TEST_";

/// How a key's environment value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Taken as written: figment would read `+15550100` or an all-digit token as a number.
    Text,
    /// Parsed as figment does (numbers, booleans, `[a, b]` arrays).
    Parsed,
}

/// One key that can be set from the environment: `sms.from`, or every key of a map
/// (`governance.throttle.*`).
#[derive(Debug, Clone)]
pub struct Key {
    pub path: String,
    pub any_below: bool,
    pub form: Form,
}

impl Key {
    /// Whether `dotted` (lowercase, `.` for `__`) names this key.
    pub fn matches(&self, dotted: &str) -> bool {
        if self.any_below {
            dotted
                .strip_prefix(self.path.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
        } else {
            dotted == self.path
        }
    }

    pub fn variable(&self) -> String {
        let path = if self.any_below {
            format!("{}.<name>", self.path)
        } else {
            self.path.clone()
        };
        format!("WAYMARK_{}", path.replace('.', "__").to_uppercase())
    }
}

/// Every key of `Config` that has an environment form. Lists of tables (`governance.caps`)
/// and free-form values (`sms.body`) are for the file only.
pub fn env_keys() -> Vec<Key> {
    let schema = schemars::schema_for!(super::Config);
    let root = schema.as_value();
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut keys = Vec::new();
    walk(root, "", &defs, &mut keys, 0);
    keys
}

/// `schema` with a `$ref`, or an `Option`'s `anyOf: [T, null]`, resolved to `T`.
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        && let Some(def) = defs.get(name)
    {
        return resolve(def, defs);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let real: Vec<&Value> = options
            .iter()
            .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [only] = real.as_slice() {
            return resolve(only, defs);
        }
    }
    schema
}

/// The schema's JSON types, without `null`.
fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|t| *t != "null")
    .collect()
}

fn scalar_form(schema: &Value) -> Option<Form> {
    match types(schema).as_slice() {
        ["string"] => Some(Form::Text),
        ["integer"] | ["number"] | ["boolean"] => Some(Form::Parsed),
        _ => None,
    }
}

fn walk(schema: &Value, path: &str, defs: &Map<String, Value>, out: &mut Vec<Key>, depth: u32) {
    // The configuration is a few levels deep; the bound only guards against a recursive type.
    if depth > 8 {
        return;
    }
    let schema = resolve(schema, defs);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, field) in properties {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(field, &child, defs, out, depth + 1);
        }
        return;
    }
    if let Some(form) = scalar_form(schema) {
        out.push(Key {
            path: path.to_owned(),
            any_below: false,
            form,
        });
        return;
    }
    let kinds = types(schema);
    if kinds == ["array"]
        && schema
            .get("items")
            .map(|i| resolve(i, defs))
            .and_then(scalar_form)
            .is_some()
    {
        out.push(Key {
            path: path.to_owned(),
            any_below: false,
            form: Form::Parsed,
        });
    } else if kinds == ["object"]
        && let Some(form) = schema
            .get("additionalProperties")
            .map(|v| resolve(v, defs))
            .and_then(scalar_form)
    {
        out.push(Key {
            path: path.to_owned(),
            any_below: true,
            form,
        });
    }
}

/// The `WAYMARK_*` variables among `vars` that configure something, as `(variable,
/// dotted key, form)`; an error naming the first that looks like configuration and is not.
pub fn configuration_variables(
    vars: impl IntoIterator<Item = (String, String)>,
    keys: &[Key],
) -> Result<Vec<(String, String, Form, String)>, String> {
    let mut found = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with("WAYMARK_"))
        .collect();
    vars.sort();
    for (name, value) in vars {
        if NOT_CONFIGURATION.contains(&name.as_str()) || name.starts_with(TEST_PREFIX) {
            continue;
        }
        let dotted = name["WAYMARK_".len()..].to_lowercase().replace("__", ".");
        match keys.iter().find(|k| k.matches(&dotted)) {
            Some(key) => found.push((name, dotted, key.form, value)),
            None => {
                let nearest = keys
                    .iter()
                    .map(|k| (strsim::levenshtein(&k.path, &dotted), k))
                    .min_by_key(|(d, _)| *d)
                    .filter(|(d, _)| *d <= 3)
                    .map(|(_, k)| format!("; did you mean {}?", k.variable()))
                    .unwrap_or_default();
                return Err(format!(
                    "{name} is not a configuration variable{nearest} (docs/operations.md lists them; \
                     WAYMARK_LOG sets log levels)"
                ));
            }
        }
    }
    Ok(found)
}

/// The line (1-based) of `key` inside table `table` (dotted, "" for the top) of a TOML text,
/// for errors: the line of its `key = ...`, or of its `[table.key]` header.
pub fn line_of(text: &str, table: &[String], key: &str) -> Option<usize> {
    let wanted = table.join(".");
    let full = if wanted.is_empty() {
        key.to_owned()
    } else {
        format!("{wanted}.{key}")
    };
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line
            .strip_prefix("[[")
            .and_then(|l| l.split_once("]]"))
            .or_else(|| line.strip_prefix('[').and_then(|l| l.split_once(']')))
            .map(|(h, _)| h.trim().replace(' ', ""))
        {
            if header == full || header.starts_with(&format!("{full}.")) {
                return Some(n + 1);
            }
            current = header;
            continue;
        }
        let name = line
            .split(['=', '.', ' '])
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        if current == wanted && name == key {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn every_key_of_the_structure_has_its_variable() {
        let keys = env_keys();
        let has = |dotted: &str| keys.iter().any(|k| k.matches(dotted));
        // Keys a hand-kept list once missed, and map entries.
        for dotted in [
            "email.track_opens",
            "email.track_clicks",
            "sms.from",
            "retention.max_message_age_days",
            "governance.throttle.sms",
            "sms.headers.x-api-key",
            "http.max_connections",
            "write_keys",
        ] {
            assert!(has(dotted), "{dotted} has no environment form: {keys:?}");
        }
        assert!(!has("governance.caps"), "lists of tables are for the file");
        let form = |dotted: &str| keys.iter().find(|k| k.matches(dotted)).map(|k| k.form);
        assert_eq!(form("sms.from"), Some(Form::Text));
        assert_eq!(form("email.track_opens"), Some(Form::Parsed));
        assert_eq!(form("partitions"), Some(Form::Parsed));
    }

    #[test]
    fn unknown_variables_are_named_with_the_nearest_key() {
        let keys = env_keys();
        let e = configuration_variables([var("WAYMARK_RETENTION__MAX_EVENT_AGE_DAY", "3")], &keys)
            .expect_err("a typo");
        assert!(
            e.contains("WAYMARK_RETENTION__MAX_EVENT_AGE_DAY is not"),
            "{e}"
        );
        assert!(
            e.contains("did you mean WAYMARK_RETENTION__MAX_EVENT_AGE_DAYS?"),
            "{e}"
        );
        let found = configuration_variables(
            [
                var("WAYMARK_LOG", "debug"),
                var("WAYMARK_TEST_POSTGRES_URL", "postgres://"),
                var("PATH", "/bin"),
                var("WAYMARK_EMAIL__TRACK_OPENS", "false"),
            ],
            &keys,
        )
        .expect("known");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, "email.track_opens");
    }

    #[test]
    fn file_keys_are_found_by_line() {
        let text = "listen = \"x\"\n\n[sms]\nfrom = \"+1\"\nfrm = \"typo\"\n[sms.nested]\n";
        assert_eq!(line_of(text, &["sms".into()], "frm"), Some(5));
        assert_eq!(line_of(text, &["sms".into()], "nested"), Some(6));
        assert_eq!(line_of(text, &[], "listen"), Some(1));
        assert_eq!(line_of(text, &[], "absent"), None);
    }
}

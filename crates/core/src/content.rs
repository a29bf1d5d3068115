//! Message templates ("content"): the resource a `message` node names. Handlebars, as AJO
//! personalises, over `profile`, `event` and `journey`. Email HTML is HTML-escaped by default
//! (`{{{raw}}}` opts out); subjects, text, SMS and push are not. Partials are templates of
//! channel `partial`, included as `{{> key}}`.

use std::collections::{BTreeMap, BTreeSet};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonRender, Output, RenderContext,
    RenderError, RenderErrorReason, handlebars_helper,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::FieldError;

/// What a template may be written for: every channel that sends, or `partial`.
pub fn template_kinds() -> impl Iterator<Item = &'static str> {
    crate::channel::Channel::sending().chain(["partial"])
}

/// A template document as put through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentDoc {
    /// `email`, `sms`, `push`, `in_app`, `direct_mail`, or `partial` (a fragment other
    /// templates include).
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preheader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Custom key/value data for push and in-app, the columns of a direct mail file
    /// (strings in it are templates too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub data: Option<Value>,
    /// Email: the sending configuration to send from (`[email.senders.<name>]`: its From
    /// and Reply-To); without it, the `[email]` ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

impl ContentDoc {
    /// Text fields by name, in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("subject", &self.subject),
            ("preheader", &self.preheader),
            ("html", &self.html),
            ("text", &self.text),
            ("title", &self.title),
            ("body", &self.body),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    /// Which fields a channel uses, and which of them it needs.
    fn shape(
        channel: &str,
    ) -> Option<(&'static [&'static str], &'static [&'static [&'static str]])> {
        // (allowed fields, groups of which at least one field must be present)
        Some(match channel {
            "email" => (
                &["subject", "preheader", "html", "text", "sender"],
                &[&["subject"], &["html", "text"]],
            ),
            "sms" => (&["text"], &[&["text"]]),
            "push" | "in_app" => (&["title", "body", "data"], &[&["title", "body"]]),
            "direct_mail" => (&["data"], &[&["data"]]),
            "partial" => (&["body"], &[&["body"]]),
            _ => return None,
        })
    }
}

/// The partials a template source includes (`{{> name}}`), by name.
pub fn partials_used(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("{{") {
        rest = &rest[at + 2..];
        let inner = rest.trim_start_matches(['~', '{']);
        if let Some(after) = inner.strip_prefix('>') {
            let name: String = after
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The first loop among the partials reachable from `roots`, as the chain of names that
/// closes it (`a -> b -> a`). Depth-first with an explicit stack, so a long chain of
/// partials cannot overflow the stack either.
fn partial_cycle(
    roots: &BTreeSet<String>,
    partials: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    let included_by = |name: &str| -> Vec<String> {
        partials
            .get(name)
            .map(|s| partials_used(s).into_iter().collect())
            .unwrap_or_default()
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    for root in roots {
        if done.contains(root) {
            continue;
        }
        // The current path, each with the includes still to visit.
        let mut path: Vec<(String, Vec<String>)> = vec![(root.clone(), included_by(root))];
        while let Some((_, pending)) = path.last_mut() {
            let Some(next) = pending.pop() else {
                if let Some((name, _)) = path.pop() {
                    done.insert(name);
                }
                continue;
            };
            if let Some(start) = path.iter().position(|(n, _)| *n == next) {
                let mut cycle: Vec<String> = path[start..].iter().map(|(n, _)| n.clone()).collect();
                cycle.push(next);
                return Some(cycle);
            }
            if !done.contains(&next) {
                let inner = included_by(&next);
                path.push((next, inner));
            }
        }
    }
    None
}

/// A template compiled with the partials it includes, ready to render per person.
pub struct CompiledContent {
    pub channel: String,
    /// HTML-escaping registry (email HTML) and plain registry (everything else).
    html: Handlebars<'static>,
    plain: Handlebars<'static>,
    fields: Vec<&'static str>,
    data: Option<crate::template::JsonTemplate>,
    data_templates: crate::template::Templates,
    sender: Option<String>,
}

impl std::fmt::Debug for CompiledContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledContent")
            .field("channel", &self.channel)
            .field("fields", &self.fields)
            .finish()
    }
}

/// What a template rendered to: its fields (`subject`, `html`, ...) and `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendered {
    pub channel: String,
    pub fields: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Email: the sending configuration named by the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

/// A sending configuration's name: lowercase letters, digits, `_` and `-`, at most 64.
pub fn is_sender_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn registry(escape_html: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    if !escape_html {
        r.register_escape_fn(handlebars::no_escape);
    }
    register_helpers(&mut r);
    r
}

/// Checks a template and compiles it. `partials` holds the source of every partial it may
/// include (by key); a missing one is an error here, not when a message is sent.
pub fn compile(
    doc: &ContentDoc,
    partials: &BTreeMap<String, String>,
) -> Result<CompiledContent, Vec<FieldError>> {
    let mut problems = Vec::new();
    let Some((allowed, required)) = ContentDoc::shape(&doc.channel) else {
        return Err(vec![FieldError::new(
            "invalid_value",
            "channel",
            format!(
                "channel {:?} is not one of {}",
                doc.channel,
                template_kinds().collect::<Vec<_>>().join(", ")
            ),
        )]);
    };
    let present: Vec<&str> = doc
        .fields()
        .into_iter()
        .map(|(k, _)| k)
        .chain(doc.data.as_ref().map(|_| "data"))
        .chain(doc.sender.as_ref().map(|_| "sender"))
        .collect();
    for field in &present {
        if !allowed.contains(field) {
            problems.push(FieldError::new(
                "unexpected_field",
                *field,
                format!("channel {} does not use {field}", doc.channel),
            ));
        }
    }
    for group in required {
        if !group.iter().any(|f| present.contains(f)) {
            problems.push(FieldError::new(
                "missing_field",
                group[0],
                format!("channel {} needs {}", doc.channel, group.join(" or ")),
            ));
        }
    }
    if let Some(sender) = &doc.sender
        && !is_sender_name(sender)
    {
        problems.push(FieldError::new(
            "invalid_value",
            "sender",
            format!("{sender:?} is not a sending configuration name (a-z, 0-9, _ and -)"),
        ));
    }
    let (mut html, mut plain) = (registry(true), registry(false));
    let mut fields = Vec::new();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    for (name, source) in doc.fields() {
        if let Err(e) = crate::template::check(source) {
            problems.push(e.at(name));
            continue;
        }
        needed.extend(partials_used(source));
        let target = if name == "html" {
            &mut html
        } else {
            &mut plain
        };
        if let Err(e) = target.register_template_string(name, source) {
            problems.push(FieldError::new("invalid_template", name, e.to_string()));
        }
        fields.push(name);
    }
    if let Some(cycle) = partial_cycle(&needed, partials) {
        problems.push(FieldError::new(
            "partial_cycle",
            "partials",
            format!(
                "partials include each other in a loop ({}); rendering would never end",
                cycle
                    .iter()
                    .map(|p| format!("{{{{> {p}}}}}"))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ),
        ));
        return Err(problems);
    }
    // Partials may include partials: follow them all.
    let mut queue: Vec<String> = needed.iter().cloned().collect();
    while let Some(name) = queue.pop() {
        match partials.get(&name) {
            Some(source) => {
                for inner in partials_used(source) {
                    if needed.insert(inner.clone()) {
                        queue.push(inner);
                    }
                }
                if let Err(e) = crate::template::check(source) {
                    problems.push(e.at(format!("partials.{name}")));
                    continue;
                }
                for r in [&mut html, &mut plain] {
                    if let Err(e) = r.register_partial(&name, source) {
                        problems.push(FieldError::new(
                            "invalid_template",
                            format!("partials.{name}"),
                            e.to_string(),
                        ));
                    }
                }
            }
            None => problems.push(FieldError::new(
                "unknown_partial",
                "partials",
                format!("{{{{> {name}}}}} names no template of channel partial"),
            )),
        }
    }
    let mut data_templates = crate::template::Templates::default();
    let data = match &doc.data {
        Some(d) => match data_templates.json("data", d) {
            Ok(t) => Some(t),
            Err((at, e)) => {
                problems.push(FieldError::new(
                    "invalid_template",
                    format!("data{at}"),
                    format!("does not compile: {e}"),
                ));
                None
            }
        },
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CompiledContent {
        sender: doc.sender.clone(),
        channel: doc.channel.clone(),
        html,
        plain,
        fields,
        data,
        data_templates,
    })
}

impl CompiledContent {
    /// Renders one field (`subject`, `html`, ...) for one person.
    pub fn render_field(&self, name: &str, data: &Value) -> Result<String, String> {
        let r = if name == "html" {
            &self.html
        } else {
            &self.plain
        };
        crate::template::render_bounded(r, name, data).map_err(|e| format!("{name}: {e}"))
    }

    /// Renders every field for one person. `data` is `{"profile", "event", "journey"}`.
    /// A helper that fails (a bad date, a division by zero) fails the render with a reason.
    pub fn render(&self, data: &Value) -> Result<Rendered, String> {
        let mut fields = BTreeMap::new();
        for name in &self.fields {
            fields.insert((*name).to_owned(), self.render_field(name, data)?);
        }
        let data = self
            .data
            .as_ref()
            .map(|d| self.data_templates.render(d, data))
            .transpose()?;
        Ok(Rendered {
            channel: self.channel.clone(),
            fields,
            data,
            sender: self.sender.clone(),
        })
    }
}

fn helper_error(helper: &str, message: impl Into<String>) -> RenderError {
    RenderErrorReason::Other(format!("{helper}: {}", message.into())).into()
}

fn is_missing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

// Case helpers take any value: a missing one renders empty, like a plain `{{x}}`.
handlebars_helper!(upper: |v: Json| v.render().to_uppercase());
handlebars_helper!(lower: |v: Json| v.render().to_lowercase());
handlebars_helper!(title: |v: Json| title_case(&v.render()));
// `{{default profile.traits.first_name "there"}}`: the fallback when the value is missing
// or empty.
handlebars_helper!(default_helper: |v: Json, fallback: Json| if is_missing(v) { fallback.clone() } else { v.clone() });
handlebars_helper!(first: |a: array| a.first().cloned().unwrap_or(Value::Null));
handlebars_helper!(last: |a: array| a.last().cloned().unwrap_or(Value::Null));
handlebars_helper!(join: |a: array, sep: str| a.iter().map(|v| v.render()).collect::<Vec<_>>().join(sep));
handlebars_helper!(includes: |a: array, v: Json| a.contains(v));

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn number_param(h: &Helper<'_>, i: usize, helper: &str) -> Result<f64, RenderError> {
    let v = h
        .param(i)
        .map(|p| p.value())
        .ok_or_else(|| helper_error(helper, format!("needs argument {}", i + 1)))?;
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| helper_error(helper, format!("{v} is not a number")))
}

/// `1234567.891` with 2 decimals → `1,234,567.89`.
pub fn group_thousands(n: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, n.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if n < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// `{{format_number value decimals}}` (decimals default 0).
fn format_number(h: &Helper<'_>) -> Result<String, RenderError> {
    let n = number_param(h, 0, "format_number")?;
    let decimals = h
        .param(1)
        .and_then(|p| p.value().as_u64())
        .unwrap_or(0)
        .min(12) as usize;
    Ok(group_thousands(n, decimals))
}

/// `{{format_currency value "EUR"}}` → `€1,234.50` (JPY and KRW without decimals).
fn format_currency(h: &Helper<'_>) -> Result<String, RenderError> {
    let n = number_param(h, 0, "format_currency")?;
    let code = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or("USD")
        .to_ascii_uppercase();
    let (symbol, decimals) = match code.as_str() {
        "USD" => ("$", 2),
        "EUR" => ("€", 2),
        "GBP" => ("£", 2),
        "JPY" => ("¥", 0),
        "KRW" => ("₩", 0),
        "INR" => ("₹", 2),
        _ => ("", 2),
    };
    let amount = group_thousands(n, decimals);
    let (sign, digits) = amount
        .strip_prefix('-')
        .map_or(("", amount.as_str()), |d| ("-", d));
    Ok(if symbol.is_empty() {
        format!("{sign}{digits} {code}")
    } else {
        format!("{sign}{symbol}{digits}")
    })
}

/// `{{math a "+" b}}` with `+ - * / %`.
fn math(h: &Helper<'_>) -> Result<String, RenderError> {
    let a = number_param(h, 0, "math")?;
    let op = h.param(1).and_then(|p| p.value().as_str()).unwrap_or("");
    let b = number_param(h, 2, "math")?;
    let v = match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" if b != 0.0 => a / b,
        "%" if b != 0.0 => a % b,
        "/" | "%" => return Err(helper_error("math", "division by zero")),
        other => return Err(helper_error("math", format!("unknown operator {other:?}"))),
    };
    Ok(if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    })
}

/// A helper whose output depends on its parameters alone.
struct FromParams(fn(&Helper<'_>) -> Result<String, RenderError>);

impl HelperDef for FromParams {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        out.write(&(self.0)(h)?)?;
        Ok(())
    }
}

/// `{{format_date value "%B %-d, %Y" "Europe/Paris"}}`: an ISO 8601 time or epoch
/// milliseconds, in the given zone, else the person's `timezone` trait, else UTC.
fn format_date(
    h: &Helper<'_>,
    _: &Handlebars<'_>,
    ctx: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let value = h
        .param(0)
        .map(|p| p.value())
        .ok_or_else(|| helper_error("format_date", "needs a time"))?;
    let ms = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => crate::time::parse_iso8601(s),
        _ => None,
    }
    .ok_or_else(|| helper_error("format_date", format!("{value} is not a time")))?;
    let format = h
        .param(1)
        .and_then(|p| p.value().as_str())
        .unwrap_or("%Y-%m-%d");
    let zone_name = h
        .param(2)
        .and_then(|p| p.value().as_str())
        .map(str::to_owned)
        .or_else(|| {
            ctx.data()["profile"]["traits"]["timezone"]
                .as_str()
                .map(str::to_owned)
        });
    let zone = zone_name
        .as_deref()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let ts = jiff::Timestamp::from_millisecond(ms)
        .map_err(|e| helper_error("format_date", e.to_string()))?;
    let text = jiff::fmt::strtime::format(format, &ts.to_zoned_datetime(zone))
        .map_err(|e| helper_error("format_date", e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

/// The helpers [`register_helpers`] adds, by name: a template calling any other (besides
/// Handlebars' own) is refused when it is stored.
pub const HELPERS: [&str; 12] = [
    "upper",
    "lower",
    "title",
    "default",
    "first",
    "last",
    "join",
    "includes",
    "format_number",
    "format_currency",
    "format_date",
    "math",
];

/// The helpers every template gets (messages and webhook bodies alike).
pub(crate) fn register_helpers(r: &mut Handlebars<'static>) {
    r.register_helper("upper", Box::new(upper));
    r.register_helper("lower", Box::new(lower));
    r.register_helper("title", Box::new(title));
    r.register_helper("default", Box::new(default_helper));
    r.register_helper("first", Box::new(first));
    r.register_helper("last", Box::new(last));
    r.register_helper("join", Box::new(join));
    r.register_helper("includes", Box::new(includes));
    r.register_helper("format_number", Box::new(FromParams(format_number)));
    r.register_helper("format_currency", Box::new(FromParams(format_currency)));
    r.register_helper("format_date", Box::new(format_date));
    r.register_helper("math", Box::new(FromParams(math)));
}

#[cfg(test)]
mod tests;

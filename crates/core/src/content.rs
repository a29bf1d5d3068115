//! Message templates ("content"): the resource a `message` node names. Handlebars, as AJO
//! personalises, over `profile`, `event` and `journey`. Email HTML is HTML-escaped by default
//! (`{{{raw}}}` opts out); subjects, text, SMS and push are not. Partials are templates of
//! channel `partial`, included as `{{> key}}`.

use std::collections::{BTreeMap, BTreeSet};

use handlebars::Handlebars;
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
    /// `email`, `sms`, `push`, `in_app`, `direct_mail`, `code_based` (content placed on a
    /// page or app surface), or `partial` (a fragment other templates include).
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
    /// `code_based`: the image URL an `image` placement shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Custom key/value data for push and in-app, the columns of a direct mail file, the
    /// content of a `code_based` template for a `json` placement (strings in it are
    /// templates too).
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
            ("image", &self.image),
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
            // One field per kind of placement content (html, text, image, json: data).
            "code_based" => (
                &["html", "text", "image", "data"],
                &[&["html", "text", "image", "data"]],
            ),
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendered {
    pub channel: String,
    pub fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Email: the sending configuration named by the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

pub(crate) fn registry(escape_html: bool) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    if !escape_html {
        r.register_escape_fn(handlebars::no_escape);
    }
    crate::template::helpers::register(&mut r);
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

#[cfg(test)]
mod tests;

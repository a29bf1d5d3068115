//! Offer decisioning as documents: what a page or app may be shown (offers), where
//! (placements), which offers compete for a place (collections), and how one is chosen
//! (decision policies). Everything that can be known wrong about a document, alone or
//! against the rest of the catalogue, is checked here before it is stored, so a catalogue
//! is never half-applied; the engine decides over it (`waymark_engine::decisioning`).
//!
//! Feedback is ordinary events (`Offer Displayed`, `Offer Clicked`) with the proposition
//! they answer, so they land in the person's history and can start journeys and feed
//! audiences; [`feedback_message_id`] makes a repeated report of one display the same
//! message, which ingest keeps once.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::FieldError;
use crate::audience::Rule;
use crate::journey::{parse_duration_ms, valid_key};
use crate::time::Millis;

/// The event a page or app sends when it showed an offer.
pub const OFFER_DISPLAYED: &str = "Offer Displayed";
/// The event a page or app sends when the person clicked an offer.
pub const OFFER_CLICKED: &str = "Offer Clicked";

/// Variables an offer's eligibility reads besides `profile` and `now`.
pub const ELIGIBILITY_VARIABLES: &[&str] = &["context"];
/// Variables a ranking formula reads besides `profile` and `now`.
pub const FORMULA_VARIABLES: &[&str] = &["context", "offer"];

/// The most items one policy (or one request) may ask for a placement.
pub const MAX_ITEMS: u32 = 20;
/// The most caps one offer may have.
pub const MAX_CAPS: usize = 8;
/// The most tags on one offer or collection.
pub const MAX_TAGS: usize = 32;
/// The largest piece of content one offer may hold for one placement, in bytes of JSON.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// Something a page or app may be shown: content per placement, who may see it, and how
/// often.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferDoc {
    /// Stable identifier: lowercase letters, digits, `-` and `_`.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Higher wins under `ranking: {by: priority}` (ties are broken at random).
    #[serde(default)]
    pub priority: i64,
    /// RFC 3339; before it the offer is never chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// RFC 3339; from it on the offer is never chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// What collections select offers by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// CEL over `profile`, `context` (what the request sent), `now`, the person's
    /// behaviour (`events.count(...)`) and audiences (`in_audience("vip")`); absent means
    /// everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligibility: Option<String>,
    /// Every cap must have room for the offer to be chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<Cap>,
    /// Content by placement key: a string for `html`, `text` and `image` (a URL)
    /// placements, any JSON for `json` ones. Strings are Handlebars templates over
    /// `profile`, `context` and `offer`.
    #[schemars(with = "BTreeMap<String, Value>")]
    pub content: BTreeMap<String, Value>,
}

/// A limit on how often an offer is shown (or clicked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// `person`: each person's own count; `total`: everyone's together.
    pub per: CapScope,
    /// The count at which the offer stops being chosen.
    pub max: u64,
    /// What is counted (default `display`).
    #[serde(default)]
    pub on: CapEvent,
    /// A rolling window such as `1d` or `7d`; absent counts for ever (as long as events
    /// are kept). Totals are counted by the hour: `1d` is this hour and the 23 before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapScope {
    Person,
    Total,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapEvent {
    /// `Offer Displayed` events.
    #[default]
    Display,
    /// `Offer Clicked` events.
    Click,
}

impl CapEvent {
    pub fn event_name(self) -> &'static str {
        match self {
            CapEvent::Display => OFFER_DISPLAYED,
            CapEvent::Click => OFFER_CLICKED,
        }
    }
}

/// Where content goes: a place on a page or in an app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementDoc {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub channel: SurfaceChannel,
    /// The place, as a URI: `web://shop.example/home#hero`, `app://com.example/home`.
    pub surface: String,
    /// What offers hold for it.
    pub content: ContentType,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SurfaceChannel {
    #[default]
    Web,
    App,
    /// Anything else that asks by code (a kiosk, a call-centre screen, a server).
    Code,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// An HTML fragment (values from the profile and context are HTML-escaped).
    #[default]
    Html,
    Text,
    /// Any JSON value.
    Json,
    /// An image URL.
    Image,
}

impl ContentType {
    pub fn name(self) -> &'static str {
        match self {
            ContentType::Html => "html",
            ContentType::Text => "text",
            ContentType::Json => "json",
            ContentType::Image => "image",
        }
    }

    /// The field of a `code_based` template that holds content of this type.
    pub fn template_field(self) -> &'static str {
        match self {
            ContentType::Json => "data",
            other => other.name(),
        }
    }

    /// Whether a template holds content of this type (JSON in `data`, the rest in the text
    /// field of the same name).
    pub fn in_template(self, doc: &crate::content::ContentDoc) -> bool {
        match self {
            ContentType::Json => doc.data.is_some(),
            other => doc
                .fields()
                .iter()
                .any(|(name, _)| *name == other.template_field()),
        }
    }

    /// Content of this type from a rendered template, if it holds some.
    pub fn of_rendered(self, rendered: &crate::content::Rendered) -> Option<Value> {
        match self {
            ContentType::Json => rendered.data.clone(),
            other => rendered
                .fields
                .get(other.template_field())
                .cloned()
                .map(Value::String),
        }
    }
}

/// Offers that compete together: those with any (or all) of some tags, or a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectionDoc {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Offers bearing these tags...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// ...any of them (default) or all of them.
    #[serde(default, rename = "match")]
    pub matching: TagMatch,
    /// Or these offers, by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TagMatch {
    #[default]
    Any,
    All,
}

impl CollectionDoc {
    /// Whether an offer belongs to the collection.
    pub fn contains(&self, offer: &OfferDoc) -> bool {
        if !self.offers.is_empty() {
            return self.offers.contains(&offer.key);
        }
        match self.matching {
            TagMatch::Any => self.tags.iter().any(|t| offer.tags.contains(t)),
            TagMatch::All => self.tags.iter().all(|t| offer.tags.contains(t)),
        }
    }
}

/// How a placement is filled: which offers compete, how they are ranked, how many are
/// shown, and what is shown when none is eligible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The placement it fills (one policy per placement).
    pub placement: String,
    /// The offers that compete; absent: every offer with content for the placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// How many offers to return at most (default 1).
    #[serde(default = "one")]
    pub items: u32,
    #[serde(default)]
    pub ranking: Ranking,
    /// The offer shown when none is eligible (no eligibility or caps apply to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

fn one() -> u32 {
    1
}

/// How eligible offers are ordered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum Ranking {
    /// The offers' `priority`, highest first.
    #[default]
    Priority,
    /// A CEL formula's number over `offer`, `profile`, `context` and the person's
    /// behaviour (`events.count(...)`), highest first.
    Formula { formula: String },
    /// Learned from clicks per display as feedback arrives (Thompson sampling per
    /// placement and offer).
    Learned {
        /// Share of requests given a random eligible order instead (default 0.05).
        #[serde(default = "default_exploration")]
        exploration: f64,
        /// Share of people (the same people each time) always given a random eligible
        /// order, to measure what learning adds (default 0).
        #[serde(default)]
        control: f64,
    },
}

fn default_exploration() -> f64 {
    0.05
}

impl Ranking {
    pub fn name(&self) -> &'static str {
        match self {
            Ranking::Priority => "priority",
            Ranking::Formula { .. } => "formula",
            Ranking::Learned { .. } => "learned",
        }
    }
}

/// The four kinds of catalogue document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Offer,
    Placement,
    Collection,
    Policy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Offer, Kind::Placement, Kind::Collection, Kind::Policy];

    /// As it reads in URLs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Placement => "placement",
            Kind::Collection => "collection",
            Kind::Policy => "decision policy",
        }
    }
}

/// Every catalogue document, newest versions, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalogue {
    pub offers: BTreeMap<String, OfferDoc>,
    pub placements: BTreeMap<String, PlacementDoc>,
    pub collections: BTreeMap<String, CollectionDoc>,
    pub policies: BTreeMap<String, PolicyDoc>,
}

/// One document of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Offer(OfferDoc),
    Placement(PlacementDoc),
    Collection(CollectionDoc),
    Policy(PolicyDoc),
}

impl Document {
    /// Reads a document of `kind` from its JSON.
    pub fn from_value(kind: Kind, value: Value) -> Result<Document, FieldError> {
        let shape = |e: serde_json::Error| {
            FieldError::new("invalid_document", "", format!("{}: {e}", kind.name()))
        };
        Ok(match kind {
            Kind::Offer => Document::Offer(serde_json::from_value(value).map_err(shape)?),
            Kind::Placement => Document::Placement(serde_json::from_value(value).map_err(shape)?),
            Kind::Collection => Document::Collection(serde_json::from_value(value).map_err(shape)?),
            Kind::Policy => Document::Policy(serde_json::from_value(value).map_err(shape)?),
        })
    }

    pub fn key(&self) -> &str {
        match self {
            Document::Offer(d) => &d.key,
            Document::Placement(d) => &d.key,
            Document::Collection(d) => &d.key,
            Document::Policy(d) => &d.key,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Document::Offer(_) => Kind::Offer,
            Document::Placement(_) => Kind::Placement,
            Document::Collection(_) => Kind::Collection,
            Document::Policy(_) => Kind::Policy,
        }
    }

    pub fn to_value(&self) -> Value {
        let value = match self {
            Document::Offer(d) => serde_json::to_value(d),
            Document::Placement(d) => serde_json::to_value(d),
            Document::Collection(d) => serde_json::to_value(d),
            Document::Policy(d) => serde_json::to_value(d),
        };
        // Plain structs of strings, numbers and maps always serialise.
        value.unwrap_or(Value::Null)
    }
}

impl Catalogue {
    /// The catalogue with `doc` in place of the document of its kind and key.
    pub fn with(&self, doc: Document) -> Catalogue {
        let mut next = self.clone();
        next.insert(doc);
        next
    }

    /// Puts `doc` in place of the document of its kind and key.
    pub fn insert(&mut self, doc: Document) {
        match doc {
            Document::Offer(d) => {
                self.offers.insert(d.key.clone(), d);
            }
            Document::Placement(d) => {
                self.placements.insert(d.key.clone(), d);
            }
            Document::Collection(d) => {
                self.collections.insert(d.key.clone(), d);
            }
            Document::Policy(d) => {
                self.policies.insert(d.key.clone(), d);
            }
        }
    }

    /// Inserts a stored document; one that does not read is left out (and named).
    pub fn insert_stored(&mut self, kind: Kind, value: Value) -> Result<(), FieldError> {
        self.insert(Document::from_value(kind, value)?);
        Ok(())
    }

    /// The offers a policy chooses among: in its collection (all offers when it has none)
    /// and holding content for its placement, in key order.
    pub fn candidates(&self, policy: &PolicyDoc) -> Vec<&OfferDoc> {
        let collection = policy
            .collection
            .as_ref()
            .and_then(|c| self.collections.get(c));
        self.offers
            .values()
            .filter(|o| o.content.contains_key(&policy.placement))
            .filter(|o| collection.is_none_or(|c| c.contains(o)))
            .collect()
    }

    /// The placement asked for by key, or by surface URI.
    pub fn placement_by(&self, key_or_surface: &str) -> Option<&PlacementDoc> {
        self.placements.get(key_or_surface).or_else(|| {
            self.placements
                .values()
                .find(|p| p.surface == key_or_surface)
        })
    }

    /// The policy filling a placement.
    pub fn policy_for(&self, placement: &str) -> Option<&PolicyDoc> {
        self.policies.values().find(|p| p.placement == placement)
    }
}

/// Checks a document as it would stand in `catalogue` (which holds the current versions
/// of the others): its own shape and its references both ways (a placement whose content
/// type changes under offers holding other content is refused too). `retention_ms` is how
/// long events are kept: a window longer than it could never be counted.
pub fn check(
    catalogue: &Catalogue,
    doc: &Document,
    retention_ms: Option<i64>,
) -> Result<(), Vec<FieldError>> {
    let next = catalogue.with(doc.clone());
    let mut problems = check_in(&next, doc, retention_ms).err().unwrap_or_default();
    // What already refers to it must still hold.
    match doc {
        Document::Placement(p) => {
            for offer in next.offers.values() {
                if let Some(content) = offer.content.get(&p.key)
                    && let Err(e) = check_content(p, content)
                {
                    problems.push(FieldError::new(
                        "content_mismatch",
                        "content",
                        format!(
                            "offer {:?} holds content for it that is not {}: {e}",
                            offer.key,
                            p.content.name()
                        ),
                    ));
                }
            }
        }
        Document::Offer(o) => {
            for policy in next.policies.values() {
                if policy.fallback.as_deref() == Some(o.key.as_str())
                    && !o.content.contains_key(&policy.placement)
                {
                    problems.push(FieldError::new(
                        "missing_content",
                        "content",
                        format!(
                            "decision policy {:?} falls back to this offer, which must hold content for {:?}",
                            policy.key, policy.placement
                        ),
                    ));
                }
            }
        }
        Document::Collection(_) | Document::Policy(_) => {}
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_in(
    catalogue: &Catalogue,
    doc: &Document,
    retention_ms: Option<i64>,
) -> Result<(), Vec<FieldError>> {
    let mut problems = Vec::new();
    if !valid_key(doc.key()) {
        problems.push(FieldError::new(
            "invalid_key",
            "key",
            "a key is 1 to 64 of a-z, 0-9, - and _",
        ));
    }
    match doc {
        Document::Offer(o) => check_offer(catalogue, o, retention_ms, &mut problems),
        Document::Placement(p) => {
            if let Err(e) = check_surface(p) {
                problems.push(FieldError::new("invalid_value", "surface", e));
            }
        }
        Document::Collection(c) => {
            check_tags(&c.tags, "tags", &mut problems);
            match (c.tags.is_empty(), c.offers.is_empty()) {
                (true, true) => problems.push(FieldError::new(
                    "missing_field",
                    "tags",
                    "a collection selects offers by tags or lists them in offers",
                )),
                (false, false) => problems.push(FieldError::new(
                    "invalid_value",
                    "offers",
                    "a collection selects by tags or by a list of offers, not both",
                )),
                _ => {}
            }
            for (i, key) in c.offers.iter().enumerate() {
                if !catalogue.offers.contains_key(key) {
                    problems.push(FieldError::new(
                        "unknown_offer",
                        format!("offers[{i}]"),
                        format!("there is no offer {key:?}"),
                    ));
                }
            }
        }
        Document::Policy(p) => check_policy(catalogue, p, retention_ms, &mut problems),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_tags(tags: &[String], field: &str, problems: &mut Vec<FieldError>) {
    if tags.len() > MAX_TAGS {
        problems.push(FieldError::new(
            "too_many",
            field,
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > 64 || tag.chars().any(char::is_control) {
            problems.push(FieldError::new(
                "invalid_value",
                format!("{field}[{i}]"),
                "a tag is 1 to 64 characters, none of them control characters",
            ));
        }
    }
}

fn check_surface(p: &PlacementDoc) -> Result<(), String> {
    let (scheme, rest) = p.surface.split_once("://").ok_or_else(|| {
        format!(
            "{:?} is not a URI such as web://shop.example/home#hero",
            p.surface
        )
    })?;
    let expected = match p.channel {
        SurfaceChannel::Web => "web",
        SurfaceChannel::App => "app",
        SurfaceChannel::Code => "code",
    };
    if scheme != expected {
        return Err(format!(
            "a {expected} placement's surface starts with {expected}:// (not {scheme}://)"
        ));
    }
    if rest.is_empty() || !crate::surface::well_formed(&p.surface) {
        return Err(format!(
            "a surface is a URI of at most {} characters without spaces",
            crate::surface::MAX_LEN
        ));
    }
    Ok(())
}

/// Whether `content` suits a placement of this content type.
fn check_content(placement: &PlacementDoc, content: &Value) -> Result<(), String> {
    match (placement.content, content) {
        (ContentType::Json, _) => Ok(()),
        (_, Value::String(_)) => Ok(()),
        (kind, _) => Err(format!("{} content is a string", kind.name())),
    }
}

fn check_offer(
    catalogue: &Catalogue,
    o: &OfferDoc,
    retention_ms: Option<i64>,
    problems: &mut Vec<FieldError>,
) {
    check_tags(&o.tags, "tags", problems);
    let starts = check_instant(o.starts_at.as_deref(), "starts_at", problems);
    let ends = check_instant(o.ends_at.as_deref(), "ends_at", problems);
    if let (Some(s), Some(e)) = (starts, ends)
        && e <= s
    {
        problems.push(FieldError::new(
            "invalid_value",
            "ends_at",
            "ends_at is after starts_at",
        ));
    }
    if let Some(rule) = &o.eligibility {
        match Rule::parse_with(rule, ELIGIBILITY_VARIABLES) {
            Ok(rule) => check_windows(&rule, "eligibility", retention_ms, problems),
            Err(errors) => problems.extend(errors.into_iter().map(|e| {
                let mut p = FieldError::from(e);
                p.field = "eligibility".into();
                p
            })),
        }
    }
    if o.caps.len() > MAX_CAPS {
        problems.push(FieldError::new(
            "too_many",
            "caps",
            format!("at most {MAX_CAPS} caps"),
        ));
    }
    for (i, cap) in o.caps.iter().enumerate() {
        if cap.max == 0 {
            problems.push(FieldError::new(
                "invalid_value",
                format!("caps[{i}].max"),
                "a cap's max is at least 1 (an offer nobody may see is better ended)",
            ));
        }
        if let Some(window) = &cap.window {
            match parse_duration_ms(window) {
                Ok(ms) if ms <= 0 => problems.push(FieldError::new(
                    "invalid_value",
                    format!("caps[{i}].window"),
                    "a window is longer than 0s",
                )),
                Ok(ms) if cap.per == CapScope::Person && retention_ms.is_some_and(|r| ms > r) => {
                    problems.push(FieldError::new(
                        "window_too_long",
                        format!("caps[{i}].window"),
                        "a person's cap is counted from their kept events: the window is longer than events are kept (retention.max_event_age_days)",
                    ))
                }
                Ok(_) => {}
                Err(e) => problems.push(FieldError::new(
                    "invalid_value",
                    format!("caps[{i}].window"),
                    e,
                )),
            }
        }
    }
    if o.content.is_empty() {
        problems.push(FieldError::new(
            "missing_field",
            "content",
            "an offer holds content for at least one placement",
        ));
    }
    for (placement, content) in &o.content {
        let field = format!("content.{placement}");
        let Some(p) = catalogue.placements.get(placement) else {
            problems.push(FieldError::new(
                "unknown_placement",
                field,
                format!("there is no placement {placement:?}"),
            ));
            continue;
        };
        if let Err(e) = check_content(p, content) {
            problems.push(FieldError::new("invalid_type", field.clone(), e));
        }
        if content.to_string().len() > MAX_CONTENT_BYTES {
            problems.push(FieldError::new(
                "too_large",
                field.clone(),
                format!(
                    "content for one placement is at most {} KB",
                    MAX_CONTENT_BYTES / 1024
                ),
            ));
        }
        check_templates(content, &field, problems);
    }
}

/// Handlebars syntax of every string in a piece of content.
fn check_templates(content: &Value, at: &str, problems: &mut Vec<FieldError>) {
    match content {
        Value::String(s) => {
            if let Err(e) = crate::template::check(s) {
                problems.push(e.at(at));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_templates(v, &format!("{at}[{i}]"), problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                check_templates(v, &format!("{at}.{k}"), problems);
            }
        }
        _ => {}
    }
}

fn check_instant(
    text: Option<&str>,
    field: &str,
    problems: &mut Vec<FieldError>,
) -> Option<Millis> {
    let text = text?;
    let at = crate::time::parse_iso8601(text);
    if at.is_none() {
        problems.push(FieldError::new(
            "invalid_value",
            field,
            format!("{text:?} is not an RFC 3339 time such as 2026-03-01T00:00:00Z"),
        ));
    }
    at
}

/// A rule's windows fit in the events kept (the audiences it reads are checked by the
/// caller, which knows them: [`audiences_read`]).
fn check_windows(
    rule: &Rule,
    field: &str,
    retention_ms: Option<i64>,
    problems: &mut Vec<FieldError>,
) {
    if let Some(retention) = retention_ms {
        for call in &rule.calls {
            if call.window_ms.is_some_and(|w| w > retention) {
                problems.push(FieldError::new(
                    "window_too_long",
                    field,
                    format!(
                        "{}: the window is longer than the events kept ({} days, retention.max_event_age_days)",
                        call.text,
                        retention / 86_400_000
                    ),
                ));
            }
        }
    }
}

fn check_policy(
    catalogue: &Catalogue,
    p: &PolicyDoc,
    retention_ms: Option<i64>,
    problems: &mut Vec<FieldError>,
) {
    if !catalogue.placements.contains_key(&p.placement) {
        problems.push(FieldError::new(
            "unknown_placement",
            "placement",
            format!("there is no placement {:?}", p.placement),
        ));
    }
    if let Some(other) = catalogue
        .policies
        .values()
        .find(|o| o.key != p.key && o.placement == p.placement)
    {
        problems.push(FieldError::new(
            "placement_taken",
            "placement",
            format!(
                "decision policy {:?} already fills placement {:?}",
                other.key, p.placement
            ),
        ));
    }
    if let Some(c) = &p.collection
        && !catalogue.collections.contains_key(c)
    {
        problems.push(FieldError::new(
            "unknown_collection",
            "collection",
            format!("there is no collection {c:?}"),
        ));
    }
    if p.items == 0 || p.items > MAX_ITEMS {
        problems.push(FieldError::new(
            "invalid_value",
            "items",
            format!("items is 1 to {MAX_ITEMS}"),
        ));
    }
    if let Some(f) = &p.fallback {
        match catalogue.offers.get(f) {
            None => problems.push(FieldError::new(
                "unknown_offer",
                "fallback",
                format!("there is no offer {f:?}"),
            )),
            Some(o) if !o.content.contains_key(&p.placement) => problems.push(FieldError::new(
                "missing_content",
                "fallback",
                format!(
                    "offer {f:?} holds no content for placement {:?}",
                    p.placement
                ),
            )),
            Some(_) => {}
        }
    }
    match &p.ranking {
        Ranking::Priority => {}
        Ranking::Formula { formula } => match Rule::parse_with(formula, FORMULA_VARIABLES) {
            Ok(rule) => check_windows(&rule, "ranking.formula", retention_ms, problems),
            Err(errors) => problems.extend(errors.into_iter().map(|e| {
                let mut p = FieldError::from(e);
                p.field = "ranking.formula".into();
                p
            })),
        },
        Ranking::Learned {
            exploration,
            control,
        } => {
            for (name, share) in [("exploration", exploration), ("control", control)] {
                if !(0.0..=1.0).contains(share) {
                    problems.push(FieldError::new(
                        "invalid_value",
                        format!("ranking.{name}"),
                        "a share is between 0 and 1",
                    ));
                }
            }
        }
    }
}

/// Every audience key a document's rules read (eligibility), for checking they exist.
pub fn audiences_read(doc: &Document) -> BTreeSet<String> {
    let text = match doc {
        Document::Offer(o) => o.eligibility.as_deref(),
        Document::Policy(PolicyDoc {
            ranking: Ranking::Formula { formula },
            ..
        }) => Some(formula.as_str()),
        _ => None,
    };
    let extra: &[&str] = match doc {
        Document::Policy(_) => FORMULA_VARIABLES,
        _ => ELIGIBILITY_VARIABLES,
    };
    text.and_then(|t| Rule::parse_with(t, extra).ok())
        .map(|r| r.audiences.into_iter().collect())
        .unwrap_or_default()
}

/// The message id a feedback event is kept under: the same for every report of one
/// display (or click) of one offer in one proposition, so ingest keeps it once. `None`
/// for other events and for feedback without a proposition and an offer.
pub fn feedback_message_id(
    name: &str,
    properties: &serde_json::Map<String, Value>,
) -> Option<String> {
    let kind = match name {
        OFFER_DISPLAYED => "displayed",
        OFFER_CLICKED => "clicked",
        _ => return None,
    };
    let proposition = properties.get("proposition")?.as_str()?;
    // The item shown: an offer, or content a journey placed (its message id).
    let item = |k: &str| {
        properties
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let offer = item("offer").or_else(|| item("message"))?;
    if proposition.is_empty() {
        return None;
    }
    let digest = xxhash_rust::xxh3::xxh3_128(
        format!("{}:{proposition}{}:{offer}", proposition.len(), offer.len()).as_bytes(),
    );
    Some(format!("offer-{kind}-{digest:032x}"))
}

/// What a feedback event counts for: the offer, its placement, and whether a display or a
/// click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub offer: String,
    pub placement: String,
    pub click: bool,
}

/// The feedback an event carries, if it is one.
pub fn feedback_of(name: &str, properties: &serde_json::Map<String, Value>) -> Option<Feedback> {
    let click = match name {
        OFFER_DISPLAYED => false,
        OFFER_CLICKED => true,
        _ => return None,
    };
    let text = |k: &str| {
        properties
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| valid_key(s))
            .map(str::to_owned)
    };
    Some(Feedback {
        offer: text("offer")?,
        placement: text("placement")?,
        click,
    })
}

#[cfg(test)]
mod tests;

/// Every offer's content, compiled once per catalogue and rendered per request: HTML
/// escapes the values it inserts, text and image URLs do not, and JSON keeps a lone
/// path's type (as webhook bodies do).
pub struct OfferContents {
    html: handlebars::Handlebars<'static>,
    plain: handlebars::Handlebars<'static>,
    json: crate::template::Templates,
    parts: std::collections::HashMap<(String, String), ContentPart>,
}

enum ContentPart {
    Html(String),
    Plain(String),
    Literal(Value),
    Json(crate::template::JsonTemplate),
}

impl std::fmt::Debug for OfferContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferContents")
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl OfferContents {
    /// Compiles the content every offer holds for each placement; what does not compile
    /// (only possible in a damaged store: documents are checked when saved) is returned
    /// as `(offer, placement, why)` and left out.
    pub fn compile(catalogue: &Catalogue) -> (Self, Vec<(String, String, String)>) {
        let mut contents = OfferContents {
            html: crate::content::registry(true),
            plain: crate::content::registry(false),
            json: crate::template::Templates::default(),
            parts: Default::default(),
        };
        let mut failed = Vec::new();
        for offer in catalogue.offers.values() {
            for (placement, content) in &offer.content {
                let Some(p) = catalogue.placements.get(placement) else {
                    continue;
                };
                let name = format!("{}/{}", offer.key, placement);
                let part = match (p.content, content) {
                    (ContentType::Json, value) => contents
                        .json
                        .json(&name, value)
                        .map(ContentPart::Json)
                        .map_err(|(at, e)| format!("{at}: {e}")),
                    (_, Value::String(s)) if !s.contains("{{") => {
                        Ok(ContentPart::Literal(Value::String(s.clone())))
                    }
                    (kind, Value::String(s)) => {
                        let (registry, part): (_, fn(String) -> ContentPart) =
                            if kind == ContentType::Html {
                                (&mut contents.html, ContentPart::Html)
                            } else {
                                (&mut contents.plain, ContentPart::Plain)
                            };
                        registry
                            .register_template_string(&name, s)
                            .map(|()| part(name.clone()))
                            .map_err(|e| e.to_string())
                    }
                    (kind, _) => Err(format!("{} content is a string", kind.name())),
                };
                match part {
                    Ok(part) => {
                        contents
                            .parts
                            .insert((offer.key.clone(), placement.clone()), part);
                    }
                    Err(e) => failed.push((offer.key.clone(), placement.clone(), e)),
                }
            }
        }
        (contents, failed)
    }

    /// Whether the offer holds (compiled) content for the placement.
    pub fn has(&self, offer: &str, placement: &str) -> bool {
        self.parts
            .contains_key(&(offer.to_owned(), placement.to_owned()))
    }

    /// Whether rendering reads `data` at all.
    pub fn reads_data(&self, offer: &str, placement: &str) -> bool {
        match self.parts.get(&(offer.to_owned(), placement.to_owned())) {
            Some(ContentPart::Literal(_)) | None => false,
            Some(ContentPart::Json(t)) => t.reads_data(),
            Some(ContentPart::Html(_) | ContentPart::Plain(_)) => true,
        }
    }

    /// The offer's content for the placement, rendered over `data` (`{"profile",
    /// "context", "offer"}`); an error when a helper fails.
    pub fn render(&self, offer: &str, placement: &str, data: &Value) -> Result<Value, String> {
        let part = self
            .parts
            .get(&(offer.to_owned(), placement.to_owned()))
            .ok_or_else(|| format!("offer {offer:?} holds no content for {placement:?}"))?;
        match part {
            ContentPart::Literal(v) => Ok(v.clone()),
            ContentPart::Html(name) => {
                crate::template::render_bounded(&self.html, name, data).map(Value::String)
            }
            ContentPart::Plain(name) => {
                crate::template::render_bounded(&self.plain, name, data).map(Value::String)
            }
            ContentPart::Json(t) => self.json.render(t, data),
        }
    }
}

//! Audience membership: a rule decided for one person at one instant, the values that
//! decided it, and the next instant time alone can change the answer.
//!
//! Behaviour calls (`events.count("Order Completed", "30d")`) are computed here, natively,
//! from the person's kept events, and handed to CEL as scalars; CEL then decides the rule.
//! A windowed call's value changes with time only when a matching event leaves its window
//! (or a future-dated one enters it), so the earliest such instant over a rule's calls is
//! when the rule must be decided again: no sweeps, exact to the millisecond.

mod calendar;
mod native;
pub mod plan;

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;
use waymark_core::audience::{AudienceDoc, BehaviourCall, Function, Refresh, Rule};
use waymark_core::time::Millis;
use waymark_core::{FieldError, ProfileState};

pub use plan::{
    AudienceCatalog, AudiencePlan, Change, Check, ENTERED, EXITED, PersonInput, Trigger, plan,
};

use crate::expression::{Expression, FieldReads, Lazy, Prepared, Variables, prepare};

/// An audience compiled for evaluation.
#[derive(Debug)]
pub struct CompiledAudience {
    pub key: String,
    pub version: u32,
    /// How membership is kept: only `streaming` audiences are decided on events and time.
    pub refresh: Refresh,
    pub rule: Rule,
    expression: Expression,
    /// The rule decided without CEL, when it has the common shape (see `native`).
    native: Option<native::Native>,
    /// Each call's event filter, compiled.
    filters: Vec<Option<Expression>>,
    /// What the rule and its filters read of `profile` and of each filter's event.
    reads: FieldReads,
    /// The event names the rule's calls read.
    pub event_names: BTreeSet<String>,
    /// How much of each event the calls read: nothing for counts (names and times only),
    /// `properties` for sums and conditions on properties, the whole event otherwise.
    pub bodies: BodyPart,
}

/// One of the person's kept events, as a behaviour call sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEvent {
    /// Its display name, shared by the events of a read that bear it.
    pub name: std::sync::Arc<str>,
    /// Event time.
    pub at: Millis,
    /// The event in Segment's JSON shape (`properties`, `timestamp`, ...).
    pub body: Value,
}

/// How much of each kept event a decision reads (ordered: more reads more).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum BodyPart {
    /// Names and times only.
    #[default]
    Nothing,
    /// `{"properties": ...}` alone.
    Properties,
    Whole,
}

/// Whether these reads reach nothing outside the field `top` of the variable.
fn reads_only_under(reads: &crate::expression::Reads, top: &str) -> bool {
    match reads {
        crate::expression::Reads::Nothing => true,
        crate::expression::Reads::Paths(paths) => {
            paths.iter().all(|p| p.first().is_some_and(|f| f == top))
        }
        crate::expression::Reads::Whole => false,
    }
}

/// When time alone next changes a call's value: its oldest counted event leaves the window,
/// or its first future-dated one arrives, whichever is first.
fn change_of(
    window_ms: Option<i64>,
    oldest: Option<Millis>,
    future: Option<Millis>,
) -> Option<Millis> {
    let leaves = match (window_ms, oldest) {
        (Some(window), Some(o)) => Some(o.saturating_add(window)),
        _ => None,
    };
    match (leaves, future) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What one behaviour call came to for a person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallValue {
    /// The call as written in the rule.
    pub call: String,
    pub value: Value,
    /// How many kept events matched (name, window and filter).
    pub matched: u64,
    /// Event times of the oldest and newest of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<Millis>,
}

/// A rule decided for one person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub member: bool,
    /// Why the rule could not be decided (a missing field in arithmetic, say): the person
    /// is then not a member, and the error is counted per audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub values: Vec<CallValue>,
    /// `in_audience` references and what they were for this person.
    pub audiences: Vec<(String, bool)>,
    /// The next instant time alone can change the answer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_change: Option<Millis>,
}

/// What the rule is decided over: the person, their kept events (of the names the rule
/// reads, any order), and their membership of the audiences the rule reads.
pub struct Person<'a> {
    pub profile: &'a ProfileState,
    pub events: &'a [HistoryEvent],
    pub member_of: &'a dyn Fn(&str) -> bool,
}

impl CompiledAudience {
    /// Compiles a document whose references were checked when it was saved.
    pub fn compile(doc: &AudienceDoc, version: u32) -> Result<Self, Vec<FieldError>> {
        let rule = Rule::parse(waymark_core::audience::rule_text(doc))
            .map_err(|errors| errors.into_iter().map(FieldError::from).collect::<Vec<_>>())?;
        let mut audience = Self::from_rule(doc.key.clone(), version, rule);
        audience.refresh = doc.refresh;
        Ok(audience)
    }

    pub fn from_rule(key: String, version: u32, rule: Rule) -> Self {
        let expression = Expression::from_ast(rule.expression.clone());
        let native = native::Native::compile(&rule.expression, rule.calls.len());
        let filters: Vec<Option<Expression>> = rule
            .calls
            .iter()
            .map(|c| {
                c.filter
                    .as_ref()
                    .map(|f| Expression::from_ast(f.expression.clone()))
            })
            .collect();
        let reads = FieldReads::of(std::iter::once(&expression).chain(filters.iter().flatten()));
        let event_names = rule.calls.iter().map(|c| c.event.clone()).collect();
        let bodies = rule
            .calls
            .iter()
            .map(|c| {
                let whole = matches!(c.function, Function::Last | Function::First)
                    || c.filter.as_ref().is_some_and(|f| {
                        !reads_only_under(reads.of_var(&f.variable), "properties")
                    });
                if whole {
                    BodyPart::Whole
                } else if c.filter.is_some() || c.function == Function::Sum {
                    BodyPart::Properties
                } else {
                    BodyPart::Nothing
                }
            })
            .max()
            .unwrap_or(BodyPart::Nothing);
        CompiledAudience {
            key,
            version,
            refresh: Refresh::Streaming,
            rule,
            expression,
            native,
            filters,
            reads,
            event_names,
            bodies,
        }
    }

    /// Whether the rule and its conditions read nothing of `profile` but its traits
    /// (calendar readings read the `timezone` trait, and may read a date elsewhere).
    pub fn reads_traits_only(&self) -> bool {
        reads_only_under(self.reads.of_var("profile"), "traits")
            && self.rule.calendar.iter().all(|c| {
                c.of.as_ref()
                    .is_none_or(|of| of.first().is_some_and(|f| f == "traits"))
            })
    }

    /// The traits the rule reads, when it reads nothing of `profile` but some of its
    /// traits: the first key of each path under `profile.traits`, and for calendar
    /// readings `timezone` and the trait holding their date. `None` when it reads all the
    /// traits or more than traits.
    pub fn trait_keys_read(&self) -> Option<Vec<String>> {
        if !self.reads_traits_only() {
            return None;
        }
        let mut keys: BTreeSet<String> = BTreeSet::new();
        if let crate::expression::Reads::Paths(paths) = self.reads.of_var("profile") {
            for path in paths {
                keys.insert(path.get(1)?.clone());
            }
        }
        for reading in &self.rule.calendar {
            keys.insert("timezone".to_owned());
            if let Some(of) = &reading.of {
                keys.insert(of.get(1)?.clone());
            }
        }
        Some(keys.into_iter().collect())
    }

    /// Decides the rule for `person` at `now`.
    pub fn evaluate(&self, person: &Person<'_>, now: Millis) -> Evaluation {
        self.evaluate_with(person, now, &NoVariables)
    }

    /// Decides a rule that also reads variables of its caller's (an offer's eligibility
    /// reads the request's `context`).
    pub fn evaluate_with(
        &self,
        person: &Person<'_>,
        now: Millis,
        extra: &dyn Variables,
    ) -> Evaluation {
        let profile = Lazy::default();
        let profile_of = || self.prepared_profile(person.profile);
        self.evaluate_shared(person, now, extra, &profile, &profile_of)
    }

    /// [`Self::evaluate_with`] with the person's profile prepared by the caller, once for
    /// many rules: `profile_of` prepares at least what [`Self::profile_reads`] reads.
    pub fn evaluate_shared(
        &self,
        person: &Person<'_>,
        now: Millis,
        extra: &dyn Variables,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
    ) -> Evaluation {
        let (values, next_change) = self.values(person, now, profile, profile_of);
        self.decide(values, next_change, person, profile, profile_of, now, extra)
    }

    /// What the rule and its conditions read of `profile`.
    pub fn profile_reads(&self) -> &crate::expression::Reads {
        self.reads.of_var("profile")
    }

    /// The rule's value as a number (a ranking formula), with the calls' values; an error
    /// when it fails or is not a number. The profile is prepared by the caller, as for
    /// [`Self::evaluate_shared`].
    pub fn number_shared(
        &self,
        person: &Person<'_>,
        now: Millis,
        extra: &dyn Variables,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
    ) -> (Result<f64, String>, Vec<CallValue>) {
        let (values, _) = self.values(person, now, profile, profile_of);
        let memberships: Vec<bool> = self
            .rule
            .audiences
            .iter()
            .map(|key| (person.member_of)(key))
            .collect();
        let value = self.with_variables(&values, &memberships, profile, profile_of, extra, |v| {
            self.expression.value(v, now)
        });
        let number = match value {
            Ok(cel::Value::Int(i)) => Ok(i as f64),
            Ok(cel::Value::UInt(u)) => Ok(u as f64),
            Ok(cel::Value::Float(f)) if f.is_finite() => Ok(f),
            Ok(other) => Err(format!("the formula gave {other:?}, not a number")),
            Err(e) => Err(e),
        };
        (number, values)
    }

    /// The behaviour calls' and calendar readings' values, and when time alone next
    /// changes one.
    fn values(
        &self,
        person: &Person<'_>,
        now: Millis,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
    ) -> (Vec<CallValue>, Option<Millis>) {
        let mut values = Vec::with_capacity(self.rule.calls.len());
        let mut next_change: Option<Millis> = None;
        for (call, filter) in self.rule.calls.iter().zip(&self.filters) {
            let (value, change) =
                self.compute(call, filter.as_ref(), person, profile, profile_of, now);
            if let Some(at) = change {
                next_change = Some(next_change.map_or(at, |n| n.min(at)));
            }
            values.push(value);
        }
        if !self.rule.calendar.is_empty() {
            let zone = crate::compile::person_zone(person.profile);
            for reading in &self.rule.calendar {
                let (value, change) = calendar::read(reading, person.profile, now, &zone);
                if let Some(at) = change {
                    next_change = Some(next_change.map_or(at, |n| n.min(at)));
                }
                values.push(value);
            }
        }
        (values, next_change)
    }

    /// The rule decided over the calls' values and the memberships it reads.
    #[allow(
        clippy::too_many_arguments,
        reason = "one decision's inputs, passed down"
    )]
    fn decide(
        &self,
        values: Vec<CallValue>,
        next_change: Option<Millis>,
        person: &Person<'_>,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
        now: Millis,
        extra: &dyn Variables,
    ) -> Evaluation {
        let audiences: Vec<(String, bool)> = self
            .rule
            .audiences
            .iter()
            .map(|key| (key.clone(), (person.member_of)(key)))
            .collect();
        let memberships: Vec<bool> = audiences.iter().map(|(_, m)| *m).collect();
        let native = self.native.as_ref().and_then(|rule| {
            rule.decide(&native::Inputs {
                calls: Some(&values),
                audiences: &memberships,
                profile: person.profile,
                context: extra.json("context"),
            })
            .ok()
        });
        let (member, error) = match native {
            Some(native::Outcome::Bool(member)) => (member, None),
            Some(native::Outcome::Error(e)) => (false, Some(e)),
            Some(native::Outcome::Unknown) | None => {
                self.decide_with_cel(&values, &memberships, profile, profile_of, now, extra)
            }
        };
        Evaluation {
            member,
            error,
            values,
            audiences,
            next_change,
        }
    }

    /// The person as the rule and its conditions read them, pruned to what they read.
    fn prepared_profile(&self, profile: &ProfileState) -> Prepared {
        prepare(
            &self
                .reads
                .of_var("profile")
                .prune(&profile.context_json(&profile.traits)),
        )
    }

    /// The rule decided by CEL, with the calls' values and memberships as its variables.
    fn decide_with_cel(
        &self,
        values: &[CallValue],
        memberships: &[bool],
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
        now: Millis,
        extra: &dyn Variables,
    ) -> (bool, Option<String>) {
        let tested = self.with_variables(values, memberships, profile, profile_of, extra, |v| {
            self.expression.test(v, now)
        });
        match tested {
            Ok(member) => (member, None),
            Err(e) => (false, Some(e)),
        }
    }

    /// Runs `f` with the rule's CEL variables: the calls' values, the memberships, the
    /// person's profile and the caller's own variables.
    fn with_variables<T>(
        &self,
        values: &[CallValue],
        memberships: &[bool],
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
        extra: &dyn Variables,
        f: impl FnOnce(&RuleVars<'_>) -> T,
    ) -> T {
        let bound: Vec<Prepared> = values.iter().map(|v| prepare(&v.value)).collect();
        let audience_values: Vec<Prepared> = memberships.iter().map(prepare).collect();
        f(&RuleVars {
            profile,
            profile_of,
            calls: &bound,
            behaviour_calls: self.rule.calls.len(),
            audiences: &audience_values,
            extra,
        })
    }

    /// Membership (and the error, if the rule failed) when the profile and memberships
    /// alone settle it, as [`Self::evaluate`] would decide it whatever the person's events
    /// (`profile.traits.plan == "pro" && events.count(...) >= 3` for someone on another
    /// plan); `None` when it depends on them. Batch evaluation reads events only then.
    pub fn decide_without_events(
        &self,
        profile: &ProfileState,
        member_of: &dyn Fn(&str) -> bool,
    ) -> Option<(bool, Option<String>)> {
        let memberships: Vec<bool> = self.rule.audiences.iter().map(|k| member_of(k)).collect();
        let outcome = self
            .native
            .as_ref()?
            .decide(&native::Inputs {
                calls: None,
                audiences: &memberships,
                profile,
                context: None,
            })
            .ok()?;
        match outcome {
            native::Outcome::Bool(member) => Some((member, None)),
            native::Outcome::Error(e) => Some((false, Some(e))),
            native::Outcome::Unknown => None,
        }
    }

    /// Whether some people can be decided without reading their events (see
    /// [`Self::decide_without_events`]): the rule is in the native shape and reads more
    /// than its calls.
    pub fn may_decide_without_events(&self) -> bool {
        self.native.is_some()
            && !self.rule.calls.is_empty()
            && (self.rule.reads_profile || !self.rule.audiences.is_empty())
    }

    /// Whether the rule has the shape decided without CEL.
    pub fn decided_natively(&self) -> bool {
        self.native.is_some()
    }

    /// One call's value over the person's events, and when time alone next changes it.
    fn compute(
        &self,
        call: &BehaviourCall,
        filter: Option<&Expression>,
        person: &Person<'_>,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
        now: Millis,
    ) -> (CallValue, Option<Millis>) {
        let since = call.window_ms.map(|w| now.saturating_sub(w));
        let mut matched = 0u64;
        let mut sum = 0.0f64;
        let mut oldest: Option<&HistoryEvent> = None;
        let mut newest: Option<&HistoryEvent> = None;
        // The first future-dated matching event: it enters the window when its time comes.
        let mut future: Option<Millis> = None;
        for event in person.events.iter() {
            if !self.counts(call, filter, event, since, profile, profile_of, now) {
                continue;
            }
            if event.at > now {
                future = Some(future.map_or(event.at, |f| f.min(event.at)));
                continue;
            }
            matched += 1;
            if let Some(path) = &call.property {
                sum += number_at(&event.body, path);
            }
            if oldest.is_none_or(|o| event.at < o.at) {
                oldest = Some(event);
            }
            if newest.is_none_or(|n| event.at >= n.at) {
                newest = Some(event);
            }
        }
        let value = match call.function {
            Function::Count => Value::from(matched),
            Function::Any => Value::Bool(matched > 0),
            Function::Sum => serde_json::Number::from_f64(sum).map_or(Value::Null, Value::Number),
            Function::Last => newest.map_or(Value::Null, |e| e.body.clone()),
            Function::First => oldest.map_or(Value::Null, |e| e.body.clone()),
        };
        let change = change_of(call.window_ms, oldest.map(|o| o.at), future);
        let value = CallValue {
            call: call.text.clone(),
            value,
            matched,
            oldest: oldest.map(|e| e.at),
            newest: newest.map(|e| e.at),
        };
        (value, change)
    }

    /// Whether an event is one a call looks at: its name, inside its window (or still to
    /// come), and passing its condition.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call's evaluation state, passed down"
    )]
    fn counts(
        &self,
        call: &BehaviourCall,
        filter: Option<&Expression>,
        event: &HistoryEvent,
        since: Option<Millis>,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
        now: Millis,
    ) -> bool {
        *event.name == *call.event
            && since.is_none_or(|s| event.at > s)
            && filter.is_none_or(|f| self.filter_matches(call, f, event, profile, profile_of, now))
    }

    /// The kept events each behaviour call counts at `now` (newest first, at most `limit`
    /// per call), for explaining a decision.
    pub fn matching_events<'e>(
        &self,
        person: &Person<'e>,
        now: Millis,
        limit: usize,
    ) -> Vec<Vec<&'e HistoryEvent>> {
        let profile = Lazy::default();
        let profile_of = || self.prepared_profile(person.profile);
        self.rule
            .calls
            .iter()
            .zip(&self.filters)
            .map(|(call, filter)| {
                let since = call.window_ms.map(|w| now.saturating_sub(w));
                let mut found: Vec<&'e HistoryEvent> = person
                    .events
                    .iter()
                    .filter(|e| e.at <= now)
                    .filter(|e| {
                        self.counts(call, filter.as_ref(), e, since, &profile, &profile_of, now)
                    })
                    .collect();
                found.sort_by_key(|e| std::cmp::Reverse(e.at));
                found.truncate(limit);
                found
            })
            .collect()
    }

    /// Whether an event passes a call's filter; an error (a missing property) is a no.
    fn filter_matches(
        &self,
        call: &BehaviourCall,
        filter: &Expression,
        event: &HistoryEvent,
        profile: &Lazy,
        profile_of: &(dyn Fn() -> Prepared + Sync),
        now: Millis,
    ) -> bool {
        let Some(spec) = &call.filter else {
            return true;
        };
        let prepared = prepare(&self.reads.of_var(&spec.variable).prune(&event.body));
        let variables = FilterVars {
            name: &spec.variable,
            event: &prepared,
            profile,
            profile_of,
        };
        filter.test(&variables, now).unwrap_or(false)
    }
}

/// A number under `properties` at `path`; anything else counts 0.
fn number_at(body: &Value, path: &[String]) -> f64 {
    let mut at = &body["properties"];
    for field in path {
        at = &at[field.as_str()];
    }
    at.as_f64().unwrap_or(0.0)
}

struct RuleVars<'a> {
    profile: &'a Lazy,
    profile_of: &'a (dyn Fn() -> Prepared + Sync),
    /// The behaviour calls' values, then the calendar readings'.
    calls: &'a [Prepared],
    behaviour_calls: usize,
    audiences: &'a [Prepared],
    /// The caller's own variables (`context`, `offer`).
    extra: &'a dyn Variables,
}

/// No variables besides a rule's own.
pub struct NoVariables;

impl Variables for NoVariables {
    fn variable(&self, _: &str) -> Option<&Prepared> {
        None
    }
}

impl Variables for RuleVars<'_> {
    fn variable(&self, name: &str) -> Option<&Prepared> {
        if name == "profile" {
            return Some(self.profile.get(self.profile_of));
        }
        let index = |prefix: &str| name.strip_prefix(prefix)?.parse::<usize>().ok();
        if let Some(i) = index("@b") {
            return self.calls.get(i);
        }
        if let Some(i) = index("@c") {
            return self.calls.get(self.behaviour_calls + i);
        }
        match index("@a") {
            Some(i) => self.audiences.get(i),
            None => self.extra.variable(name),
        }
    }
}

struct FilterVars<'a> {
    name: &'a str,
    event: &'a Prepared,
    profile: &'a Lazy,
    profile_of: &'a (dyn Fn() -> Prepared + Sync),
}

impl Variables for FilterVars<'_> {
    fn variable(&self, name: &str) -> Option<&Prepared> {
        if name == self.name {
            Some(self.event)
        } else if name == "profile" {
            Some(self.profile.get(self.profile_of))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;

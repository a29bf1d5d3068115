//! Dry runs on a virtual clock: a recorded event stream goes through a journey; waits of
//! days take no time; nothing is sent. The engine's tests and `waymark journeys simulate`
//! both use this.
//!
//! Simplifications, stated: a person is keyed by `userId`, else `anonymousId` (no identity
//! merges); webhooks succeed at once with an empty response, unless told to fail; a winner
//! node takes its `inconclusive` path, else its first (no counts to compare).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;
use serde_json::{Value, json};
use waymark_core::time::Millis;
use waymark_core::{Event, ProfileState};

use crate::{CompiledJourney, Ctx, Effect, Input, Instance, JourneyState, apply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhooks {
    Succeed,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct PersonReport {
    pub person: String,
    pub instances: Vec<Instance>,
    /// Effects in the order they would have happened, with when.
    pub effects: Vec<TimedEffect>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimedEffect {
    pub at: Millis,
    #[serde(flatten)]
    pub effect: Effect,
}

/// (due, insertion order, person, instance, timer): a total order, so runs repeat exactly.
type PendingTimer = (Millis, u64, String, u32, u64);

struct Person {
    profile: ProfileState,
    state: JourneyState,
    effects: Vec<TimedEffect>,
}

pub struct Simulation<'a> {
    journey: &'a CompiledJourney,
    people: BTreeMap<String, Person>,
    timers: BinaryHeap<Reverse<PendingTimer>>,
    order: u64,
    now: Millis,
    webhooks: Webhooks,
    winners: crate::winner::Winners,
}

impl<'a> Simulation<'a> {
    pub fn new(journey: &'a CompiledJourney, webhooks: Webhooks) -> Self {
        Self {
            journey,
            people: BTreeMap::new(),
            timers: BinaryHeap::new(),
            order: 0,
            now: Millis::MIN,
            webhooks,
            winners: journey
                .doc
                .nodes
                .iter()
                .filter_map(|n| match &n.kind {
                    waymark_core::journey::NodeKind::Winner {
                        paths,
                        inconclusive,
                        ..
                    } => {
                        let path = inconclusive.as_ref().or(paths.first())?;
                        Some(((journey.doc.key.clone(), n.id.clone()), path.clone()))
                    }
                    _ => None,
                })
                .collect(),
        }
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    /// Feeds one event at its timestamp, first firing every timer due by then.
    pub fn event(&mut self, event: &Event) -> Result<(), String> {
        if event.timestamp < self.now {
            return Err(format!(
                "event {} at {} is earlier than the previous one ({}); sort the stream by timestamp",
                event.message_id,
                waymark_core::time::format_iso8601(event.timestamp),
                waymark_core::time::format_iso8601(self.now)
            ));
        }
        self.run_timers_until(event.timestamp);
        self.now = event.timestamp;
        let key = event
            .user_id
            .clone()
            .or_else(|| event.anonymous_id.clone())
            .unwrap_or_default();
        let person = self.people.entry(key.clone()).or_insert_with(|| Person {
            profile: ProfileState::new(format!("sim:{key}"), 0, event.timestamp),
            state: JourneyState::default(),
            effects: Vec::new(),
        });
        person.profile.apply_event(event);
        let effects = apply(
            self.journey,
            &mut person.state,
            Input::Event(event),
            &Ctx {
                profile: &person.profile,
                now: self.now,
                winners: &self.winners,
            },
        );
        self.carry_out(&key, effects);
        Ok(())
    }

    /// Fires every timer due at or before `until`, in due order.
    pub fn run_timers_until(&mut self, until: Millis) {
        while let Some(Reverse((due, ..))) = self.timers.peek() {
            if *due > until {
                break;
            }
            let Some(Reverse((due, _, key, instance, timer))) = self.timers.pop() else {
                break;
            };
            self.now = self.now.max(due);
            let Some(person) = self.people.get_mut(&key) else {
                continue;
            };
            let effects = apply(
                self.journey,
                &mut person.state,
                Input::Timer { instance, timer },
                &Ctx {
                    profile: &person.profile,
                    now: self.now,
                    winners: &self.winners,
                },
            );
            self.carry_out(&key, effects);
        }
    }

    /// Runs the clock forward until no timer is left.
    pub fn finish(&mut self) {
        self.run_timers_until(Millis::MAX);
    }

    fn carry_out(&mut self, key: &str, effects: Vec<Effect>) {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let now = self.now;
            let Some(person) = self.people.get_mut(key) else {
                return;
            };
            match &effect {
                Effect::Timer {
                    instance,
                    timer,
                    due,
                } => {
                    self.order += 1;
                    self.timers.push(Reverse((
                        *due,
                        self.order,
                        key.to_owned(),
                        *instance,
                        *timer,
                    )));
                    continue; // timers are bookkeeping, not something that "happened"
                }
                Effect::UpdateProfile(update) => {
                    for (k, v) in &update.set {
                        person.profile.traits.insert(k.clone(), v.clone());
                    }
                    for k in &update.unset {
                        person.profile.traits.remove(k);
                    }
                }
                Effect::Webhook(call) => {
                    let outcome = match self.webhooks {
                        Webhooks::Succeed => Ok(json!({})),
                        Webhooks::Fail => Err("simulated failure".to_owned()),
                    };
                    person.effects.push(TimedEffect {
                        at: now,
                        effect: effect.clone(),
                    });
                    let input = Input::WebhookResult {
                        instance: call.instance,
                        node: &call.node,
                        outcome,
                    };
                    let more = apply(
                        self.journey,
                        &mut person.state,
                        input,
                        &Ctx {
                            profile: &person.profile,
                            now,
                            winners: &self.winners,
                        },
                    );
                    queue.extend(more);
                    continue;
                }
                Effect::Message(_) | Effect::Jump(_) => {}
            }
            person.effects.push(TimedEffect { at: now, effect });
        }
    }

    pub fn report(&self) -> Vec<PersonReport> {
        self.people
            .iter()
            .filter(|(_, p)| !p.state.instances.is_empty())
            .map(|(k, p)| PersonReport {
                person: k.clone(),
                instances: p.state.instances.clone(),
                effects: p.effects.clone(),
            })
            .collect()
    }
}

/// The path an instance took, as node ids in order (for display and tests).
pub fn path(instance: &Instance) -> Vec<String> {
    instance
        .steps
        .iter()
        .filter(|s| s.what == "entered")
        .map(|s| s.node.clone())
        .collect()
}

pub fn describe(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

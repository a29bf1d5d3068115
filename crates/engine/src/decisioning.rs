//! Offer decisioning: for one person (or an unknown visitor) and the placements a page or
//! app asks for, which offers to show. Each placement's decision policy gives the offers
//! that compete; an offer is eligible inside its dates, when its eligibility rule holds
//! (CEL over `profile`, `context`, behaviour and audiences, decided like an audience rule)
//! and while every cap has room; the eligible are ranked by priority, by a formula, or by
//! what feedback has taught (Thompson sampling over clicks per display), and the first
//! that render are returned, else the policy's fallback.
//!
//! Content a journey or campaign placed on the placement for this person (`code_based`)
//! comes first, by the journey's priority; offers fill the items left.
//!
//! Pure: the catalogue, the person's reads, the counts and a random seed come in; the same
//! inputs give the same answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use serde::Serialize;
use serde_json::{Value, json};
use waymark_core::ProfileState;
use waymark_core::decisioning::{
    CapEvent, CapScope, Catalogue, ContentType, ELIGIBILITY_VARIABLES, FORMULA_VARIABLES,
    OFFER_CLICKED, OFFER_DISPLAYED, OfferContents, OfferDoc, PolicyDoc, Ranking,
};
use waymark_core::time::Millis;

use crate::audience::{BodyPart, CallValue, CompiledAudience, HistoryEvent, Person};
use crate::expression::{Lazy, Prepared, Reads, Variables, prepare};

/// A catalogue compiled for deciding: rules compiled, content compiled, each policy's
/// candidates listed.
#[derive(Debug)]
pub struct CompiledCatalogue {
    pub catalogue: Catalogue,
    offers: HashMap<String, Arc<CompiledOffer>>,
    /// By placement key.
    policies: HashMap<String, CompiledPolicy>,
    contents: OfferContents,
    event_names: BTreeSet<String>,
    bodies: BodyPart,
    /// What every rule reads of `profile`: the profile is prepared for CEL once per
    /// request, not once per offer.
    profile_reads: Reads,
    /// What could not be compiled (a damaged store): `(what, why)`.
    pub problems: Vec<(String, String)>,
}

#[derive(Debug)]
struct CompiledOffer {
    doc: OfferDoc,
    starts_at: Option<Millis>,
    ends_at: Option<Millis>,
    eligibility: Option<CompiledAudience>,
    caps: Vec<CompiledCap>,
    /// What a formula reads as `offer`, and content as `offer`.
    view: Value,
    /// The same, prepared for CEL once.
    view_prepared: Prepared,
}

#[derive(Debug, Clone)]
struct CompiledCap {
    per: CapScope,
    max: u64,
    on: CapEvent,
    window_ms: Option<i64>,
    /// As written, for explaining.
    window: Option<String>,
}

#[derive(Debug)]
struct CompiledPolicy {
    doc: PolicyDoc,
    surface: String,
    content: ContentType,
    /// Candidate offers, by key order.
    candidates: Vec<Arc<CompiledOffer>>,
    formula: Option<CompiledAudience>,
}

/// Counts kept across everyone, which total caps and the learned ranker read.
pub trait OfferCounts {
    /// How many displays (or clicks) of the offer since `since` (`None`: all kept).
    fn total(&self, offer: &str, on: CapEvent, since: Option<Millis>) -> u64;
    /// Displays and clicks of the offer on the placement.
    fn learned(&self, placement: &str, offer: &str) -> (u64, u64);
}

/// No counts at all (nobody has seen anything yet).
pub struct NoCounts;

impl OfferCounts for NoCounts {
    fn total(&self, _: &str, _: CapEvent, _: Option<Millis>) -> u64 {
        0
    }
    fn learned(&self, _: &str, _: &str) -> (u64, u64) {
        (0, 0)
    }
}

/// Who is asking: their profile (an empty one for an unknown visitor), their kept events
/// of the names the catalogue reads, and their audiences.
pub struct Visitor<'a> {
    pub profile: &'a ProfileState,
    pub events: &'a [HistoryEvent],
    pub member_of: &'a dyn Fn(&str) -> bool,
    /// Stable per person (profile id, else the anonymous id): who is in a control group.
    pub id: &'a str,
    /// Content journeys placed for them (any surface; those that expired are skipped).
    pub placed: &'a [Placed],
}

/// Content a journey's `code_based` step put on a surface for one person: kept while the
/// step's instance lasts (the store drops it when the instance ends), at most until
/// `expires_at`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Placed {
    /// The message's key (unique): what feedback names it by.
    pub key: String,
    pub journey: String,
    pub instance: u32,
    /// The placement, by key or surface URI, as the journey named it.
    pub surface: String,
    pub priority: i64,
    pub placed_at: Millis,
    pub expires_at: Option<Millis>,
    /// The template as rendered for the person when the step ran.
    pub content: waymark_core::content::Rendered,
}

impl crate::run::Planned {
    /// The content this plan places on surfaces, with whose profile it is: every
    /// `code_based` message but those whose instance ended in this same plan (placed
    /// content lasts only while its instance does).
    pub fn placed(&self, now: Millis) -> Vec<(&str, Placed)> {
        self.outbox
            .iter()
            .filter_map(|o| Some((o.profile_id.as_str(), o.placed(now)?)))
            .filter(|(profile, p)| {
                !self
                    .ended
                    .iter()
                    .any(|(pid, k, i)| pid == profile && *k == p.journey && *i == p.instance)
            })
            .collect()
    }
}

impl crate::run::OutboxRow {
    /// The content this row places on a surface, if it is a `code_based` message.
    pub fn placed(&self, now: Millis) -> Option<Placed> {
        let crate::Effect::Message(m) = &self.effect else {
            return None;
        };
        Some(Placed {
            key: self.key.clone(),
            journey: self.journey.clone(),
            instance: m.instance,
            surface: m.surface.clone().filter(|_| m.channel == "code_based")?,
            priority: m.priority,
            placed_at: now,
            expires_at: m.expires_at,
            content: m.content.clone()?,
        })
    }
}

/// One placement asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// A placement key or surface URI.
    pub placement: String,
    /// At most this many (else the policy's `items`).
    pub items: Option<u32>,
}

/// Why a placement could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPlacement(pub String);

/// One chosen item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// The offer shown (absent for journey content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// The journey (or campaign) that placed it, for content a journey placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journey: Option<String>,
    /// The placed message's id, for content a journey placed (report feedback with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The content for the placement, rendered for the person.
    pub content: Value,
    /// Shown because nothing eligible was left.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
}

/// What was decided for one placement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decided {
    pub placement: String,
    pub surface: String,
    pub content_type: &'static str,
    /// The decision policy, if the placement has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// How the offers were ordered: `priority`, `formula`, `learned`, `exploration` (a
    /// random order, the learned ranker's exploration share) or `control` (a random
    /// order, the person is in the policy's control group); `journey` when content
    /// journeys placed took every item.
    pub ranking: &'static str,
    pub items: Vec<Item>,
    /// Per candidate offer, why it was or was not chosen (when asked to explain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<OfferExplain>,
    /// Offers (or a journey's content, as `journey <key>`) left out because their rule,
    /// formula or content failed for this person.
    #[serde(skip)]
    pub errors: Vec<(String, String)>,
}

/// Why one offer was or was not chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfferExplain {
    pub offer: String,
    pub eligible: bool,
    pub chosen: bool,
    /// Why it is not eligible, or why an eligible one was not shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The eligibility rule's behaviour calls, as computed for the person.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<CallValue>,
    /// Its ranking score (priority, formula value, or the sampled click rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The learned ranker's estimate: displays, clicks, mean click rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub displays: u64,
    pub clicks: u64,
    /// (clicks + 1) / (displays + 2): the mean of the ranker's belief.
    pub mean: f64,
}

/// An empty profile, for a visitor nobody knows yet.
pub fn nobody() -> ProfileState {
    ProfileState {
        id: String::new(),
        partition: 0,
        identities: BTreeMap::new(),
        traits: serde_json::Map::new(),
        trait_times: BTreeMap::new(),
        first_seen: 0,
        last_seen: 0,
        event_count: 0,
        event_counts: BTreeMap::new(),
        merged_from: Vec::new(),
        created_at: 0,
    }
}

/// The request's context and (for formulas) the offer, as rules read them.
struct ExtraVars<'a> {
    context: &'a Value,
    context_prepared: &'a Lazy,
    offer: Option<&'a Prepared>,
}

impl Variables for ExtraVars<'_> {
    fn variable(&self, name: &str) -> Option<&Prepared> {
        match name {
            "context" => Some(self.context_prepared.get(|| prepare(self.context))),
            "offer" => self.offer,
            _ => None,
        }
    }

    fn json(&self, name: &str) -> Option<&Value> {
        (name == "context").then_some(self.context)
    }
}

fn rule(text: &str, key: &str, extra: &[&str]) -> Result<CompiledAudience, String> {
    waymark_core::audience::Rule::parse_with(text, extra)
        .map(|r| CompiledAudience::from_rule(key.to_owned(), 0, r))
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
                .join("; ")
        })
}

impl CompiledCatalogue {
    /// Compiles a catalogue whose documents were checked when saved; anything that still
    /// fails is left out and listed in `problems`.
    pub fn compile(catalogue: Catalogue) -> Self {
        let mut problems = Vec::new();
        let (contents, failed) = OfferContents::compile(&catalogue);
        for (offer, placement, why) in failed {
            problems.push((format!("offer {offer:?} content for {placement:?}"), why));
        }
        let mut event_names = BTreeSet::new();
        let mut bodies = BodyPart::Nothing;
        let mut profile_reads = Reads::Nothing;
        let mut offers = HashMap::new();
        for doc in catalogue.offers.values() {
            let eligibility = match doc
                .eligibility
                .as_deref()
                .map(|t| rule(t, &doc.key, ELIGIBILITY_VARIABLES))
            {
                Some(Err(e)) => {
                    problems.push((format!("offer {:?} eligibility", doc.key), e));
                    continue;
                }
                Some(Ok(r)) => Some(r),
                None => None,
            };
            if let Some(r) = &eligibility {
                event_names.extend(r.event_names.iter().cloned());
                bodies = bodies.max(r.bodies);
                profile_reads.union(r.profile_reads());
            }
            let caps: Vec<CompiledCap> = doc
                .caps
                .iter()
                .map(|c| CompiledCap {
                    per: c.per,
                    max: c.max,
                    on: c.on,
                    window_ms: c
                        .window
                        .as_deref()
                        .and_then(|w| waymark_core::journey::parse_duration_ms(w).ok()),
                    window: c.window.clone(),
                })
                .collect();
            for cap in caps.iter().filter(|c| c.per == CapScope::Person) {
                event_names.insert(cap.on.event_name().to_owned());
                bodies = bodies.max(BodyPart::Properties);
            }
            let instant =
                |t: &Option<String>| t.as_deref().and_then(waymark_core::time::parse_iso8601);
            let view = json!({
                "key": doc.key, "name": doc.name, "priority": doc.priority, "tags": doc.tags,
            });
            offers.insert(
                doc.key.clone(),
                Arc::new(CompiledOffer {
                    starts_at: instant(&doc.starts_at),
                    ends_at: instant(&doc.ends_at),
                    eligibility,
                    caps,
                    view_prepared: prepare(&view),
                    view,
                    doc: doc.clone(),
                }),
            );
        }
        let mut policies = HashMap::new();
        // A placement without a policy is filled as by a default one: every offer with
        // content for it, by priority, one item, no fallback.
        for placement in catalogue.placements.values() {
            let doc = catalogue
                .policy_for(&placement.key)
                .cloned()
                .unwrap_or_else(|| PolicyDoc {
                    key: String::new(),
                    placement: placement.key.clone(),
                    items: 1,
                    ..PolicyDoc::default()
                });
            let formula = match &doc.ranking {
                Ranking::Formula { formula } => match rule(formula, &doc.key, FORMULA_VARIABLES) {
                    Ok(r) => {
                        event_names.extend(r.event_names.iter().cloned());
                        bodies = bodies.max(r.bodies);
                        profile_reads.union(r.profile_reads());
                        Some(r)
                    }
                    Err(e) => {
                        problems.push((format!("decision policy {:?} formula", doc.key), e));
                        continue;
                    }
                },
                _ => None,
            };
            let candidates = catalogue
                .candidates(&doc)
                .into_iter()
                .filter(|o| contents.has(&o.key, &placement.key))
                .filter_map(|o| offers.get(&o.key).cloned())
                .collect();
            policies.insert(
                placement.key.clone(),
                CompiledPolicy {
                    surface: placement.surface.clone(),
                    content: placement.content,
                    candidates,
                    formula,
                    doc,
                },
            );
        }
        CompiledCatalogue {
            catalogue,
            offers,
            policies,
            contents,
            event_names,
            bodies,
            profile_reads,
            problems,
        }
    }

    /// The event names a decision reads of the person's history.
    pub fn event_names(&self) -> &BTreeSet<String> {
        &self.event_names
    }

    /// How much of each event a decision reads.
    pub fn bodies(&self) -> BodyPart {
        self.bodies
    }

    /// The longest window of any total cap (0 when none has one): how many hours of
    /// everyone's counts a server must keep by the hour.
    pub fn longest_total_window(&self) -> i64 {
        self.offers
            .values()
            .flat_map(|o| &o.caps)
            .filter(|c| c.per == CapScope::Total)
            .filter_map(|c| c.window_ms)
            .max()
            .unwrap_or(0)
    }

    /// The placement key asked for (by key or surface), if there is one.
    pub fn placement_key(&self, asked: &str) -> Option<&str> {
        self.catalogue.placement_by(asked).map(|p| p.key.as_str())
    }

    /// Decides every placement asked for. `seed` drives tie-breaks, exploration and
    /// sampling; `explain` adds why for every candidate (and decides them all).
    #[allow(clippy::too_many_arguments, reason = "one decision's inputs")]
    pub fn decide(
        &self,
        visitor: &Visitor<'_>,
        context: &Value,
        asks: &[Ask],
        now: Millis,
        seed: u64,
        counts: &dyn OfferCounts,
        explain: bool,
    ) -> Result<Vec<Decided>, (usize, UnknownPlacement)> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let context_prepared = Lazy::default();
        let profile = Lazy::default();
        let profile_of = || {
            prepare(
                &self
                    .profile_reads
                    .prune(&visitor.profile.context_json(&visitor.profile.traits)),
            )
        };
        let feedback = Feedback::of(visitor.events, now);
        let mut profile_data: Option<Value> = None;
        let mut out = Vec::with_capacity(asks.len());
        for (i, ask) in asks.iter().enumerate() {
            let key = self
                .placement_key(&ask.placement)
                .ok_or_else(|| (i, UnknownPlacement(ask.placement.clone())))?;
            let policy = self
                .policies
                .get(key)
                .ok_or_else(|| (i, UnknownPlacement(ask.placement.clone())))?;
            let run = PolicyRun {
                catalogue: self,
                policy,
                visitor,
                context,
                context_prepared: &context_prepared,
                profile: &profile,
                profile_of: &profile_of,
                feedback: &feedback,
                now,
                counts,
                explain,
            };
            out.push(run.decide(ask.items, &mut rng, &mut profile_data));
        }
        Ok(out)
    }
}

/// The person's own displays and clicks per offer (event times), from their history.
struct Feedback(HashMap<String, (Vec<Millis>, Vec<Millis>)>);

impl Feedback {
    fn of(events: &[HistoryEvent], now: Millis) -> Self {
        let mut by_offer: HashMap<String, (Vec<Millis>, Vec<Millis>)> = HashMap::new();
        for e in events {
            let click = match &*e.name {
                OFFER_DISPLAYED => false,
                OFFER_CLICKED => true,
                _ => continue,
            };
            if e.at > now {
                continue;
            }
            let Some(offer) = e.body.pointer("/properties/offer").and_then(Value::as_str) else {
                continue;
            };
            let entry = by_offer.entry(offer.to_owned()).or_default();
            if click {
                entry.1.push(e.at);
            } else {
                entry.0.push(e.at);
            }
        }
        Feedback(by_offer)
    }

    fn count(&self, offer: &str, on: CapEvent, since: Option<Millis>) -> u64 {
        let Some((displays, clicks)) = self.0.get(offer) else {
            return 0;
        };
        let times = match on {
            CapEvent::Display => displays,
            CapEvent::Click => clicks,
        };
        times
            .iter()
            .filter(|t| since.is_none_or(|s| **t > s))
            .count() as u64
    }
}

struct PolicyRun<'a> {
    catalogue: &'a CompiledCatalogue,
    policy: &'a CompiledPolicy,
    visitor: &'a Visitor<'a>,
    context: &'a Value,
    context_prepared: &'a Lazy,
    /// The person as every rule reads them, prepared on first use.
    profile: &'a Lazy,
    profile_of: &'a (dyn Fn() -> Prepared + Sync),
    feedback: &'a Feedback,
    now: Millis,
    counts: &'a dyn OfferCounts,
    explain: bool,
}

/// Whether an offer may be shown, and what deciding it computed.
struct Judged {
    eligible: bool,
    why: Option<String>,
    values: Vec<CallValue>,
    /// A failure for this person (rule error), counted by the caller.
    error: Option<String>,
}

impl<'a> PolicyRun<'a> {
    fn decide(
        &self,
        items: Option<u32>,
        rng: &mut SmallRng,
        profile_data: &mut Option<Value>,
    ) -> Decided {
        let policy = self.policy;
        let wanted = items
            .unwrap_or(policy.doc.items)
            .clamp(1, waymark_core::decisioning::MAX_ITEMS) as usize;
        let mut explain: Vec<OfferExplain> = Vec::new();
        let mut errors = Vec::new();
        let mut chosen = self.placed(wanted, &mut errors);
        let (label, ordered) = if chosen.len() == wanted {
            ("journey", Vec::new())
        } else {
            self.rank(wanted - chosen.len(), rng, &mut explain, &mut errors)
        };
        for offer in ordered {
            if chosen.len() == wanted {
                break;
            }
            let key = &offer.doc.key;
            match self.render(offer, profile_data) {
                Ok(content) => {
                    if let Some(e) = explain.iter_mut().find(|e| e.offer == *key) {
                        e.chosen = true;
                    }
                    chosen.push(Item {
                        offer: Some(key.clone()),
                        journey: None,
                        message: None,
                        content,
                        fallback: false,
                    });
                }
                Err(why) => {
                    if let Some(e) = explain.iter_mut().find(|e| e.offer == *key) {
                        e.why = Some(format!("its content failed to render: {why}"));
                    }
                    errors.push((key.clone(), why));
                }
            }
        }
        if chosen.is_empty()
            && let Some(fallback) = &policy.doc.fallback
            && let Some(offer) = self.catalogue.offers.get(fallback)
        {
            match self.render(offer, profile_data) {
                Ok(content) => chosen.push(Item {
                    offer: Some(fallback.clone()),
                    journey: None,
                    message: None,
                    content,
                    fallback: true,
                }),
                Err(why) => errors.push((fallback.clone(), why)),
            }
        }
        for e in explain
            .iter_mut()
            .filter(|e| e.eligible && !e.chosen && e.why.is_none())
        {
            e.why = Some(format!("ranked below the {wanted} shown"));
        }
        Decided {
            placement: policy.doc.placement.clone(),
            surface: policy.surface.clone(),
            content_type: policy.content.name(),
            policy: (!policy.doc.key.is_empty()).then(|| policy.doc.key.clone()),
            ranking: label,
            items: chosen,
            explain,
            errors,
        }
    }

    /// Up to `wanted` items journeys placed on this placement for the person and still
    /// there: highest priority first, then the newest. Content without the field the
    /// placement shows is left out and counted (as the journey's error).
    fn placed(&self, wanted: usize, errors: &mut Vec<(String, String)>) -> Vec<Item> {
        let policy = self.policy;
        let here = |p: &&Placed| {
            (p.surface == policy.doc.placement || p.surface == policy.surface)
                && p.expires_at.is_none_or(|at| at > self.now)
        };
        let mut placed: Vec<&Placed> = self.visitor.placed.iter().filter(here).collect();
        placed.sort_by(|a, b| {
            (b.priority, b.placed_at, &b.key).cmp(&(a.priority, a.placed_at, &a.key))
        });
        let field = policy.content.template_field();
        let mut items = Vec::new();
        for p in placed {
            if items.len() == wanted {
                break;
            }
            match policy.content.of_rendered(&p.content) {
                Some(content) => items.push(Item {
                    offer: None,
                    journey: Some(p.journey.clone()),
                    message: Some(p.key.clone()),
                    content,
                    fallback: false,
                }),
                None => errors.push((
                    format!("journey {}", p.journey),
                    format!(
                        "its template has no {field} for this {} placement",
                        policy.content.name()
                    ),
                )),
            }
        }
        items
    }

    /// The eligible candidates in the order to show them, and how they were ordered.
    fn rank(
        &self,
        wanted: usize,
        rng: &mut SmallRng,
        explain: &mut Vec<OfferExplain>,
        errors: &mut Vec<(String, String)>,
    ) -> (&'static str, Vec<&'a CompiledOffer>) {
        let policy = self.policy;
        let mut judge = |offer: &CompiledOffer, explain: &mut Vec<OfferExplain>| -> bool {
            let judged = self.judge(offer);
            if let Some(e) = judged.error.clone() {
                errors.push((offer.doc.key.clone(), e));
            }
            if self.explain {
                explain.push(OfferExplain {
                    offer: offer.doc.key.clone(),
                    eligible: judged.eligible,
                    chosen: false,
                    why: judged.why,
                    values: judged.values,
                    score: None,
                    estimate: None,
                });
            }
            judged.eligible
        };
        let explained =
            |explain: &mut Vec<OfferExplain>, key: &str, f: &dyn Fn(&mut OfferExplain)| {
                if let Some(e) = explain.iter_mut().find(|e| e.offer == key) {
                    f(e);
                }
            };
        match &policy.doc.ranking {
            Ranking::Priority => {
                // Highest priority first, ties at random; judged in that order until
                // enough are eligible (all of them when explaining).
                let mut order: Vec<(i64, u64, &'a CompiledOffer)> = policy
                    .candidates
                    .iter()
                    .map(|o| (o.doc.priority, rng.random::<u64>(), &**o))
                    .collect();
                order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut eligible = Vec::new();
                for (priority, _, offer) in order {
                    // One more than shown, in case one's content fails to render.
                    if !self.explain && eligible.len() > wanted {
                        break;
                    }
                    if judge(offer, explain) {
                        explained(explain, &offer.doc.key, &|e| {
                            e.score = Some(priority as f64)
                        });
                        eligible.push(offer);
                    }
                }
                ("priority", eligible)
            }
            Ranking::Formula { .. } => {
                let mut scored: Vec<(f64, u64, &'a CompiledOffer)> = Vec::new();
                let mut failed = Vec::new();
                for offer in policy.candidates.iter().map(|o| &**o) {
                    if !judge(offer, explain) {
                        continue;
                    }
                    match self.formula(offer) {
                        Ok(score) => {
                            explained(explain, &offer.doc.key, &|e| e.score = Some(score));
                            scored.push((score, rng.random::<u64>(), offer));
                        }
                        Err(e) => {
                            let why = format!("the ranking formula failed: {e}");
                            explained(explain, &offer.doc.key, &|x| {
                                x.eligible = false;
                                x.why = Some(why.clone());
                            });
                            failed.push((offer.doc.key.clone(), e));
                        }
                    }
                }
                errors.extend(failed);
                scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                ("formula", scored.into_iter().map(|s| s.2).collect())
            }
            Ranking::Learned {
                exploration,
                control,
            } => {
                let mut eligible: Vec<&'a CompiledOffer> = policy
                    .candidates
                    .iter()
                    .map(|o| &**o)
                    .filter(|o| judge(o, explain))
                    .collect();
                let in_control =
                    *control > 0.0 && share_of(self.visitor.id, &policy.doc.key) < *control;
                let explore = !in_control && rng.random::<f64>() < *exploration;
                let counts = |offer: &CompiledOffer| {
                    let (displays, clicks) =
                        self.counts.learned(&policy.doc.placement, &offer.doc.key);
                    (displays, clicks.min(displays))
                };
                if self.explain {
                    for offer in &eligible {
                        let (displays, clicks) = counts(offer);
                        explained(explain, &offer.doc.key, &|e| {
                            e.estimate = Some(Estimate {
                                displays,
                                clicks,
                                mean: (clicks as f64 + 1.0) / (displays as f64 + 2.0),
                            });
                        });
                    }
                }
                if in_control || explore {
                    eligible.shuffle(rng);
                    return (if in_control { "control" } else { "exploration" }, eligible);
                }
                let mut sampled: Vec<(f64, &'a CompiledOffer)> = eligible
                    .into_iter()
                    .map(|offer| {
                        let (displays, clicks) = counts(offer);
                        let sample = rand_distr::Beta::new(
                            clicks as f64 + 1.0,
                            (displays - clicks) as f64 + 1.0,
                        )
                        .map(|b| b.sample(rng))
                        .unwrap_or(0.0);
                        (sample, offer)
                    })
                    .collect();
                for (score, offer) in &sampled {
                    explained(explain, &offer.doc.key, &|e| e.score = Some(*score));
                }
                sampled.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
                ("learned", sampled.into_iter().map(|s| s.1).collect())
            }
        }
    }

    /// Whether the offer may be shown to this person now.
    fn judge(&self, offer: &CompiledOffer) -> Judged {
        let no = |why: String| Judged {
            eligible: false,
            why: Some(why),
            values: Vec::new(),
            error: None,
        };
        let now = self.now;
        if let Some(starts) = offer.starts_at
            && now < starts
        {
            return no(format!(
                "it starts at {}",
                waymark_core::time::format_iso8601(starts)
            ));
        }
        if let Some(ends) = offer.ends_at
            && now >= ends
        {
            return no(format!(
                "it ended at {}",
                waymark_core::time::format_iso8601(ends)
            ));
        }
        for cap in &offer.caps {
            let since = cap.window_ms.map(|w| now.saturating_sub(w));
            let count = match cap.per {
                CapScope::Person => self.feedback.count(&offer.doc.key, cap.on, since),
                CapScope::Total => self.counts.total(&offer.doc.key, cap.on, since),
            };
            if count >= cap.max {
                let per = match cap.per {
                    CapScope::Person => "this person's",
                    CapScope::Total => "the total",
                };
                let on = match cap.on {
                    CapEvent::Display => "displays",
                    CapEvent::Click => "clicks",
                };
                let window = cap
                    .window
                    .as_ref()
                    .map_or_else(|| " ever".to_owned(), |w| format!(" in {w}"));
                return no(format!(
                    "capped: {per} {on}{window} reached {count} of {}",
                    cap.max
                ));
            }
        }
        let Some(rule) = &offer.eligibility else {
            return Judged {
                eligible: true,
                why: None,
                values: Vec::new(),
                error: None,
            };
        };
        let extra = ExtraVars {
            context: self.context,
            context_prepared: self.context_prepared,
            offer: None,
        };
        let person = Person {
            profile: self.visitor.profile,
            events: self.visitor.events,
            member_of: self.visitor.member_of,
        };
        let evaluation = rule.evaluate_shared(&person, now, &extra, self.profile, self.profile_of);
        let why = match (&evaluation.error, evaluation.member) {
            (Some(e), _) => Some(format!("its eligibility failed: {e}")),
            (None, false) => Some("its eligibility is false".to_owned()),
            (None, true) => None,
        };
        Judged {
            eligible: evaluation.member,
            why,
            values: if self.explain {
                evaluation.values
            } else {
                Vec::new()
            },
            error: evaluation.error,
        }
    }

    fn formula(&self, offer: &CompiledOffer) -> Result<f64, String> {
        let Some(formula) = &self.policy.formula else {
            return Ok(offer.doc.priority as f64);
        };
        let extra = ExtraVars {
            context: self.context,
            context_prepared: self.context_prepared,
            offer: Some(&offer.view_prepared),
        };
        let person = Person {
            profile: self.visitor.profile,
            events: self.visitor.events,
            member_of: self.visitor.member_of,
        };
        formula
            .number_shared(&person, self.now, &extra, self.profile, self.profile_of)
            .0
    }

    fn render(
        &self,
        offer: &CompiledOffer,
        profile_data: &mut Option<Value>,
    ) -> Result<Value, String> {
        let key = offer.doc.key.as_str();
        let placement = &self.policy.doc.placement;
        let contents = &self.catalogue.contents;
        if !contents.reads_data(key, placement) {
            return contents.render(key, placement, &Value::Null);
        }
        let profile = profile_data.get_or_insert_with(|| {
            self.visitor
                .profile
                .context_json(&self.visitor.profile.traits)
        });
        let data = json!({"profile": profile, "context": self.context, "offer": offer.view});
        contents.render(key, placement, &data)
    }
}

/// Where a person falls in [0, 1) for a policy: the same every time, independent between
/// policies.
fn share_of(id: &str, policy: &str) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{}:{id}{policy}", id.len()).as_bytes());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;

//! The learned ranker on a simulated population with known click rates, beside AJO's
//! documented rule (random until every offer has 100 displays, then Thompson sampling on
//! counts retrained every 6 hours):
//!
//!   cargo run --release -p waymark-engine --example ranker_simulation
//!
//! Ten offers on one placement, true click rates 1.0% to 5.5% (0.5 points apart), 2,000
//! decisions an hour; every display is a Bernoulli draw at the shown offer's rate. Waymark
//! decides through `CompiledCatalogue::decide` (learned ranking, 5% exploration), its counts
//! read again every simulated second as the server does. Reported: regret (expected clicks
//! lost against always showing the best offer) and the share of displays on the best offer,
//! averaged over 20 runs.

#![allow(clippy::print_stdout, reason = "the simulation's report is its output")]

use std::collections::HashMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use serde_json::json;
use waymark_core::decisioning::{
    CapEvent, Catalogue, ContentType, OfferDoc, PlacementDoc, PolicyDoc, Ranking, SurfaceChannel,
};
use waymark_engine::decisioning::{Ask, CompiledCatalogue, OfferCounts, Visitor, nobody};

const RATES: [f64; 10] = [
    0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.045, 0.050, 0.055,
];
const PER_HOUR: u64 = 2_000;
const RUNS: u64 = 20;
const CHECKPOINTS: [u64; 4] = [2_000, 10_000, 50_000, 100_000];

#[derive(Default, Clone)]
struct Counts(HashMap<String, (u64, u64)>);

impl OfferCounts for Counts {
    fn total(&self, _: &str, _: CapEvent, _: Option<i64>) -> u64 {
        0
    }
    fn learned(&self, _: &str, offer: &str) -> (u64, u64) {
        self.0.get(offer).copied().unwrap_or((0, 0))
    }
}

fn catalogue() -> CompiledCatalogue {
    let mut c = Catalogue::default();
    c.placements.insert(
        "hero".into(),
        PlacementDoc {
            key: "hero".into(),
            name: None,
            channel: SurfaceChannel::Web,
            surface: "web://shop.example/#hero".into(),
            content: ContentType::Text,
        },
    );
    for i in 0..RATES.len() {
        let key = format!("o{i}");
        c.offers.insert(
            key.clone(),
            OfferDoc {
                key,
                content: [("hero".to_owned(), json!("x"))].into(),
                ..OfferDoc::default()
            },
        );
    }
    c.policies.insert(
        "hero".into(),
        PolicyDoc {
            key: "hero".into(),
            placement: "hero".into(),
            items: 1,
            ranking: Ranking::Learned {
                exploration: 0.05,
                control: 0.0,
            },
            ..PolicyDoc::default()
        },
    );
    CompiledCatalogue::compile(c)
}

/// Chooses an offer index for one decision.
trait Ranker {
    fn choose(&mut self, n: u64, rng: &mut SmallRng) -> usize;
    fn learn(&mut self, n: u64, offer: usize, clicked: bool);
}

struct Waymark {
    catalogue: CompiledCatalogue,
    live: Counts,
    read: Counts,
    read_at_second: u64,
}

impl Ranker for Waymark {
    fn choose(&mut self, n: u64, rng: &mut SmallRng) -> usize {
        // The server reads everyone's counts once a second.
        let second = n * 3_600 / PER_HOUR;
        if second != self.read_at_second {
            self.read = self.live.clone();
            self.read_at_second = second;
        }
        let profile = nobody();
        let member_of = |_: &str| false;
        let visitor = Visitor {
            profile: &profile,
            events: &[],
            member_of: &member_of,
            id: "v",
            placed: &[],
        };
        let asks = [Ask {
            placement: "hero".into(),
            items: None,
        }];
        let decided = self
            .catalogue
            .decide(
                &visitor,
                &json!({}),
                &asks,
                0,
                rng.random(),
                &self.read,
                false,
            )
            .expect("the placement exists");
        let offer = decided[0].items[0].offer.as_deref().expect("an offer");
        offer[1..].parse().expect("o<i>")
    }

    fn learn(&mut self, _: u64, offer: usize, clicked: bool) {
        let c = self.live.0.entry(format!("o{offer}")).or_default();
        c.0 += 1;
        c.1 += u64::from(clicked);
    }
}

/// AJO's auto-optimisation as documented: random until every offer has 100 displays, then
/// Thompson sampling on the counts as of the last retraining, every 6 hours.
struct Ajo {
    live: Vec<(u64, u64)>,
    model: Option<Vec<(u64, u64)>>,
    trained_at_hour: u64,
}

impl Ranker for Ajo {
    fn choose(&mut self, n: u64, rng: &mut SmallRng) -> usize {
        let hour = n / PER_HOUR;
        if hour >= self.trained_at_hour + 6 {
            self.trained_at_hour = hour - hour % 6;
            if self.live.iter().all(|(d, _)| *d >= 100) {
                self.model = Some(self.live.clone());
            }
        }
        match &self.model {
            None => rng.random_range(0..RATES.len()),
            Some(model) => {
                let mut best = (f64::MIN, 0);
                for (i, (d, c)) in model.iter().enumerate() {
                    let sample = rand_distr::Beta::new(*c as f64 + 1.0, (d - c) as f64 + 1.0)
                        .map(|b| b.sample(rng))
                        .unwrap_or(0.0);
                    if sample > best.0 {
                        best = (sample, i);
                    }
                }
                best.1
            }
        }
    }

    fn learn(&mut self, _: u64, offer: usize, clicked: bool) {
        self.live[offer].0 += 1;
        self.live[offer].1 += u64::from(clicked);
    }
}

/// (regret, share on the best offer) at each checkpoint, for one run.
fn run(ranker: &mut dyn Ranker, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let best = RATES.len() - 1;
    let (mut regret, mut on_best) = (0.0, 0u64);
    let mut out = Vec::new();
    for n in 1..=*CHECKPOINTS.last().unwrap_or(&0) {
        let offer = ranker.choose(n, &mut rng);
        let clicked = rng.random::<f64>() < RATES[offer];
        ranker.learn(n, offer, clicked);
        regret += RATES[best] - RATES[offer];
        on_best += u64::from(offer == best);
        if CHECKPOINTS.contains(&n) {
            out.push((regret, on_best as f64 / n as f64));
        }
    }
    out
}

fn main() {
    let mut totals = [
        vec![(0.0, 0.0); CHECKPOINTS.len()],
        vec![(0.0, 0.0); CHECKPOINTS.len()],
    ];
    for seed in 0..RUNS {
        let mut waymark = Waymark {
            catalogue: catalogue(),
            live: Counts::default(),
            read: Counts::default(),
            read_at_second: u64::MAX,
        };
        let mut ajo = Ajo {
            live: vec![(0, 0); RATES.len()],
            model: None,
            trained_at_hour: 0,
        };
        for (t, ranker) in [&mut waymark as &mut dyn Ranker, &mut ajo]
            .into_iter()
            .enumerate()
        {
            for (i, (regret, share)) in run(ranker, seed).into_iter().enumerate() {
                totals[t][i].0 += regret / RUNS as f64;
                totals[t][i].1 += share / RUNS as f64;
            }
        }
    }
    println!("10 offers, click rates 1.0%..5.5%, {PER_HOUR} decisions/h, mean of {RUNS} runs");
    println!(
        "| decisions | hours | Waymark regret | Waymark on best | AJO rule regret | AJO rule on best |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, n) in CHECKPOINTS.iter().enumerate() {
        println!(
            "| {n} | {:.0} | {:.1} clicks | {:.1}% | {:.1} clicks | {:.1}% |",
            *n as f64 / PER_HOUR as f64,
            totals[0][i].0,
            totals[0][i].1 * 100.0,
            totals[1][i].0,
            totals[1][i].1 * 100.0
        );
    }
}

//! Picking the winner of an A/B test (a `winner` node): pure, from the compared paths'
//! counters at the moment the test ends. A store calls [`decide`] once per node, keeps the
//! decision, and hands it to every plan after (`run::Catalog::winners`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use waymark_core::campaign::{chance_to_beat, proportion};
use waymark_core::journey::{NodeKind, WinnerMetric};

use crate::CompiledJourney;
use crate::stats::{JourneyStats, NodeStats};

/// The confidence a path must beat every other path with to win outright.
pub const CONFIDENCE: f64 = 0.95;

/// Decided winners: (journey key, winner node id) -> the path taken.
pub type Winners = HashMap<(String, String), String>;

/// One compared path at the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tested {
    pub path: String,
    /// Messages sent (opens, clicks) or people who reached the path (conversions).
    pub n: u64,
    pub hits: u64,
    pub rate: f64,
    pub interval: [f64; 2],
    /// The lowest chance, over the other paths, that this one's rate is above theirs.
    pub chance_to_beat_all: f64,
}

/// A winner node's decision, as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub chosen: String,
    pub metric: WinnerMetric,
    /// Whether `chosen` beat every other path with [`CONFIDENCE`]; if not, it is the
    /// node's `inconclusive` path, else the best rate.
    pub significant: bool,
    pub tested: Vec<Tested>,
}

/// How a path did on the metric: (n, hits).
fn measure(metric: WinnerMetric, node: &NodeStats) -> (u64, u64) {
    match metric {
        // Held messages (quiet hours) go later; suppressed ones never do.
        WinnerMetric::Opened => (node.entered.saturating_sub(node.suppressed), node.opened),
        WinnerMetric::Clicked => (node.entered.saturating_sub(node.suppressed), node.clicked),
        WinnerMetric::Converted => (node.entered, node.converted),
    }
}

/// Decides the winner node `node` of `journey` from the journey's counters; `None` if the
/// version has no such winner node.
pub fn decide(journey: &CompiledJourney, node: &str, stats: &JourneyStats) -> Option<Decision> {
    let idx = *journey.index.get(node)?;
    let NodeKind::Winner {
        paths,
        metric,
        inconclusive,
        ..
    } = &journey.doc.nodes[idx].kind
    else {
        return None;
    };
    let empty = NodeStats::default();
    let counts: Vec<(u64, u64)> = paths
        .iter()
        .map(|p| measure(*metric, stats.nodes.get(p).unwrap_or(&empty)))
        .collect();
    let tested: Vec<Tested> = paths
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (path, &(n, hits)))| {
            let (rate, interval) = proportion(hits, n);
            let chance_to_beat_all = counts
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, &(other_n, other_hits))| chance_to_beat(hits, n, other_hits, other_n))
                .fold(1.0f64, f64::min);
            Tested {
                path: path.clone(),
                n,
                hits,
                rate,
                interval,
                chance_to_beat_all,
            }
        })
        .collect();
    // The best rate; the first listed among equals.
    let best = tested.iter().enumerate().fold(
        0,
        |best, (i, t)| if t.rate > tested[best].rate { i } else { best },
    );
    let significant = tested
        .get(best)
        .is_some_and(|t| t.n > 0 && t.chance_to_beat_all >= CONFIDENCE);
    let chosen = match (significant, inconclusive) {
        (false, Some(other)) => other.clone(),
        _ => tested.get(best)?.path.clone(),
    };
    Some(Decision {
        chosen,
        metric: *metric,
        significant,
        tested,
    })
}

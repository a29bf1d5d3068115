//! Per-node counts for one journey, folded from its instances' step histories.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{JourneyState, Status};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    /// Times an instance reached the node.
    pub entered: u64,
    /// Active instances at the node now (waiting on a timer, an event or a webhook).
    pub waiting: u64,
    /// Times an instance went on from the node.
    pub passed: u64,
    /// Errors recorded at the node (failed expressions, failed webhooks).
    pub errored: u64,
    /// Instances that ended at the node without completing (exited, timed out, failed, stopped).
    pub exited: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct JourneyStats {
    pub instances: u64,
    pub active: u64,
    pub completed: u64,
    pub exited: u64,
    pub timed_out: u64,
    pub failed: u64,
    pub nodes: BTreeMap<String, NodeStats>,
}

pub fn compute<'a>(states: impl IntoIterator<Item = &'a JourneyState>) -> JourneyStats {
    let mut s = JourneyStats::default();
    for state in states {
        for i in &state.instances {
            s.instances += 1;
            match i.status {
                Status::Active => s.active += 1,
                Status::Completed => s.completed += 1,
                Status::Exited => s.exited += 1,
                Status::TimedOut => s.timed_out += 1,
                Status::Failed => s.failed += 1,
            }
            for step in &i.steps {
                let node = s.nodes.entry(step.node.clone()).or_default();
                match step.what.as_str() {
                    "entered" => node.entered += 1,
                    "error" => node.errored += 1,
                    _ => {}
                }
            }
            if let Some(at) = &i.node {
                let node = s.nodes.entry(at.clone()).or_default();
                match i.status {
                    Status::Active => node.waiting += 1,
                    Status::Exited | Status::TimedOut | Status::Failed => node.exited += 1,
                    Status::Completed => {}
                }
            }
        }
    }
    for node in s.nodes.values_mut() {
        // A completed instance's last node ("end", "jump") counts as passed.
        node.passed = node.entered.saturating_sub(node.waiting + node.exited);
    }
    s
}

//! The conformance suite: the behaviour every storage backend must show, written once.
//!
//! A backend's test file calls [`conformance_suite!`](crate::conformance_suite) with an
//! expression that yields a fresh [`Backend`] (an empty database) for each test.

use async_trait::async_trait;
use serde_json::{Value, json};
use waymark_core::segment::{Receipt, parse_batch};
use waymark_core::time::parse_iso8601;
use waymark_core::{Event, Identity, partition_of};
use waymark_engine::Effect;

mod audiences;
mod decisioning;
mod governance;
mod journeys;
mod outbox;
mod profiles;

pub use audiences::*;
pub use decisioning::*;
pub use governance::*;
pub use journeys::*;
pub use outbox::*;
pub use profiles::*;

use crate::{
    Delivery, JourneyAction, JourneyRunStore, JourneyStatus, JourneyStore, MessageEvent,
    OutboxStore, PageRequest, ProfileStore, Store, StoreOptions, SuppressionStore, TemplateStore,
    Transition,
};

/// A place a store can be opened, and opened again (to prove durability).
#[async_trait]
pub trait Backend: Send + Sync {
    type Store: Store;
    async fn open(&self, options: StoreOptions) -> Self::Store;
}

#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            profile_round_trip,
            every_identity_finds_the_profile,
            replayed_batch_changes_nothing,
            identify_merges_anonymous_history,
            known_people_sharing_a_device_stay_apart,
            events_page_newest_first,
            erase_removes_profile_identities_and_events,
            count_retention_keeps_newest,
            age_retention_prunes_old_events,
            data_survives_reopen,
            concurrent_ingest_loses_nothing,
            partition_is_hash_of_profile_id,
            journey_drafts_versions_and_lifecycle,
            journeys_are_listed_by_key,
            live_journeys_run_on_ingest_and_timers_fire,
            outbox_claims_leases_and_completes_effects,
            jumps_rate_limits_and_stats_counters,
            templates_keep_every_changed_version,
            governance_caps_across_journeys_and_quiet_hours_hold,
            suppression_list_counts_bounces_and_binds_every_message,
            dead_push_tokens_are_forgotten,
            provider_reports_are_kept_per_message_once_per_status,
            a_long_history_is_read_newest_first_and_bounded,
            finished_messages_are_pruned_after_retention,
            audiences_stay_current_on_ingest_and_as_time_passes,
            a_new_or_edited_audience_is_backfilled_from_stored_events,
            a_backfill_goes_in_steps_and_starts_again_after_an_edit,
            snapshot_audiences_change_only_when_they_run,
            batch_evaluation_agrees_with_the_backfill,
            calendar_rules_flip_at_the_persons_midnight,
            journeys_read_their_audience_in_paced_steps_and_on_schedule,
            a_winner_node_sends_the_rest_the_best_path_once,
            a_paused_journey_holds_its_messages_and_a_stopped_one_sends_nothing_more,
            the_decisioning_catalogue_is_checked_whole_and_feedback_counted_once,
            content_journeys_place_lasts_while_the_instance_does,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend.await;
                $crate::conformance::$case(&backend).await;
            }
        )*
    };
}

/// Parses a Segment batch the way the server does, received at a fixed instant.
pub fn events(batch: Value) -> Vec<Event> {
    let body = serde_json::to_vec(&json!({ "batch": batch })).expect("json");
    let mut n = 0u64;
    let mut gen_id = || {
        n += 1;
        format!("generated-{n}-{}", std::process::id())
    };
    let received = parse_iso8601("2026-11-29T12:00:00Z").expect("time");
    parse_batch(
        &body,
        &mut Receipt {
            received_at: received,
            new_message_id: &mut gen_id,
        },
    )
    .expect("valid batch")
    .events
}

fn id(ns: &str, value: &str) -> Identity {
    Identity::parse(ns, value).expect("identity")
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        before: None,
        limit,
    }
}

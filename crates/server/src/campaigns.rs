//! The campaigns API (admin token): a campaign is a short document run as the journey it
//! makes (`waymark_core::campaign`), kept under the same key, so its versions, lifecycle,
//! pace and per-node counters are the journey's. Launching publishes that journey; with
//! `requires_approval`, launching asks and a second action (`approve`) publishes.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use waymark_core::campaign::{
    self, Campaign, HOLDOUT_NODE, WINNER_NODE, journey_field, variant_node,
};
use waymark_core::journey::lifecycle::Status;
use waymark_core::journey::validate;
use waymark_core::time::{Millis, format_iso8601};
use waymark_store::{JourneyAction, JourneyRecord, Transition, wall_clock_ms};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::journeys::{ReadView, publish, store_draft, unknown_audiences};
use crate::versions::{key_mismatch, read_document};

const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// A campaign: its document, where it stands, and its reads of the audience.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignView {
    pub key: String,
    /// draft, awaiting_approval, scheduled, running, paused, completed or cancelled.
    pub status: &'static str,
    /// The document as last put.
    #[schema(value_type = Object)]
    pub document: Value,
    /// The version sending (the journey's live version), if launched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_requested_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadView>,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

fn mark(record: &JourneyRecord, name: &str) -> Option<Millis> {
    record.draft["campaign"][name].as_i64()
}

/// Where a campaign stands, from its journey: its status, its read of the audience and
/// whether anyone is still in it (`active`).
fn status(record: &JourneyRecord, active: u64) -> &'static str {
    let asked = mark(record, "launch_requested_at").is_some();
    let approved = mark(record, "approved_at").is_some();
    match record.status {
        Status::Draft if asked && !approved => "awaiting_approval",
        Status::Draft => "draft",
        Status::Paused => "paused",
        Status::Stopped => "cancelled",
        Status::Closed => "completed",
        Status::Live => match record.read.as_deref() {
            Some(r) if r.started_at.is_some() => "running",
            Some(r) if r.due_at.is_some() && r.last_finished_at.is_none() => "scheduled",
            _ if active > 0 => "running",
            Some(r) if r.due_at.is_some() => "scheduled",
            _ => "completed",
        },
    }
}

async fn view(state: &AppState, record: JourneyRecord) -> Result<CampaignView, ApiError> {
    let active = if record.status == Status::Live {
        state.store.journey_stats(&record.key).await?.active
    } else {
        0
    };
    Ok(CampaignView {
        status: status(&record, active),
        document: record.draft["campaign"]["document"].clone(),
        version: record.live_version,
        launch_requested_at: mark(&record, "launch_requested_at").map(format_iso8601),
        approved_at: mark(&record, "approved_at").map(format_iso8601),
        read: record.read.clone().map(|r| ReadView::from(*r)),
        updated_at: format_iso8601(record.updated_at.max(record.draft_updated_at)),
        key: record.key,
    })
}

fn no_campaign(key: &str) -> ApiError {
    ApiError::not_found(format!("no campaign has the key {key:?}"))
}

/// The campaign's journey, if `key` is a campaign's.
async fn campaign_journey(state: &AppState, key: &str) -> Result<JourneyRecord, ApiError> {
    state
        .store
        .journey(key)
        .await?
        .filter(|r| r.draft.get("campaign").is_some())
        .ok_or_else(|| no_campaign(key))
}

/// Creates the campaign or replaces its draft (a launched campaign goes on sending its
/// launched version until the edit is launched). Refused with every problem, at the
/// campaign's own paths: unknown audiences, bad shares, schedule, channel.
#[utoipa::path(put, path = "/v1/campaigns/{key}", tag = "campaigns",
    params(("key" = String, Path, description = "The campaign's key; must match `key` in the document")),
    request_body(content = Object, description = "A campaign document, as JSON or YAML (Content-Type: application/yaml)"),
    responses((status = 200, body = CampaignView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, description = "A journey that is not a campaign's has this key", body = ErrorBody),
        (status = 422, description = "Every problem, with its path", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn put_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<axum::Json<CampaignView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let campaign: Campaign =
        read_document(&headers, body, "a campaign", MAX_DOCUMENT_BYTES).await?;
    let mut problems = campaign.problems();
    if let Some(mismatch) = key_mismatch(&campaign.key, &key) {
        problems.insert(0, mismatch);
    }
    let journey = campaign.to_journey();
    let translate = |mut e: waymark_core::FieldError| {
        e.field = journey_field(&campaign, &journey, &e.field);
        e
    };
    problems.extend(validate(&journey).into_iter().map(translate));
    problems.extend(
        unknown_audiences(&state, &journey)
            .await?
            .into_iter()
            .map(translate),
    );
    if campaign.channel != "log" {
        for (i, (_, template, _)) in campaign.shares().iter().enumerate() {
            if state.store.template(template).await?.is_none() {
                let field = match campaign.template {
                    Some(_) => "template".to_owned(),
                    None => format!("variants[{i}].template"),
                };
                problems.push(waymark_core::FieldError::new(
                    "unknown_template",
                    field,
                    format!(
                        "no template has the key {template:?}; PUT /v1/templates/{template} first"
                    ),
                ));
            }
        }
    }
    let record = store_draft(&state, &key, &journey, problems, "invalid_campaign").await?;
    Ok(axum::Json(view(&state, record).await?))
}

/// One campaign.
#[utoipa::path(get, path = "/v1/campaigns/{key}", tag = "campaigns",
    params(("key" = String, Path)),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<axum::Json<CampaignView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let record = campaign_journey(&state, &key).await?;
    Ok(axum::Json(view(&state, record).await?))
}

/// Every campaign, by key.
#[utoipa::path(get, path = "/v1/campaigns", tag = "campaigns",
    responses((status = 200, body = CampaignList), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_campaigns(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<CampaignList>, ApiError> {
    state.keys.require_admin(&headers)?;
    let mut campaigns = Vec::new();
    for record in state.store.journeys().await? {
        if record.draft.get("campaign").is_some() {
            campaigns.push(view(&state, record).await?);
        }
    }
    Ok(axum::Json(CampaignList { campaigns }))
}

/// Puts a launch or approval mark on the draft.
async fn put_mark(
    state: &AppState,
    record: &JourneyRecord,
    name: &str,
    now: Millis,
) -> Result<(), ApiError> {
    let mut draft = record.draft.clone();
    draft["campaign"][name] = json!(now);
    state
        .store
        .put_journey_draft(&record.key, &draft, now)
        .await?;
    Ok(())
}

/// A campaign that picks a winner and has no `send_at` tests from its launch: its
/// journey's draft is made again with the winner's time counted from `now`.
async fn time_winner(state: &AppState, key: &str, now: Millis) -> Result<(), ApiError> {
    let record = campaign_journey(state, key).await?;
    let Some(campaign) =
        campaign::of_journey(&record.draft).filter(|c| c.winner.is_some() && c.send_at.is_none())
    else {
        return Ok(());
    };
    let mut draft = serde_json::to_value(campaign.to_journey_launched(Some(now)))
        .map_err(|e| ApiError::bad_request("invalid_document", e.to_string()))?;
    draft["campaign"] = record.draft["campaign"].clone();
    state.store.put_journey_draft(key, &draft, now).await?;
    Ok(())
}

/// `launch` (sends the draft at its time; with `requires_approval`, asks for approval),
/// `approve` (a launch that asked: sends it), `pause`, `resume`, `cancel`.
#[utoipa::path(post, path = "/v1/campaigns/{key}/{action}", tag = "campaigns",
    params(("key" = String, Path), ("action" = String, Path, description = "launch | approve | pause | resume | cancel")),
    responses((status = 200, body = CampaignView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Not allowed now (nothing awaits approval; the lifecycle does not allow it)", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn campaign_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((key, action)): Path<(String, String)>,
) -> Result<axum::Json<CampaignView>, ApiError> {
    state.keys.require_admin(&headers)?;
    let now = wall_clock_ms();
    let record = campaign_journey(&state, &key).await?;
    let lifecycle = match action.as_str() {
        "launch" => {
            if mark(&record, "launch_requested_at").is_none() {
                put_mark(&state, &record, "launch_requested_at", now).await?;
            }
            let needs_approval =
                campaign::of_journey(&record.draft).is_some_and(|c| c.requires_approval);
            if needs_approval && mark(&record, "approved_at").is_none() {
                tracing::info!(campaign = %key, "campaign launch awaits approval");
            } else {
                time_winner(&state, &key, now).await?;
                publish(&state, &key, now).await?;
                tracing::info!(campaign = %key, "campaign launched");
            }
            None
        }
        "approve" => {
            if mark(&record, "launch_requested_at").is_none()
                || mark(&record, "approved_at").is_some()
            {
                return Err(ApiError::conflict(
                    "nothing_to_approve",
                    format!("campaign {key:?} has no launch awaiting approval"),
                ));
            }
            put_mark(&state, &record, "approved_at", now).await?;
            time_winner(&state, &key, now).await?;
            publish(&state, &key, now).await?;
            tracing::info!(campaign = %key, "campaign approved and launched");
            None
        }
        "pause" => Some(JourneyAction::Pause),
        "resume" => Some(JourneyAction::Resume),
        "cancel" => Some(JourneyAction::Stop),
        other => {
            return Err(ApiError::not_found(format!(
                "unknown campaign action {other:?}; use launch, approve, pause, resume or cancel"
            )));
        }
    };
    if let Some(action) = lifecycle {
        match state
            .store
            .change_journey_status(&key, action, now)
            .await?
            .ok_or_else(|| no_campaign(&key))?
        {
            Transition::Done(_) => {}
            Transition::Refused { reason, .. } => {
                return Err(ApiError::conflict("invalid_transition", reason));
            }
        }
    }
    let record = campaign_journey(&state, &key).await?;
    Ok(axum::Json(view(&state, record).await?))
}

/// What became of one variant (or the holdout).
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantReport {
    pub key: String,
    pub percent: u32,
    /// People assigned to it.
    pub assigned: u64,
    /// Messages sent (or queued for their channel), held for quiet hours (sent later), and
    /// not sent (suppression list, unsubscribed, caps).
    pub sent: u64,
    pub held: u64,
    pub suppressed: u64,
    /// Emails opened and clicked (tracked email: each message counted once for each).
    pub opened: u64,
    pub clicked: u64,
    /// Provider reports: delivered, undelivered, bounced, complained (each message once
    /// for each).
    pub delivered: u64,
    pub undelivered: u64,
    pub bounced: u64,
    pub complained: u64,
    /// Each of those per message sent, with its 95% interval (Wilson).
    #[schema(value_type = Object)]
    pub rates: std::collections::BTreeMap<&'static str, Rate>,
    /// People who reached the conversion goal within its window, and the revenue.
    pub converted: u64,
    pub revenue: f64,
    /// `converted / assigned`, with its 95% interval (Wilson).
    pub conversion_rate: f64,
    pub conversion_interval: [f64; 2],
    /// The probability that this variant's conversion rate is above the holdout's
    /// (normal approximation); absent without a holdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chance_to_beat_holdout: Option<f64>,
}

/// A share of messages sent, with its 95% interval.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rate {
    pub rate: f64,
    pub interval: [f64; 2],
}

impl Rate {
    fn of(hits: u64, n: u64) -> Self {
        let (rate, interval) = campaign::proportion(hits, n);
        Rate { rate, interval }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignReport {
    pub key: String,
    pub status: &'static str,
    /// Audience members read, and of them those left out by `exclude`.
    pub targeted: u64,
    pub excluded: u64,
    pub entered: u64,
    pub variants: Vec<VariantReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout: Option<VariantReport>,
    /// The winner selection, for a campaign that has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner: Option<WinnerReport>,
    /// With `?series=hour`: what happened each hour, per group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<SeriesRow>>,
}

/// One hour of one group (a variant or the holdout): what happened in it.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct SeriesRow {
    /// The start of the hour (RFC 3339, UTC).
    pub hour: String,
    pub group: String,
    pub assigned: u64,
    pub held: u64,
    pub suppressed: u64,
    pub opened: u64,
    pub clicked: u64,
    pub delivered: u64,
    pub undelivered: u64,
    pub bounced: u64,
    pub complained: u64,
    pub converted: u64,
    pub revenue: f64,
}

/// The campaign's hourly series, a row per hour and group in hour order.
async fn campaign_series(state: &AppState, key: &str) -> Result<Vec<SeriesRow>, ApiError> {
    let mut hours: std::collections::BTreeMap<Millis, Vec<(String, String, i64)>> =
        Default::default();
    for (hour, node, name, value) in state.store.journey_series(key).await? {
        hours.entry(hour).or_default().push((node, name, value));
    }
    let mut rows = Vec::new();
    for (hour, counters) in hours {
        let counted = waymark_engine::stats::from_counters(
            counters
                .iter()
                .map(|(n, c, v)| (n.as_str(), c.as_str(), *v)),
        );
        for (node, n) in counted.nodes {
            let group = match node.strip_prefix("variant-") {
                Some(variant) => variant.to_owned(),
                None if node == HOLDOUT_NODE => node,
                None => continue,
            };
            rows.push(SeriesRow {
                hour: format_iso8601(hour),
                group,
                assigned: n.entered,
                held: n.held,
                suppressed: n.suppressed,
                opened: n.opened,
                clicked: n.clicked,
                delivered: n.delivered,
                undelivered: n.undelivered,
                bounced: n.bounced,
                complained: n.complained,
                converted: n.converted,
                revenue: n.revenue_cents as f64 / 100.0,
            });
        }
    }
    Ok(rows)
}

/// The series as CSV: a header (the fields' names), then a row per hour and group.
fn series_csv(rows: &[SeriesRow]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for r in rows {
        // Writing to memory cannot fail.
        let _ = writer.serialize(r);
    }
    if rows.is_empty() {
        let _ = writer.write_record([
            "hour",
            "group",
            "assigned",
            "held",
            "suppressed",
            "opened",
            "clicked",
            "delivered",
            "undelivered",
            "bounced",
            "complained",
            "converted",
            "revenue",
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// Where a campaign's winner selection stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct WinnerReport {
    /// opened, clicked or converted.
    pub metric: &'static str,
    /// When the test ends (RFC 3339).
    pub at: String,
    /// `testing` until the winner is decided, then `decided`.
    pub state: &'static str,
    /// People waiting for the winner now.
    pub waiting: u64,
    /// The variant the rest gets, once decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// Whether it beat every other variant with 95% confidence (if not, it is
    /// `inconclusive`'s variant, else the best rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub significant: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// Each variant's test counts at the decision.
    pub test: Vec<TestedVariant>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestedVariant {
    pub key: String,
    /// Emails sent (opens, clicks) or people assigned (conversions).
    pub n: u64,
    pub hits: u64,
    pub rate: f64,
    pub interval: [f64; 2],
    /// The lowest probability, over the other variants, that this one's rate is above theirs.
    pub chance_to_beat_all: f64,
}

fn variant_of(node: &str) -> String {
    node.strip_prefix("variant-").unwrap_or(node).to_owned()
}

/// The winner selection of a campaign's journey as it stands.
async fn winner_report(
    state: &AppState,
    record: &JourneyRecord,
    campaign: &Campaign,
    stats: &waymark_engine::stats::JourneyStats,
) -> Result<Option<WinnerReport>, ApiError> {
    let Some(rule) = &campaign.winner else {
        return Ok(None);
    };
    let at = record.draft["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == WINNER_NODE))
        .and_then(|n| n["at"].as_str())
        .unwrap_or_default()
        .to_owned();
    let decided = state
        .store
        .journey_winners(&record.key)
        .await?
        .into_iter()
        .find(|w| w.node == WINNER_NODE);
    let test = decided
        .as_ref()
        .map(|w| {
            w.decision
                .tested
                .iter()
                .map(|t| TestedVariant {
                    key: variant_of(&t.path),
                    n: t.n,
                    hits: t.hits,
                    rate: t.rate,
                    interval: t.interval,
                    chance_to_beat_all: t.chance_to_beat_all,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(WinnerReport {
        metric: rule.metric.as_str(),
        at,
        state: if decided.is_some() {
            "decided"
        } else {
            "testing"
        },
        waiting: stats.nodes.get(WINNER_NODE).map_or(0, |n| n.waiting),
        chosen: decided.as_ref().map(|w| variant_of(&w.decision.chosen)),
        significant: decided.as_ref().map(|w| w.decision.significant),
        decided_at: decided.as_ref().map(|w| format_iso8601(w.decided_at)),
        test,
    }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `json` (default) or `csv`: a row per variant and the holdout.
    pub format: Option<String>,
    /// `hour`: also the time series, a row per hour and group (as CSV: only the series).
    pub series: Option<String>,
}

/// Targeted, excluded, and per variant and holdout: assigned, sent, held, suppressed,
/// opened, clicked, converted, revenue, the conversion rate with its interval and the
/// chance to beat the holdout; as JSON, or with `?format=csv` a row per group.
#[utoipa::path(get, path = "/v1/campaigns/{key}/report", tag = "campaigns",
    params(("key" = String, Path), ReportQuery),
    responses((status = 200, body = CampaignReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn campaign_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ReportQuery>,
) -> Result<axum::response::Response, ApiError> {
    state.keys.require_admin(&headers)?;
    let series = match q.series.as_deref() {
        None => false,
        Some("hour") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_series",
                format!("series {other:?}: use hour"),
            ));
        }
    };
    let record = campaign_journey(&state, &key).await?;
    let mut report = build_report(&state, record).await?;
    if series {
        report.series = Some(campaign_series(&state, &key).await?);
    }
    match q.format.as_deref() {
        None | Some("json") => Ok(axum::response::IntoResponse::into_response(axum::Json(
            report,
        ))),
        Some("csv") => Ok(axum::response::IntoResponse::into_response((
            [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            match &report.series {
                Some(rows) => series_csv(rows),
                None => report_csv(&report),
            },
        ))),
        Some(other) => Err(ApiError::bad_request(
            "invalid_format",
            format!("format {other:?}: use json or csv"),
        )),
    }
}

/// The report as CSV: a header, then a row per variant and the holdout.
fn report_csv(report: &CampaignReport) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "group",
        "percent",
        "assigned",
        "sent",
        "held",
        "suppressed",
        "opened",
        "clicked",
        "delivered",
        "undelivered",
        "bounced",
        "complained",
        "converted",
        "revenue",
        "conversion_rate",
        "conversion_low",
        "conversion_high",
        "chance_to_beat_holdout",
    ];
    // Writing to memory cannot fail.
    let _ = writer.write_record(header);
    for g in report.variants.iter().chain(&report.holdout) {
        let _ = writer.write_record([
            g.key.clone(),
            g.percent.to_string(),
            g.assigned.to_string(),
            g.sent.to_string(),
            g.held.to_string(),
            g.suppressed.to_string(),
            g.opened.to_string(),
            g.clicked.to_string(),
            g.delivered.to_string(),
            g.undelivered.to_string(),
            g.bounced.to_string(),
            g.complained.to_string(),
            g.converted.to_string(),
            g.revenue.to_string(),
            g.conversion_rate.to_string(),
            g.conversion_interval[0].to_string(),
            g.conversion_interval[1].to_string(),
            g.chance_to_beat_holdout
                .map(|p| p.to_string())
                .unwrap_or_default(),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// The report of the campaign whose journey `record` is (read once by the caller).
async fn build_report(state: &AppState, record: JourneyRecord) -> Result<CampaignReport, ApiError> {
    let key = record.key.as_str();
    let campaign = campaign::of_journey(&record.draft).ok_or_else(|| no_campaign(key))?;
    let stats = state.store.journey_stats(key).await?;
    let node = |id: &str, key: &str, percent: u32| {
        let n = stats.nodes.get(id).cloned().unwrap_or_default();
        let (conversion_rate, conversion_interval) = campaign::proportion(n.converted, n.entered);
        let sent = n.entered.saturating_sub(n.suppressed + n.held);
        let rates = [
            ("delivered", n.delivered),
            ("opened", n.opened),
            ("clicked", n.clicked),
            ("bounced", n.bounced),
            ("complained", n.complained),
        ]
        .into_iter()
        .map(|(name, hits)| (name, Rate::of(hits, sent)))
        .collect();
        VariantReport {
            key: key.to_owned(),
            percent,
            assigned: n.entered,
            sent,
            held: n.held,
            suppressed: n.suppressed,
            opened: n.opened,
            clicked: n.clicked,
            delivered: n.delivered,
            undelivered: n.undelivered,
            bounced: n.bounced,
            complained: n.complained,
            rates,
            converted: n.converted,
            revenue: n.revenue_cents as f64 / 100.0,
            conversion_rate,
            conversion_interval,
            chance_to_beat_holdout: None,
        }
    };
    let holdout =
        (campaign.holdout > 0).then(|| node(HOLDOUT_NODE, HOLDOUT_NODE, campaign.holdout));
    let variants = campaign
        .shares()
        .iter()
        .map(|(key, _, percent)| {
            let mut v = node(&variant_node(key), key, *percent);
            v.chance_to_beat_holdout = holdout.as_ref().map(|h| {
                campaign::chance_to_beat(v.converted, v.assigned, h.converted, h.assigned)
            });
            v
        })
        .collect();
    let winner = winner_report(state, &record, &campaign, &stats).await?;
    let read = record.read.as_deref();
    let targeted = read.map_or(0, |r| r.last_read + r.read);
    let excluded = read.map_or(0, |r| r.last_excluded + r.excluded);
    Ok(CampaignReport {
        key: key.to_owned(),
        status: status(&record, stats.active),
        targeted,
        excluded,
        entered: stats.instances,
        variants,
        holdout,
        winner,
        series: None,
    })
}

/// One variant rendered for a person.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantPreview {
    pub key: String,
    pub template: String,
    /// `{channel, fields: {subject, html, ...}}`, as a send would render it.
    #[schema(value_type = Object)]
    pub rendered: waymark_core::content::Rendered,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignPreview {
    pub variants: Vec<VariantPreview>,
}

/// Renders every variant of the campaign's draft for a chosen person (`profile`, and
/// `traits` to try others on), exactly as a send would; nothing is sent or counted.
#[utoipa::path(post, path = "/v1/campaigns/{key}/preview", tag = "campaigns",
    params(("key" = String, Path)),
    request_body = crate::templates::PreviewRequest,
    responses((status = 200, body = CampaignPreview), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, description = "A variant's template failed to render", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn preview_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<axum::Json<CampaignPreview>, ApiError> {
    state.keys.require_admin(&headers)?;
    let mut req: crate::templates::PreviewRequest = crate::templates::json_body(body).await?;
    let record = campaign_journey(&state, &key).await?;
    let campaign = campaign::of_journey(&record.draft).ok_or_else(|| no_campaign(&key))?;
    req.version = None;
    req.journey =
        Some(json!({"entry": {"audience": campaign.audience, "read_at": wall_clock_ms()}}));
    let mut variants = Vec::new();
    for (variant, template, _) in campaign.shares() {
        let rendered = crate::templates::render(&state, &template, &req).await?;
        variants.push(VariantPreview {
            key: variant,
            template,
            rendered,
        });
    }
    Ok(axum::Json(CampaignPreview { variants }))
}

/// Most addresses one proof request sends to.
const MAX_PROOF_ADDRESSES: usize = 20;

/// A proof request: where to send a rendered proof of every variant, and who to render for.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProofRequest {
    /// The seed list: email addresses (email campaigns) or phone numbers (SMS), at most 20.
    pub to: Vec<String>,
    /// A test profile to render for, by identity (default: nobody, no traits).
    #[serde(default)]
    pub profile: Option<crate::templates::PreviewIdentity>,
    /// Traits to render with (over the test profile's).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub traits: Option<serde_json::Map<String, Value>>,
}

/// One proof queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProofQueued {
    pub variant: String,
    pub to: String,
    /// The message's key (its delivery: `GET /v1/messages/reports?key=`).
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProofsQueued {
    pub proofs: Vec<ProofQueued>,
}

/// Sends a proof of every variant of the draft to each address of a seed list, rendered
/// for a test profile; marked `[Proof <variant>]` in the subject (email) or text (SMS).
/// Proofs skip governance (they go to your own addresses, suppressed ones excepted) and
/// are counted in no report and no cap.
#[utoipa::path(post, path = "/v1/campaigns/{key}/proof", tag = "campaigns",
    params(("key" = String, Path)),
    request_body = ProofRequest,
    responses((status = 202, body = ProofsQueued), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, description = "Not a channel proofs go on, a suppressed address, or a variant that fails to render", body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn proof_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<(axum::http::StatusCode, axum::Json<ProofsQueued>), ApiError> {
    state.keys.require_admin(&headers)?;
    let req: ProofRequest = crate::templates::json_body(body).await?;
    let record = campaign_journey(&state, &key).await?;
    let campaign = campaign::of_journey(&record.draft).ok_or_else(|| no_campaign(&key))?;
    let channel = campaign.channel.as_str();
    if !matches!(channel, "email" | "sms") {
        return Err(ApiError::unprocessable(
            "invalid_proof",
            vec![waymark_core::FieldError::new(
                "invalid_value",
                "channel",
                format!("proofs go to addresses: email or sms campaigns, not {channel}"),
            )],
        ));
    }
    if req.to.is_empty() || req.to.len() > MAX_PROOF_ADDRESSES {
        return Err(ApiError::field(
            "invalid_value",
            "to",
            format!("1 to {MAX_PROOF_ADDRESSES} addresses"),
        ));
    }
    let mut addresses = Vec::with_capacity(req.to.len());
    for (i, raw) in req.to.iter().enumerate() {
        let address = waymark_core::governance::suppression_address(channel, raw)
            .and_then(|a| match channel {
                "email" => a
                    .parse::<email_address::EmailAddress>()
                    .map(|_| a)
                    .map_err(|e| format!("{raw:?} is not an email address: {e}")),
                _ => Ok(a),
            })
            .map_err(|m| ApiError::field("invalid_address", &format!("to[{i}]"), m))?;
        if let Some(s) = state.store.suppression(channel, &address).await? {
            return Err(ApiError::unprocessable(
                "invalid_proof",
                vec![waymark_core::FieldError::new(
                    "suppressed",
                    format!("to[{i}]"),
                    format!("{address} is on the suppression list ({})", s.reason),
                )],
            ));
        }
        addresses.push(address);
    }
    let render = crate::templates::PreviewRequest {
        profile: req.profile,
        traits: req.traits,
        event: None,
        journey: Some(
            json!({"entry": {"audience": campaign.audience, "read_at": wall_clock_ms()}}),
        ),
        version: None,
    };
    let now = wall_clock_ms();
    let batch = uuid::Uuid::now_v7().simple().to_string();
    let mut rows = Vec::new();
    let mut proofs = Vec::new();
    for (variant, template, _) in campaign.shares() {
        let mut content = crate::templates::render(&state, &template, &render).await?;
        let field = if channel == "email" {
            "subject"
        } else {
            "text"
        };
        let marked = format!(
            "[Proof {variant}] {}",
            content.fields.get(field).map_or("", String::as_str)
        );
        content.fields.insert(field.to_owned(), marked);
        for to in &addresses {
            let message = format!("proof:{key}:{batch}:{variant}:{to}");
            rows.push(waymark_engine::run::OutboxRow {
                key: message.clone(),
                // Nobody's: counted in no person's caps and in no journey's report.
                profile_id: String::new(),
                journey: format!("proof:{key}"),
                effect: waymark_engine::Effect::Message(waymark_engine::Message {
                    key: message.clone(),
                    instance: 0,
                    node: "proof".into(),
                    channel: channel.to_owned(),
                    template: template.clone(),
                    content: Some(content.clone()),
                    to: Some(to.clone()),
                    transactional: true,
                    expires_at: None,
                    subscription: None,
                    devices: Vec::new(),
                    surface: None,
                    priority: 0,
                }),
                status: "pending".into(),
                due: None,
            });
            proofs.push(ProofQueued {
                variant: variant.clone(),
                to: to.clone(),
                message,
            });
        }
    }
    state.store.enqueue_outbox(rows, now).await?;
    tracing::info!(campaign = %key, proofs = proofs.len(), "campaign proofs queued");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(ProofsQueued { proofs }),
    ))
}

/// Every campaign's per-variant counts in Prometheus text format, for `/metrics`: what
/// became of each group's messages, its conversions and revenue. Read from the counters at
/// each scrape (the keys of campaigns and variants need no escaping).
pub async fn metrics_text(state: &AppState) -> Result<String, ApiError> {
    use std::fmt::Write;
    let mut messages = String::new();
    let mut revenue = String::new();
    for record in state.store.journeys().await? {
        if record.draft.get("campaign").is_none() {
            continue;
        }
        let report = build_report(state, record).await?;
        for g in report.variants.iter().chain(&report.holdout) {
            let labels = format!("campaign=\"{}\",variant=\"{}\"", report.key, g.key);
            for (what, n) in [
                ("assigned", g.assigned),
                ("sent", g.sent),
                ("held", g.held),
                ("suppressed", g.suppressed),
                ("delivered", g.delivered),
                ("undelivered", g.undelivered),
                ("bounced", g.bounced),
                ("complained", g.complained),
                ("opened", g.opened),
                ("clicked", g.clicked),
                ("converted", g.converted),
            ] {
                let _ = writeln!(
                    messages,
                    "waymark_campaign_messages_total{{{labels},what=\"{what}\"}} {n}"
                );
            }
            let _ = writeln!(
                revenue,
                "waymark_campaign_revenue_total{{{labels}}} {}",
                g.revenue
            );
        }
    }
    if messages.is_empty() {
        return Ok(messages);
    }
    Ok(format!(
        "# HELP waymark_campaign_messages_total A campaign's people and messages per variant (and the holdout), by what became of them.\n\
         # TYPE waymark_campaign_messages_total counter\n{messages}\
         # HELP waymark_campaign_revenue_total Revenue of a campaign's conversions per variant.\n\
         # TYPE waymark_campaign_revenue_total counter\n{revenue}"
    ))
}

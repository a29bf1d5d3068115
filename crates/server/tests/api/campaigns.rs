//! Campaigns through the API: documents and their mistakes at the campaign's own paths,
//! the journey each runs on, launch with approval, pause, cancel, and the report.

use super::*;

async fn admin(api: &Api, method: &str, path: &str, doc: Option<Value>) -> Reply {
    let body = doc.map_or_else(Vec::new, |d| serde_json::to_vec(&d).expect("json"));
    api.call(method, path, Auth::Admin(ADMIN), body, None).await
}

pub async fn campaigns_through_the_api(api: &Api) {
    let leads = json!({"key": "leads", "refresh": "upload"});
    assert_eq!(
        admin(api, "PUT", "/v1/audiences/leads", Some(leads))
            .await
            .status,
        StatusCode::OK
    );
    // Mistakes, each at the campaign's own path.
    let bad = json!({"key": "sale", "audience": "nobody", "exclude": ["ghosts"], "channel": "email",
        "variants": [{"key": "a", "template": "a", "percent": 70}, {"key": "b", "template": "b", "percent": 40}],
        "send_at": "tomorrow", "schedule": {"cron": "0 9 * * *", "timezone": "Mars/Base"}});
    let r = admin(api, "PUT", "/v1/campaigns/sale", Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields = r.error_fields();
    for field in [
        "audience",
        "exclude[0]",
        "variants",
        "send_at",
        "schedule.timezone",
        "variants[1].template",
    ] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }

    let sale = json!({"key": "sale", "name": "December sale", "audience": "leads", "channel": "log",
        "variants": [{"key": "a", "template": "sale-a"}, {"key": "b", "template": "sale-b"}],
        "holdout": 10, "rate": 500, "requires_approval": true,
        "send_at": "2099-01-01T09:00:00Z"});
    let r = admin(api, "PUT", "/v1/campaigns/sale", Some(sale.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["status"].as_str(), &r.body["document"]["holdout"]),
        (Some("draft"), &json!(10))
    );
    // Proofs go to addresses: a `log` campaign has none.
    let r = admin(
        api,
        "POST",
        "/v1/campaigns/sale/proof",
        Some(json!({"to": ["seed@example.com"]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.error_fields(), ["channel"]);
    // It runs as a journey of the same key, which the journeys API does not change.
    let journey = api.get("/v1/journeys/sale").await;
    assert_eq!(
        journey.body["draft"]["entry"]["on"], "read",
        "{}",
        journey.text
    );
    assert_eq!(journey.body["draft"]["nodes"][0]["type"], "random_split");
    let r = admin(api, "POST", "/v1/journeys/sale/publish", None).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::CONFLICT, Some("campaign_journey")),
        "{}",
        r.text
    );
    let r = admin(
        api,
        "PUT",
        "/v1/journeys/sale",
        Some(
            json!({"key": "sale", "entry": {"event": "E"}, "nodes": [{"id": "e", "type": "end"}]}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // ...nor a campaign a journey's key.
    let plain =
        json!({"key": "plain", "entry": {"event": "E"}, "nodes": [{"id": "e", "type": "end"}]});
    assert_eq!(
        admin(api, "PUT", "/v1/journeys/plain", Some(plain))
            .await
            .status,
        StatusCode::OK
    );
    let mut clash = sale.clone();
    clash["key"] = json!("plain");
    let r = admin(api, "PUT", "/v1/campaigns/plain", Some(clash)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);

    // Approval: launch asks, approve sends; nothing to approve twice.
    let r = admin(api, "POST", "/v1/campaigns/sale/approve", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = admin(api, "POST", "/v1/campaigns/sale/launch", None).await;
    assert_eq!(r.body["status"], "awaiting_approval", "{}", r.text);
    assert_eq!(r.body["version"], Value::Null, "nothing published yet");
    let r = admin(api, "POST", "/v1/campaigns/sale/approve", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["status"].as_str(), &r.body["version"]),
        (Some("scheduled"), &json!(1)),
        "{}",
        r.text
    );
    assert_eq!(r.body["read"]["due_at"], "2099-01-01T09:00:00.000Z");
    assert!(r.body["approved_at"].is_string());
    let r = admin(api, "POST", "/v1/campaigns/sale/approve", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // Pause, resume, cancel.
    let r = admin(api, "POST", "/v1/campaigns/sale/pause", None).await;
    assert_eq!(r.body["status"], "paused", "{}", r.text);
    let r = admin(api, "POST", "/v1/campaigns/sale/resume", None).await;
    assert_eq!(r.body["status"], "scheduled", "{}", r.text);
    let report = api.get("/v1/campaigns/sale/report").await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    let percents: Vec<&Value> = report.body["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| &v["percent"])
        .collect();
    assert_eq!(percents, [&json!(45), &json!(45)]);
    assert_eq!(report.body["holdout"]["percent"], 10);
    assert_eq!(report.body["targeted"], 0);
    let csv = api.get("/v1/campaigns/sale/report?format=csv").await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.text);
    let rows: Vec<&str> = csv.text.lines().collect();
    assert!(
        rows[0].starts_with("group,percent,assigned,sent"),
        "{}",
        csv.text
    );
    let groups: Vec<&str> = rows[1..]
        .iter()
        .filter_map(|r| r.split(',').next())
        .collect();
    assert_eq!(groups, ["a", "b", "holdout"], "{}", csv.text);
    assert!(rows[1].starts_with("a,45,0,"), "{}", csv.text);
    let bad = api.get("/v1/campaigns/sale/report?format=xml").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let r = admin(api, "POST", "/v1/campaigns/sale/cancel", None).await;
    assert_eq!(r.body["status"], "cancelled", "{}", r.text);
    let list = api.get("/v1/campaigns").await;
    let keys: Vec<&str> = list.body["campaigns"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert_eq!(keys, ["sale"], "journeys are not campaigns");
    assert_eq!(
        api.get("/v1/campaigns/plain").await.status,
        StatusCode::NOT_FOUND
    );
    // Without approval, launch sends at once (a campaign of one template).
    let now = json!({"key": "news", "audience": "leads", "channel": "log", "template": "news"});
    assert_eq!(
        admin(api, "PUT", "/v1/campaigns/news", Some(now))
            .await
            .status,
        StatusCode::OK
    );
    let r = admin(api, "POST", "/v1/campaigns/news/launch", None).await;
    assert_eq!(r.body["version"], 1, "{}", r.text);
    assert!(
        matches!(
            r.body["status"].as_str(),
            Some("scheduled" | "running" | "completed")
        ),
        "{}",
        r.text
    );
    // Each variant rendered for a chosen person, nothing sent.
    for (key, subject) in [
        ("hello-a", "Hi {{profile.traits.name}}"),
        (
            "hello-b",
            "Hello {{profile.traits.name}}, from {{journey.entry.audience}}",
        ),
    ] {
        let doc = json!({"channel": "email", "subject": subject, "text": "x"});
        let r = admin(api, "PUT", &format!("/v1/templates/{key}"), Some(doc)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(
        api.post(
            "/v1/identify",
            json!({"userId": "ada", "traits": {"name": "Ada"}})
        )
        .await
        .status,
        StatusCode::OK
    );
    let hello = json!({"key": "hello", "audience": "leads", "channel": "email",
        "variants": [{"key": "a", "template": "hello-a"}, {"key": "b", "template": "hello-b"}]});
    assert_eq!(
        admin(api, "PUT", "/v1/campaigns/hello", Some(hello))
            .await
            .status,
        StatusCode::OK
    );
    let r = admin(
        api,
        "POST",
        "/v1/campaigns/hello/preview",
        Some(json!({"profile": {"namespace": "user_id", "value": "ada"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let subjects: Vec<&str> = r.body["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter_map(|v| v["rendered"]["fields"]["subject"].as_str())
        .collect();
    assert_eq!(subjects, ["Hi Ada", "Hello Ada, from leads"], "{}", r.text);
    let r = admin(
        api,
        "POST",
        "/v1/campaigns/hello/preview",
        Some(json!({"profile": {"namespace": "user_id", "value": "nobody"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let report = api.get("/v1/campaigns/hello/report").await;
    assert_eq!(
        report.body["entered"], 0,
        "a preview sends nothing: {}",
        report.text
    );
}

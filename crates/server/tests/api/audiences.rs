//! Audiences through the API: documents (JSON and YAML) and their mistakes, membership
//! kept current by ingest, members, a person's audiences and why they are in or out.

use super::*;

async fn put(api: &Api, key: &str, doc: Value) -> Reply {
    api.call(
        "PUT",
        &format!("/v1/audiences/{key}"),
        Auth::Admin(ADMIN),
        serde_json::to_vec(&doc).expect("json"),
        None,
    )
    .await
}

pub async fn audiences_through_the_api(api: &Api) {
    // Mistakes are refused with every problem, each with its line and column.
    let r = api.put_yaml(
        "/v1/audiences/buyers",
        "key: buyers\nrule: |\n  events.count(\"Order Completed\", \"30 dayz\") >= 2\n  && evnt.x\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let errors = r.body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{}", r.text);
    assert_eq!(
        (&errors[0]["line"], &errors[0]["column"]),
        (&json!(1), &json!(33))
    );
    assert_eq!(errors[1]["line"], 2, "{}", r.text);
    let r = put(
        api,
        "vip",
        json!({"key": "vip", "rule": "in_audience(\"buyers\")"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["code"], "unknown_audience",
        "{}",
        r.text
    );
    let r = put(api, "x", json!({"key": "y", "rule": "true"})).await;
    assert_eq!(r.body["errors"][0]["field"], "key", "{}", r.text);
    let r = put(api, "x", json!({"key": "x", "rule": "true", "rulez": 1})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("rulez"), "{}", r.text);
    let r = api
        .call(
            "PUT",
            "/v1/audiences/x",
            Auth::Write(WRITE_KEY),
            b"{}".to_vec(),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the write key does not manage audiences"
    );

    // A good one, in YAML; then one reading it.
    let r = api.put_yaml(
        "/v1/audiences/buyers",
        "key: buyers\nname: Repeat buyers\nrule: events.count(\"Order Completed\", \"30d\") >= 2\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.body["version"], &r.body["created"]),
        (&json!(1), &json!(true))
    );
    let r = put(
        api,
        "vip",
        json!({"key": "vip", "rule": "in_audience(\"buyers\") && events.sum(\"Order Completed\", \"total\", \"90d\") > 100.0"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // A loop is refused.
    let r = put(
        api,
        "buyers",
        json!({"key": "buyers", "rule": "in_audience(\"vip\")"}),
    )
    .await;
    assert_eq!(r.body["errors"][0]["code"], "audience_cycle", "{}", r.text);

    // Journeys start on entering an audience that exists.
    let welcome = |audience: &str| {
        format!(
            "key: vip-welcome\nentry: {{audience: {audience}}}\nnodes:\n  - {{id: hi, type: message, channel: log, template: hi, next: done}}\n  - {{id: done, type: end}}\n"
        )
    };
    let r = api
        .put_yaml("/v1/journeys/vip-welcome", &welcome("vipp"))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["errors"][0]["field"], "entry.audience", "{}", r.text);
    let r = api
        .put_yaml("/v1/journeys/vip-welcome", &welcome("vip"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api.admin_post("/v1/journeys/vip-welcome/publish").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let batch = json!({"batch": [
        {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"total": 80}},
        {"type": "track", "userId": "ann", "event": "Order Completed", "properties": {"total": 40.5}},
        {"type": "track", "userId": "bob", "event": "Order Completed", "properties": {"total": 10}},
    ]});
    assert_eq!(api.post("/v1/batch", batch).await.status, StatusCode::OK);
    let r = api.get("/v1/profiles/user_id/ann/audiences").await;
    let keys: Vec<&str> = r.body["audiences"]
        .as_array()
        .expect("audiences")
        .iter()
        .filter_map(|a| a["audience"].as_str())
        .collect();
    assert_eq!(keys, ["buyers", "vip"], "{}", r.text);
    let r = api.get("/v1/audiences/buyers").await;
    assert_eq!(
        (&r.body["size"], &r.body["state"]),
        (&json!(1), &json!("current")),
        "{}",
        r.text
    );
    assert_eq!(r.body["document"]["name"], "Repeat buyers");
    let r = api.get("/v1/audiences/buyers/members?limit=10").await;
    assert_eq!(
        r.body["members"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    assert!(r.body.get("next").is_none());
    let r = api.get("/v1/audiences/buyers/members?offset=10").await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "unknown parameters are refused: {}",
        r.text
    );
    let r = api.get("/v1/audiences").await;
    assert_eq!(r.body["audiences"].as_array().map(Vec::len), Some(2));

    // Why bob is out: one order, 10 spent; when time will next change it.
    let r = api
        .get("/v1/profiles/user_id/bob/audiences/vip/explain")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.body["member"], &r.body["stored_member"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(r.body["audiences"], json!({"buyers": false}));
    assert_eq!(r.body["values"][0]["value"], json!(10.0), "{}", r.text);
    assert_eq!(
        r.body["values"][0]["call"],
        "events.sum(\"Order Completed\", \"total\", \"90d\")"
    );
    assert!(
        r.body["next_change"].is_string(),
        "the order ages out: {}",
        r.text
    );
    let r = api
        .get("/v1/profiles/user_id/ann/audiences/vip/explain")
        .await;
    assert_eq!(
        (&r.body["member"], &r.body["stored_member"]),
        (&json!(true), &json!(true)),
        "{}",
        r.text
    );
    assert_eq!(r.body["values"][0]["matched"], 2);
    // The events that made the value, newest first, by message id.
    let counted = r.body["values"][0]["events"].as_array().expect("events");
    assert_eq!(counted.len(), 2, "{}", r.text);
    assert!(
        counted
            .iter()
            .all(|e| e["messageId"].is_string() && e["at"].is_string()),
        "{}",
        r.text
    );
    let r = api
        .get("/v1/profiles/user_id/nobody/audiences/vip/explain")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = api
        .get("/v1/profiles/user_id/ann/audiences/nope/explain")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Entering vip started the journey, in the ingest transaction.
    let r = api.get("/v1/profiles/user_id/ann/journeys").await;
    assert_eq!(
        r.body["journeys"][0]["journey"], "vip-welcome",
        "{}",
        r.text
    );
    let r = api.get("/v1/profiles/user_id/bob/journeys").await;
    assert_eq!(r.body["journeys"], json!([]), "{}", r.text);
    // Ann's history says when she entered.
    let r = api.get("/v1/profiles/user_id/ann/events").await;
    let entered: Vec<&Value> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"] == "Audience Entered")
        .collect();
    assert_eq!(entered.len(), 2, "{}", r.text);
}

async fn preview(api: &Api, query: &str, doc: Value) -> Reply {
    let key = doc["key"].as_str().expect("key").to_owned();
    api.call(
        "POST",
        &format!("/v1/audiences/{key}/preview{query}"),
        Auth::Admin(ADMIN),
        serde_json::to_vec(&doc).expect("json"),
        None,
    )
    .await
}

/// A rule's size and members before it is saved; members exported with traits and
/// identities as CSV and JSON lines; size by the hour.
pub async fn audience_preview_export_and_sizes(api: &Api) {
    let buyers = json!({"key": "buyers", "rule": r#"events.count("Order Completed") >= 2"#});
    assert_eq!(put(api, "buyers", buyers).await.status, StatusCode::OK);
    let mut batch = Vec::new();
    for n in 0..5 {
        let name = if n == 0 {
            "Ann, \"the\" buyer".to_owned()
        } else {
            format!("user {n}")
        };
        let plan = if n % 2 == 0 { "pro" } else { "free" };
        batch.push(json!({"type": "identify", "userId": format!("u{n}"),
            "traits": {"email": format!("u{n}@example.com"), "name": name, "plan": plan}}));
        for _ in 0..(if n < 3 { 2 } else { 1 }) {
            batch.push(
                json!({"type": "track", "userId": format!("u{n}"), "event": "Order Completed"}),
            );
        }
    }
    let r = api.post("/v1/batch", json!({ "batch": batch })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Preview: decided for everyone stored, nothing saved.
    let r = preview(
        api,
        "",
        json!({"key": "any-buyer", "rule": r#"events.count("Order Completed") >= 1"#}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.body["size"], &r.body["decided"]),
        (&json!(5), &json!(5)),
        "{}",
        r.text
    );
    let sample: Vec<&str> = r.body["sample"]
        .as_array()
        .expect("sample")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut sorted = sample.clone();
    sorted.sort_unstable();
    assert_eq!((sample.len(), &sample), (5, &sorted), "in profile id order");
    assert_eq!(
        api.get("/v1/audiences/any-buyer").await.status,
        StatusCode::NOT_FOUND,
        "a preview saves nothing"
    );
    let r = preview(
        api,
        "?sample=1",
        json!({"key": "pro-buyers", "rule": r#"in_audience("buyers") && profile.traits.plan == "pro""#}),
    )
    .await;
    assert_eq!(
        (&r.body["size"], r.body["sample"].as_array().map(Vec::len)),
        (&json!(2), Some(1)),
        "u0 and u2 are pro buyers: {}",
        r.text
    );
    // A rule reading beyond traits gets the whole profile: an identify and two orders.
    let r = preview(
        api,
        "",
        json!({"key": "busy", "rule": "profile.event_count >= 3 && profile.traits.plan != \"x\""}),
    )
    .await;
    assert_eq!(r.body["size"], json!(3), "{}", r.text);
    let r = preview(
        api,
        "",
        json!({"key": "old", "rule": "profile.traits.age > 30"}),
    )
    .await;
    assert_eq!(
        (&r.body["size"], &r.body["errors"]),
        (&json!(0), &json!(5)),
        "{}",
        r.text
    );
    assert!(r.body["first_error"].is_string(), "{}", r.text);
    let r = preview(
        api,
        "",
        json!({"key": "bad", "rule": "events.count(\"X\", \"3 parsecs\") > 1"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Export: a header, then each member, values quoted where CSV needs it.
    let r = api
        .get("/v1/audiences/buyers/export?traits=name,plan&identities=email")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut reader = csv::Reader::from_reader(r.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "profile_id",
            "since",
            "identity:email",
            "trait:name",
            "trait:plan"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
    assert_eq!(records.len(), 3, "{}", r.text);
    let ann = records
        .iter()
        .find(|r| &r[2] == "u0@example.com")
        .expect("u0 exported");
    assert_eq!((&ann[3], &ann[4]), ("Ann, \"the\" buyer", "pro"));
    let r = api
        .get("/v1/audiences/buyers/export?format=jsonl&traits=plan")
        .await;
    let lines: Vec<Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", r.text);
    assert!(
        lines
            .iter()
            .all(|l| l["traits"]["plan"].is_string() && l["since"].is_string())
    );
    let r = api.get("/v1/audiences/buyers/export?format=xml").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let many = vec!["t"; 101].join(",");
    let r = api
        .get(&format!("/v1/audiences/buyers/export?traits={many}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Size by the hour: three entered this hour.
    let r = api.get("/v1/audiences/buyers/sizes").await;
    let hours = r.body["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 1, "{}", r.text);
    assert_eq!(
        (
            &hours[0]["members"],
            &hours[0]["entered"],
            &hours[0]["exited"]
        ),
        (&json!(3), &json!(3), &json!(0))
    );
}

async fn upload(api: &Api, key: &str, mode: &str, csv: &str) -> Reply {
    api.call(
        "POST",
        &format!("/v1/audiences/{key}/members?mode={mode}"),
        Auth::Admin(ADMIN),
        csv.as_bytes().to_vec(),
        None,
    )
    .await
}

async fn member_count(api: &Api, key: &str) -> usize {
    let r = api.get(&format!("/v1/audiences/{key}/members")).await;
    r.body["members"].as_array().map_or(0, Vec::len)
}

/// An uploaded list: members from CSV by any identity, added, replaced and removed, the
/// audiences that read it following; runs on demand; a schedule shown.
pub async fn uploaded_lists_and_runs_through_the_api(api: &Api) {
    let leads = json!({"key": "leads", "refresh": "upload"});
    assert_eq!(put(api, "leads", leads).await.status, StatusCode::OK);
    let hot =
        json!({"key": "hot", "rule": r#"in_audience("leads") && profile.traits.plan == "pro""#});
    assert_eq!(put(api, "hot", hot).await.status, StatusCode::OK);
    let weekly = json!({"key": "weekly", "rule": "profile.traits.plan == \"pro\"",
        "refresh": "snapshot", "schedule": {"cron": "0 6 * * MON", "timezone": "Europe/Paris"}});
    let r = put(api, "weekly", weekly).await;
    assert!(r.body["next_run"].is_string(), "{}", r.text);
    let batch: Vec<Value> = (0..4)
        .map(|n| json!({"type": "identify", "userId": format!("u{n}"),
            "traits": {"email": format!("u{n}@example.com"), "plan": if n < 2 { "pro" } else { "free" }}}))
        .collect();
    assert_eq!(
        api.post("/v1/batch", json!({ "batch": batch }))
            .await
            .status,
        StatusCode::OK
    );

    let r = upload(
        api,
        "leads",
        "add",
        "email,user_id\nU0@Example.com,\n,u1\n,u2\nnobody@example.com,\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.body["rows"], &r.body["matched"], &r.body["entered"]),
        (&json!(4), &json!(3), &json!(3)),
        "{}",
        r.text
    );
    assert_eq!(r.body["unmatched_rows"], json!([5]), "{}", r.text);
    assert_eq!(member_count(api, "hot").await, 2, "u0 and u1 are pro leads");
    let r = api.get("/v1/profiles/user_id/u2/events").await;
    assert!(
        r.body["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["event"] == "Audience Entered" && e["properties"]["audience"] == "leads"),
        "{}",
        r.text
    );
    let r = upload(api, "leads", "replace", "user_id\nu1\n").await;
    assert_eq!(
        (&r.body["entered"], &r.body["exited"]),
        (&json!(0), &json!(2)),
        "{}",
        r.text
    );
    assert_eq!(member_count(api, "leads").await, 1);
    assert_eq!(member_count(api, "hot").await, 1);
    let r = upload(api, "leads", "remove", "user_id\nu1\n").await;
    assert_eq!(r.body["exited"], json!(1), "{}", r.text);
    assert_eq!(member_count(api, "hot").await, 0);

    let r = upload(api, "leads", "add", "E-Mail\nred\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("header[0]"), "{}", r.text);
    let r = upload(api, "leads", "add", "user_id\nu1,extra\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("row 2"), "{}", r.text);
    let r = upload(api, "leads", "merge", "user_id\nu1\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = upload(api, "hot", "add", "user_id\nu1\n").await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "a rule decides hot: {}",
        r.text
    );

    // Runs on demand: a rule audience starts its backfill; an uploaded list has no rule.
    let r = api.admin_post("/v1/audiences/weekly/run").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["audience"]["state"], "building", "{}", r.text);
    let r = api.admin_post("/v1/audiences/leads/run").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = api.admin_post("/v1/audiences/nope/run").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // Refresh and schedule mistakes are refused like any other.
    let r = put(
        api,
        "bad",
        json!({"key": "bad", "refresh": "upload", "rule": "true"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = put(
        api,
        "bad",
        json!({"key": "bad", "rule": "true", "refresh": "snapshot",
        "schedule": {"cron": "every day"}}),
    )
    .await;
    assert_eq!(r.body["errors"][0]["field"], "schedule.cron", "{}", r.text);
}

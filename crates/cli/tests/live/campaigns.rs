//! Campaigns in a running server, through a real SMTP server (aiosmtpd): two email variants
//! and a holdout sent to an uploaded list, each member exactly one email of their variant,
//! the holdout nothing, an excluded member nothing, and the report agreeing; and a winner
//! picked on real clicks of tracked links, sent to the rest once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN, WRITE_KEY, client, get, send_batch};
use crate::support::*;

const PEOPLE: usize = 200;

/// Exactly `count` emails arrive (any more within 300 ms after would be repeats), each to a
/// different person: their subjects by recipient.
async fn one_email_each(smtp: &SmtpSink, count: u64) -> BTreeMap<String, String> {
    smtp.wait_for(count as usize, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = smtp.messages.lock().expect("lock").clone();
    assert_eq!(messages.len() as u64, count, "one email per person sent to");
    let mut subjects: BTreeMap<String, String> = BTreeMap::new();
    for m in &messages {
        let to = m["rcpt_tos"][0].as_str().expect("rcpt").to_owned();
        let subject = m["headers"]["Subject"]
            .as_str()
            .expect("subject")
            .to_owned();
        assert!(
            subjects.insert(to.clone(), subject).is_none(),
            "{to} got two emails"
        );
    }
    subjects
}

/// `count` people (`<prefix>0`, `<prefix>1`, ...) identified with the traits `traits(n)`
/// gives, all on a new uploaded list `list`.
async fn people_on_a_list(
    c: &reqwest::Client,
    base: &str,
    list: &str,
    prefix: &str,
    count: usize,
    traits: impl Fn(usize) -> Value,
) {
    let batch: Vec<Value> = (0..count)
        .map(|n| json!({"type": "identify", "userId": format!("{prefix}{n}"), "traits": traits(n)}))
        .collect();
    send_batch(c, base, WRITE_KEY, &Value::Array(batch))
        .await
        .expect("ingest");
    put_document(
        c,
        base,
        &format!("/v1/audiences/{list}"),
        &json!({"key": list, "refresh": "upload"}),
    )
    .await;
    let everyone: Vec<String> = (0..count).map(|n| format!("{prefix}{n}")).collect();
    upload_list(c, base, list, &everyone).await;
}

/// A GET with the admin token, as status and text.
async fn get_text(c: &reqwest::Client, base: &str, path: &str) -> (u16, String) {
    let r = c
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.text().await.expect("text"))
}

/// The campaign's report, once `until` holds of it (checked every 50 ms, for up to `within`).
async fn report_once(
    c: &reqwest::Client,
    base: &str,
    campaign: &str,
    within: Duration,
    what: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (_, report) = get(c, base, ADMIN, &format!("/v1/campaigns/{campaign}/report")).await;
        if until(&report) {
            return report;
        }
        assert!(started.elapsed() < within, "{what}: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_sends_each_variant_and_holds_out_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = email_server(dir.path(), &[("WAYMARK_EMAIL__FROM", "hello@example.com")]);
    let c = client();
    let base = &server.base;
    people_on_a_list(
        &c,
        base,
        "list",
        "c",
        PEOPLE,
        |n| json!({"email": format!("c{n}@example.com")}),
    )
    .await;
    put_document(
        &c,
        base,
        "/v1/audiences/opted-out",
        &json!({"key": "opted-out", "refresh": "upload"}),
    )
    .await;
    upload_list(&c, base, "opted-out", &["c7".to_owned()]).await;
    for variant in ["a", "b"] {
        let template = json!({"channel": "email", "subject": format!("Sale {variant}"), "text": "Up to 50% off"});
        put_template(&c, base, &format!("sale-{variant}"), &template).await;
    }
    let sale = json!({"key": "sale", "audience": "list", "exclude": ["opted-out"], "channel": "email",
        "variants": [{"key": "a", "template": "sale-a", "percent": 40}, {"key": "b", "template": "sale-b", "percent": 40}],
        "holdout": 20, "rate": 100,
        "conversion": {"event": "Order Completed", "within": "7d", "revenue": "total"}});
    put_document(&c, base, "/v1/campaigns/sale", &sale).await;
    let launched = c
        .post(format!("{base}/v1/campaigns/sale/launch"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("launch");
    assert!(launched.status().is_success());
    let report = report_once(
        &c,
        base,
        "sale",
        Duration::from_secs(60),
        "never completed",
        |r| r["status"] == "completed",
    )
    .await;
    assert_eq!(
        (&report["targeted"], &report["excluded"], &report["entered"]),
        (&json!(PEOPLE), &json!(1), &json!(PEOPLE - 1)),
        "{report}"
    );
    let variants = report["variants"].as_array().expect("variants");
    let sent: u64 = variants
        .iter()
        .map(|v| v["sent"].as_u64().expect("sent"))
        .sum();
    let held_out = report["holdout"]["assigned"].as_u64().expect("holdout");
    assert_eq!(sent + held_out, PEOPLE as u64 - 1, "{report}");
    // Shares near 40/40/20 (199 people: a binomial share is within 12 points nearly always).
    for v in variants {
        let assigned = v["assigned"].as_u64().expect("assigned") as f64 / (PEOPLE - 1) as f64;
        assert!((assigned - 0.4).abs() < 0.12, "{report}");
    }
    assert!(
        (held_out as f64 / (PEOPLE - 1) as f64 - 0.2).abs() < 0.1,
        "{report}"
    );
    let subjects = one_email_each(&smtp, sent).await;
    assert!(
        !subjects.contains_key("c7@example.com"),
        "the excluded member got nothing"
    );
    for v in variants {
        let subject = format!("Sale {}", v["key"].as_str().expect("key"));
        let count = subjects.values().filter(|s| **s == subject).count() as u64;
        assert_eq!(
            count,
            v["sent"].as_u64().expect("sent"),
            "{subject}: {report}"
        );
    }
    // Each person's variant is where the journey put them: a holdout member has no email.
    let (_, one) = get(&c, base, ADMIN, "/v1/profiles/user_id/c0/journeys").await;
    let split = one["journeys"][0]["instances"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["what"] == "split")
        .cloned()
        .expect("split step");
    let mailed = subjects.contains_key("c0@example.com");
    // Paths in order: variant a, variant b, holdout.
    assert_eq!(
        split["detail"]["path"].as_u64() == Some(2),
        !mailed,
        "{split}"
    );
    // The first 40 people order (c7, left out, too): each conversion is credited to the
    // variant the person was sent (or the holdout), once, with its revenue.
    let orders: Vec<Value> = (0..40)
        .flat_map(|n| {
            let order = json!({"type": "track", "userId": format!("c{n}"), "event": "Order Completed", "properties": {"total": 10.5}});
            [order.clone(), order] // a second order converts nobody twice
        })
        .collect();
    send_batch(&c, base, WRITE_KEY, &Value::Array(orders))
        .await
        .expect("orders");
    let (_, report) = get(&c, base, ADMIN, "/v1/campaigns/sale/report").await;
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for n in (0..40).filter(|n| *n != 7) {
        let group = match subjects.get(&format!("c{n}@example.com")) {
            Some(subject) => subject.trim_start_matches("Sale ").to_owned(),
            None => "holdout".to_owned(),
        };
        *expected.entry(group).or_default() += 1;
    }
    let groups = report["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .chain([&report["holdout"]]);
    for g in groups {
        let key = g["key"].as_str().expect("key");
        let want = expected.get(key).copied().unwrap_or(0);
        assert_eq!(g["converted"], want, "{key}: {report}");
        assert!(
            (g["revenue"].as_f64().expect("revenue") - want as f64 * 10.5).abs() < 1e-9,
            "{report}"
        );
        let rate = g["conversion_rate"].as_f64().expect("rate");
        let [lo, hi] = [&g["conversion_interval"][0], &g["conversion_interval"][1]]
            .map(|v| v.as_f64().expect("interval"));
        assert!(lo <= rate && rate <= hi, "{report}");
    }
    for v in report["variants"].as_array().expect("variants") {
        let p = v["chance_to_beat_holdout"].as_f64().expect("chance");
        assert!((0.0..=1.0).contains(&p), "{report}");
    }
    // The hourly series adds up to the totals, per group.
    let (_, with_series) = get(&c, base, ADMIN, "/v1/campaigns/sale/report?series=hour").await;
    let rows = with_series["series"].as_array().expect("series").clone();
    for g in report["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .chain([&report["holdout"]])
    {
        let key = g["key"].as_str().expect("key");
        for counter in ["assigned", "converted"] {
            let summed: u64 = rows
                .iter()
                .filter(|r| r["group"] == key)
                .map(|r| r[counter].as_u64().expect("count"))
                .sum();
            assert_eq!(
                Some(summed),
                g[counter].as_u64(),
                "{key} {counter}: {rows:?}"
            );
        }
    }
    // The same counts on /metrics, per campaign and variant.
    let (_, metrics) = get_text(&c, base, "/metrics").await;
    for g in report["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .chain([&report["holdout"]])
    {
        let key = g["key"].as_str().expect("key");
        for what in ["assigned", "sent", "converted"] {
            let line = format!(
                "waymark_campaign_messages_total{{campaign=\"sale\",variant=\"{key}\",what=\"{what}\"}} {}",
                g[what]
            );
            assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
        }
    }
    let (status, csv) =
        get_text(&c, base, "/v1/campaigns/sale/report?series=hour&format=csv").await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("hour,group,assigned,"), "{csv}");
    assert_eq!(csv.lines().count(), rows.len() + 1, "{csv}");

    // Providers' reports come back per message (by Message-ID), counted per variant, each
    // status once per message however often it is reported.
    let messages = smtp.messages.lock().expect("lock").clone();
    let mut want: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        let subject = m["headers"]["Subject"].as_str().expect("subject");
        let variant = subject.trim_start_matches("Sale ").to_owned();
        let id = m["headers"]["Message-ID"].as_str().expect("Message-ID");
        let statuses: &[&str] = match i % 10 {
            0 => &["delivered", "delivered", "complained"],
            1 => &["bounced"],
            _ => &["delivered"],
        };
        for status in statuses {
            let r = c
                .post(format!("{base}/v1/messages/reports"))
                .bearer_auth(ADMIN)
                .json(&json!({"email_message_id": id, "status": status}))
                .send()
                .await
                .expect("report");
            assert_eq!(r.status(), 200, "{status} for {id}");
        }
        let mut once = statuses.to_vec();
        once.dedup();
        for status in once {
            *want.entry((variant.clone(), status)).or_default() += 1;
        }
    }
    let (_, report) = get(&c, base, ADMIN, "/v1/campaigns/sale/report").await;
    for v in report["variants"].as_array().expect("variants") {
        let key = v["key"].as_str().expect("key").to_owned();
        for status in ["delivered", "bounced", "complained"] {
            let expected = want.get(&(key.clone(), status)).copied().unwrap_or(0);
            assert_eq!(v[status], expected, "{key} {status}: {report}");
        }
        let delivered = v["delivered"].as_f64().expect("delivered");
        let sent = v["sent"].as_f64().expect("sent");
        let rate = &v["rates"]["delivered"];
        assert!(
            (rate["rate"].as_f64().expect("rate") - delivered / sent).abs() < 1e-9,
            "{report}"
        );
    }
    assert_eq!(report["holdout"]["delivered"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_tests_two_variants_then_sends_the_rest_the_one_clicked_more() {
    const EVERYONE: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = tracked_email_server(dir.path());
    let c = client();
    let base = &server.base;
    people_on_a_list(
        &c,
        base,
        "everyone",
        "w",
        EVERYONE,
        |n| json!({"email": format!("w{n}@example.com")}),
    )
    .await;
    for variant in ["a", "b"] {
        let template = json!({"channel": "email", "subject": format!("Pick {variant}"),
            "html": format!("<p><a href=\"https://shop.example.com/{variant}\">Shop</a></p>"), "text": "Shop"});
        put_template(&c, base, &format!("pick-{variant}"), &template).await;
    }
    // 20% get a, 20% b, 10% nothing; the other half waits 8 s for the variant clicked more.
    let pick = json!({"key": "pick", "audience": "everyone", "channel": "email",
        "variants": [{"key": "a", "template": "pick-a", "percent": 20}, {"key": "b", "template": "pick-b", "percent": 20}],
        "holdout": 10, "winner": {"metric": "clicked", "after": "8s"}});
    put_document(&c, base, "/v1/campaigns/pick", &pick).await;
    let launched = c
        .post(format!("{base}/v1/campaigns/pick/launch"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("launch");
    assert!(launched.status().is_success());
    let assigned = |group: &Value| group["assigned"].as_u64().unwrap_or(0);
    let read = |report: &Value| {
        let tested: u64 = report["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .map(assigned)
            .sum::<u64>()
            + assigned(&report["holdout"]);
        let waiting = report["winner"]["waiting"].as_u64().unwrap_or(0);
        report["targeted"] == EVERYONE && tested + waiting == EVERYONE as u64
    };
    let testing = report_once(
        &c,
        base,
        "pick",
        Duration::from_secs(30),
        "the read never finished",
        read,
    )
    .await;
    let test_sent: u64 = testing["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v["sent"].as_u64().expect("sent"))
        .sum();
    let rest = testing["winner"]["waiting"].as_u64().expect("waiting");
    assert!(rest > 0, "{testing}");
    smtp.wait_for(test_sent as usize, Duration::from_secs(30))
        .await;
    // Everyone sent b clicks its link; nobody sent a does.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let tested_mail = smtp.messages.lock().expect("lock").clone();
    let mut clicks = 0;
    for m in &tested_mail {
        if m["headers"]["Subject"] != "Pick b" {
            continue;
        }
        let html = m["parts"][1]["body"].as_str().expect("html");
        let (_, click) = tracked_links(html).pop().expect("a tracked link");
        let r = no_redirects
            .get(click.replace(PUBLIC_URL, base))
            .send()
            .await
            .expect("click");
        assert_eq!(r.status(), 302);
        clicks += 1;
    }
    assert!(clicks > 0, "{testing}");

    let decided = report_once(
        &c,
        base,
        "pick",
        Duration::from_secs(60),
        "never decided",
        |r| r["winner"]["state"] == "decided",
    )
    .await;
    let winner = &decided["winner"];
    assert_eq!(winner["chosen"], "b", "{decided}");
    assert_eq!(winner["metric"], "clicked");
    let test = winner["test"].as_array().expect("test");
    assert_eq!(test[1]["hits"], clicks, "{decided}");
    assert_eq!(test[0]["hits"], 0, "{decided}");
    // b clicked by all its people and a by none: sure, with a few in each.
    assert_eq!(
        winner["significant"],
        test[0]["n"].as_u64() >= Some(3),
        "{decided}"
    );
    let report = report_once(
        &c,
        base,
        "pick",
        Duration::from_secs(60),
        "never completed",
        |r| r["status"] == "completed",
    )
    .await;
    let total = test_sent + rest;
    let subjects = one_email_each(&smtp, total).await;
    let tested_people: std::collections::BTreeSet<String> = tested_mail
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().expect("rcpt").to_owned())
        .collect();
    let rest_subjects: Vec<&String> = subjects
        .iter()
        .filter(|(to, _)| !tested_people.contains(*to))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(rest_subjects.len() as u64, rest);
    assert!(
        rest_subjects.iter().all(|s| *s == "Pick b"),
        "{rest_subjects:?}"
    );
    let b = &report["variants"][1];
    assert_eq!(b["key"], "b");
    assert_eq!(
        b["assigned"].as_u64(),
        Some(testing["variants"][1]["assigned"].as_u64().expect("b") + rest),
        "{report}"
    );
    assert_eq!(report["winner"]["waiting"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_of_each_variant_reach_the_seed_list_and_count_nowhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (smtp, server) = email_server(dir.path(), &[("WAYMARK_EMAIL__FROM", "hello@example.com")]);
    let c = client();
    let base = &server.base;
    send_batch(
        &c,
        base,
        WRITE_KEY,
        &json!([{"type": "identify", "userId": "tester",
        "traits": {"email": "tester@example.com", "first_name": "Tess"}}]),
    )
    .await
    .expect("ingest");
    put_document(
        &c,
        base,
        "/v1/audiences/list",
        &json!({"key": "list", "refresh": "upload"}),
    )
    .await;
    for variant in ["a", "b"] {
        let template = json!({"channel": "email", "subject": format!("Sale {variant}"),
            "text": "Hi {{profile.traits.first_name}}, up to 50% off"});
        put_template(&c, base, &format!("sale-{variant}"), &template).await;
    }
    let sale = json!({"key": "sale", "audience": "list", "channel": "email",
        "variants": [{"key": "a", "template": "sale-a"}, {"key": "b", "template": "sale-b"}]});
    put_document(&c, base, "/v1/campaigns/sale", &sale).await;
    let proof = |body: Value| {
        c.post(format!("{base}/v1/campaigns/sale/proof"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let r = proof(json!({"to": ["Seed.One@Example.com", "seed2@example.com"],
        "profile": {"namespace": "user_id", "value": "tester"}}))
    .await
    .expect("proof");
    assert_eq!(r.status(), 202);
    let queued: Value = r.json().await.expect("json");
    assert_eq!(
        queued["proofs"].as_array().map(Vec::len),
        Some(4),
        "{queued}"
    );
    smtp.wait_for(4, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = smtp.messages.lock().expect("lock").clone();
    let mut got: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            let to = m["rcpt_tos"][0].as_str().expect("rcpt").to_owned();
            let subject = m["headers"]["Subject"]
                .as_str()
                .expect("subject")
                .to_owned();
            (to, subject)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "seed.one@example.com".to_owned(),
                "[Proof a] Sale a".to_owned()
            ),
            (
                "seed.one@example.com".to_owned(),
                "[Proof b] Sale b".to_owned()
            ),
            (
                "seed2@example.com".to_owned(),
                "[Proof a] Sale a".to_owned()
            ),
            (
                "seed2@example.com".to_owned(),
                "[Proof b] Sale b".to_owned()
            ),
        ]
    );
    let text = messages[0]["parts"][0]["body"]
        .as_str()
        .or(messages[0]["body"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("Hi Tess"),
        "rendered for the test profile: {:?}",
        messages[0]
    );
    // Nothing sent to anyone in the audience, nothing counted, nobody's caps touched.
    let (_, report) = get(&c, base, ADMIN, "/v1/campaigns/sale/report").await;
    assert_eq!(
        (
            &report["status"],
            &report["entered"],
            &report["variants"][0]["sent"]
        ),
        (&json!("draft"), &json!(0), &json!(0)),
        "{report}"
    );
    let (_, tester) = get(&c, base, ADMIN, "/v1/profiles/user_id/tester/messages").await;
    assert_eq!(
        tester["messages"].as_array().map(Vec::len),
        Some(0),
        "{tester}"
    );

    // A suppressed address, a malformed one, none at all: refused, at the field.
    let r = c
        .put(format!("{base}/v1/suppressions/email/bounced@example.com"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("suppress");
    assert!(r.status().is_success());
    for (body, status, field) in [
        (
            json!({"to": ["ok@example.com", "bounced@example.com"]}),
            422,
            "to[1]",
        ),
        (json!({"to": ["not an address"]}), 400, "to[0]"),
        (json!({"to": []}), 400, "to"),
    ] {
        let r = proof(body.clone()).await.expect("proof");
        assert_eq!(r.status().as_u16(), status, "{body}");
        let error: Value = r.json().await.expect("json");
        assert!(
            error.to_string().contains(&format!("\"{field}\"")),
            "{field}: {error}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smtp.messages.lock().expect("lock").len(),
        4,
        "nothing more sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_campaign_stops_sending_within_a_second_and_resumes_where_it_stopped() {
    const PEOPLE: usize = 150;
    let (provider, arrivals) = timed_twilio().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The SMS channel takes 20 a second: the campaign's messages queue up behind it.
    let server = throttled_sms_server(&dir.path().join("data"), &provider, None, "1h");
    let c = client();
    let base = &server.base;
    people_on_a_list(
        &c,
        base,
        "texters",
        "s",
        PEOPLE,
        |n| json!({"phone": format!("+155502{n:04}1")}),
    )
    .await;
    put_template(
        &c,
        base,
        "flash",
        &json!({"channel": "sms", "text": "Flash sale"}),
    )
    .await;
    put_document(
        &c,
        base,
        "/v1/campaigns/flash",
        &json!({"key": "flash", "audience": "texters", "channel": "sms", "template": "flash"}),
    )
    .await;
    let action = |what: &'static str| {
        c.post(format!("{base}/v1/campaigns/flash/{what}"))
            .bearer_auth(ADMIN)
            .send()
    };
    assert!(
        action("launch")
            .await
            .expect("launch")
            .status()
            .is_success()
    );
    wait_for_arrivals(&arrivals, 40).await;
    assert!(action("pause").await.expect("pause").status().is_success());
    let paused_at = Instant::now();
    // What was under way when the pause came may still land; nothing after a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_a_second = arrivals.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = arrivals.lock().expect("lock").clone();
    assert_eq!(arrived.len(), after_a_second, "nothing sent while paused");
    assert!(
        arrived
            .iter()
            .all(|t| t.duration_since(paused_at) < Duration::from_secs(1)),
        "every send while paused came within a second of the pause"
    );
    assert!(
        arrived.len() < PEOPLE,
        "the pause came part way: {}",
        arrived.len()
    );
    // Resumed, the rest go, each person once.
    assert!(
        action("resume")
            .await
            .expect("resume")
            .status()
            .is_success()
    );
    wait_for_arrivals(&arrivals, PEOPLE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(arrivals.lock().expect("lock").len(), PEOPLE, "one each");
    let (_, report) = get(&c, base, ADMIN, "/v1/campaigns/flash/report").await;
    assert_eq!(report["variants"][0]["sent"], PEOPLE, "{report}");
}

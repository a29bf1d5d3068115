//! Push to FCM HTTP v1 and APNs stand-ins: payloads per platform, dead tokens removed.

use serde_json::{Value, json};

use crate::common::{ADMIN, Launch, Server, WRITE_KEY, client, get, send_batch};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reaches_fcm_and_apns_with_their_payloads_and_dead_tokens_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_file, public_point) = apns_signing_key(dir.path(), "KEY123");
    let (rsa_key, rsa_public) = service_account_key(dir.path());
    let (providers, log) = push_providers(rsa_public).await;
    let account = service_account_file(dir.path(), &rsa_key, &providers);
    let server = Server::start_with_env(
        Launch {
            data_dir: &dir.path().join("data"),
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_PUSH__FCM_URL", &providers),
            ("WAYMARK_PUSH__FCM_PROJECT_ID", "proj"),
            (
                "WAYMARK_PUSH__FCM_SERVICE_ACCOUNT_FILE",
                account.to_str().expect("path"),
            ),
            ("WAYMARK_PUSH__APNS_URL", &providers),
            ("WAYMARK_PUSH__APNS_TOPIC", "com.example.app"),
            (
                "WAYMARK_PUSH__APNS_KEY_FILE",
                key_file.to_str().expect("path"),
            ),
            ("WAYMARK_PUSH__APNS_KEY_ID", "KEY123"),
            ("WAYMARK_PUSH__APNS_TEAM_ID", "TEAM42"),
        ],
    );
    let c = client();
    put_template(&c, &server.base, "shipped-push", &json!({"channel": "push",
        "title": "Order {{journey.entry.properties.order}}", "body": "On its way, {{profile.traits.name}}",
        "data": {"url": "app://orders/{{journey.entry.properties.order}}", "count": 2}})).await;
    put_and_publish(
        &c,
        &server.base,
        &json!({"key": "ship", "entry": {"event": "Order Shipped"}, "nodes": [
            {"id": "push", "type": "message", "channel": "push", "template": "shipped-push", "next": "done"},
            {"id": "done", "type": "end"}]}),
    )
    .await;
    send_batch(&c, &server.base, WRITE_KEY, &json!([
        {"type": "identify", "userId": "ann", "traits": {"name": "Ann"}, "context": {"device": {"token": "apns-ann-1", "type": "ios"}}},
        {"type": "identify", "userId": "ann", "context": {"device": {"token": "fcm-ann-1", "type": "android"}}},
        {"type": "track", "userId": "ann", "event": "Order Shipped", "properties": {"order": "o-7"}},
        {"type": "identify", "userId": "dan", "traits": {"name": "Dan"}, "context": {"device": {"token": "dead-apns-dan", "type": "ios"}}},
        {"type": "track", "userId": "dan", "event": "Order Shipped", "properties": {"order": "o-8"}},
        {"type": "track", "userId": "nobody", "event": "Order Shipped", "properties": {"order": "o-9"}},
    ]))
    .await
    .expect("ingest");
    let settled = settled_messages(&c, &server.base, &["ann", "dan"]).await;
    assert_eq!(settled[0]["effects"][0]["status"], "done", "{}", settled[0]);
    assert_eq!(
        settled[1]["effects"][0]["status"], "failed",
        "{}",
        settled[1]
    );
    let log = log.lock().expect("lock").clone();
    let find = |platform: &str, token: &str| {
        log.iter()
            .find(|(p, t, ..)| p == platform && t == token)
            .cloned()
            .unwrap_or_else(|| panic!("no {platform} request for {token}: {log:?}"))
    };
    // FCM HTTP v1: the documented message shape, data values as strings.
    let (_, _, _, headers, body) = find("fcm", "fcm-ann-1");
    assert_eq!(
        headers["authorization"], "Bearer sa-access",
        "the token bought with the service account"
    );
    let tokens = log.iter().filter(|(p, ..)| p == "token").count();
    assert_eq!(
        tokens, 1,
        "one access token, reused for every send: {log:?}"
    );
    let m = &body["message"];
    assert_eq!(
        m["notification"],
        json!({"title": "Order o-7", "body": "On its way, Ann"})
    );
    assert_eq!(m["data"], json!({"url": "app://orders/o-7", "count": "2"}));
    assert!(
        m["android"]["collapse_key"]
            .as_str()
            .is_some_and(|k| k.len() == 16),
        "{m}"
    );
    // APNs: HTTP/2, topic and push type, alert payload with the data beside `aps`, and a
    // provider token that verifies with the key's public half.
    let (_, _, version, headers, body) = find("apns", "apns-ann-1");
    assert_eq!(version, "HTTP/2.0");
    assert_eq!(
        (&headers["apns-topic"], &headers["apns-push-type"]),
        (&json!("com.example.app"), &json!("alert"))
    );
    assert_eq!(
        body["aps"]["alert"],
        json!({"title": "Order o-7", "body": "On its way, Ann"})
    );
    assert_eq!(body["url"], "app://orders/o-7");
    let (header, claims) = verified_apns_token(&headers["authorization"], &public_point);
    assert_eq!(
        (&header["alg"], &header["kid"], &claims["iss"]),
        (&json!("ES256"), &json!("KEY123"), &json!("TEAM42"))
    );
    // Ann's record keeps what each provider answered.
    let (_, ann) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ann/messages").await;
    assert_eq!(ann["messages"][0]["status"], "sent", "{ann}");
    assert_eq!(
        ann["messages"][0]["provider"]["devices"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{ann}"
    );
    // Dan's only token is dead: the message failed saying so, and the token is gone from
    // the profile, so the next push does not try it.
    let (_, dan) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/dan/messages").await;
    assert!(
        dan["messages"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("410") && r.contains("token removed")),
        "{dan}"
    );
    let namespaces = |profile: &Value| -> Vec<String> {
        profile["identities"]
            .as_array()
            .expect("identities")
            .iter()
            .map(|i| i["namespace"].as_str().expect("namespace").to_owned())
            .collect()
    };
    let (_, ann_profile) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/ann").await;
    assert!(
        namespaces(&ann_profile).contains(&"apns_token".to_string()),
        "{ann_profile}"
    );
    let (_, profile) = get(&c, &server.base, ADMIN, "/v1/profiles/user_id/dan").await;
    assert_eq!(namespaces(&profile), ["user_id"], "{profile}");
    let (_, nobody) = get(
        &c,
        &server.base,
        ADMIN,
        "/v1/profiles/user_id/nobody/messages",
    )
    .await;
    assert_eq!(nobody["messages"][0]["status"], "not_sent", "{nobody}");
}

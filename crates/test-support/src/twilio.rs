//! Stand-ins for Twilio's Messages API.

use std::time::Instant;

use serde_json::json;

/// A stand-in for Twilio's Messages API that checks the request the way Twilio documents it
/// (path with the account SID, Basic auth, form-encoded To/From/Body) and keeps what it got.
/// Numbers ending in 0 are refused as Twilio refuses invalid numbers (400, code 21211).
/// Keeps (To, Body, StatusCallback) of each message taken.
pub async fn twilio() -> (String, TwilioSent) {
    use axum::http::{HeaderMap, StatusCode};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(
            move |axum::extract::Path(sid): axum::extract::Path<String>,
                  headers: HeaderMap,
                  axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>| {
                let seen = seen.clone();
                async move {
                    use base64::Engine;
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("ACtest:secret-token")
                    );
                    if sid != "ACtest" || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
                        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"code": 20003, "message": "Authenticate"})));
                    }
                    if form.get("From").map(String::as_str) != Some("+15550000000") {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 21212, "message": "bad From"})));
                    }
                    let to = form.get("To").cloned().unwrap_or_default();
                    if to.ends_with('0') {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"code": 21211, "message": format!("The 'To' number {to} is not a valid phone number.")})));
                    }
                    let body = form.get("Body").cloned().unwrap_or_default();
                    seen.lock().expect("lock").push((to, body, form.get("StatusCallback").cloned()));
                    (StatusCode::CREATED, axum::Json(json!({"sid": "SM123", "status": "queued"})))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("twilio") });
    (format!("http://{addr}"), got)
}

pub type TwilioSent = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Option<String>)>>>;

/// A Twilio stand-in that notes when each send arrives, and is down (503) for numbers
/// ending in 9.
pub async fn timed_twilio() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>) {
    use axum::http::StatusCode;
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        axum::routing::post(
            move |axum::extract::Form(form): axum::extract::Form<
                std::collections::HashMap<String, String>,
            >| {
                let seen = seen.clone();
                async move {
                    if form.get("To").is_some_and(|t| t.ends_with('9')) {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(json!({"code": 20500})),
                        );
                    }
                    seen.lock().expect("lock").push(std::time::Instant::now());
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"sid": "SM1", "status": "queued"})),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let provider = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("provider") });
    (provider, arrivals)
}

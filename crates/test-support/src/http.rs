//! An HTTP provider stand-in that records every request and answers as the test says.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

/// One request as the provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the stand-in answers a request: a status and a JSON body.
pub type Answer = Arc<dyn Fn(&Received) -> (u16, Value) + Send + Sync>;

pub struct Provider {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Provider {
    /// Listens on a free loopback port until the test ends.
    pub async fn start(answer: Answer) -> Provider {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (log, answer) = (log.clone(), answer.clone());
            async move {
                let request = Received {
                    path: uri.path().to_owned(),
                    headers,
                    body,
                };
                let (status, json) = answer(&request);
                log.lock().expect("lock").push(request);
                let status = StatusCode::from_u16(status).expect("status");
                (status, axum::Json(json))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider { url, received }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

/// A real HTTP server on loopback standing in for a CRM: counts calls per Idempotency-Key
/// and answers 200 with a JSON body, or 500 when told to fail.
pub async fn crm_sink(
    fail: bool,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
) {
    use axum::http::HeaderMap;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        u32,
    >::new()));
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("missing")
                    .to_owned();
                let n = {
                    let mut map = seen.lock().expect("lock");
                    let n = map.entry(key).or_default();
                    *n += 1;
                    map.len()
                };
                let user: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if fail {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"error": "down"})),
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"crm_id": n, "echo": user})),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind sink");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("sink") });
    (format!("http://{addr}/hook"), calls)
}

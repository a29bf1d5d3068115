//! Loopback stand-ins for providers, shared by the channel tests: a real HTTP server on
//! 127.0.0.1 that records every request and answers as the test tells it to.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use waymark_engine::{Effect, Message};
use waymark_store::OutboxItem;

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

/// A claimed outbox row holding `effect`, first attempt, recorded now.
pub fn claimed(effect: Effect) -> OutboxItem {
    OutboxItem {
        seq: 7,
        key: effect.key().unwrap_or("timer").to_owned(),
        profile_id: "p1".into(),
        journey: "welcome".into(),
        effect,
        attempts: 0,
        created_at: waymark_store::wall_clock_ms(),
    }
}

/// A message on `channel` with its rendered content (`{channel, fields, data}`).
pub fn message(key: &str, channel: &str, to: Option<&str>, content: Value) -> Effect {
    Effect::Message(Message {
        key: key.into(),
        instance: 1,
        node: "send".into(),
        channel: channel.into(),
        template: "hello".into(),
        content: Some(serde_json::from_value(content).expect("rendered content")),
        to: to.map(str::to_owned),
        transactional: false,
        expires_at: None,
        subscription: None,
        devices: vec![],
    })
}

/// An SMS with rendered text, to `to`.
pub fn sms(to: &str, text: &str) -> Effect {
    let content = serde_json::json!({"channel": "sms", "fields": {"text": text}});
    message("welcome:p1:1:text:2", "sms", Some(to), content)
}

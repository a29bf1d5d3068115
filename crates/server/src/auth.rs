//! API keys. Write keys (sent as the HTTP Basic username, as Segment and RudderStack clients
//! do) may only ingest and read inboxes; admin tokens (`Authorization: Bearer ...`) reach
//! everything else. A write key is a server key (kept by the customer's backend) or a
//! client key (shipped in web pages and apps, so public): events sent with a client key
//! change a signed-in person's addresses only with that person's user hash
//! (`waymark_core::ingest`). Comparisons are constant-time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

#[derive(Clone, Default)]
pub struct Keys {
    /// Server write keys.
    pub write_keys: Vec<String>,
    /// Client write keys: public, for web pages and apps.
    pub client_write_keys: Vec<String>,
    pub admin_tokens: Vec<String>,
}

/// Which kind of write key a request holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKey {
    Server,
    Client,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, even in debug output.
        f.debug_struct("Keys")
            .field("write_keys", &self.write_keys.len())
            .field("client_write_keys", &self.client_write_keys.len())
            .field("admin_tokens", &self.admin_tokens.len())
            .finish()
    }
}

fn matches_any(candidate: &str, keys: &[String]) -> bool {
    let mut found = subtle::Choice::from(0);
    for key in keys {
        found |= candidate.as_bytes().ct_eq(key.as_bytes());
    }
    !candidate.is_empty() && bool::from(found)
}

/// What the Authorization header carried, before checking it.
pub enum Presented {
    None,
    Basic(String),
    Bearer(String),
    Malformed,
}

pub fn presented(headers: &HeaderMap) -> Presented {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Presented::None;
    };
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return Presented::Malformed;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Presented::Malformed;
        };
        let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
        Presented::Basic(user.to_owned())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Presented::Bearer(rest.trim().to_owned())
    } else {
        Presented::Malformed
    }
}

impl Keys {
    pub fn is_write_key(&self, key: &str) -> bool {
        self.write_key(key).is_some()
    }

    /// The kind of write key `key` is, if it is one. Both lists are always compared, so
    /// the time taken does not tell which kind a guess matched.
    pub fn write_key(&self, key: &str) -> Option<WriteKey> {
        let server = matches_any(key, &self.write_keys);
        let client = matches_any(key, &self.client_write_keys);
        match (server, client) {
            (true, _) => Some(WriteKey::Server),
            (false, true) => Some(WriteKey::Client),
            (false, false) => None,
        }
    }

    /// A write key as the HTTP Basic username (what apps and pages embed).
    pub fn require_write(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match presented(headers) {
            Presented::Basic(key) if self.is_write_key(&key) => Ok(()),
            Presented::None => Err(ApiError::unauthorized(
                "missing write key (HTTP Basic username)",
            )),
            _ => Err(ApiError::unauthorized("invalid write key")),
        }
    }

    pub fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match presented(headers) {
            Presented::Bearer(token) if matches_any(&token, &self.admin_tokens) => Ok(()),
            Presented::Basic(_) => Err(ApiError::unauthorized(
                "this endpoint needs an admin token (Authorization: Bearer ...); write keys can only send events",
            )),
            Presented::None => Err(ApiError::unauthorized(
                "missing Authorization: Bearer <admin token>",
            )),
            _ => Err(ApiError::unauthorized("invalid admin token")),
        }
    }
}

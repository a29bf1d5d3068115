//! `[push]`: FCM and APNs credentials.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Push providers: FCM HTTP v1 and APNs (token-based). Either or both.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Default `https://fcm.googleapis.com`.
    #[serde(default = "default_fcm")]
    pub fcm_url: String,
    #[serde(default)]
    pub fcm_project_id: Option<String>,
    /// The project's service account key (the JSON file Firebase gives): access tokens
    /// are obtained and renewed with it (OAuth 2 JWT bearer grant).
    #[serde(default)]
    pub fcm_service_account_file: Option<PathBuf>,
    /// Or a ready OAuth 2 access token (`gcloud auth print-access-token`); it expires, so
    /// something outside must refresh it.
    #[serde(default)]
    pub fcm_access_token: Option<String>,
    /// Default `https://api.push.apple.com` (`https://api.sandbox.push.apple.com` for
    /// development builds).
    #[serde(default = "default_apns")]
    pub apns_url: String,
    /// The app's bundle id.
    #[serde(default)]
    pub apns_topic: Option<String>,
    /// The `.p8` signing key from Apple, with its key id and the team id.
    #[serde(default)]
    pub apns_key_file: Option<PathBuf>,
    #[serde(default)]
    pub apns_key_id: Option<String>,
    #[serde(default)]
    pub apns_team_id: Option<String>,
}

fn default_fcm() -> String {
    "https://fcm.googleapis.com".into()
}

fn default_apns() -> String {
    "https://api.push.apple.com".into()
}

//! Stand-ins for FCM HTTP v1 (with Google's OAuth 2 token endpoint) and APNs, and the keys
//! their clients sign with, made as Google and Apple issue them.

use serde_json::{Value, json};

/// What the push stand-in received: (platform, token, HTTP version, headers, body).
pub type PushLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Value, Value)>>>;

/// FCM HTTP v1 and APNs stand-ins on one loopback server (HTTP/1.1 and HTTP/2 cleartext).
/// Tokens starting with "dead" are answered as the providers answer unregistered ones.
pub async fn push_providers(service_account_public_key: Vec<u8>) -> (String, PushLog) {
    use axum::http::StatusCode;
    let log: PushLog = Default::default();
    let (fcm_log, apns_log, token_log) = (log.clone(), log.clone(), log.clone());
    let headers_json = |h: &axum::http::HeaderMap| -> Value {
        h.iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let app = axum::Router::new()
        // Google's OAuth 2 token endpoint: a JWT bearer assertion signed RS256 by the
        // service account's key buys an access token.
        .route(
            "/token",
            axum::routing::post(
                move |axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>| {
                    let (log, public) = (token_log.clone(), service_account_public_key.clone());
                    async move {
                        use base64::Engine;
                        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                        let assertion = form.get("assertion").cloned().unwrap_or_default();
                        let parts: Vec<&str> = assertion.split('.').collect();
                        let claims: Value = parts.get(1).and_then(|p| b64.decode(p).ok())
                            .and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
                        let signed = parts.len() == 3
                            && ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &public)
                                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &b64.decode(parts[2]).unwrap_or_default())
                                .is_ok();
                        log.lock().expect("lock").push(("token".into(), String::new(), String::new(), json!(form), claims.clone()));
                        let grant = form.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:jwt-bearer");
                        if !signed || !grant || claims["iss"] != "fcm@proj.iam.gserviceaccount.com"
                            || claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
                            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_grant"})));
                        }
                        (StatusCode::OK, axum::Json(json!({"access_token": "sa-access", "expires_in": 3599, "token_type": "Bearer"})))
                    }
                },
            ),
        )
        .route(
            "/v1/projects/{project}/messages:send",
            axum::routing::post(
                move |axum::extract::Path(project): axum::extract::Path<String>,
                      req: axum::extract::Request| {
                    let log = fcm_log.clone();
                    async move {
                        let version = format!("{:?}", req.version());
                        let headers = headers_json(req.headers());
                        let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.expect("body");
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        let token = body["message"]["token"].as_str().unwrap_or_default().to_owned();
                        log.lock().expect("lock").push(("fcm".into(), token.clone(), version, headers.clone(), body));
                        if project != "proj" || headers["authorization"] != "Bearer sa-access" {
                            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"status": "UNAUTHENTICATED"}})));
                        }
                        if token.starts_with("dead") {
                            return (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": 404, "status": "NOT_FOUND",
                                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})));
                        }
                        (StatusCode::OK, axum::Json(json!({"name": format!("projects/proj/messages/{token}-1")})))
                    }
                },
            ),
        )
        .route(
            "/3/device/{token}",
            axum::routing::post(
                move |axum::extract::Path(token): axum::extract::Path<String>, req: axum::extract::Request| {
                    let log = apns_log.clone();
                    async move {
                        let version = format!("{:?}", req.version());
                        let headers = headers_json(req.headers());
                        let bytes = axum::body::to_bytes(req.into_body(), 1 << 20).await.expect("body");
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        log.lock().expect("lock").push(("apns".into(), token.clone(), version, headers, body));
                        if token.starts_with("dead") {
                            return (StatusCode::GONE, [("apns-id", "x")], axum::Json(json!({"reason": "Unregistered"})));
                        }
                        (StatusCode::OK, [("apns-id", "APNS-ID-1")], axum::Json(json!({})))
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("push providers") });
    (base, log)
}

fn openssl(args: &[&str], out: &std::path::Path) -> Vec<u8> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .arg(out)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// An APNs signing key as Apple issues them (`AuthKey_<id>.p8`, PKCS#8 P-256) in `dir`, and
/// its public point (65 bytes, uncompressed) to verify provider tokens with.
pub fn apns_signing_key(dir: &std::path::Path, key_id: &str) -> (std::path::PathBuf, Vec<u8>) {
    let file = dir.join(format!("AuthKey_{key_id}.p8"));
    let genpkey = [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
    ];
    openssl(&genpkey, &file);
    let spki = openssl(&["pkey", "-pubout", "-outform", "DER", "-in"], &file);
    let point = spki[spki.len() - 65..].to_vec();
    (file, point)
}

/// A Firebase service account's key: the RSA key (PEM) in `dir`, and its public half
/// (PKCS#1 DER), which `push_providers` checks token requests against.
pub fn service_account_key(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let file = dir.join("sa.pem");
    let genpkey = [
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
    ];
    openssl(&genpkey, &file);
    let public = openssl(
        &["rsa", "-RSAPublicKey_out", "-outform", "DER", "-in"],
        &file,
    );
    (file, public)
}

/// The service account JSON file Firebase hands out (project `proj`), for `key` and with
/// its token endpoint on the stand-in at `providers`.
pub fn service_account_file(
    dir: &std::path::Path,
    key: &std::path::Path,
    providers: &str,
) -> std::path::PathBuf {
    let file = dir.join("service-account.json");
    let account = json!({"type": "service_account", "project_id": "proj",
        "client_email": "fcm@proj.iam.gserviceaccount.com",
        "private_key": std::fs::read_to_string(key).expect("key"),
        "token_uri": format!("{providers}/token")});
    std::fs::write(&file, account.to_string()).expect("service account");
    file
}

/// The header and claims of an APNs provider token (`authorization: bearer <jwt>`), after
/// checking its ES256 signature with the signing key's public point.
pub fn verified_apns_token(authorization: &Value, public_point: &[u8]) -> (Value, Value) {
    use base64::Engine;
    let jwt = authorization
        .as_str()
        .and_then(|a| a.strip_prefix("bearer "))
        .expect("a bearer token");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decode = |part: &str| -> Value {
        serde_json::from_slice(&b64.decode(part).expect("base64")).expect("json")
    };
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        public_point,
    )
    .verify(
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &b64.decode(parts[2]).expect("base64"),
    )
    .expect("the provider token verifies with the key's public half");
    (decode(parts[0]), decode(parts[1]))
}

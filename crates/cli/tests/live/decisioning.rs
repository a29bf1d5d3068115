//! Offer decisioning in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from `tests/browser`): the example page, served from its own origin,
//! loads the browser client from Waymark, shows the offers chosen for the visitor, reports
//! displays and clicks (once each), and the catalogue's caps and learned ranking follow; a
//! campaign places its content in the hero, ahead of the offers, for the people it reaches.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{ADMIN, Launch, Server, client, get, workspace_root};
use crate::support::{put_document, put_template};

const CLIENT_KEY: &str = "wkc_browser_test";

/// Serves one page on loopback, as a shop's own web server would.
async fn serve_page(html: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn browser_dir() -> PathBuf {
    workspace_root().join("tests/browser")
}

/// playwright-core, installed from the lock file on first run.
fn playwright() {
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed to run the browser test (Node.js 20+)");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "the browser test drives Debian's chromium ({chromium}): apt-get install chromium"
    );
}

/// One visit of the page in a fresh headless Chromium: what it showed.
fn visit(url: &str) -> Value {
    let out = Command::new("node")
        .arg("offers.mjs")
        .arg(url)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the browser visit failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the visit's JSON")
}

fn offers(shown: &Value) -> Vec<String> {
    let mut sidebar: Vec<String> = shown["sidebar"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["offer"].as_str().map(str::to_owned))
        .collect();
    sidebar.sort();
    sidebar
}

/// Names of the visitor's events, oldest first.
async fn event_names(c: &reqwest::Client, base: &str, visitor: &str) -> Vec<String> {
    let (status, body) = get(
        c,
        base,
        ADMIN,
        &format!("/v1/profiles/anonymous_id/{visitor}/events?limit=100"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut names: Vec<String> = body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["event"].as_str().map(str::to_owned))
        .collect();
    names.reverse();
    names
}

/// `POST /v1/decide{query}` with the admin token (for anyone); the answer.
async fn decide_as_admin(c: &reqwest::Client, base: &str, query: &str, ask: &Value) -> Value {
    let r = c
        .post(format!("{base}/v1/decide{query}"))
        .bearer_auth(ADMIN)
        .json(ask)
        .send()
        .await
        .expect("decide");
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_page_shows_offers_chosen_for_the_visitor_in_chromium() {
    playwright();
    let html = std::fs::read_to_string(workspace_root().join("examples/decisioning/index.html"))
        .expect("the example page");
    let page = serve_page(html).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cors = format!("[\"{page}\"]");
    let server = Server::start_with_env(
        Launch {
            data_dir: &data,
            store: None,
            configured_keys: true,
        },
        &[
            ("WAYMARK_CLIENT_WRITE_KEY", CLIENT_KEY),
            ("WAYMARK_HTTP__CORS_ORIGINS", &cors),
        ],
    );
    let base = server.base.clone();
    // The example's own catalogue script.
    let status = Command::new("bash")
        .arg(workspace_root().join("examples/decisioning/catalogue.sh"))
        .env("URL", &base)
        .env("ADMIN", ADMIN)
        .status()
        .expect("bash");
    assert!(status.success(), "examples/decisioning/catalogue.sh failed");
    let c = client();

    // A visitor with a big cart: the free-delivery offer in the hero, rendered for them,
    // and the two sidebar offers.
    let url =
        format!("{page}/index.html?waymark={base}&key={CLIENT_KEY}&anonymousId=visitor-1&cart=120");
    let shown = tokio::task::spawn_blocking({
        let url = url.clone();
        move || visit(&url)
    })
    .await
    .expect("visit");
    assert_eq!(shown["failures"], Value::Array(vec![]), "{shown}");
    assert_eq!(
        shown["hero"]["offers"],
        serde_json::json!(["big-cart"]),
        "{shown}"
    );
    let hero = shown["hero"]["html"].as_str().unwrap_or_default();
    assert!(
        hero.contains("<strong>Free delivery</strong> on your 120"),
        "{hero}"
    );
    assert_eq!(offers(&shown), ["boots", "scarves"], "{shown}");

    // Three displays and one click (clicked twice), recorded once each in their history.
    let started = Instant::now();
    loop {
        let names = event_names(&c, &base, "visitor-1").await;
        let count = |n: &str| names.iter().filter(|e| *e == n).count();
        if count("Offer Displayed") == 3 && count("Offer Clicked") == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "displays and clicks not recorded: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A small cart: the welcome offer instead. Boots are capped at three displays a day:
    // the third visit is their last.
    let small =
        format!("{page}/index.html?waymark={base}&key={CLIENT_KEY}&anonymousId=visitor-1&cart=10");
    for visit_number in 2..=4 {
        let shown = tokio::task::spawn_blocking({
            let url = small.clone();
            move || visit(&url)
        })
        .await
        .expect("visit");
        assert_eq!(
            shown["hero"]["offers"],
            serde_json::json!(["welcome"]),
            "{shown}"
        );
        let expected: &[&str] = if visit_number <= 3 {
            &["boots", "scarves"]
        } else {
            &["scarves"]
        };
        assert_eq!(offers(&shown), expected, "visit {visit_number}: {shown}");
    }

    // Everyone's displays reach the learned ranker of the sidebar.
    let ask = serde_json::json!({"anonymousId": "someone-else", "placements": [{"placement": "home-sidebar"}]});
    let started = Instant::now();
    loop {
        let body = decide_as_admin(&c, &base, "?explain=true", &ask).await;
        let scarves = body["placements"][0]["explain"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["offer"] == "scarves")
            .map(|e| e["estimate"]["displays"].clone())
            .unwrap_or(Value::Null);
        if scarves == 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the ranker never saw 4 displays of scarves: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A campaign places its banner in the hero for the people of its audience (the first
    // visitor), ahead of the offers; someone else still gets the offers.
    put_document(
        &c,
        &base,
        "/v1/audiences/winter-list",
        &serde_json::json!({"key": "winter-list", "refresh": "upload"}),
    )
    .await;
    let r = c
        .post(format!("{base}/v1/audiences/winter-list/members?mode=add"))
        .bearer_auth(ADMIN)
        .header("content-type", "text/csv")
        .body("anonymous_id\nvisitor-1\n")
        .send()
        .await
        .expect("upload");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    put_template(
        &c,
        &base,
        "winter-banner",
        &serde_json::json!({"channel": "code_based", "html": "<em>Winter sale</em> for you"}),
    )
    .await;
    put_document(
        &c,
        &base,
        "/v1/campaigns/winter",
        &serde_json::json!({"key": "winter", "audience": "winter-list", "channel": "code_based",
            "template": "winter-banner", "surface": "web://shop.example/home#hero",
            "expires": "7d", "priority": 5}),
    )
    .await;
    let r = c
        .post(format!("{base}/v1/campaigns/winter/launch"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("launch");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let ask =
        serde_json::json!({"anonymousId": "visitor-1", "placements": [{"placement": "home-hero"}]});
    let started = Instant::now();
    loop {
        let body = decide_as_admin(&c, &base, "", &ask).await;
        if body["placements"][0]["items"][0]["journey"] == "winter" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the campaign never placed its banner: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = tokio::task::spawn_blocking({
        let url = small.clone();
        move || visit(&url)
    })
    .await
    .expect("visit");
    assert_eq!(
        shown["hero"]["journeys"],
        serde_json::json!(["winter"]),
        "{shown}"
    );
    assert!(
        shown["hero"]["html"]
            .as_str()
            .is_some_and(|h| h.contains("<em>Winter sale</em> for you")),
        "{shown}"
    );
    let other =
        format!("{page}/index.html?waymark={base}&key={CLIENT_KEY}&anonymousId=visitor-2&cart=10");
    let shown = tokio::task::spawn_blocking(move || visit(&other))
        .await
        .expect("visit");
    assert_eq!(
        shown["hero"]["offers"],
        serde_json::json!(["welcome"]),
        "{shown}"
    );
    // Its display and click are the visitor's events, naming the campaign.
    let started = Instant::now();
    loop {
        let (status, body) = get(
            &c,
            &base,
            ADMIN,
            "/v1/profiles/anonymous_id/visitor-1/events?limit=100",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let kinds: Vec<&str> = body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["properties"]["journey"] == "winter")
            .filter_map(|e| e["event"].as_str())
            .collect();
        if kinds.contains(&"Offer Displayed") && kinds.contains(&"Offer Clicked") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the banner's display and click were not recorded: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

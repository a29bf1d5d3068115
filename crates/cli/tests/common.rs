//! Runs the real `waymark` binary as a child process, for tests that need a whole server:
//! restarts, signals, kill -9, and client libraries talking over TCP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const WRITE_KEY: &str = "wk_process_test";
pub const ADMIN: &str = "adm_process_test";

pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout: Vec<String>,
    /// The server's stderr (its log), shown when a test fails with the server still up.
    pub log: PathBuf,
}

pub struct Launch<'a> {
    pub data_dir: &'a Path,
    pub store: Option<&'a str>,
    pub configured_keys: bool,
}

impl Server {
    pub fn start(launch: Launch<'_>) -> Server {
        Self::start_with_env(launch, &[])
    }

    /// Starts with extra environment variables (configuration keys, `WAYMARK_*`).
    pub fn start_with_env(launch: Launch<'_>, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_waymark"));
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(launch.data_dir);
        if let Some(store) = launch.store {
            cmd.args(["--store", store]);
        }
        if launch.configured_keys {
            cmd.env("WAYMARK_WRITE_KEY", WRITE_KEY)
                .env("WAYMARK_ADMIN_TOKEN", ADMIN);
        } else {
            cmd.env_remove("WAYMARK_WRITE_KEY")
                .env_remove("WAYMARK_ADMIN_TOKEN");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.data_dir.with_extension("log"))
            .expect("log file");
        cmd.env("WAYMARK_RETENTION__MAX_EVENTS_PER_PROFILE", "1000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn waymark");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let base = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "waymark exited before listening; stdout: {seen:?}; see {}",
                    launch.data_dir.with_extension("log").display()
                );
            };
            if let Some(addr) = line.strip_prefix("Waymark listening on ") {
                break addr.trim().to_owned();
            }
            seen.push(line);
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base,
            stdout: seen,
            log: launch.data_dir.with_extension("log"),
        }
    }

    /// What the server printed after `prefix` on a line of its start (a generated key).
    pub fn printed(&self, prefix: &str) -> String {
        self.stdout
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|k| k.trim().to_owned()))
            .unwrap_or_else(|| panic!("{prefix} not printed at start: {:?}", self.stdout))
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The data folder (and the log beside it) goes with the test's temporary folder,
        // so a failing test prints the log's tail while it still exists.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- last {} lines of {} ---\n{}",
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn send_batch(
    c: &reqwest::Client,
    base: &str,
    key: &str,
    batch: &Value,
) -> Result<Value, String> {
    let resp = c
        .post(format!("{base}/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&serde_json::json!({ "batch": batch }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

pub async fn get(c: &reqwest::Client, base: &str, admin: &str, path: &str) -> (u16, Value) {
    let resp = c
        .get(format!("{base}{path}"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every message id stored for a profile, following all pages.
pub async fn message_ids(c: &reqwest::Client, base: &str, admin: &str, user: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = format!("/v1/profiles/user_id/{user}/events?limit=1000");
    loop {
        let (status, body) = get(c, base, admin, &path).await;
        if status == 404 {
            return out;
        }
        assert_eq!(status, 200, "{body}");
        for e in body["events"].as_array().expect("events") {
            out.push(e["messageId"].as_str().expect("messageId").to_owned());
        }
        match body["next"].as_str() {
            Some(next) => {
                path = format!("/v1/profiles/user_id/{user}/events?limit=1000&before={next}")
            }
            None => return out,
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A `postgres://` URL whose connections use a new, empty schema.
#[cfg(feature = "backend-tests")]
pub async fn fresh_postgres_url() -> String {
    let base = std::env::var("WAYMARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect to test postgres");
    tokio::spawn(conn);
    let schema = format!(
        "wm_proc_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

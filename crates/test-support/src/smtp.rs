//! An SMTP server stand-in: aiosmtpd (`smtp/sink.py`), installed beside it from PyPI on
//! first use if Python does not have it.

use std::time::{Duration, Instant};

use serde_json::Value;

/// The aiosmtpd SMTP sink (smtp/sink.py); aiosmtpd is installed beside it from PyPI on
/// first use if Python does not have it. Messages it receives arrive as JSON lines.
pub struct SmtpSink {
    pub child: std::process::Child,
    pub port: u16,
    pub messages: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl SmtpSink {
    /// The messages received, once there are at least `count` (fails after `within`).
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let messages = self.messages.lock().expect("lock").clone();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                started.elapsed() < within,
                "only {} of {count} emails arrived",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn smtp_sink() -> SmtpSink {
    smtp_sink_with(&[])
}

/// The sink with STARTTLS and AUTH required: `[cert.pem, key.pem, user, password]`.
pub fn smtp_sink_with(args: &[&str]) -> SmtpSink {
    smtp_sink_configured(args, Duration::ZERO)
}

pub fn smtp_sink_configured(args: &[&str], delay: Duration) -> SmtpSink {
    use std::io::BufRead;
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp");
    let deps = here.join(".pydeps");
    let has = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", &deps)
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        let out = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(&deps)
            .arg("aiosmtpd==1.4.6")
            .output()
            .expect("pip");
        assert!(
            out.status.success(),
            "pip install aiosmtpd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut child = std::process::Command::new("python3")
        .arg(here.join("sink.py"))
        .args(args)
        .env("PYTHONPATH", &deps)
        .env("SINK_DELAY_MS", delay.as_millis().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("port line").expect("read")).expect("json");
    let port = first["port"].as_u64().expect("port") as u16;
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = messages.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().expect("lock").push(v);
            }
        }
    });
    SmtpSink {
        child,
        port,
        messages,
    }
}

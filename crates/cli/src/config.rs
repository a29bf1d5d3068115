//! Configuration, layered: built-in defaults, then a TOML file, then `WAYMARK_*` environment
//! variables, then command-line flags; each layer overrides the one before.

use std::path::{Path, PathBuf};

mod keys;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use keys::Form;
use serde::{Deserialize, Serialize};
use waymark_runtime::channels::direct_mail::DirectMailConfig;
use waymark_runtime::channels::email::EmailConfig;
use waymark_runtime::channels::push::PushConfig;
use waymark_runtime::channels::sms::SmsConfig;
use waymark_runtime::channels::webhook::WebhookConfig;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the embedded store and generated credentials live.
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    pub listen: String,
    /// `sqlite` (embedded, in `data_dir`) or a `postgres://` URL.
    pub store: String,
    /// A single write key (also `WAYMARK_WRITE_KEY`); added to `write_keys`.
    pub write_key: Option<String>,
    pub write_keys: Vec<String>,
    /// A single client write key (also `WAYMARK_CLIENT_WRITE_KEY`); added to
    /// `client_write_keys`. Client keys are for web pages and apps, where anyone can read
    /// them: their events change a signed-in person's addresses only with a user hash.
    pub client_write_key: Option<String>,
    pub client_write_keys: Vec<String>,
    /// A single admin token (also `WAYMARK_ADMIN_TOKEN`); added to `admin_tokens`.
    pub admin_token: Option<String>,
    pub admin_tokens: Vec<String>,
    /// Partitions a new store is created with; fixed once the store exists.
    pub partitions: u32,
    pub retention: Retention,
    /// `text` or `json`.
    pub log_format: String,
    pub webhooks: WebhookConfig,
    pub sms: Option<SmsConfig>,
    pub push: Option<PushConfig>,
    pub direct_mail: Option<DirectMailConfig>,
    pub email: Option<EmailConfig>,
    pub governance: Governance,
    pub outbox: Outbox,
    pub http: Http,
    /// Where this configuration came from, for the log at start.
    #[serde(skip)]
    #[schemars(skip)]
    pub loaded_from: LoadedFrom,
}

/// The file and the `WAYMARK_*` variables a configuration was read from.
#[derive(Debug, Clone, Default)]
pub struct LoadedFrom {
    pub file: Option<PathBuf>,
    /// Variable names only: values may be secrets.
    pub variables: Vec<String>,
}

/// Limits on the HTTP server's connections (see `waymark_server::listen::Limits`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Connections open at once (default 4096); more wait to be accepted.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// How long a request's headers may take, and a kept-alive connection may idle (`30s`).
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// How long a request's body may take once its headers are in (`30s`).
    #[serde(default)]
    pub body_timeout: Option<String>,
    /// Origins whose web pages may call Waymark from the browser (`https://shop.example`,
    /// or `*` for any): sending events, asking for offers (`/v1/decide`), reading inboxes.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

impl Http {
    pub fn limits(&self) -> Result<waymark_server::listen::Limits, String> {
        let defaults = waymark_server::listen::Limits::default();
        let duration = |key: &str, text: &Option<String>, default: std::time::Duration| match text {
            None => Ok(default),
            Some(text) => waymark_core::journey::parse_duration_ms(text)
                .map(|ms| std::time::Duration::from_millis(ms.max(1) as u64))
                .map_err(|e| format!("http.{key}: {e}")),
        };
        Ok(waymark_server::listen::Limits {
            max_connections: self
                .max_connections
                .unwrap_or(defaults.max_connections)
                .max(1),
            header_timeout: duration(
                "header_timeout",
                &self.header_timeout,
                defaults.header_timeout,
            )?,
            body_timeout: duration("body_timeout", &self.body_timeout, defaults.body_timeout)?,
        })
    }
}

/// How the outbox dispatcher holds the rows it delivers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outbox {
    /// How long a claimed row stays ours if this process dies (`2m`): then another process,
    /// or this one restarted, delivers it again. While the process lives it renews the
    /// lease, however long a delivery takes. At least 4s.
    #[serde(default)]
    pub lease: Option<String>,
}

impl Outbox {
    pub fn lease_ms(&self) -> Result<i64, String> {
        let ms = match &self.lease {
            None => return Ok(120_000),
            Some(text) => waymark_core::journey::parse_duration_ms(text)
                .map_err(|e| format!("outbox.lease: {e}"))?,
        };
        if ms < 4_000 {
            return Err(format!(
                "outbox.lease: {ms} ms is shorter than the 4s minimum"
            ));
        }
        Ok(ms)
    }
}

/// Delivery rules for marketing messages (see `waymark_core::governance`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Governance {
    /// `[{channel = "email", max = 3, window = "7d"}, {max = 5, window = "1d"}]`; without
    /// `channel` a cap counts every channel.
    #[serde(default)]
    pub caps: Vec<CapConfig>,
    /// `{start = "21:00", end = "08:00", action = "hold"}` (or `"drop"`), in each person's
    /// `timezone` trait (UTC if they have none).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub quiet_hours: Option<waymark_core::governance::QuietHours>,
    /// Soft bounces (temporary refusals that outlast the retries) before an address goes
    /// on the suppression list. Default 3.
    #[serde(default)]
    pub soft_bounce_limit: Option<u32>,
    /// How long a message keeps being retried (with backoff up to a minute) after it was
    /// decided, before it fails with the reason: `30m`, `6h`. Default `1h`.
    #[serde(default)]
    pub retry_window: Option<String>,
    /// Sends per second per channel, never exceeded on average (bursts up to the same
    /// number): `{email = 50, sms = 10}`. Per server process.
    #[serde(default)]
    pub throttle: std::collections::BTreeMap<String, u32>,
}

impl Governance {
    pub fn retry_window_ms(&self) -> Result<i64, String> {
        match &self.retry_window {
            None => Ok(3_600_000),
            Some(text) => waymark_core::journey::parse_duration_ms(text)
                .map_err(|e| format!("governance.retry_window: {e}")),
        }
    }

    pub fn throttles(
        &self,
    ) -> Result<std::collections::HashMap<String, waymark_runtime::pace::Pace>, String> {
        let mut out = std::collections::HashMap::new();
        for (channel, rate) in &self.throttle {
            use waymark_core::channel::Channel;
            let governed = || {
                Channel::ALL
                    .into_iter()
                    .filter(|c| c.governed())
                    .map(Channel::as_str)
            };
            if !governed().any(|c| c == channel) {
                let known: Vec<&str> = governed().collect();
                return Err(format!(
                    "governance.throttle.{channel}: not a channel that sends messages ({})",
                    known.join(", ")
                ));
            }
            if *rate == 0 {
                return Err(format!(
                    "governance.throttle.{channel}: must be at least 1 per second"
                ));
            }
            out.insert(
                channel.clone(),
                waymark_runtime::pace::Pace::per_second(*rate),
            );
        }
        Ok(out)
    }

    pub fn soft_bounce_limit(&self) -> Result<u32, String> {
        match self.soft_bounce_limit {
            None => Ok(3),
            Some(0) => Err("governance.soft_bounce_limit: must be at least 1".into()),
            Some(n) => Ok(n),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapConfig {
    #[serde(default)]
    pub channel: Option<String>,
    pub max: u32,
    pub window: String,
}

impl Governance {
    pub fn policy(&self) -> Result<waymark_core::governance::Policy, String> {
        let caps = self
            .caps
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let window_ms = waymark_core::journey::parse_duration_ms(&c.window)
                    .map_err(|e| format!("governance.caps[{i}].window: {e}"))?;
                Ok(waymark_core::governance::Cap {
                    channel: c.channel.clone(),
                    max: c.max,
                    window_ms,
                    window: c.window.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let policy = waymark_core::governance::Policy {
            caps,
            quiet_hours: self.quiet_hours.clone(),
        };
        policy.check()?;
        Ok(policy)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub max_events_per_profile: u64,
    /// 0 keeps events forever.
    pub max_event_age_days: u64,
    /// Finished messages (sent or given up) are kept this long, and never less than the
    /// longest frequency cap window; 0 keeps them forever.
    #[serde(default = "default_message_age_days")]
    pub max_message_age_days: u64,
}

fn default_message_age_days() -> u64 {
    365
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("waymark-data"),
            listen: "127.0.0.1:8080".into(),
            store: "sqlite".into(),
            write_key: None,
            write_keys: Vec::new(),
            client_write_key: None,
            client_write_keys: Vec::new(),
            admin_token: None,
            admin_tokens: Vec::new(),
            partitions: waymark_core::partition::DEFAULT_PARTITIONS,
            retention: Retention {
                max_events_per_profile: 1000,
                max_event_age_days: 365,
                max_message_age_days: default_message_age_days(),
            },
            log_format: "text".into(),
            webhooks: WebhookConfig::default(),
            sms: None,
            push: None,
            direct_mail: None,
            email: None,
            governance: Governance::default(),
            outbox: Outbox::default(),
            http: Http::default(),
            loaded_from: LoadedFrom::default(),
        }
    }
}

/// Flags given on the command line; only those present override the other layers.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

impl Config {
    /// The defaults, then the file (`waymark.toml` if none is named), then `WAYMARK_*`
    /// variables (`__` nests: `WAYMARK_RETENTION__MAX_EVENT_AGE_DAYS`; every key of the
    /// structure has one, see `keys`), then flags. An unknown key in the file or an
    /// unknown `WAYMARK_*` variable is an error that names it.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, String> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        let file = match file {
            Some(path) if !path.exists() => {
                return Err(format!("config file {} does not exist", path.display()));
            }
            Some(path) => Some(path.to_path_buf()),
            None if Path::new("waymark.toml").exists() => Some(PathBuf::from("waymark.toml")),
            None => None,
        };
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let keys = keys::env_keys();
        let environment = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let variables = keys::configuration_variables(environment, &keys)?;
        let parsed: Vec<String> = variables
            .iter()
            .filter(|(_, _, form, _)| *form == Form::Parsed)
            .map(|(_, dotted, _, _)| dotted.clone())
            .collect();
        figment = figment.merge(
            Env::prefixed("WAYMARK_")
                .split("__")
                .filter(move |k| parsed.iter().any(|p| p.eq_ignore_ascii_case(k.as_str()))),
        );
        for (_, dotted, form, value) in &variables {
            if *form == Form::Text {
                figment = figment.merge(Serialized::default(dotted, value));
            }
        }
        figment = figment.merge(Serialized::defaults(overrides));
        let mut config: Config = figment.extract().map_err(|e| {
            // figment names the key and the layer (file path or env var) that failed; an
            // unknown file key also gets its line.
            let text = file.as_ref().and_then(|p| std::fs::read_to_string(p).ok());
            e.into_iter()
                .map(|e| match (&e.kind, &text) {
                    (figment::error::Kind::UnknownField(name, _), Some(text)) => {
                        // The path names the key itself when figment knows it.
                        let table = match e.path.split_last() {
                            Some((last, table)) if last == name => table,
                            _ => &e.path[..],
                        };
                        match keys::line_of(text, table, name) {
                            Some(line) => format!("{e} (line {line})"),
                            None => e.to_string(),
                        }
                    }
                    _ => e.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        config.loaded_from = LoadedFrom {
            file,
            variables: variables.into_iter().map(|(name, ..)| name).collect(),
        };
        if config.partitions == 0 {
            return Err("partitions must be at least 1".into());
        }
        config.governance.policy()?;
        if let Some(secret) = &config.webhooks.signing_secret {
            waymark_core::links::webhook_secret(secret)
                .map_err(|e| format!("webhooks.signing_secret: {e}"))?;
        }
        if !matches!(config.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "log_format must be \"text\" or \"json\", not {:?}",
                config.log_format
            ));
        }
        Ok(config)
    }

    pub fn store_options(&self) -> waymark_store::StoreOptions {
        let day = 24 * 3600 * 1000;
        waymark_store::StoreOptions {
            partitions: self.partitions,
            max_events_per_profile: self.retention.max_events_per_profile.max(1),
            max_event_age_ms: match self.retention.max_event_age_days {
                0 => None,
                days => Some(days as i64 * day),
            },
            max_message_age_ms: match self.retention.max_message_age_days {
                0 => None,
                days => Some(days as i64 * day),
            },
            // Checked by `load`.
            governance: self.governance.policy().unwrap_or_default(),
            ..waymark_store::StoreOptions::default()
        }
    }
}

/// Keys generated on first start, kept in `<data_dir>/credentials.toml`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub write_key: String,
    /// Absent in files written before client keys existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_write_key: Option<String>,
    pub admin_token: String,
}

/// The keys the server accepts, and whether they were generated just now (to print once).
pub struct ResolvedKeys {
    pub keys: waymark_server::Keys,
    pub generated: Option<Credentials>,
    pub file: PathBuf,
}

/// Keys from config; if none are configured, the ones stored in the data directory; if
/// there are none yet, new random ones, written there (mode 0600) for later starts.
pub fn resolve_keys(config: &Config) -> Result<ResolvedKeys, String> {
    let mut write_keys = config.write_keys.clone();
    write_keys.extend(config.write_key.clone());
    let mut client_write_keys = config.client_write_keys.clone();
    client_write_keys.extend(config.client_write_key.clone());
    let mut admin_tokens = config.admin_tokens.clone();
    admin_tokens.extend(config.admin_token.clone());
    write_keys.retain(|k| !k.is_empty());
    client_write_keys.retain(|k| !k.is_empty());
    admin_tokens.retain(|k| !k.is_empty());
    let file = config.data_dir.join("credentials.toml");
    let mut generated = None;
    if write_keys.is_empty() || admin_tokens.is_empty() {
        let creds = if file.exists() {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            toml::from_str::<Credentials>(&text).map_err(|e| format!("{}: {e}", file.display()))?
        } else {
            let creds = Credentials {
                write_key: format!("wk_{}", uuid::Uuid::new_v4().simple()),
                client_write_key: Some(format!("wkc_{}", uuid::Uuid::new_v4().simple())),
                admin_token: format!(
                    "adm_{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ),
            };
            std::fs::create_dir_all(&config.data_dir)
                .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
            let text = toml::to_string(&creds).map_err(|e| e.to_string())?;
            write_private(&file, &text)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            generated = Some(creds.clone());
            creds
        };
        if write_keys.is_empty() {
            write_keys.push(creds.write_key);
        }
        if client_write_keys.is_empty() {
            client_write_keys.extend(creds.client_write_key);
        }
        if admin_tokens.is_empty() {
            admin_tokens.push(creds.admin_token);
        }
    }
    Ok(ResolvedKeys {
        keys: waymark_server::Keys {
            write_keys,
            client_write_keys,
            admin_tokens,
        },
        generated,
        file,
    })
}

/// The secret signed links (unsubscribe) are signed with: `<data_dir>/link_secret`, made
/// on first start.
pub fn link_secret(config: &Config) -> Result<Vec<u8>, String> {
    secret_file(
        config,
        "link_secret",
        "a link secret",
        "links already sent stop working",
    )
}

/// The secret identity proofs (`X-Waymark-User-Hash`, for what a browser or app reads about
/// one person) are checked with: `<data_dir>/identity_secret`, made on first start. The
/// customer's backend signs its users' identities with it.
pub fn identity_secret(config: &Config) -> Result<Vec<u8>, String> {
    secret_file(
        config,
        "identity_secret",
        "an identity secret",
        "user hashes your backend already issued stop working",
    )
}

/// A random secret kept in `<data_dir>/<name>`: made (whole or not at all) on first start,
/// refused when shorter than `links::MIN_SECRET_BYTES`.
fn secret_file(
    config: &Config,
    name: &str,
    what: &str,
    if_replaced: &str,
) -> Result<Vec<u8>, String> {
    let file = config.data_dir.join(name);
    if file.exists() {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let secret = text.trim();
        if secret.len() < waymark_core::links::MIN_SECRET_BYTES {
            return Err(format!(
                "{} holds {} bytes; {what} needs at least {} (anyone who guesses it can sign for it). \
                 Delete the file to have a new one made ({if_replaced}), or write a longer random secret into it",
                file.display(),
                secret.len(),
                waymark_core::links::MIN_SECRET_BYTES
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&file, &secret).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(secret.into_bytes())
}

/// This server's name as the owner of outbox leases: `<data_dir>/node_id`, made on first
/// start and kept, so a restarted server takes back what its earlier run had claimed. The
/// returned lock (`<data_dir>/node.lock`, held until the file is dropped) keeps a second
/// process from running on the same data folder under the same name; the kernel lets go of
/// it when the process dies, even by kill -9.
pub fn node_identity(config: &Config) -> Result<(String, std::fs::File), String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    let lock_path = config.data_dir.join("node.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        format!(
            "another waymark process is running on {} (it holds {}); give each process its own --data-dir",
            config.data_dir.display(),
            lock_path.display()
        )
    })?;
    let file = config.data_dir.join("node_id");
    if !file.exists() {
        let id = format!("node-{}", uuid::Uuid::new_v4().simple());
        write_private(&file, &id).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    let id = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .trim()
        .to_owned();
    if id.is_empty() {
        return Err(format!(
            "{} is empty; delete it to have a new one made",
            file.display()
        ));
    }
    Ok((id, lock))
}

/// Writes a new private file whole or not at all: the text goes to a temporary file that is
/// synced, then linked into place (which fails if the file appeared meanwhile), so a crash
/// can never leave an empty or half-written secret behind.
#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    written?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_defaults_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:8080");
            assert_eq!(c.store, "sqlite");

            jail.create_file("waymark.toml", "listen = \"0.0.0.0:9000\"\ndata_dir = \"from-file\"\n[retention]\nmax_events_per_profile = 50\nmax_event_age_days = 7\n")?;
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                (c.listen.as_str(), c.data_dir.to_str()),
                ("0.0.0.0:9000", Some("from-file"))
            );
            assert_eq!(c.retention.max_events_per_profile, 50);

            jail.set_env("WAYMARK_LISTEN", "127.0.0.1:9100");
            jail.set_env("WAYMARK_RETENTION__MAX_EVENT_AGE_DAYS", "0");
            jail.set_env("WAYMARK_WRITE_KEY", "wk_env");
            jail.set_env("WAYMARK_LOG", "debug");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9100");
            assert_eq!(c.data_dir.to_str(), Some("from-file"));
            assert_eq!(c.store_options().max_event_age_ms, None);
            assert_eq!(c.write_key.as_deref(), Some("wk_env"));
            assert_eq!(
                c.loaded_from.variables,
                [
                    "WAYMARK_LISTEN",
                    "WAYMARK_RETENTION__MAX_EVENT_AGE_DAYS",
                    "WAYMARK_WRITE_KEY"
                ]
            );

            // Keys a hand-kept list of variables once left out, now read like any other.
            jail.set_env("WAYMARK_EMAIL__SMTP_URL", "smtp://127.0.0.1:2525");
            jail.set_env("WAYMARK_EMAIL__FROM", "+15550100@example.com");
            jail.set_env("WAYMARK_EMAIL__TRACK_OPENS", "false");
            jail.set_env("WAYMARK_SMS__FROM", "+15550100");
            let c = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            let email = c.email.as_ref().expect("email from the environment");
            assert!(!email.track_opens && email.track_clicks);
            assert_eq!(email.from, "+15550100@example.com");
            assert_eq!(c.sms.as_ref().map(|s| s.from.as_str()), Some("+15550100"));

            let flags = Overrides {
                listen: Some("127.0.0.1:9200".into()),
                ..Overrides::default()
            };
            let c = Config::load(None, &flags).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9200");
            Ok(())
        });
    }

    #[test]
    fn bad_configuration_names_the_key_and_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listen = 8080\n")?;
            let e = Config::load(Some(Path::new("bad.toml")), &Overrides::default())
                .expect_err("wrong type");
            assert!(e.contains("listen") && e.contains("bad.toml"), "{e}");
            jail.create_file("typo.toml", "lisen = \"x\"\n")?;
            let e = Config::load(Some(Path::new("typo.toml")), &Overrides::default())
                .expect_err("unknown key");
            assert!(e.contains("lisen") && e.contains("(line 1)"), "{e}");
            jail.create_file(
                "nested.toml",
                "listen = \"x\"\n[retention]\nmax_event_age_days = 3\nmax_events_per_profle = 9\n",
            )?;
            let e = Config::load(Some(Path::new("nested.toml")), &Overrides::default())
                .expect_err("unknown nested key");
            assert!(
                e.contains("max_events_per_profle") && e.contains("(line 4)"),
                "{e}"
            );
            let e = Config::load(Some(Path::new("missing.toml")), &Overrides::default())
                .expect_err("missing file");
            assert!(e.contains("missing.toml"), "{e}");
            jail.set_env("WAYMARK_PARTITIONS", "zero");
            let e = Config::load(None, &Overrides::default()).expect_err("bad env");
            assert!(e.to_lowercase().contains("partitions"), "{e}");
            jail.set_env("WAYMARK_PARTITIONS", "4");
            jail.set_env("WAYMARK_EMAIL__TRACK_OPEN", "false");
            let e = Config::load(None, &Overrides::default()).expect_err("typo'd variable");
            assert!(e.contains("WAYMARK_EMAIL__TRACK_OPEN is not"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn link_secrets_are_made_once_whole_and_short_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let made = link_secret(&config).expect("made");
        assert!(made.len() >= waymark_core::links::MIN_SECRET_BYTES);
        assert_eq!(link_secret(&config).expect("kept"), made);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("link_secret")]);
        // An empty (or short) secret would let anyone sign links: the server will not start.
        for text in ["", "\n", "short-secret"] {
            std::fs::write(dir.path().join("link_secret"), text).expect("write");
            let e = link_secret(&config).expect_err("refused");
            assert!(e.contains("at least 32"), "{e}");
        }
    }

    #[test]
    fn keys_are_generated_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let first = resolve_keys(&config).expect("generate");
        let creds = first.generated.clone().expect("generated on first start");
        let (wk, adm) = (creds.write_key, creds.admin_token);
        let client = creds.client_write_key.expect("a client key");
        assert!(wk.starts_with("wk_") && adm.starts_with("adm_") && client.starts_with("wkc_"));
        assert_ne!(wk, adm);
        let second = resolve_keys(&config).expect("reuse");
        assert!(second.generated.is_none(), "printed only once");
        assert_eq!(second.keys.write_keys, vec![wk]);
        assert_eq!(second.keys.client_write_keys, vec![client]);
        assert_eq!(second.keys.admin_tokens, vec![adm]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.file)
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "credentials file must not be readable by others"
            );
        }
        let configured = Config {
            write_key: Some("wk_mine".into()),
            admin_token: Some("adm_mine".into()),
            ..config
        };
        let keys = resolve_keys(&configured).expect("configured");
        assert_eq!(keys.keys.write_keys, vec!["wk_mine".to_string()]);
        assert!(keys.generated.is_none());
    }
}

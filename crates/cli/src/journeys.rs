//! `waymark journeys ...`: journeys as code, checked before they reach a server.

use std::path::{Path, PathBuf};

use waymark_core::journey::{Format, Journey, json_schema, parse, validate};

#[derive(clap::Args)]
pub struct JourneysArgs {
    #[command(subcommand)]
    command: JourneysCommand,
}

#[derive(clap::Subcommand)]
enum JourneysCommand {
    /// Check journey files (YAML or JSON); directories are searched for *.yaml, *.yml, *.json.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the journey document.
    Schema,
    /// Journeys as code: validate every file, then upload each as a draft and publish it
    /// (a new version only where the document changed). Nothing is uploaded if any file is invalid.
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, env = "WAYMARK_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        /// Upload drafts only; do not publish.
        #[arg(long)]
        draft: bool,
    },
    /// Dry-run a journey against recorded events (JSON lines of Segment messages) on a
    /// virtual clock: waits take no time and nothing is sent.
    Simulate {
        journey: PathBuf,
        /// A file of Segment messages, one JSON object per line, in timestamp order.
        #[arg(long)]
        events: PathBuf,
        /// Print the full result as JSON.
        #[arg(long)]
        json: bool,
        /// Whether simulated webhooks succeed or fail.
        #[arg(long, value_enum, default_value = "succeed")]
        webhooks: WebhookOutcome,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WebhookOutcome {
    Succeed,
    Fail,
}

/// Every document file at `paths` (see [`collect`]); none is an error naming `what`.
pub fn document_files(paths: &[PathBuf], what: &str) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err(format!("no {what} files found (*.yaml, *.yml, *.json)"));
    }
    Ok(files)
}

/// The document files at `path`: the file itself, or every *.yaml, *.yml and *.json below
/// a directory, in name order.
pub fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            let journey_file = entry
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            if entry.is_dir() || journey_file {
                collect(&entry, out)?;
            }
        }
        Ok(())
    } else if path.exists() {
        out.push(path.to_path_buf());
        Ok(())
    } else {
        Err(format!("{}: no such file or directory", path.display()))
    }
}

/// Reads and checks one file; returns the journey or one message per problem.
pub fn load(path: &Path) -> Result<Journey, Vec<String>> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    let journey = parse(&text, Format::from_path(&path.to_string_lossy())).map_err(|e| {
        let at = if e.field.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.field)
        };
        vec![format!("{name}: {at}{}", e.message)]
    })?;
    let problems = validate(&journey);
    if problems.is_empty() {
        Ok(journey)
    } else {
        Err(problems
            .into_iter()
            .map(|e| format!("{name}: {}: {} [{}]", e.field, e.message, e.code))
            .collect())
    }
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
pub fn run(args: JourneysArgs, runtime: &tokio::runtime::Runtime) -> Result<(), String> {
    match args.command {
        JourneysCommand::Apply {
            paths,
            url,
            admin_token,
            draft,
        } => runtime.block_on(apply(&paths, &url, &admin_token, draft)),
        JourneysCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json_schema()).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        JourneysCommand::Simulate {
            journey,
            events,
            json,
            webhooks,
        } => simulate(&journey, &events, json, webhooks),
        JourneysCommand::Validate { paths } => {
            let mut files = Vec::new();
            for p in &paths {
                collect(p, &mut files)?;
            }
            if files.is_empty() {
                return Err("no journey files found (*.yaml, *.yml, *.json)".into());
            }
            let mut failed = 0;
            for file in &files {
                match load(file) {
                    Ok(j) => println!(
                        "ok      {} (journey {:?}, {} nodes)",
                        file.display(),
                        j.key,
                        j.nodes.len()
                    ),
                    Err(problems) => {
                        failed += 1;
                        for p in problems {
                            eprintln!("invalid {p}");
                        }
                    }
                }
            }
            if failed > 0 {
                Err(format!(
                    "{failed} of {} journey files are invalid",
                    files.len()
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Parses a JSON-lines file of Segment messages; errors name the line.
fn read_events(path: &Path) -> Result<Vec<waymark_core::Event>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut events = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut counter = 0u64;
        let mut new_id = || {
            counter += 1;
            format!("line-{}-{counter}", n + 1)
        };
        let body = format!("{{\"batch\": [{line}]}}");
        let mut receipt = waymark_core::segment::Receipt {
            received_at: 0,
            new_message_id: &mut new_id,
        };
        let parsed =
            waymark_core::segment::parse_batch(body.as_bytes(), &mut receipt).map_err(|e| {
                let field = e
                    .field
                    .trim_start_matches("batch[0]")
                    .trim_start_matches('.');
                let at = if field.is_empty() {
                    String::new()
                } else {
                    format!("{field}: ")
                };
                format!("{}:{}: {at}{}", path.display(), n + 1, e.message)
            })?;
        events.extend(parsed.events);
    }
    Ok(events)
}

#[allow(clippy::print_stdout, reason = "the simulation's report is its output")]
fn simulate(
    journey_path: &Path,
    events_path: &Path,
    as_json: bool,
    webhooks: WebhookOutcome,
) -> Result<(), String> {
    use waymark_engine::simulate::{Simulation, Webhooks};
    let journey = load(journey_path).map_err(|problems| problems.join("\n"))?;
    let compiled = waymark_engine::compile(journey, 1).map_err(|p| format!("{p:?}"))?;
    let events = read_events(events_path)?;
    let mode = match webhooks {
        WebhookOutcome::Succeed => Webhooks::Succeed,
        WebhookOutcome::Fail => Webhooks::Fail,
    };
    let mut sim = Simulation::new(&compiled, mode);
    for event in &events {
        sim.event(event)
            .map_err(|e| format!("{}: {e}", events_path.display()))?;
    }
    sim.finish();
    let report = sim.report();
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let iso = waymark_core::time::format_iso8601;
    println!(
        "journey {:?}: {} events, {} people entered",
        compiled.doc.key,
        events.len(),
        report.len()
    );
    for person in &report {
        println!();
        println!("{}", person.person);
        for i in &person.instances {
            let ended = i.ended_at.map(iso).unwrap_or_else(|| "still active".into());
            println!(
                "  instance {} ({:?}), entered {}, ended {}",
                i.number,
                i.status,
                iso(i.entered_at),
                ended
            );
            for s in &i.steps {
                let detail = s
                    .detail
                    .as_ref()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default();
                println!("    {}  {:<22} {}{}", iso(s.at), s.node, s.what, detail);
            }
        }
        if !person.effects.is_empty() {
            println!("  would have:");
            for e in &person.effects {
                use waymark_engine::Effect;
                let what = match &e.effect {
                    Effect::Message(m) => format!("sent {} on {}", m.template, m.channel),
                    Effect::Webhook(call) => format!("called {} {}", call.method, call.url),
                    Effect::UpdateProfile(update) => format!(
                        "updated the profile: set {}, unset {}",
                        serde_json::Value::Object(update.set.clone()),
                        serde_json::json!(update.unset)
                    ),
                    Effect::Jump(to) => format!("jumped to journey {}", to.journey),
                    Effect::Timer { .. } => continue,
                };
                println!("    {}  {what}", iso(e.at));
            }
        }
    }
    Ok(())
}

pub async fn call(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<serde_json::Value, String> {
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let mut message = format!(
        "{what}: HTTP {status}: {}",
        body["message"].as_str().unwrap_or("no message")
    );
    for e in body["errors"].as_array().into_iter().flatten() {
        message.push_str(&format!(
            "\n  {}: {}",
            e["field"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ));
    }
    Err(message)
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
async fn apply(paths: &[PathBuf], url: &str, token: &str, draft_only: bool) -> Result<(), String> {
    let files = document_files(paths, "journey")?;
    let mut journeys = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match load(file) {
            Ok(j) => journeys.push((file.clone(), j)),
            Err(p) => problems.extend(p),
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "nothing applied; fix these first:\n{}",
            problems.join("\n")
        ));
    }
    let client = waymark_runtime::http::client_builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let base = url.trim_end_matches('/');
    for (file, journey) in &journeys {
        let key = &journey.key;
        call(
            client
                .put(format!("{base}/v1/journeys/{key}"))
                .bearer_auth(token)
                .json(journey),
            &format!("{}: upload", file.display()),
        )
        .await?;
        if draft_only {
            println!("{key}: draft updated ({})", file.display());
            continue;
        }
        let published = call(
            client
                .post(format!("{base}/v1/journeys/{key}/publish"))
                .bearer_auth(token),
            &format!("{}: publish", file.display()),
        )
        .await?;
        let version = published["published"]["version"].as_u64().unwrap_or(0);
        let what = if published["published"]["created"].as_bool() == Some(true) {
            "published"
        } else {
            "unchanged"
        };
        println!("{key}: version {version} {what} ({})", file.display());
    }
    Ok(())
}

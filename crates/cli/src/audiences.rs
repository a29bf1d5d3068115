//! `waymark audiences ...`: audiences as code, checked offline before they reach a server.

use std::path::PathBuf;
use std::time::Duration;

use waymark_core::audience::{AudienceDoc, Catalog, Rule, evaluation_order, parse, validate};
use waymark_core::journey::Format;

use crate::journeys::{call, document_files};

#[derive(clap::Args)]
pub struct AudiencesArgs {
    #[command(subcommand)]
    command: AudiencesCommand,
}

#[derive(clap::Subcommand)]
enum AudiencesCommand {
    /// Check audience files (YAML or JSON; directories are searched for *.yaml, *.yml,
    /// *.json): every rule, and every `in_audience` reference among the files.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Validate every file, then upload each (audiences they read first). Nothing is
    /// uploaded if any file is invalid. With --wait, show each new version's backfill until
    /// the audience is current.
    Apply {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, env = "WAYMARK_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
        #[arg(long)]
        wait: bool,
    },
}

pub fn run(args: AudiencesArgs, runtime: &tokio::runtime::Runtime) -> Result<(), String> {
    match args.command {
        AudiencesCommand::Validate { paths } => {
            let docs = load_all(&paths)?;
            report_valid(&docs);
            Ok(())
        }
        AudiencesCommand::Apply {
            paths,
            url,
            admin_token,
            wait,
        } => runtime.block_on(apply(&paths, &url, &admin_token, wait)),
    }
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
fn report_valid(docs: &[(PathBuf, AudienceDoc, Rule)]) {
    for (file, doc, rule) in docs {
        println!(
            "{}: ok ({}, {} behaviour calls, reads {} audiences)",
            file.display(),
            doc.key,
            rule.calls.len(),
            rule.audiences.len()
        );
    }
}

/// Reads and checks every file; references must be among the files. Every problem of every
/// file is reported at once, with the file, field, line and column.
fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, AudienceDoc, Rule)>, String> {
    let files = document_files(paths, "audience")?;
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let name = file.display();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        match parse(&text, Format::from_path(&file.to_string_lossy())) {
            Ok(doc) => docs.push((file.clone(), doc)),
            Err(e) => problems.push(format!("{name}: {} {}", e.field, e.message)),
        }
    }
    let catalog: Catalog = docs
        .iter()
        .map(|(_, d)| {
            let reads = Rule::parse(&d.rule)
                .map(|r| r.audiences)
                .unwrap_or_default();
            (d.key.clone(), reads)
        })
        .collect();
    let mut checked = Vec::new();
    for (file, doc) in docs {
        let mut others = catalog.clone();
        others.remove(&doc.key);
        match validate(&doc, &others, None) {
            Ok(rule) => checked.push((file, doc, rule)),
            Err(errors) => problems.extend(errors.into_iter().map(|e| {
                let at = match (e.line, e.column) {
                    (Some(l), Some(c)) => format!(" line {l} column {c}"),
                    _ => String::new(),
                };
                format!(
                    "{}: {}{at}: {} [{}]",
                    file.display(),
                    e.field,
                    e.message,
                    e.code
                )
            })),
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(format!("{}\n", problems.join("\n")))
    }
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
async fn apply(paths: &[PathBuf], url: &str, token: &str, wait: bool) -> Result<(), String> {
    let docs = load_all(paths).map_err(|p| format!("nothing applied; fix these first:\n{p}"))?;
    let catalog: Catalog = docs
        .iter()
        .map(|(_, d, r)| (d.key.clone(), r.audiences.clone()))
        .collect();
    let client = waymark_runtime::http::client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let base = url.trim_end_matches('/');
    let mut created = Vec::new();
    for key in evaluation_order(&catalog) {
        let Some((file, doc, _)) = docs.iter().find(|(_, d, _)| d.key == key) else {
            continue;
        };
        let answer = call(
            client
                .put(format!("{base}/v1/audiences/{key}"))
                .bearer_auth(token)
                .json(doc),
            &format!("{}: upload", file.display()),
        )
        .await?;
        let version = answer["version"].as_u64().unwrap_or(0);
        if answer["created"].as_bool() == Some(true) {
            println!("{key}: version {version} stored ({})", file.display());
            created.push(key.clone());
        } else {
            println!("{key}: version {version} unchanged ({})", file.display());
        }
    }
    if wait {
        for key in created {
            follow_backfill(&client, base, token, &key).await?;
        }
    }
    Ok(())
}

/// Shows the backfill of one audience as a progress bar (people still to decide) until it
/// is current, then its size.
#[allow(clippy::print_stdout, reason = "the command's report is its output")]
async fn follow_backfill(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
) -> Result<(), String> {
    let bar = indicatif::ProgressBar::new(0).with_message(key.to_owned());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg}: deciding {pos}/{len} people ({per_sec}) {wide_bar}",
        )
        .map_err(|e| e.to_string())?,
    );
    let mut total = 0u64;
    loop {
        let answer = call(
            client
                .get(format!("{base}/v1/audiences/{key}"))
                .bearer_auth(token),
            &format!("{key}: status"),
        )
        .await?;
        let pending = answer["pending"].as_u64().unwrap_or(0);
        total = total.max(pending);
        bar.set_length(total);
        bar.set_position(total - pending);
        if answer["state"] == "current" {
            bar.finish_and_clear();
            println!(
                "{key}: current, {} members",
                answer["size"].as_u64().unwrap_or(0)
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

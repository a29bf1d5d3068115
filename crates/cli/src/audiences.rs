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
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        wait: bool,
    },
    /// Decide an audience file's rule for everyone on the server without saving it: the
    /// size it would have now and a sample of its members.
    Preview {
        path: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Members to list.
        #[arg(long, default_value_t = 10)]
        sample: u32,
    },
    /// Decide a stored rule audience for everyone again now (a snapshot's run on demand);
    /// with --wait, follow it until the audience is current.
    Run {
        key: String,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        wait: bool,
    },
    /// Write every member, with the traits and identities asked for, as CSV or JSON lines
    /// (to --output, written whole or not at all, or to standard output).
    Export {
        key: String,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, value_parser = ["csv", "jsonl"], default_value = "csv")]
        format: String,
        /// Trait names, comma-separated.
        #[arg(long)]
        traits: Option<String>,
        /// Identity namespaces, comma-separated.
        #[arg(long)]
        identities: Option<String>,
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Set the members of an uploaded list (`refresh: upload`) from a CSV file: a header of
    /// identity namespaces, a row per person.
    Upload {
        key: String,
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long, value_parser = ["add", "remove", "replace"], default_value = "add")]
        mode: String,
    },
}

/// Where the server is and the admin token.
#[derive(clap::Args)]
struct ServerArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "WAYMARK_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

impl ServerArgs {
    fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    /// `path` on the server with these query parameters, encoded.
    fn at(&self, path: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base()))
            .map_err(|e| format!("--url {}: {e}", self.url))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    waymark_runtime::http::client_builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
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
            server,
            wait,
        } => runtime.block_on(apply(&paths, &server, wait)),
        AudiencesCommand::Preview {
            path,
            server,
            sample,
        } => runtime.block_on(preview(&path, &server, sample)),
        AudiencesCommand::Run { key, server, wait } => {
            runtime.block_on(run_now(&key, &server, wait))
        }
        AudiencesCommand::Export {
            key,
            server,
            format,
            traits,
            identities,
            output,
        } => runtime.block_on(export(
            &key,
            &server,
            &format,
            [("traits", traits), ("identities", identities)],
            output.as_deref(),
        )),
        AudiencesCommand::Upload {
            key,
            file,
            server,
            mode,
        } => runtime.block_on(upload(&key, &file, &server, &mode)),
    }
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
async fn preview(path: &std::path::Path, server: &ServerArgs, sample: u32) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // Checked by the server, which knows the audiences the rule may read.
    let doc = parse(&text, Format::from_path(&path.to_string_lossy()))
        .map_err(|e| format!("{}: {} {}", path.display(), e.field, e.message))?;
    let client = http_client(Duration::from_secs(600))?;
    let answer = call(
        client
            .post(server.at(
                &format!("/v1/audiences/{}/preview", doc.key),
                &[("sample", &sample.to_string())],
            )?)
            .bearer_auth(&server.admin_token)
            .json(&doc),
        &format!("{}: preview", path.display()),
    )
    .await?;
    let n = |k: &str| answer[k].as_u64().unwrap_or(0);
    println!(
        "{}: {} of {} people would be members ({} errors) — decided in {:.2} s",
        doc.key,
        n("size"),
        n("decided"),
        n("errors"),
        answer["seconds"].as_f64().unwrap_or(0.0)
    );
    if let Some(error) = answer["first_error"].as_str() {
        println!("  e.g. {error}");
    }
    for id in answer["sample"].as_array().into_iter().flatten() {
        println!("  {}", id.as_str().unwrap_or_default());
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
async fn run_now(key: &str, server: &ServerArgs, wait: bool) -> Result<(), String> {
    let client = http_client(Duration::from_secs(30))?;
    call(
        client
            .post(server.at(&format!("/v1/audiences/{key}/run"), &[])?)
            .bearer_auth(&server.admin_token),
        &format!("{key}: run"),
    )
    .await?;
    println!("{key}: run started");
    if wait {
        follow_backfill(&client, server.base(), &server.admin_token, key).await?;
    }
    Ok(())
}

/// Streams the export to the output as it arrives (a file is written beside its final
/// name and renamed once complete, so a failed export leaves no partial file).
async fn export(
    key: &str,
    server: &ServerArgs,
    format: &str,
    columns: [(&str, Option<String>); 2],
    output: Option<&std::path::Path>,
) -> Result<(), String> {
    use std::io::Write;
    let client = http_client(Duration::from_secs(3600))?;
    let mut query = vec![("format", format.to_owned())];
    query.extend(columns.into_iter().filter_map(|(k, v)| Some((k, v?))));
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut response = client
        .get(server.at(&format!("/v1/audiences/{key}/export"), &query)?)
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .map_err(|e| format!("{key}: export: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        return Err(format!(
            "{key}: export: HTTP {status}: {}",
            body["message"].as_str().unwrap_or("no message")
        ));
    }
    let partial = output.map(|p| p.with_extension("partial"));
    let mut sink: Box<dyn Write> = match &partial {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{key}: export: {e}"))?
    {
        sink.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    sink.flush().map_err(|e| e.to_string())?;
    drop(sink);
    if let (Some(partial), Some(output)) = (partial, output) {
        std::fs::rename(&partial, output).map_err(|e| format!("{}: {e}", output.display()))?;
    }
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the command's report is its output")]
async fn upload(
    key: &str,
    file: &std::path::Path,
    server: &ServerArgs,
    mode: &str,
) -> Result<(), String> {
    let body = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let client = http_client(Duration::from_secs(3600))?;
    let answer = call(
        client
            .post(server.at(&format!("/v1/audiences/{key}/members"), &[("mode", mode)])?)
            .bearer_auth(&server.admin_token)
            .header("content-type", "text/csv")
            .body(body),
        &format!("{}: upload", file.display()),
    )
    .await?;
    let n = |k: &str| answer[k].as_u64().unwrap_or(0);
    println!(
        "{key}: {} rows, {} matched, {} unmatched; {} entered, {} left",
        n("rows"),
        n("matched"),
        n("unmatched"),
        n("entered"),
        n("exited")
    );
    if n("unmatched") > 0 {
        println!("  unmatched rows: {}", answer["unmatched_rows"]);
    }
    Ok(())
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
async fn apply(paths: &[PathBuf], server: &ServerArgs, wait: bool) -> Result<(), String> {
    let docs = load_all(paths).map_err(|p| format!("nothing applied; fix these first:\n{p}"))?;
    let catalog: Catalog = docs
        .iter()
        .map(|(_, d, r)| (d.key.clone(), r.audiences.clone()))
        .collect();
    let client = http_client(Duration::from_secs(30))?;
    let (base, token) = (server.base(), server.admin_token.as_str());
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

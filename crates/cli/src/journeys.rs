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
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
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
pub fn run(args: JourneysArgs) -> Result<(), String> {
    match args.command {
        JourneysCommand::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json_schema()).map_err(|e| e.to_string())?
            );
            Ok(())
        }
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

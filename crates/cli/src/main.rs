//! The `waymark` binary.

mod audiences;
mod bench;
mod config;
mod journeys;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the ingest path allocates many small JSON
/// values, and glibc malloc/free showed up as ~20% of the writer thread's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "waymark",
    version,
    about = "Customer journey orchestration: events in, the right message out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded SQLite store by default).
    Serve(ServeArgs),
    /// Journeys as code: validate documents, print their schema.
    Journeys(journeys::JourneysArgs),
    /// Audiences as code: validate documents offline, apply them to a server.
    Audiences(audiences::AudiencesArgs),
    /// Load generators for Waymark's own benchmarks (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (default: ./waymark.toml if present).
    #[arg(long, short, env = "WAYMARK_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory for the embedded store and generated credentials.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// `sqlite` or a postgres:// URL.
    #[arg(long)]
    store: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waymark: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            let overrides = config::Overrides {
                data_dir: args.data_dir,
                listen: args.listen,
                store: args.store,
            };
            match config::Config::load(args.config.as_deref(), &overrides) {
                Ok(config) => runtime.block_on(serve::run(config)),
                Err(e) => Err(format!("configuration: {e}")),
            }
        }
        Command::Journeys(args) => journeys::run(args, &runtime),
        Command::Audiences(args) => audiences::run(args, &runtime),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waymark: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `netbook-bench`: measured evidence for the book's performance claims.
//!
//! - `run [--quick] [--install-nginx]`: every measurement, then the markdown
//!   tables and SVG plots (book/src/generated/bench/ unless `--out`). This is
//!   what `cargo xtask bench` runs, after building the stages in release.
//! - `loadgen --job JSON`: the load generator, started by `run` as its own process.
//! - `tokio-echo [--listen ADDR] [--nodelay]`: the tokio reference peer.
//! - `check DIR`: is the output in DIR well formed?
//! - `render DIR`: write the pages and plots again from DIR/results.json.
//!
//! This crate is a workspace member but not a default one, so ordinary
//! builds never compile tokio or plotters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod loadgen;
mod machine;
mod peers;
mod plot;
mod report;
mod run;
mod stats;
mod validate;

#[derive(Parser)]
#[command(name = "netbook-bench", about = "netbook's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure every stage found, the tokio peer and nginx; write the results.
    Run {
        /// A small version in seconds (for CI): checks that it works, not timings.
        #[arg(long)]
        quick: bool,
        /// Install nginx with apt-get if it is missing (nothing is installed otherwise).
        #[arg(long)]
        install_nginx: bool,
        /// Where to write (default: book/src/generated/bench, or
        /// target/netbook/bench-quick with --quick).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the stage binaries are (default: target/release).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Only these parts: latency, throughput, http (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Only these servers: ch01 ... ch08, tokio, tokio-nodelay, nginx
        /// (comma-separated; default all).
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
    },
    /// The load generator (started by `run`).
    Loadgen {
        #[arg(long)]
        job: String,
    },
    /// The tokio echo server, current-thread runtime.
    TokioEcho {
        #[arg(long, default_value = "127.0.0.1:7099")]
        listen: SocketAddr,
        /// Set TCP_NODELAY on every connection.
        #[arg(long)]
        nodelay: bool,
    },
    /// Check that the files in DIR are well formed.
    Check { dir: PathBuf },
    /// Write the pages and plots again from DIR/results.json (no measuring).
    Render { dir: PathBuf },
}

/// Pages and plots from a results.json written earlier.
fn render(dir: &std::path::Path) -> Result<(), String> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let results: run::Results =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    report::write_all(&results, dir)?;
    validate::check_dir(dir).map(|s| println!("{s}"))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run {
            quick,
            install_nginx,
            out,
            bin_dir,
            only,
            servers,
        } => run::run(run::Options {
            quick,
            install_nginx,
            out,
            bin_dir,
            only,
            servers,
        })
        .map(|out| println!("bench: results in {}", out.display())),
        Command::Loadgen { job } => loadgen::main(&job),
        Command::TokioEcho { listen, nodelay } => peers::tokio_echo(listen, nodelay),
        Command::Check { dir } => validate::check_dir(&dir).map(|s| println!("{s}")),
        Command::Render { dir } => render(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbook-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

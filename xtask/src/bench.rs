//! `cargo xtask bench`: build every stage in release, then run the benchmarks
//! (the `netbook-bench` crate, xtask/bench), which write their tables and
//! plots into book/src/generated/bench/.
//!
//! netbook-bench is not a default member of the workspace, so tokio and
//! plotters are compiled here and nowhere else in the everyday path.

use std::path::PathBuf;

use clap::Args;

use crate::stages;

#[derive(Args)]
pub struct BenchArgs {
    /// A small version in seconds, for CI: it checks that the bench runs and
    /// writes well-formed output, never a timing. Writes to
    /// target/netbook/bench-quick unless --out says otherwise.
    #[arg(long)]
    quick: bool,
    /// Install nginx with apt-get if it is missing (otherwise nothing is
    /// installed, and nginx is left out when absent).
    #[arg(long)]
    install_nginx: bool,
    /// Write the results here instead of book/src/generated/bench.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these parts: latency, throughput, http (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these servers: ch01 ... ch08, tokio, tokio-nodelay, nginx (comma-separated).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
}

/// Every stage crate on this branch: chapters/chNN-*.
fn stage_packages() -> Result<Vec<String>, String> {
    let dir = stages::root().join("chapters");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut packages: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.len() > 5
                && name.starts_with("ch")
                && name[2..4].chars().all(|c| c.is_ascii_digit())
                && name.as_bytes()[4] == b'-'
        })
        .collect();
    packages.sort();
    Ok(packages)
}

pub fn bench(args: BenchArgs) -> Result<bool, String> {
    let packages = stage_packages()?;
    eprintln!("building {} in release ...", packages.join(", "));
    let names: Vec<&str> = packages.iter().map(String::as_str).collect();
    stages::build_release(&names)?;
    eprintln!("building and running netbook-bench in release ...");
    let mut cmd = stages::cargo_run_release("netbook-bench");
    cmd.args(["run", "--bin-dir"]);
    cmd.arg(stages::target_dir().join("release"));
    if args.quick {
        cmd.arg("--quick");
    }
    if args.install_nginx {
        cmd.arg("--install-nginx");
    }
    if let Some(out) = &args.out {
        cmd.arg("--out").arg(out);
    }
    if !args.only.is_empty() {
        cmd.arg("--only").arg(args.only.join(","));
    }
    if !args.servers.is_empty() {
        cmd.arg("--servers").arg(args.servers.join(","));
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(status.success())
}

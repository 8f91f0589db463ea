//! `cargo xtask run` and `serve` (`grade` is in classroom/).

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::Command;

use clap::Args;
use conformance::profile::{self, Profile};
use conformance::report::{Outcome, Report, tally};
use conformance::runner::{self, Options};
use conformance::server::ServerCommand;

use crate::stages;

#[derive(Args)]
pub struct RunArgs {
    /// A stage (ch01 ... ch08, with its variants), one variant, or `all`.
    #[arg(default_value = "all")]
    stage: String,
    /// Run only these checks (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seed for the random inputs (every run prints the one it used).
    #[arg(long)]
    seed: Option<u64>,
    /// Show the full text of expected failures (XFAIL) too.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Args)]
pub struct ServeArgs {
    /// The stage to run, e.g. ch01.
    stage: String,
    /// Address to listen on (default: the stage's own, 127.0.0.1:70NN).
    #[arg(long)]
    listen: Option<String>,
    /// Log every readiness event and syscall result to stderr.
    #[arg(long)]
    trace: bool,
    /// Anything after `--` goes to the server as it is.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Where `run` writes each stage's JSON report.
fn reports_dir() -> std::path::PathBuf {
    stages::target_dir().join("netbook").join("reports")
}

pub fn run(args: RunArgs) -> Result<bool, String> {
    let profiles = stages::select(&args.stage)?;
    let packages: BTreeSet<&str> = profiles.iter().map(|p| p.binary.as_str()).collect();
    eprintln!(
        "building {} in release ...",
        packages.iter().copied().collect::<Vec<_>>().join(", ")
    );
    stages::build_release(&packages.into_iter().collect::<Vec<_>>())?;
    std::fs::create_dir_all(reports_dir()).map_err(|e| e.to_string())?;
    let points = conformance::grading::Points::shipped()?;
    let mut reports = Vec::new();
    for profile in &profiles {
        let options = Options {
            only: args.only.clone(),
            seed: args.seed,
            rerun_base: format!("cargo xtask run {}", profile.stage),
            ..Options::default()
        };
        let report = grade_one(
            profile,
            &stages::command_for(profile),
            &options,
            args.verbose,
        )?;
        let json = conformance::formats::json(&report, &points);
        let path = reports_dir().join(format!("{}.json", profile.stage));
        std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        reports.push(report);
    }
    if reports.len() > 1 {
        println!("{}", matrix(&profiles, &reports));
    }
    let passed: usize = reports.iter().map(Report::passed).sum();
    let failed: usize = reports.iter().map(Report::failed).sum();
    let skipped: usize = reports.iter().map(Report::skipped).sum();
    if reports.len() > 1 {
        println!("{}", tally(passed, failed, skipped));
    }
    Ok(failed == 0 && skipped == 0)
}

/// Run one profile against one command, with progress on stderr and the
/// report on stdout.
fn grade_one(
    profile: &Profile,
    cmd: &str,
    options: &Options,
    verbose: bool,
) -> Result<Report, String> {
    let command = ServerCommand::new(cmd)?;
    eprintln!("grading {} ({}) ...", profile.stage, profile.title);
    let report = runner::run(profile, &command, options, |n, total, r| {
        eprintln!(
            "  [{n:>2}/{total}] {:<20} {:<5} {:>5.1} s",
            r.id,
            r.outcome,
            r.duration.as_secs_f64()
        );
    })?;
    println!("{}", report.render(verbose));
    Ok(report)
}

/// The stage × check table: what every stage passes and which limitation it shows.
pub fn matrix(profiles: &[Profile], reports: &[Report]) -> String {
    let mut ids: Vec<&str> = Vec::new();
    for r in reports {
        for c in &r.results {
            if !ids.contains(&c.id) {
                ids.push(c.id);
            }
        }
    }
    let width = ids.iter().map(|s| s.len()).max().unwrap_or(5);
    let names: Vec<&str> = profiles.iter().map(|p| p.stage.as_str()).collect();
    let col = names.iter().map(|n| n.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}", "check");
    for n in &names {
        out.push_str(&format!("  {n:>col$}"));
    }
    out.push('\n');
    for id in ids {
        out.push_str(&format!("{id:<width$}"));
        for r in reports {
            let cell = match r.results.iter().find(|c| c.id == id).map(|c| c.outcome) {
                None => "-",
                Some(Outcome::Pass) => "pass",
                Some(Outcome::Xfail) => "xfail",
                Some(Outcome::Fail) => "FAIL",
                Some(Outcome::Xpass) => "XPASS",
                Some(Outcome::Skip) => "skip",
            };
            out.push_str(&format!("  {cell:>col$}"));
        }
        out.push('\n');
    }
    out
}

pub fn serve(args: ServeArgs) -> Result<bool, String> {
    let profile = profile::find(&profile::default_dir(), &args.stage)?;
    stages::build_release(&[profile.binary.as_str()])?;
    let default_port = profile.stage[2..4]
        .parse::<u16>()
        .map(|n| 7000 + n)
        .unwrap_or(7000);
    let listen = args
        .listen
        .unwrap_or_else(|| format!("127.0.0.1:{default_port}"));
    let (host, port) = listen.rsplit_once(':').unwrap_or(("127.0.0.1", "7000"));
    eprintln!("{}: {}", profile.stage, profile.title);
    eprintln!("talk to it from another terminal:");
    eprintln!(
        "  nc -N {host} {port}                   (type lines; Ctrl-D half-closes; apt-get install netcat-openbsd)"
    );
    eprintln!("  printf 'hello\\n' | nc -N {host} {port}");
    eprintln!("stop it with Ctrl-C.");
    let mut cmd = Command::new(stages::binary(&profile.binary));
    cmd.arg("--listen").arg(&listen).args(&profile.args);
    if args.trace {
        cmd.arg("--trace");
    }
    cmd.args(&args.extra);
    let e = cmd.exec();
    Err(format!("cannot start {}: {e}", profile.binary))
}

//! `conformance`: grade any server command against a stage's profile.
//!
//! ```text
//! conformance --stage ch03 --cmd 'python3 server.py --listen {listen}'
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use conformance::profile::{self, Profile};
use conformance::runner::{self, Options};
use conformance::server::ServerCommand;

/// Grade a server, in any language, against a netbook stage.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The server's command line; {listen} becomes HOST:PORT ({host}, {port} also work).
    #[arg(long)]
    cmd: Option<String>,
    /// The stage whose profile to grade against (ch01 ... ch08).
    #[arg(long, required_unless_present_any = ["profile", "list"])]
    stage: Option<String>,
    /// A profile file instead of a shipped stage.
    #[arg(long, conflicts_with = "stage")]
    profile: Option<PathBuf>,
    /// Run only these checks (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seed for the random inputs (printed by every run).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the report as JSON (tests/schema/README.md) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// List the checks and stages, then exit.
    #[arg(long)]
    list: bool,
    /// Show the full text of expected failures too.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("conformance: error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool, String> {
    if cli.list {
        for check in conformance::checks::all() {
            println!("{:<20} {:<10} {}", check.id, check.group, check.title);
        }
        println!();
        for p in profile::load_all(&profile::default_dir())? {
            println!("{:<26} {}", p.stage, p.title);
        }
        return Ok(true);
    }
    let profile: Profile = match (&cli.stage, &cli.profile) {
        (_, Some(path)) => Profile::load(path)?,
        (Some(stage), None) => profile::find(&profile::default_dir(), stage)?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let Some(cmd) = cli.cmd else {
        return Err("--cmd is required: the server command, with {listen} in it".into());
    };
    let command = ServerCommand::new(cmd.clone())?;
    let quoted = shlex::try_quote(&cmd).map_err(|e| e.to_string())?;
    let options = Options {
        only: cli.only,
        seed: cli.seed,
        rerun_base: format!("conformance --stage {} --cmd {quoted}", profile.stage),
        ..Options::default()
    };
    let report = runner::run(&profile, &command, &options, |n, total, r| {
        eprintln!(
            "[{n:>2}/{total}] {:<20} {} ({:.1} s)",
            r.id,
            r.outcome,
            r.duration.as_secs_f64()
        );
    })?;
    print!("{}", report.render(cli.verbose));
    if let Some(path) = cli.json {
        let points = conformance::grading::Points::shipped()?;
        let json = conformance::formats::json(&report, &points);
        std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report.failed() == 0 && report.skipped() == 0)
}

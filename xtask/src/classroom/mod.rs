//! The classroom: exercises made from the reference code, grading of
//! students' servers (one, or a folder of them), and a student's progress.
//!
//! - `cargo xtask exercise ch05 --out /tmp/hw`: a starter crate (regions.rs, exercise.rs).
//! - `cargo xtask grade ch05 --crate DIR | --cmd '...' | --batch DIR --csv FILE` (batch.rs).
//! - `cargo xtask status`: which of the student's own stages pass (status.rs).
//!
//! CLASSROOM.md is the guide for teachers, students and chapter authors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Args};
use conformance::formats::{self, Format};
use conformance::grading::{self, Points};
use conformance::profile::{self, Profile};
use conformance::report::Report;
use conformance::runner::{self, Options};
use conformance::server::ServerCommand;

mod batch;
mod build;
mod child;
mod exercise;
mod regions;
mod status;

pub use exercise::{ExerciseArgs, exercise};
pub use status::{StatusArgs, status};

#[derive(Args)]
#[command(group(ArgGroup::new("submission").required(true).args(["krate", "cmd", "batch"])))]
pub struct GradeArgs {
    /// The stage whose profile to grade against, e.g. ch05.
    #[arg(value_name = "STAGE", required_unless_present = "stage_flag")]
    stage: Option<String>,
    /// The same as STAGE (the older form: `grade --stage ch01 --cmd '...'`).
    #[arg(long = "stage", value_name = "STAGE", conflicts_with = "stage")]
    stage_flag: Option<String>,
    /// A student's Rust crate: built in release, then its binary is graded.
    #[arg(long = "crate", value_name = "DIR")]
    krate: Option<PathBuf>,
    /// Any server's command line (any language): {listen} becomes HOST:PORT ({host}, {port} also work).
    #[arg(long)]
    cmd: Option<String>,
    /// A folder with one submission per subdirectory (a crate, cmd.txt or run.sh): grade them all.
    #[arg(long, value_name = "DIR")]
    batch: Option<PathBuf>,
    /// With --batch: write one row per submission to this CSV file.
    #[arg(long, value_name = "FILE", requires = "batch")]
    csv: Option<PathBuf>,
    /// With --batch: where copies, builds and per-submission reports go
    /// (default: netbook-grade/STAGE in the system's temporary directory).
    #[arg(long, value_name = "DIR", requires = "batch")]
    work: Option<PathBuf>,
    /// text (the tester log and the score), json (tests/schema/README.md), junit or tap.
    #[arg(long, default_value = "text")]
    format: Format,
    /// Write the --format output to this file; the text log still goes to stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "batch")]
    out: Option<PathBuf>,
    /// With --crate: the binary to run when the crate builds several.
    #[arg(long, value_name = "NAME")]
    bin: Option<String>,
    /// Run only these checks (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seed for the random inputs (a batch uses one seed for every submission).
    #[arg(long)]
    seed: Option<u64>,
    /// Show the full text of expected failures (XFAIL) too.
    #[arg(long, short)]
    verbose: bool,
    /// Seconds a build may take.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    build_timeout: u64,
    /// With --batch: seconds the grading of one submission may take, build excluded.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
    /// Seconds one check may take before its servers are killed and it fails.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    check_timeout: u64,
}

/// `cargo xtask grade`.
pub fn grade(args: GradeArgs) -> Result<bool, String> {
    // A failure report shows the last lines of the server's stderr: for a
    // starter's `todo!`, the panic message with its hint. A backtrace would
    // push it out of view.
    // SAFETY: nothing else runs yet (no thread has been started), so no one
    // reads the environment while it changes.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let stage = args
        .stage
        .clone()
        .or_else(|| args.stage_flag.clone())
        .expect("clap requires a stage");
    let profile = profile::find(&profile::default_dir(), &stage)?;
    let points = Points::shipped()?;
    if let Some(dir) = &args.batch {
        if args.format != Format::Text {
            return Err(
                "--format is for one submission; a batch writes report.json (format \
                        json) for each submission, and --csv for all"
                    .into(),
            );
        }
        return batch::grade_batch(&args, &profile, &points, dir);
    }
    let (template, rerun_base) = match (&args.krate, &args.cmd) {
        (Some(dir), _) => {
            eprintln!("building {} in release ...", dir.display());
            // Its own target folder, whatever CARGO_TARGET_DIR says: cargo
            // takes two standalone crates with the same name for one and the
            // same, and would hand one student's binary to the next.
            let binary = match build::build(
                dir,
                &dir.join("target"),
                args.bin.as_deref(),
                &profile.binary,
                Duration::from_secs(args.build_timeout),
            ) {
                Ok(binary) => binary,
                Err(build::BuildError::Infra(why)) => return Err(why),
                Err(e) => {
                    println!("{e}");
                    println!("\nscore: 0 points: nothing to grade");
                    return Ok(false);
                }
            };
            (
                command_for_binary(&binary, &profile),
                format!(
                    "cargo xtask grade {} --crate {}",
                    profile.stage,
                    quote(&dir.to_string_lossy())
                ),
            )
        }
        (None, Some(cmd)) => (
            cmd.clone(),
            format!("cargo xtask grade {} --cmd {}", profile.stage, quote(cmd)),
        ),
        (None, None) => unreachable!("clap requires --crate, --cmd or --batch"),
    };
    let options = Options {
        only: args.only.clone(),
        seed: args.seed,
        rerun_base,
        check_timeout: Duration::from_secs(args.check_timeout),
    };
    let report = run_suite(&profile, &template, &options)?;
    let score = points.score(&report);
    let text = format!("{}score: {score}\n", report.render(args.verbose));
    let machine = render(args.format, &report, &points);
    match (&args.out, args.format) {
        (None, Format::Text) => print!("{text}"),
        (None, _) => {
            print!("{machine}");
            eprintln!("score: {score}");
        }
        (Some(path), _) => {
            print!("{text}");
            std::fs::write(path, machine)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(grading::complete(&report))
}

/// The report in `format`.
fn render(format: Format, report: &Report, points: &Points) -> String {
    match format {
        Format::Text => format!("{}score: {}\n", report.render(false), points.score(report)),
        Format::Json => formats::json(report, points) + "\n",
        Format::Junit => formats::junit(report, points),
        Format::Tap => formats::tap(report, points),
    }
}

/// Run the suite, progress on stderr.
fn run_suite(profile: &Profile, template: &str, options: &Options) -> Result<Report, String> {
    let command = ServerCommand::new(template)?;
    eprintln!("grading {} ({}) ...", profile.stage, profile.title);
    runner::run(profile, &command, options, |n, total, r| {
        eprintln!(
            "  [{n:>2}/{total}] {:<20} {:<5} {:>5.1} s",
            r.id,
            r.outcome,
            r.duration.as_secs_f64()
        );
    })
}

/// `BINARY --listen {listen} ARGS`, as the stage's own binary is run.
fn command_for_binary(binary: &Path, profile: &Profile) -> String {
    let mut line = format!("{} --listen {{listen}}", quote(&binary.to_string_lossy()));
    for arg in &profile.args {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// A word quoted for a POSIX shell when it needs it.
fn quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| word.replace('\0', ""))
}

/// Where batch grading and `status` keep their copies and builds, per user.
fn default_work_dir() -> PathBuf {
    // SAFETY: getuid() cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("netbook-grade-{uid}"))
}

//! `cargo xtask grade chNN --batch DIR --csv grades.csv`: a folder of
//! submissions, one per subdirectory, each graded in isolation.
//!
//! A submission is, in this order of precedence:
//! - `cmd.txt`: a server command line with `{listen}` (or `{port}`) in it, any
//!   language; its first line that is neither empty nor a `#` comment. It runs
//!   in the submission's folder, so relative paths work. An optional
//!   `build.sh` runs first (`sh build.sh`, same time limit as a build).
//! - `run.sh`: run as `sh run.sh HOST:PORT` in the submission's folder (an
//!   optional `build.sh` runs first, as above).
//! - `Cargo.toml`: a Rust crate, built with `cargo build --release`.
//!
//! Each one is copied (without `target/` and `.git/`) to the work folder and
//! built and graded there: a build with a time limit, then the suite in a
//! child process with a time limit of its own, whose output is kept to a
//! bounded tail. When a limit is reached everything the submission started is
//! killed. A submission that does not build, hangs or floods its output costs
//! only itself; a machine that cannot grade (no cargo, ports exhausted, checks
//! it cannot run) gives `infra-error`, never a zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use conformance::formats::{self, JsonReport};
use conformance::grading::Points;
use conformance::profile::Profile;
use conformance::runner;
use conformance::server::ServerCommand;

use super::GradeArgs;
use super::build::{self, BuildError};
use super::child::{self, Ended};

/// How a submission's grading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The suite ran; the score counts.
    Graded,
    /// The crate (or build.sh) failed or ran out of time: 0 points.
    BuildFailed,
    /// Nothing runnable, or a command line the suite cannot use: 0 points.
    Invalid,
    /// The grading ran out of time: 0 points.
    Timeout,
    /// The machine could not grade it: no score; grade it again.
    InfraError,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Graded => "graded",
            Status::BuildFailed => "build-failed",
            Status::Invalid => "invalid",
            Status::Timeout => "timeout",
            Status::InfraError => "infra-error",
        }
    }
}

/// One submission's result.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub status: Status,
    /// The suite's report, when it ran.
    pub report: Option<JsonReport>,
    /// Points awarded; `None` for an infrastructure error.
    pub points: Option<u32>,
    pub max: u32,
    pub seconds: f64,
    /// One line for the teacher.
    pub message: String,
    /// The tester log to hand back to the student.
    pub feedback: PathBuf,
}

/// What every submission of a batch is graded with.
pub struct Settings {
    pub profile: Profile,
    pub points: Points,
    pub seed: u64,
    pub only: Vec<String>,
    pub build_timeout: Duration,
    pub timeout: Duration,
    pub check_timeout: Duration,
    /// Copies, builds and reports go to `work/<submission>/`.
    pub work: PathBuf,
}

/// Largest submission copied (without target/ and .git/).
const MAX_SUBMISSION: u64 = 64 << 20;
/// How much of a grading run's output to keep.
const KEEP: usize = 256 * 1024;

pub fn grade_batch(
    args: &GradeArgs,
    profile: &Profile,
    points: &Points,
    dir: &Path,
) -> Result<bool, String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "{} has no subdirectories: put one submission in each",
            dir.display()
        ));
    }
    let settings = Settings {
        profile: profile.clone(),
        points: points.clone(),
        seed: args.seed.unwrap_or_else(runner::fresh_seed),
        only: args.only.clone(),
        build_timeout: Duration::from_secs(args.build_timeout),
        timeout: Duration::from_secs(args.timeout),
        check_timeout: Duration::from_secs(args.check_timeout),
        work: args
            .work
            .clone()
            .unwrap_or_else(|| super::default_work_dir().join(&profile.stage)),
    };
    eprintln!(
        "grading {} submission(s) in {} against {} ({}), seed {}; work folder {}",
        names.len(),
        dir.display(),
        profile.stage,
        profile.title,
        settings.seed,
        settings.work.display()
    );
    let mut rows = Vec::new();
    for (n, name) in names.iter().enumerate() {
        eprintln!("[{}/{}] {name} ...", n + 1, names.len());
        let row = grade_submission(&dir.join(name), name, &settings);
        eprintln!(
            "[{}/{}] {name}: {} {} in {:.0} s: {}",
            n + 1,
            names.len(),
            row.status.label(),
            score_cell(&row),
            row.seconds,
            row.message
        );
        rows.push(row);
    }
    let columns = check_columns(&settings);
    if let Some(path) = &args.csv {
        std::fs::write(path, csv(&rows, &columns))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    print!("{}", summary(&rows, &settings));
    if let Some(path) = &args.csv {
        println!("wrote {}", path.display());
    }
    let infra = rows
        .iter()
        .filter(|r| r.status == Status::InfraError)
        .count();
    if infra > 0 {
        println!(
            "{infra} submission(s) could not be graded on this machine (infra-error): \
             fix the cause and grade them again; they have no score"
        );
    }
    Ok(infra == 0)
}

/// The check ids a batch runs, in the suite's order.
fn check_columns(s: &Settings) -> Vec<&'static str> {
    conformance::grading::graded_checks(&s.profile)
        .into_iter()
        .map(|c| c.id)
        .filter(|id| s.only.is_empty() || s.only.iter().any(|o| o == id))
        .collect()
}

/// Points possible at this stage, for the checks the batch runs.
fn stage_max(s: &Settings) -> u32 {
    check_columns(s)
        .into_iter()
        .filter(|id| s.profile.expected_failure(id).is_none())
        .map(|id| s.points.worth(&s.profile.stage, id))
        .sum()
}

/// Build and grade one submission in isolation.
pub fn grade_submission(src: &Path, name: &str, s: &Settings) -> Row {
    let start = Instant::now();
    let work = s.work.join(name);
    let mut row = Row {
        name: name.to_string(),
        status: Status::Graded,
        report: None,
        points: Some(0),
        max: stage_max(s),
        seconds: 0.0,
        message: String::new(),
        feedback: work.join("feedback.txt"),
    };
    let result = build_and_grade(src, &work, s, &mut row);
    if let Err((status, message)) = result {
        row.status = status;
        row.message = message;
        if status == Status::InfraError {
            row.points = None;
        }
        // The student's copy of what happened.
        let _ = std::fs::write(
            &row.feedback,
            format!(
                "{}: {}\n{}\nscore: {}\n",
                s.profile.stage,
                status.label(),
                row.message,
                score_cell(&row)
            ),
        );
    }
    row.seconds = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    row
}

type Trouble = (Status, String);

fn build_and_grade(src: &Path, work: &Path, s: &Settings, row: &mut Row) -> Result<(), Trouble> {
    let infra = |what: String| (Status::InfraError, what);
    std::fs::create_dir_all(work).map_err(|e| infra(format!("{}: {e}", work.display())))?;
    let copy = work.join("submission");
    if copy.exists() {
        std::fs::remove_dir_all(&copy)
            .map_err(|e| infra(format!("cannot clear {}: {e}", copy.display())))?;
    }
    let mut size = 0;
    copy_tree(src, &copy, &mut size).map_err(|e| infra(format!("cannot copy: {e}")))?;
    for stale in ["report.json", "build.log", "feedback.txt", "progress.txt"] {
        let _ = std::fs::remove_file(work.join(stale));
    }

    let template = if copy.join("cmd.txt").is_file() || copy.join("run.sh").is_file() {
        build_script(&copy, work, s)?;
        if copy.join("cmd.txt").is_file() {
            let text = std::fs::read_to_string(copy.join("cmd.txt"))
                .map_err(|e| (Status::Invalid, format!("cmd.txt: {e}")))?;
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .ok_or((Status::Invalid, "cmd.txt holds no command line".to_string()))?
                .to_string();
            ServerCommand::new(line.clone())
                .map_err(|e| (Status::Invalid, format!("cmd.txt: {e}")))?;
            line
        } else {
            "sh run.sh {listen}".to_string()
        }
    } else if copy.join("Cargo.toml").is_file() {
        let built = build::build(
            &copy,
            &work.join("target"),
            None,
            &s.profile.binary,
            s.build_timeout,
        );
        match built {
            Ok(binary) => super::command_for_binary(&binary, &s.profile),
            Err(BuildError::Failed(log)) => {
                let _ = std::fs::write(work.join("build.log"), &log);
                return Err((
                    Status::BuildFailed,
                    format!(
                        "does not build: {}",
                        log.lines()
                            .find(|l| l.starts_with("error"))
                            .unwrap_or("see build.log")
                    ),
                ));
            }
            Err(e @ BuildError::TimedOut(_)) => return Err((Status::BuildFailed, e.to_string())),
            Err(e @ BuildError::NoBinary(_)) => return Err((Status::Invalid, e.to_string())),
            Err(BuildError::Infra(why)) => return Err(infra(why)),
        }
    } else {
        return Err((
            Status::Invalid,
            "no cmd.txt, run.sh or Cargo.toml: nothing to run".into(),
        ));
    };

    let report_path = work.join("report.json");
    let exe = std::env::current_exe().map_err(|e| infra(format!("cannot find xtask: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(&copy)
        .args(["grade", &s.profile.stage, "--cmd", &template])
        .args(["--format", "json", "--out"])
        .arg(&report_path)
        .args(["--seed", &s.seed.to_string()])
        .args(["--check-timeout", &s.check_timeout.as_secs().to_string()]);
    if !s.only.is_empty() {
        cmd.args(["--only", &s.only.join(",")]);
    }
    let run = child::run(cmd, s.timeout, KEEP, |_| {})
        .map_err(|e| infra(format!("cannot start the grader: {e}")))?;
    let _ = std::fs::write(&row.feedback, run.stdout.text());
    let _ = std::fs::write(work.join("progress.txt"), run.stderr.text());
    match run.ended {
        Ended::TimedOut => {
            return Err((
                Status::Timeout,
                format!(
                    "grading did not finish within {} s; everything it started was killed",
                    s.timeout.as_secs()
                ),
            ));
        }
        Ended::Exited(status) if matches!(status.code(), Some(0 | 1)) => {}
        Ended::Exited(status) => {
            let said = run
                .stderr
                .text()
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(infra(format!("the grader failed ({status}): {said}")));
        }
    }
    let text = std::fs::read_to_string(&report_path)
        .map_err(|e| infra(format!("the grader wrote no report: {e}")))?;
    let report = formats::parse_json(&text).map_err(infra)?;
    row.points = Some(report.score.points);
    row.max = report.score.max;
    let skipped: Vec<&formats::JsonCheck> = report
        .checks
        .iter()
        .filter(|c| c.status == "skip")
        .collect();
    let machine: Vec<&formats::JsonCheck> = report
        .checks
        .iter()
        .filter(|c| c.status == "fail" && suite_side_trouble(c))
        .collect();
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == "fail")
        .map(|c| c.id.as_str())
        .collect();
    row.report = Some(report.clone());
    if let Some(c) = skipped.first().or(machine.first()) {
        return Err(infra(format!(
            "{} check(s) could not run on this machine ({}: {}); partial score {}/{}",
            skipped.len() + machine.len(),
            c.id,
            c.message,
            report.score.points,
            report.score.max
        )));
    }
    row.message = if failed.is_empty() {
        "every graded check passes".into()
    } else {
        format!("failed: {}", failed.join(", "))
    };
    Ok(())
}

/// Run the submission's `build.sh`, if it has one.
fn build_script(copy: &Path, work: &Path, s: &Settings) -> Result<(), Trouble> {
    if !copy.join("build.sh").is_file() {
        return Ok(());
    }
    let mut cmd = Command::new("sh");
    cmd.arg("build.sh").current_dir(copy);
    let run = child::run(cmd, s.build_timeout, 32 * 1024, |_| {})
        .map_err(|e| (Status::InfraError, format!("cannot run sh: {e}")))?;
    let log = format!("{}{}", run.stdout.text(), run.stderr.text());
    let _ = std::fs::write(work.join("build.log"), &log);
    match run.ended {
        Ended::TimedOut => Err((
            Status::BuildFailed,
            format!(
                "build.sh did not finish within {} s",
                s.build_timeout.as_secs()
            ),
        )),
        Ended::Exited(status) if !status.success() => Err((
            Status::BuildFailed,
            format!("build.sh failed ({status}); see build.log"),
        )),
        Ended::Exited(_) => Ok(()),
    }
}

/// A failure the suite's own side caused: no ephemeral port left for a
/// client (EADDRNOTAVAIL), no descriptor left in the suite (EMFILE).
fn suite_side_trouble(c: &formats::JsonCheck) -> bool {
    let Some(f) = &c.failure else { return false };
    std::iter::once(&f.summary)
        .chain(&f.details)
        .any(|l| l.contains("(os error 99)") || l.contains("(os error 24)"))
}

/// Copy a submission, leaving out `target/`, `.git/` and anything that is
/// neither a file nor a folder (symlinks included), up to MAX_SUBMISSION bytes.
fn copy_tree(from: &Path, to: &Path, size: &mut u64) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, size)?;
        } else if kind.is_file() {
            *size += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if *size > MAX_SUBMISSION {
                return Err(format!(
                    "the submission is larger than {} MiB without target/ and .git/",
                    MAX_SUBMISSION >> 20
                ));
            }
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn score_cell(row: &Row) -> String {
    match row.points {
        Some(p) => format!("{p}/{}", row.max),
        None => format!("?/{}", row.max),
    }
}

/// The table printed at the end.
fn summary(rows: &[Row], s: &Settings) -> String {
    let width = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!(
        "\n{} submissions graded against {}, seed {}\n\n{:<width$}  {:<12}  {:>9}  {:>6}  message\n",
        rows.len(),
        s.profile.stage,
        s.seed,
        "submission",
        "status",
        "score",
        "time"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:<12}  {:>9}  {:>5.0}s  {}",
            r.name,
            r.status.label(),
            score_cell(r),
            r.seconds,
            r.message
        );
    }
    let graded = rows.iter().filter(|r| r.status == Status::Graded).count();
    let _ = writeln!(
        out,
        "\n{graded} graded, {} not gradable by the student's fault (0 points), {} infra-error",
        rows.iter()
            .filter(|r| matches!(
                r.status,
                Status::BuildFailed | Status::Invalid | Status::Timeout
            ))
            .count(),
        rows.iter()
            .filter(|r| r.status == Status::InfraError)
            .count()
    );
    out
}

/// The CSV file: one row per submission, one column per check.
fn csv(rows: &[Row], columns: &[&str]) -> String {
    let mut header = vec![
        "submission",
        "status",
        "score",
        "max",
        "percent",
        "pass",
        "fail",
        "xfail",
        "xpass",
        "skip",
        "seconds",
        "message",
        "feedback",
    ];
    header.extend(columns);
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        let counts = r.report.as_ref().map(|j| j.counts);
        let count = |f: fn(&formats::Counts) -> usize| {
            counts
                .as_ref()
                .map(|c| f(c).to_string())
                .unwrap_or_default()
        };
        let (score, percent) = match r.points {
            Some(p) => (
                p.to_string(),
                ((p * 100).checked_div(r.max).unwrap_or(100)).to_string(),
            ),
            None => (String::new(), String::new()),
        };
        let statuses: BTreeMap<&str, &str> = r
            .report
            .as_ref()
            .map(|j| {
                j.checks
                    .iter()
                    .map(|c| (c.id.as_str(), c.status.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut cells = vec![
            r.name.clone(),
            r.status.label().to_string(),
            score,
            r.max.to_string(),
            percent,
            count(|c| c.pass),
            count(|c| c.fail),
            count(|c| c.xfail),
            count(|c| c.xpass),
            count(|c| c.skip),
            format!("{:.1}", r.seconds),
            r.message.clone(),
            r.feedback.display().to_string(),
        ];
        cells.extend(
            columns
                .iter()
                .map(|id| statuses.get(id).copied().unwrap_or("").to_string()),
        );
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// RFC 4180: quote a cell with a comma, quote or line break; double quotes.
fn csv_cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_when_needed() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a, b"), "\"a, b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
    }
}

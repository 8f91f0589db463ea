//! `cargo xtask status`: a student's progress, stage by stage.
//!
//! A student's own servers live in the workbook's `exercises/` folder (or
//! `--dir DIR`), one folder per stage, as `cargo xtask exercise chNN` makes
//! them: the folder's `.netbook-exercise.toml` names its stage (a folder named
//! `chNN` or `chNN-*` counts too). Each is built and graded like a batch
//! submission; a result is reused while the folder's files, the profile and
//! the points stay the same (`--fresh` grades again anyway).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use conformance::formats;
use conformance::grading::Points;
use conformance::profile::{self, Profile};

use super::batch::{self, Row, Settings, Status};
use super::exercise;
use crate::stages;

#[derive(Args)]
pub struct StatusArgs {
    /// Where the student's stages are (default: exercises/ in the workbook).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Grade every stage again, even those whose files did not change.
    #[arg(long)]
    fresh: bool,
    /// Run only these checks (comma-separated ids): a quicker, partial look.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seconds a build may take.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    build_timeout: u64,
    /// Seconds the grading of one stage may take.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    timeout: u64,
}

/// Width of the progress bar, in cells.
const BAR: usize = 24;

pub fn status(args: StatusArgs) -> Result<bool, String> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| stages::root().join("exercises"));
    let points = Points::shipped()?;
    let stages: Vec<Profile> = profile::load_all(&profile::default_dir())?
        .into_iter()
        .filter(|p| !p.stage.contains('-'))
        .collect();
    let folders = folders(&dir);
    println!("your stages in {}:\n", dir.display());
    let mut complete = 0;
    let mut infra = false;
    for profile in &stages {
        let Some(folder) = find_folder(&folders, &profile.stage) else {
            println!(
                "{}  {:<BAR$}  not started: cargo xtask exercise {}",
                profile.stage, "", profile.stage
            );
            continue;
        };
        let settings = Settings {
            profile: profile.clone(),
            points: points.clone(),
            seed: 1,
            only: args.only.clone(),
            build_timeout: Duration::from_secs(args.build_timeout),
            timeout: Duration::from_secs(args.timeout),
            check_timeout: Duration::from_secs(120),
            work: super::default_work_dir().join("status"),
        };
        let row = cached_or_graded(&folder, profile, &settings, args.fresh)?;
        println!("{}", line(profile, &row));
        infra |= row.status == Status::InfraError;
        if row.status == Status::Graded
            && row
                .report
                .as_ref()
                .is_some_and(|r| r.counts.fail == 0 && r.counts.skip == 0)
        {
            complete += 1;
        }
    }
    println!(
        "\n{complete} of {} stages complete. Details of a stage: cargo xtask grade chNN --crate {}/<folder>",
        stages.len(),
        dir.display()
    );
    Ok(!infra)
}

/// One line: stage, a bar of points, the score, what fails.
fn line(profile: &Profile, row: &Row) -> String {
    let (points, max) = (row.points.unwrap_or(0), row.max.max(1));
    let filled = (points as usize * BAR) / max as usize;
    let bar = format!("[{}{}]", "#".repeat(filled), "-".repeat(BAR - filled));
    let score = match row.points {
        Some(p) => format!("{p:>3}/{:<3} points", row.max),
        None => "  ?/?   points".into(),
    };
    let said = match row.status {
        Status::Graded if row.message.starts_with("every") => "done".to_string(),
        Status::Graded => shorten(&row.message, 4),
        other => format!("{}: {}", other.label(), row.message),
    };
    format!("{}  {bar}  {score}  {said}", profile.stage)
}

/// `failed: a, b, c, d, e, f` as `failed: a, b, c, d (+2 more)`.
fn shorten(message: &str, keep: usize) -> String {
    let Some(list) = message.strip_prefix("failed: ") else {
        return message.to_string();
    };
    let ids: Vec<&str> = list.split(", ").collect();
    if ids.len() <= keep {
        return message.to_string();
    }
    format!(
        "failed: {} (+{} more)",
        ids[..keep].join(", "),
        ids.len() - keep
    )
}

/// Subfolders of `dir` with the stage each belongs to.
fn folders(dir: &Path) -> Vec<(PathBuf, Option<String>)> {
    let mut out: Vec<(PathBuf, Option<String>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| {
            let path = e.path();
            let stage = exercise::marked_stage(&path);
            (path, stage)
        })
        .collect();
    out.sort();
    out
}

/// The folder for `stage`: the one marked for it, else one named after it.
fn find_folder(folders: &[(PathBuf, Option<String>)], stage: &str) -> Option<PathBuf> {
    let marked = folders.iter().find(|(_, s)| s.as_deref() == Some(stage));
    let named = || {
        folders.iter().find(|(p, s)| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            s.is_none() && (name == stage || name.starts_with(&format!("{stage}-")))
        })
    };
    marked.or_else(named).map(|(p, _)| p.clone())
}

/// Grade the folder, unless an earlier result for the same files stands.
fn cached_or_graded(
    folder: &Path,
    profile: &Profile,
    settings: &Settings,
    fresh: bool,
) -> Result<Row, String> {
    let name = profile.stage.clone();
    let cache = settings.work.join(format!("{name}.fingerprint"));
    let fingerprint = fingerprint(folder, profile, &settings.only)?;
    let report_path = settings.work.join(&name).join("report.json");
    if !fresh && std::fs::read_to_string(&cache).ok().as_deref() == Some(fingerprint.as_str()) {
        if let Some(report) = std::fs::read_to_string(&report_path)
            .ok()
            .and_then(|t| formats::parse_json(&t).ok())
        {
            let failed: Vec<&str> = report
                .checks
                .iter()
                .filter(|c| c.status == "fail")
                .map(|c| c.id.as_str())
                .collect();
            return Ok(Row {
                name,
                status: Status::Graded,
                points: Some(report.score.points),
                max: report.score.max,
                seconds: 0.0,
                message: if failed.is_empty() {
                    "every graded check passes".into()
                } else {
                    format!("failed: {}", failed.join(", "))
                },
                feedback: settings.work.join(&profile.stage).join("feedback.txt"),
                report: Some(report),
            });
        }
    }
    eprintln!(
        "grading {} ({}) from {} ...",
        profile.stage,
        profile.title,
        folder.display()
    );
    let row = batch::grade_submission(folder, &name, settings);
    if row.status == Status::Graded {
        std::fs::write(&cache, fingerprint).map_err(|e| format!("{}: {e}", cache.display()))?;
    } else {
        let _ = std::fs::remove_file(&cache);
    }
    Ok(row)
}

/// A hash of everything the grade depends on: the folder's files (without
/// target/ and .git/), the stage's profile and the points, the checks run.
fn fingerprint(folder: &Path, profile: &Profile, only: &[String]) -> Result<String, String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut files = Vec::new();
    collect(folder, folder, &mut files);
    files.sort();
    for rel in &files {
        rel.hash(&mut h);
        std::fs::read(folder.join(rel))
            .map_err(|e| format!("{}: {e}", folder.join(rel).display()))?
            .hash(&mut h);
    }
    format!("{profile:?}").hash(&mut h);
    std::fs::read(conformance::grading::default_path())
        .unwrap_or_default()
        .hash(&mut h);
    only.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    Ok(format!("{:016x}", h.finish()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect(root, &path, out),
            Ok(t) if t.is_file() => {
                if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.to_path_buf());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_of_failures_are_shortened() {
        assert_eq!(shorten("failed: a, b", 4), "failed: a, b");
        assert_eq!(
            shorten("failed: a, b, c, d, e, f", 4),
            "failed: a, b, c, d (+2 more)"
        );
        assert_eq!(
            shorten("every graded check passes", 4),
            "every graded check passes"
        );
    }
}

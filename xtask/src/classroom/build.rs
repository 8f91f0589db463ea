//! Building a student's crate: release, a time limit, bounded output, and
//! the binary found from cargo's own artifact messages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::child::{self, Ended};

/// Why a crate gave no binary.
#[derive(Debug)]
pub enum BuildError {
    /// The crate does not build: the student's to fix. Carries cargo's last lines.
    Failed(String),
    /// The build ran past its time limit.
    TimedOut(Duration),
    /// It built, but which binary to run is unclear (none, or several).
    NoBinary(String),
    /// Cargo could not be run at all: the machine's problem, not the student's.
    Infra(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Failed(log) => write!(f, "the crate does not build:\n{log}"),
            BuildError::TimedOut(d) => write!(
                f,
                "the build did not finish within {} s (a build script or proc macro that never ends?)",
                d.as_secs()
            ),
            BuildError::NoBinary(why) => f.write_str(why),
            BuildError::Infra(why) => f.write_str(why),
        }
    }
}

/// The cargo to build students' crates with: `$NETBOOK_CARGO`, else the
/// cargo running us (`$CARGO`), else `cargo` on the PATH.
pub fn cargo() -> PathBuf {
    std::env::var_os("NETBOOK_CARGO")
        .or_else(|| std::env::var_os("CARGO"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// How much of cargo's stderr to keep.
const KEEP: usize = 32 * 1024;

/// `cargo build --release` of the crate (or workspace) at `dir`, into
/// `target_dir`, never a shared one (see `grade`). The binary is the only one built, or the one named `bin`,
/// or the one named like the stage's reference (`ch05-poll`).
pub fn build(
    dir: &Path,
    target_dir: &Path,
    bin: Option<&str>,
    stage_binary: &str,
    limit: Duration,
) -> Result<PathBuf, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NoBinary(format!(
            "{} has no Cargo.toml",
            dir.display()
        )));
    }
    let mut cmd = Command::new(cargo());
    cmd.current_dir(dir)
        .args(["build", "--release", "--color", "never"])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("CARGO_TERM_COLOR", "never");
    let executables: Arc<Mutex<Vec<(String, PathBuf)>>> = Arc::default();
    let found = Arc::clone(&executables);
    let run = child::run(cmd, limit, KEEP, move |line| {
        if let Some(exe) = executable(line) {
            found.lock().unwrap_or_else(|p| p.into_inner()).push(exe);
        }
    })
    .map_err(|e| {
        BuildError::Infra(format!(
            "cannot run cargo ({}): {e}; is Rust installed? (NETBOOK_CARGO or CARGO names the cargo to use)",
            cargo().display()
        ))
    })?;
    match run.ended {
        Ended::TimedOut => return Err(BuildError::TimedOut(limit)),
        Ended::Exited(status) if !status.success() => {
            return Err(BuildError::Failed(last_lines(&run.stderr.text(), 40)));
        }
        Ended::Exited(_) => {}
    }
    let mut exes = executables
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    exes.dedup();
    let names: Vec<&str> = exes.iter().map(|(n, _)| n.as_str()).collect();
    let chosen = match bin {
        Some(want) => exes.iter().find(|(n, _)| n == want),
        None if exes.len() == 1 => exes.first(),
        None => exes.iter().find(|(n, _)| n == stage_binary),
    };
    match chosen {
        Some((_, path)) => Ok(path.clone()),
        None if exes.is_empty() => Err(BuildError::NoBinary(
            "the crate builds no binary: a server needs src/main.rs (or a [[bin]])".into(),
        )),
        None => Err(BuildError::NoBinary(format!(
            "the crate builds several binaries ({}); say which with --bin{}",
            names.join(", "),
            bin.map(|b| format!(" (there is no {b:?})"))
                .unwrap_or_default()
        ))),
    }
}

/// `(name, path)` from a `compiler-artifact` message with an executable.
fn executable(line: &[u8]) -> Option<(String, PathBuf)> {
    let msg: serde_json::Value = serde_json::from_slice(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let path = msg.get("executable")?.as_str()?;
    let name = msg.get("target")?.get("name")?.as_str()?;
    Some((name.to_string(), PathBuf::from(path)))
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_executable_from_cargos_artifact_messages() {
        let line = br#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"ch01-blocking-echo"},"executable":"/t/release/ch01-blocking-echo","fresh":true}"#;
        assert_eq!(
            executable(line),
            Some((
                "ch01-blocking-echo".into(),
                PathBuf::from("/t/release/ch01-blocking-echo")
            ))
        );
        let lib = br#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"plumbing"},"executable":null}"#;
        assert_eq!(executable(lib), None);
        assert_eq!(executable(b"not json"), None);
    }
}

//! Stage profiles: what the suite expects of each stage (tests/profiles/*.toml).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The protocol a stage speaks; it picks the check groups and the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Echo,
    Http,
}

/// What /proc must show while the server idles.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mechanism {
    pub threads: u64,
    /// Syscall families an idle thread may block in; empty = a busy loop.
    pub blocks_in: Vec<String>,
    /// "none", "level" or "edge".
    pub epoll: String,
}

/// A declared limitation.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub outcome: String,
    pub why: String,
    pub section: String,
    pub fixed_by: String,
}

/// One stage's profile.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub stage: String,
    pub binary: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub title: String,
    pub protocol: Protocol,
    pub chapter: String,
    pub mechanism: Mechanism,
    /// Grade only these checks. A pitfall variant names the checks that
    /// show its pitfall every time; the stage it varies runs all of them.
    #[serde(default)]
    pub checks: Option<Vec<String>>,
    #[serde(default)]
    pub expect: BTreeMap<String, Expectation>,
}

/// The profiles shipped with the suite.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

impl Profile {
    /// Read and validate one profile file.
    pub fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        let profile: Profile =
            toml::from_str(&text).map_err(|e| format!("profile {}: {e}", path.display()))?;
        profile
            .validate()
            .map_err(|e| format!("profile {}: {e}", path.display()))?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), String> {
        let known = crate::checks::all();
        for (id, exp) in &self.expect {
            if !known.iter().any(|c| c.id == id) {
                return Err(format!("[expect.{id}]: there is no check with that id"));
            }
            if exp.outcome != "xfail" {
                return Err(format!(
                    "[expect.{id}]: outcome must be \"xfail\" (everything else is expected to pass)"
                ));
            }
        }
        for id in self.checks.iter().flatten() {
            if !known.iter().any(|c| c.id == id) {
                return Err(format!("checks: there is no check {id:?}"));
            }
        }
        if let Some(checks) = &self.checks {
            if let Some(id) = self.expect.keys().find(|id| !checks.contains(id)) {
                return Err(format!(
                    "[expect.{id}] names a check that `checks` leaves out"
                ));
            }
        }
        if !["none", "level", "edge"].contains(&self.mechanism.epoll.as_str()) {
            return Err("mechanism.epoll must be \"none\", \"level\" or \"edge\"".into());
        }
        for family in &self.mechanism.blocks_in {
            if !["accept", "read", "write", "select", "poll", "epoll"].contains(&family.as_str()) {
                return Err(format!("mechanism.blocks_in: unknown family {family:?}"));
            }
        }
        Ok(())
    }

    /// Is check `id` declared as a known limitation?
    pub fn expected_failure(&self, id: &str) -> Option<&Expectation> {
        self.expect.get(id)
    }
}

/// Every profile in `dir`, sorted by stage name.
pub fn load_all(dir: &Path) -> Result<Vec<Profile>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut profiles = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        // points.toml sits beside the profiles but is not one (see crate::grading).
        let points = path.file_name() == Some(crate::grading::POINTS_FILE.as_ref());
        if path.extension().is_some_and(|e| e == "toml") && !points {
            profiles.push(Profile::load(&path)?);
        }
    }
    profiles.sort_by(|a, b| a.stage.cmp(&b.stage));
    Ok(profiles)
}

/// The profile named `stage` (`ch01`, or a variant `ch07-pitfall-no-drain`).
pub fn find(dir: &Path, stage: &str) -> Result<Profile, String> {
    let all = load_all(dir)?;
    let names: Vec<String> = all.iter().map(|p| p.stage.clone()).collect();
    all.into_iter().find(|p| p.stage == stage).ok_or_else(|| {
        format!(
            "no profile for stage {stage:?}; known stages: {}",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_loads() {
        let all = load_all(&default_dir()).unwrap();
        assert!(all.iter().any(|p| p.stage == "ch01"));
    }

    #[test]
    fn rejects_unknown_checks_and_outcomes() {
        let base = r#"
            stage = "t"
            binary = "t"
            title = "t"
            protocol = "echo"
            chapter = "t.md"
            [mechanism]
            threads = 1
            blocks_in = ["poll"]
            epoll = "none"
        "#;
        let with = |extra: &str| -> Result<(), String> {
            let p: Profile =
                toml::from_str(&format!("{base}{extra}")).map_err(|e| e.to_string())?;
            p.validate()
        };
        assert!(with("").is_ok());
        let bad_id =
            "[expect.no-such-check]\noutcome=\"xfail\"\nwhy=\"x\"\nsection=\"x\"\nfixed_by=\"x\"\n";
        assert!(with(bad_id).unwrap_err().contains("no check"));
        let bad_outcome =
            "[expect.echo-line]\noutcome=\"pass\"\nwhy=\"x\"\nsection=\"x\"\nfixed_by=\"x\"\n";
        assert!(with(bad_outcome).unwrap_err().contains("xfail"));
    }
}

//! Points and scores, for grading students' servers (tests/profiles/points.toml).
//!
//! A check is worth its points at a stage only when the stage's profile
//! expects it to pass. A declared limitation (XFAIL) is worth nothing there,
//! and a server that does better than its stage (XPASS) loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::report::{Outcome, Report};

/// The points of every check, with per-stage overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Points {
    /// What a check not listed is worth.
    pub default: u32,
    /// Check id -> points.
    #[serde(default)]
    pub points: BTreeMap<String, u32>,
    /// Stage (`ch05`) -> check id -> points.
    #[serde(default)]
    pub stage: BTreeMap<String, BTreeMap<String, u32>>,
}

/// The shipped points file, beside the profiles.
pub fn default_path() -> PathBuf {
    crate::profile::default_dir().join(POINTS_FILE)
}

/// Its file name; the profile loader leaves it alone.
pub const POINTS_FILE: &str = "points.toml";

impl Points {
    /// Read and validate a points file.
    pub fn load(path: &Path) -> Result<Points, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let points: Points =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        points
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(points)
    }

    /// The points file shipped with the suite.
    pub fn shipped() -> Result<Points, String> {
        Points::load(&default_path())
    }

    fn validate(&self) -> Result<(), String> {
        let known = crate::checks::all();
        let ids = self
            .points
            .keys()
            .map(|id| ("[points]".to_string(), id))
            .chain(
                self.stage
                    .iter()
                    .flat_map(|(s, m)| m.keys().map(move |id| (format!("[stage.{s}]"), id))),
            );
        for (table, id) in ids {
            if !known.iter().any(|c| c.id == id) {
                return Err(format!("{table}: there is no check {id:?}"));
            }
        }
        Ok(())
    }

    /// What check `id` is worth at `stage` when the stage expects it to pass.
    pub fn worth(&self, stage: &str, id: &str) -> u32 {
        let base = stage.split('-').next().unwrap_or(stage);
        [stage, base]
            .iter()
            .find_map(|s| self.stage.get(*s).and_then(|m| m.get(id)))
            .or_else(|| self.points.get(id))
            .copied()
            .unwrap_or(self.default)
    }

    /// (awarded, possible) for one check's outcome at `stage`.
    pub fn award(&self, stage: &str, id: &str, outcome: Outcome) -> (u32, u32) {
        let worth = self.worth(stage, id);
        match outcome {
            Outcome::Pass => (worth, worth),
            Outcome::Fail | Outcome::Skip => (0, worth),
            Outcome::Xfail | Outcome::Xpass => (0, 0),
        }
    }

    /// The score of a whole report.
    pub fn score(&self, report: &Report) -> Score {
        let mut score = Score::default();
        for r in &report.results {
            let (got, max) = self.award(&report.stage, r.id, r.outcome);
            score.points += got;
            score.max += max;
        }
        score
    }
}

/// Points awarded out of points possible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    pub points: u32,
    pub max: u32,
}

impl Score {
    /// The percentage, rounded down (100 for a stage with nothing to grade).
    pub fn percent(&self) -> u32 {
        (self.points * 100).checked_div(self.max).unwrap_or(100)
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} points ({} %)",
            self.points,
            self.max,
            self.percent()
        )
    }
}

/// The checks a run of `profile` grades, in the suite's order: those of its
/// protocol, narrowed to the profile's `checks` when it names some.
pub fn graded_checks(profile: &crate::profile::Profile) -> Vec<crate::checks::Check> {
    let mut checks = crate::runner::checks_for(profile.protocol);
    if let Some(only) = &profile.checks {
        checks.retain(|c| only.iter().any(|id| id == c.id));
    }
    checks
}

/// Did a student's server do everything its stage asks? Unlike
/// [`Report::failed`], an XPASS (better than the stage) is fine here; a
/// SKIP is not (the machine could not tell).
pub fn complete(report: &Report) -> bool {
    report
        .results
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Pass | Outcome::Xfail | Outcome::Xpass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_points_load_and_name_real_checks() {
        let points = Points::shipped().unwrap();
        assert!(points.worth("ch01", "echo-line") > 0);
        // Every check has its points written down, not defaulted.
        for check in crate::checks::all() {
            assert!(
                points.points.contains_key(check.id),
                "tests/profiles/points.toml: no points for {}",
                check.id
            );
        }
    }

    #[test]
    fn stage_overrides_apply_to_variants_and_limitations_are_worth_nothing() {
        let points: Points =
            toml::from_str("default = 1\n[points]\necho-line = 3\n[stage.ch07]\necho-line = 5\n")
                .unwrap();
        points.validate().unwrap();
        assert_eq!(points.worth("ch01", "echo-line"), 3);
        assert_eq!(points.worth("ch07", "echo-line"), 5);
        assert_eq!(points.worth("ch07-pitfall-no-drain", "echo-line"), 5);
        assert_eq!(points.worth("ch01", "threads"), 1);
        assert_eq!(points.award("ch01", "echo-line", Outcome::Pass), (3, 3));
        assert_eq!(points.award("ch01", "echo-line", Outcome::Fail), (0, 3));
        assert_eq!(points.award("ch01", "echo-line", Outcome::Skip), (0, 3));
        assert_eq!(points.award("ch01", "echo-line", Outcome::Xfail), (0, 0));
        assert_eq!(points.award("ch01", "echo-line", Outcome::Xpass), (0, 0));
        let bad: Points = toml::from_str("default = 1\n[points]\nno-such = 3\n").unwrap();
        assert!(bad.validate().unwrap_err().contains("no-such"));
    }

    #[test]
    fn percent_rounds_down() {
        assert_eq!(Score { points: 2, max: 3 }.percent(), 66);
        assert_eq!(Score { points: 0, max: 0 }.percent(), 100);
        assert_eq!(Score { points: 2, max: 3 }.to_string(), "2/3 points (66 %)");
    }
}

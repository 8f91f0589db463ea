//! Outcomes, failures and how they are shown.
//!
//! A failure reads like a CodeCrafters tester log: what was sent, what came
//! back (escaped, with the first wrong byte marked), the command that
//! reproduces it by hand, and a hint for the classic mistake behind it.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What happened to one check, judged against the stage profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    /// Expected to pass, passed.
    Pass,
    /// Expected to pass, failed.
    Fail,
    /// A declared limitation showed, as the profile says it should.
    Xfail,
    /// A declared limitation did not show: the profile or the stage is wrong.
    Xpass,
    /// The machine could not run the check (say, too few descriptors).
    Skip,
}

impl Outcome {
    /// PASS and XFAIL are what the profile expects.
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Xfail)
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Xfail => "XFAIL",
            Outcome::Xpass => "XPASS",
            Outcome::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// Why a check did not pass, with everything a student needs to reproduce it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failure {
    /// One line: what went wrong.
    pub summary: String,
    /// Further lines of explanation (what was sent, what came back, figures).
    pub details: Vec<String>,
    /// A shell command that reproduces the failure by hand.
    pub reproduce: Option<String>,
    /// The classic mistake that usually causes this.
    pub hint: Option<String>,
    /// The machine, not the server, is the problem: the check is skipped.
    pub skipped: bool,
    /// The last lines the server wrote to stderr, if any.
    pub server_stderr: Option<String>,
}

impl Failure {
    pub fn new(summary: impl Into<String>) -> Failure {
        Failure {
            summary: summary.into(),
            ..Failure::default()
        }
    }

    /// The check cannot run on this machine; not the server's fault.
    pub fn skip(summary: impl Into<String>) -> Failure {
        Failure {
            skipped: true,
            ..Failure::new(summary)
        }
    }

    pub fn detail(mut self, line: impl Into<String>) -> Failure {
        self.details.push(line.into());
        self
    }

    /// Show what was sent.
    pub fn sent(self, bytes: &[u8]) -> Failure {
        self.detail(format!(
            "sent:     {} ({} bytes)",
            escape(bytes, 80),
            bytes.len()
        ))
    }

    /// Show what was expected against what came back, with the first
    /// differing byte marked.
    pub fn compare(mut self, expected: &[u8], received: &[u8]) -> Failure {
        self.details.extend(diff_lines(expected, received));
        self
    }

    pub fn reproduce(mut self, command: impl Into<String>) -> Failure {
        self.reproduce = Some(command.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// The whole failure as indented lines, for the terminal.
    pub fn render(&self) -> String {
        let mut out = self.summary.clone();
        for line in &self.details {
            out.push_str("\n  ");
            out.push_str(line);
        }
        if let Some(command) = &self.reproduce {
            out.push_str("\n  reproduce: ");
            out.push_str(command);
        }
        if let Some(hint) = &self.hint {
            out.push_str("\n  hint: ");
            out.push_str(hint);
        }
        if let Some(stderr) = &self.server_stderr {
            out.push_str("\n  server stderr (last lines):");
            for line in stderr.lines() {
                out.push_str("\n    | ");
                out.push_str(line);
            }
        }
        out
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(format!("I/O error in the suite: {e}"))
    }
}

/// The result of one check in one run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub title: &'static str,
    pub group: &'static str,
    pub outcome: Outcome,
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    /// One line for the table: a figure when it passed, the summary when not.
    pub detail: String,
    /// The full failure, when there was one (also for XFAIL).
    pub failure: Option<Failure>,
    /// For XFAIL/XPASS: why the profile expects this limitation.
    pub expected_because: Option<String>,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Every check of one stage's run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub stage: String,
    pub command: String,
    pub seed: u64,
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_ok()).count()
    }

    pub fn failed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail | Outcome::Xpass))
            .count()
    }

    pub fn skipped(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == Outcome::Skip)
            .count()
    }

    /// The table `cargo xtask run` prints, then the full text of every
    /// failure, then the closing tally.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = format!(
            "stage {}: {}\nseed {}\n\n",
            self.stage, self.command, self.seed
        );
        let id_width = self.results.iter().map(|r| r.id.len()).max().unwrap_or(2);
        let title_width = self
            .results
            .iter()
            .map(|r| r.title.len())
            .max()
            .unwrap_or(5);
        out.push_str(&format!(
            "{:<id_width$}  {:<title_width$}  {:<7} {:>7}  detail\n",
            "id", "title", "outcome", "time"
        ));
        for r in &self.results {
            out.push_str(&format!(
                "{:<id_width$}  {:<title_width$}  {:<7} {:>6.1}s  {}\n",
                r.id,
                r.title,
                r.outcome,
                r.duration.as_secs_f64(),
                r.detail
            ));
        }
        for r in &self.results {
            let show = match r.outcome {
                Outcome::Fail | Outcome::Xpass | Outcome::Skip => true,
                Outcome::Xfail => verbose,
                Outcome::Pass => false,
            };
            if !show {
                continue;
            }
            out.push_str(&format!("\n{} {}: ", r.outcome, r.id));
            match (&r.failure, r.outcome) {
                (Some(failure), _) => out.push_str(&failure.render()),
                (None, Outcome::Xpass) => out.push_str(
                    "the profile declares a limitation that did not show; \
                     fix the profile or find out why the stage now passes",
                ),
                (None, _) => {}
            }
            if let Some(why) = &r.expected_because {
                out.push_str(&format!("\n  expected limitation: {why}"));
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.tally());
        out.push('\n');
        out
    }

    /// `N passed, N failed` (and `, N skipped` when any were).
    pub fn tally(&self) -> String {
        tally(self.passed(), self.failed(), self.skipped())
    }
}

/// The closing line of a run.
pub fn tally(passed: usize, failed: usize, skipped: usize) -> String {
    if skipped > 0 {
        format!("{passed} passed, {failed} failed, {skipped} skipped")
    } else {
        format!("{passed} passed, {failed} failed")
    }
}

/// Bytes as a quoted, escaped string, cut to `max` bytes with a marker.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut out = String::from("\"");
    for &b in shown {
        out.push_str(&escape_byte(b));
    }
    out.push('"');
    if bytes.len() > max {
        out.push_str(&format!("… (+{} bytes)", bytes.len() - max));
    }
    out
}

fn escape_byte(b: u8) -> String {
    match b {
        b'\n' => "\\n".into(),
        b'\r' => "\\r".into(),
        b'\t' => "\\t".into(),
        b'\\' => "\\\\".into(),
        b'"' => "\\\"".into(),
        0x20..=0x7e => (b as char).to_string(),
        _ => format!("\\x{b:02x}"),
    }
}

/// Where two byte strings first differ (`None` if equal).
pub fn first_difference(expected: &[u8], received: &[u8]) -> Option<usize> {
    let common = expected.len().min(received.len());
    match (0..common).find(|&i| expected[i] != received[i]) {
        Some(i) => Some(i),
        None if expected.len() != received.len() => Some(common),
        None => None,
    }
}

/// `expected:` / `received:` lines around the first difference, with a caret
/// under the first wrong byte.
pub fn diff_lines(expected: &[u8], received: &[u8]) -> Vec<String> {
    let Some(at) = first_difference(expected, received) else {
        return vec![format!("received the expected {} bytes", expected.len())];
    };
    const CONTEXT: usize = 24;
    let start = at.saturating_sub(CONTEXT);
    let window = |bytes: &[u8]| -> (String, usize) {
        let end = bytes.len().min(at + CONTEXT);
        let mut text = String::new();
        let mut caret = 0;
        if start > 0 {
            text.push('…');
            caret += 1;
        }
        text.push('"');
        caret += 1;
        for (i, &b) in bytes
            .iter()
            .enumerate()
            .take(end)
            .skip(start.min(bytes.len()))
        {
            if i < at {
                caret += escape_byte(b).chars().count();
            }
            text.push_str(&escape_byte(b));
        }
        text.push('"');
        if end < bytes.len() {
            text.push('…');
        }
        (text, caret)
    };
    let (exp_text, caret) = window(expected);
    let (got_text, _) = window(received);
    let prefix = "expected: ";
    let mut lines = vec![
        format!("{prefix}{exp_text} ({} bytes)", expected.len()),
        format!("received: {got_text} ({} bytes)", received.len()),
        format!(
            "{}^ first difference at byte {at}",
            " ".repeat(prefix.len() + caret)
        ),
    ];
    if received.len() < expected.len() && expected.starts_with(received) {
        lines.push(format!(
            "the first {} bytes were right; the remaining {} never arrived",
            received.len(),
            expected.len() - received.len()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_binary_bytes() {
        assert_eq!(escape(b"hi\n\x00\xff\"", 80), "\"hi\\n\\x00\\xff\\\"\"");
        assert_eq!(escape(b"abcdef", 3), "\"abc\"… (+3 bytes)");
    }

    #[test]
    fn finds_the_first_difference() {
        assert_eq!(first_difference(b"hello", b"hello"), None);
        assert_eq!(first_difference(b"hello", b"help!"), Some(3));
        assert_eq!(first_difference(b"hello", b"hel"), Some(3));
        assert_eq!(first_difference(b"hel", b"hello"), Some(3));
    }

    #[test]
    fn marks_the_first_wrong_byte_with_a_caret() {
        let lines = diff_lines(b"hello\n", b"hellp\n");
        assert_eq!(lines[0], "expected: \"hello\\n\" (6 bytes)");
        assert_eq!(lines[1], "received: \"hellp\\n\" (6 bytes)");
        // The caret sits under the `p`: prefix (10) + quote (1) + "hell" (4).
        assert_eq!(lines[2].find('^'), Some(15));
        assert!(lines[2].ends_with("first difference at byte 4"));
    }

    #[test]
    fn says_when_the_tail_never_arrived() {
        let lines = diff_lines(b"abcdef", b"abc");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("remaining 3 never arrived"))
        );
    }

    #[test]
    fn counts_xfail_as_passed_and_xpass_as_failed() {
        let result = |outcome| CheckResult {
            id: "x",
            title: "x",
            group: "echo",
            outcome,
            duration: Duration::ZERO,
            detail: String::new(),
            failure: None,
            expected_because: None,
        };
        let report = Report {
            stage: "t".into(),
            command: "t".into(),
            seed: 1,
            results: vec![
                result(Outcome::Pass),
                result(Outcome::Xfail),
                result(Outcome::Fail),
                result(Outcome::Xpass),
                result(Outcome::Skip),
            ],
        };
        assert_eq!(report.tally(), "2 passed, 2 failed, 1 skipped");
    }
}

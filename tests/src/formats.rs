//! Reports for machines: JSON (versioned, with a JSON Schema), JUnit XML, TAP 14.
//!
//! The JSON format is documented in tests/schema/README.md and described by
//! tests/schema/netbook-report-v1.schema.json. `cargo xtask run` writes it to
//! target/netbook/reports/<stage>.json; `cargo xtask grade --format json`
//! prints it. Check ids are stable: profiles, points and `--only` use them.

use serde::{Deserialize, Serialize};

use crate::grading::{Points, Score};
use crate::report::{CheckResult, Outcome, Report};

/// The `format` field of every JSON report.
pub const JSON_FORMAT: &str = "netbook-report";
/// The `version` field: raised on any change a reader could notice.
pub const JSON_VERSION: u32 = 1;

/// The machine formats `grade --format` knows (besides `text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
    Tap,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "junit" => Ok(Format::Junit),
            "tap" => Ok(Format::Tap),
            other => Err(format!(
                "unknown format {other:?}: text, json, junit or tap"
            )),
        }
    }
}

/// A whole run, version 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonReport {
    /// Always [`JSON_FORMAT`].
    pub format: String,
    /// Always [`JSON_VERSION`] for this struct.
    pub version: u32,
    /// The profile graded against, e.g. `ch05` or `ch07-pitfall-no-drain`.
    pub stage: String,
    /// The server command template, with `{listen}` in it.
    pub command: String,
    /// The seed of the random inputs: `--seed` reproduces them.
    pub seed: u64,
    /// Wall-clock seconds for every check together.
    pub duration: f64,
    pub score: JsonScore,
    pub counts: Counts,
    pub checks: Vec<JsonCheck>,
}

/// Points awarded and possible.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonScore {
    pub points: u32,
    pub max: u32,
}

/// How many checks ended in each status.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub xfail: usize,
    pub xpass: usize,
    pub skip: usize,
}

/// One check.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonCheck {
    /// Stable id, e.g. `echo-line`.
    pub id: String,
    pub title: String,
    /// `contract`, `echo`, `load`, `mechanism` or `http`.
    pub group: String,
    /// `pass`, `fail`, `xfail` (a declared limitation showed), `xpass` (it
    /// did not), `skip` (the machine could not run the check).
    pub status: String,
    /// Points awarded.
    pub points: u32,
    /// Points possible (0 for a declared limitation).
    pub max_points: u32,
    /// Seconds, to the millisecond.
    pub duration: f64,
    /// One line: a figure when it passed, what went wrong when not.
    pub message: String,
    /// Everything needed to reproduce a failure (also for xfail and skip).
    pub failure: Option<JsonFailure>,
    /// For xfail/xpass: why the profile expects the limitation.
    pub expected_limitation: Option<String>,
}

/// The CodeCrafters-style failure log, in parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFailure {
    pub summary: String,
    /// What was sent, what came back, with the first wrong byte marked.
    pub details: Vec<String>,
    /// A shell command that reproduces it by hand.
    pub reproduce: Option<String>,
    /// The classic mistake behind it.
    pub hint: Option<String>,
    /// The last lines the server wrote to stderr.
    pub server_stderr: Option<String>,
}

/// The lowercase status name used by every machine format.
pub fn status(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Xfail => "xfail",
        Outcome::Xpass => "xpass",
        Outcome::Skip => "skip",
    }
}

fn seconds(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The report in JSON format version 1.
pub fn json_report(report: &Report, points: &Points) -> JsonReport {
    let mut counts = Counts::default();
    let mut score = Score::default();
    let mut total = std::time::Duration::ZERO;
    let checks = report
        .results
        .iter()
        .map(|r| {
            match r.outcome {
                Outcome::Pass => counts.pass += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Xfail => counts.xfail += 1,
                Outcome::Xpass => counts.xpass += 1,
                Outcome::Skip => counts.skip += 1,
            }
            let (got, max) = points.award(&report.stage, r.id, r.outcome);
            score.points += got;
            score.max += max;
            total += r.duration;
            json_check(r, got, max)
        })
        .collect();
    JsonReport {
        format: JSON_FORMAT.into(),
        version: JSON_VERSION,
        stage: report.stage.clone(),
        command: report.command.clone(),
        seed: report.seed,
        duration: seconds(total),
        score: JsonScore {
            points: score.points,
            max: score.max,
        },
        counts,
        checks,
    }
}

fn json_check(r: &CheckResult, points: u32, max_points: u32) -> JsonCheck {
    JsonCheck {
        id: r.id.into(),
        title: r.title.into(),
        group: r.group.into(),
        status: status(r.outcome).into(),
        points,
        max_points,
        duration: seconds(r.duration),
        message: r.detail.clone(),
        failure: r.failure.as_ref().map(|f| JsonFailure {
            summary: f.summary.clone(),
            details: f.details.clone(),
            reproduce: f.reproduce.clone(),
            hint: f.hint.clone(),
            server_stderr: f.server_stderr.clone(),
        }),
        expected_limitation: r.expected_because.clone(),
    }
}

/// The report as pretty-printed JSON, version 1.
pub fn json(report: &Report, points: &Points) -> String {
    serde_json::to_string_pretty(&json_report(report, points)).expect("a report always serialises")
}

/// Read a JSON report back (batch grading and `status` do), refusing other
/// formats and versions.
pub fn parse_json(text: &str) -> Result<JsonReport, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let format = value.get("format").and_then(|v| v.as_str());
    let version = value.get("version").and_then(|v| v.as_u64());
    if format != Some(JSON_FORMAT) || version != Some(JSON_VERSION as u64) {
        return Err(format!(
            "not a {JSON_FORMAT} version {JSON_VERSION} report (format {format:?}, version {version:?})"
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("bad {JSON_FORMAT} report: {e}"))
}

/// JUnit XML, as CI servers and teachers' tools read it. A declared
/// limitation (xfail) is a skipped test case that says why; a server better
/// than its stage (xpass) passes.
pub fn junit(report: &Report, points: &Points) -> String {
    let j = json_report(report, points);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let attrs = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{:.3}\"",
        j.checks.len(),
        j.counts.fail,
        j.counts.xfail + j.counts.skip,
        j.duration
    );
    out.push_str(&format!(
        "<testsuites name=\"netbook\" {attrs}>\n  <testsuite name=\"{}\" {attrs}>\n",
        xml(&j.stage)
    ));
    out.push_str("    <properties>\n");
    for (name, value) in [
        ("command", j.command.clone()),
        ("seed", j.seed.to_string()),
        ("score", format!("{}/{}", j.score.points, j.score.max)),
        ("format", format!("{JSON_FORMAT} v{JSON_VERSION}")),
    ] {
        out.push_str(&format!(
            "      <property name=\"{name}\" value=\"{}\"/>\n",
            xml(&value)
        ));
    }
    out.push_str("    </properties>\n");
    for (c, r) in j.checks.iter().zip(&report.results) {
        out.push_str(&format!(
            "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{:.3}\">\n",
            xml(&c.id),
            xml(&j.stage),
            xml(&c.group),
            c.duration
        ));
        let full = r.failure.as_ref().map(|f| f.render()).unwrap_or_default();
        match r.outcome {
            Outcome::Fail => out.push_str(&format!(
                "      <failure message=\"{}\" type=\"fail\">{}</failure>\n",
                xml(&c.message),
                xml(&full)
            )),
            Outcome::Skip => out.push_str(&format!(
                "      <skipped message=\"{}\"/>\n",
                xml(&format!("the machine could not run it: {}", c.message))
            )),
            Outcome::Xfail => out.push_str(&format!(
                "      <skipped message=\"{}\"/>\n",
                xml(&format!(
                    "expected limitation: {}",
                    c.expected_limitation.as_deref().unwrap_or("")
                ))
            )),
            Outcome::Pass | Outcome::Xpass => {}
        }
        let mut system_out = format!(
            "{}: {}\npoints: {}/{}\n{}",
            c.status, c.title, c.points, c.max_points, c.message
        );
        if r.outcome == Outcome::Xpass {
            system_out.push_str("\nbetter than this stage: a declared limitation did not show");
        }
        out.push_str(&format!(
            "      <system-out>{}</system-out>\n    </testcase>\n",
            xml(&system_out)
        ));
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Text safe inside an XML attribute or element: the five entities, and
/// no control characters XML 1.0 forbids.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// TAP version 14. A declared limitation that showed is `not ok ... # TODO`,
/// one that did not is `ok ... # TODO` (TAP's expected failure and its
/// bonus pass); the machine's trouble is `# SKIP`. Failures carry a YAML
/// block with the message, points, the reproduction and the hint.
pub fn tap(report: &Report, points: &Points) -> String {
    let j = json_report(report, points);
    let mut out = String::from("TAP version 14\n");
    out.push_str(&format!("# stage {}: {}\n", j.stage, j.command));
    out.push_str(&format!("# seed {}\n", j.seed));
    out.push_str(&format!("1..{}\n", j.checks.len()));
    for (n, (c, r)) in j.checks.iter().zip(&report.results).enumerate() {
        let ok = matches!(r.outcome, Outcome::Pass | Outcome::Xpass | Outcome::Skip);
        let directive = match r.outcome {
            Outcome::Xfail => format!(
                " # TODO expected limitation: {}",
                tap_escape(c.expected_limitation.as_deref().unwrap_or(""))
            ),
            Outcome::Xpass => " # TODO better than this stage: the limitation did not show".into(),
            Outcome::Skip => format!(" # SKIP {}", tap_escape(&c.message)),
            Outcome::Pass | Outcome::Fail => String::new(),
        };
        out.push_str(&format!(
            "{} {} - {}: {}{directive}\n",
            if ok { "ok" } else { "not ok" },
            n + 1,
            c.id,
            tap_escape(&c.title)
        ));
        out.push_str("  ---\n");
        out.push_str(&format!("  status: {}\n", c.status));
        out.push_str(&format!("  message: {}\n", quoted(&c.message)));
        if let Some(f) = &c.failure {
            if !f.details.is_empty() {
                out.push_str("  details:\n");
                for line in &f.details {
                    out.push_str(&format!("    - {}\n", quoted(line)));
                }
            }
            let mut field = |key: &str, value: &str| {
                out.push_str(&format!("  {key}: {}\n", quoted(value)));
            };
            if let Some(command) = &f.reproduce {
                field("reproduce", command);
            }
            if let Some(hint) = &f.hint {
                field("hint", hint);
            }
            if let Some(stderr) = &f.server_stderr {
                field("server_stderr", stderr);
            }
        }
        out.push_str(&format!(
            "  points: {}\n  max_points: {}\n  duration_ms: {}\n  ...\n",
            c.points,
            c.max_points,
            (c.duration * 1000.0).round() as u64
        ));
    }
    out.push_str(&format!(
        "# score {}/{} points\n",
        j.score.points, j.score.max
    ));
    out
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted one.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// `#` and `\` start a directive and an escape in a TAP description.
fn tap_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('#', "\\#")
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckResult, Failure};
    use std::time::Duration;

    fn report() -> Report {
        let result = |id: &'static str, outcome, failure: Option<Failure>| CheckResult {
            id,
            title: "a <title> with # and \"quotes\"",
            group: "echo",
            outcome,
            duration: Duration::from_millis(1234),
            detail: failure
                .as_ref()
                .map(|f| f.summary.clone())
                .unwrap_or("fine".into()),
            failure,
            expected_because: (outcome == Outcome::Xfail).then(|| "one at a time".into()),
        };
        Report {
            stage: "ch01".into(),
            command: "srv --listen {listen}".into(),
            seed: 9,
            results: vec![
                result("echo-line", Outcome::Pass, None),
                result(
                    "half-close",
                    Outcome::Fail,
                    Some(
                        Failure::new("got \x07 & <junk>")
                            .compare(b"ab", b"ax")
                            .hint("read to EOF"),
                    ),
                ),
                result(
                    "concurrent-reverse",
                    Outcome::Xfail,
                    Some(Failure::new("second client waited")),
                ),
                result("clients-500", Outcome::Skip, Some(Failure::skip("no fds"))),
            ],
        }
    }

    fn points() -> Points {
        toml::from_str("default = 2\n").unwrap()
    }

    #[test]
    fn json_round_trips_and_scores_only_what_the_stage_expects() {
        let text = json(&report(), &points());
        let back = parse_json(&text).unwrap();
        assert_eq!(back.version, JSON_VERSION);
        assert_eq!((back.score.points, back.score.max), (2, 6));
        assert_eq!(back.checks[1].status, "fail");
        assert_eq!(back.checks[2].max_points, 0);
        assert_eq!(back.checks[0].duration, 1.234);
        assert!(
            parse_json(&text.replace("\"version\": 1", "\"version\": 2"))
                .unwrap_err()
                .contains("not a netbook-report version 1")
        );
    }

    #[test]
    fn junit_escapes_markup_and_drops_control_characters() {
        let xml = junit(&report(), &points());
        assert!(xml.contains("tests=\"4\" failures=\"1\" errors=\"0\" skipped=\"2\""));
        assert!(xml.contains("<failure message=\"got \u{fffd} &amp; &lt;junk&gt;\""));
        assert!(xml.contains("<skipped message=\"expected limitation: one at a time\"/>"));
        assert!(!xml.contains('\x07'));
    }

    #[test]
    fn tap_marks_limitations_as_todo_and_escapes_hashes() {
        let tap = tap(&report(), &points());
        assert!(tap.starts_with("TAP version 14\n"));
        assert!(tap.contains("\n1..4\n"));
        assert!(tap.contains("ok 1 - echo-line: a <title> with \\# and \"quotes\"\n"));
        assert!(tap.contains("not ok 2 - half-close: "));
        assert!(tap.contains("not ok 3 - concurrent-reverse: a <title> with \\# and \"quotes\" # TODO expected limitation: one at a time\n"));
        assert!(
            tap.contains("ok 4 - clients-500: a <title> with \\# and \"quotes\" # SKIP no fds\n")
        );
        assert!(tap.contains("  hint: \"read to EOF\"\n"));
        assert!(tap.ends_with("# score 2/6 points\n"));
    }
}

//! The classroom commands, as a teacher and a student run them: exercise,
//! grade (a crate, a command, a batch), status. Every fixture is made from
//! the workbook's own code: the starter and the solution that `exercise`
//! writes, and the Python example server.
//!
//! The runs are serialised: the suite measures time, and builds are heavy
//! on a small machine.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The target folder of `cargo xtask run` in these tests (a student's crate
/// is always built in its own target/, whatever CARGO_TARGET_DIR says).
fn shared_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("netbook")
        .join("classroom-tests")
}

fn xtask() -> Command {
    let mut cmd = Command::cargo_bin("xtask").expect("the xtask binary is built");
    cmd.current_dir(root())
        .env("CARGO_TARGET_DIR", shared_target())
        .timeout(Duration::from_secs(600));
    cmd
}

/// The JSON report schema, compiled.
fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("tests/schema/netbook-report-v1.schema.json"))
        .expect("the schema file");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::draft202012::new(&schema).expect("the schema is a valid JSON Schema")
}

/// Parse a JSON report and validate it against the schema.
fn valid_report(text: &str) -> Value {
    let report: Value = serde_json::from_str(text).expect("the report is JSON");
    let errors: Vec<String> = schema()
        .iter_errors(&report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report does not match its schema:\n{}",
        errors.join("\n")
    );
    report
}

fn status_of<'a>(report: &'a Value, id: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in the report"))["status"]
        .as_str()
        .unwrap()
}

/// The base stages (no variants) whose chapter crate is in the workbook.
fn stages() -> Vec<conformance::profile::Profile> {
    conformance::profile::load_all(&conformance::profile::default_dir())
        .unwrap()
        .into_iter()
        .filter(|p| !p.stage.contains('-'))
        .filter(|p| root().join("chapters").join(&p.binary).is_dir())
        .collect()
}

/// Quick checks of the stage's protocol that every starter must fail
/// somewhere: the contract's first, and the protocol's basic exchanges.
fn quick_checks(profile: &conformance::profile::Profile) -> Vec<&'static str> {
    let wanted = ["ready-line", "sigterm", "echo-line", "half-close"];
    conformance::runner::checks_for(profile.protocol)
        .into_iter()
        .filter(|c| wanted.contains(&c.id) || c.group == "http")
        .map(|c| c.id)
        .take(6)
        .collect()
}

/// `grade STAGE --crate DIR --format json`, validated; the report.
fn grade_crate(stage: &str, dir: &Path, only: &[&str]) -> Value {
    let out = xtask()
        .args(["grade", stage, "--crate"])
        .arg(dir)
        .args([
            "--only",
            &only.join(","),
            "--seed",
            "11",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "grade {stage} --crate {} ended {:?}:\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    valid_report(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn every_stage_has_a_starter_that_builds_and_fails_where_the_reference_passes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let stages = stages();
    assert!(!stages.is_empty());
    for profile in stages {
        let stage = profile.stage.as_str();
        let starter = tmp.path().join(format!("{stage}-starter"));
        let solution = tmp.path().join(format!("{stage}-solution"));
        xtask()
            .args(["exercise", stage, "--out"])
            .arg(&starter)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!(
                "cargo xtask grade {stage} --crate"
            )));
        xtask()
            .args(["exercise", stage, "--solution", "--out"])
            .arg(&solution)
            .assert()
            .success();

        // The starter: todo!s with hints, no markers, a README that points
        // at the chapter and says how to grade.
        let main = std::fs::read_to_string(starter.join("src/main.rs")).unwrap();
        assert!(
            !main.contains("ANCHOR"),
            "{stage}: markers left in the starter"
        );
        let todos = main.matches("todo!(\"exercise ").count();
        assert!(todos >= 2, "{stage}: {todos} exercise(s); want 2 or more");
        let readme = std::fs::read_to_string(starter.join("README.md")).unwrap();
        assert!(
            readme.contains(&profile.chapter),
            "{stage}: README names no chapter"
        );
        assert!(readme.contains(&format!("cargo xtask grade {stage} --crate")));
        assert!(starter.join("plumbing/src/lib.rs").is_file());
        let solution_main = std::fs::read_to_string(solution.join("src/main.rs")).unwrap();
        assert!(!solution_main.contains("ANCHOR") && !solution_main.contains("todo!("));

        let only = quick_checks(&profile);
        let reference = grade_crate(stage, &solution, &only);
        let mine = grade_crate(stage, &starter, &only);
        for id in &only {
            let status = status_of(&reference, id);
            assert!(
                status == "pass" || status == "xfail",
                "{stage}: the reference did not pass {id}: {status}"
            );
        }
        let broken: Vec<&&str> = only
            .iter()
            .filter(|id| status_of(&reference, id) == "pass" && status_of(&mine, id) == "fail")
            .collect();
        assert!(
            !broken.is_empty(),
            "{stage}: the starter passes everything the reference passes"
        );
        // It fails in the expected places: a todo! of the starter, named.
        let said = serde_json::to_string(&mine["checks"]).unwrap();
        assert!(
            said.contains("not yet implemented: exercise "),
            "{stage}: no failure shows a starter's todo!: {said}"
        );
        assert!(mine["score"]["points"].as_u64() < reference["score"]["points"].as_u64());
    }
}

#[test]
fn the_documented_example_matches_the_schema() {
    let doc = std::fs::read_to_string(root().join("tests/schema/README.md")).unwrap();
    let start = doc.find("```json\n").expect("an example") + 8;
    let end = start + doc[start..].find("\n```").unwrap();
    valid_report(&doc[start..end]);
}

#[test]
fn exercise_never_writes_over_a_students_work() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("mine.rs"), "// my work").unwrap();
    xtask()
        .args(["exercise", "ch01", "--out"])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not empty"));
    assert!(tmp.path().join("mine.rs").is_file());
    xtask()
        .args(["exercise", "ch01", "--list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("- **write-all**"));
}

#[test]
fn grade_writes_json_junit_and_tap_and_run_writes_the_json_too() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let python = "python3 tests/examples/blocking_echo.py --listen {listen}";
    let only = "ready-line,echo-line,concurrent-reverse";
    // The older form, --stage, still works; json goes to stdout.
    let out = xtask()
        .args(["grade", "--stage", "ch01", "--cmd", python, "--only", only])
        .args(["--seed", "5", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = valid_report(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["format"], "netbook-report");
    assert_eq!(report["version"], 1);
    assert_eq!(report["seed"], 5);
    assert_eq!(status_of(&report, "echo-line"), "pass");
    assert_eq!(status_of(&report, "concurrent-reverse"), "xfail");
    // A declared limitation is worth nothing; the others their points.
    let check = |id: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(check("concurrent-reverse")["max_points"], 0);
    assert!(check("echo-line")["points"].as_u64().unwrap() > 0);
    assert_eq!(report["score"]["points"], report["score"]["max"]);

    xtask()
        .args([
            "grade", "ch01", "--cmd", python, "--only", only, "--format", "junit",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("<?xml"))
        .stdout(predicate::str::contains(
            "<testcase name=\"echo-line\" classname=\"ch01.echo\"",
        ))
        .stdout(predicate::str::contains(
            "<skipped message=\"expected limitation: one client at a time",
        ));
    xtask()
        .args([
            "grade", "ch01", "--cmd", python, "--only", only, "--format", "tap",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("TAP version 14\n"))
        .stdout(predicate::str::contains("\n1..3\n"))
        .stdout(predicate::str::contains("ok 2 - echo-line: "))
        .stdout(predicate::str::contains("not ok 3 - concurrent-reverse: "))
        .stdout(predicate::str::contains("# TODO expected limitation"));

    // `cargo xtask run` writes the same format.
    xtask()
        .args([
            "run",
            "ch01",
            "--only",
            "ready-line,echo-line",
            "--seed",
            "3",
        ])
        .assert()
        .success();
    let written = shared_target().join("netbook/reports/ch01.json");
    let report = valid_report(&std::fs::read_to_string(&written).unwrap());
    assert_eq!(report["seed"], 3);
    assert_eq!(status_of(&report, "echo-line"), "pass");
}

/// A folder of submissions, one of each kind a teacher meets.
fn submissions(dir: &Path) {
    let python = root().join("tests/examples/blocking_echo.py");
    xtask()
        .args(["exercise", "ch01", "--solution", "--out"])
        .arg(dir.join("good"))
        .assert()
        .success();
    xtask()
        .args(["exercise", "ch01", "--out"])
        .arg(dir.join("starter"))
        .assert()
        .success();
    xtask()
        .args(["exercise", "ch01", "--out"])
        .arg(dir.join("broken"))
        .assert()
        .success();
    let main = dir.join("broken/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace("fn main() {", "fn main() { let x: u32 = \"no\";"),
    )
    .unwrap();
    // Another language: a command line, and a script that also floods stderr.
    std::fs::create_dir_all(dir.join("python")).unwrap();
    std::fs::copy(&python, dir.join("python/server.py")).unwrap();
    std::fs::write(
        dir.join("python/cmd.txt"),
        "# any language\npython3 server.py --listen {listen}\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("chatty")).unwrap();
    std::fs::copy(&python, dir.join("chatty/server.py")).unwrap();
    std::fs::write(
        dir.join("chatty/run.sh"),
        "yes netbook-chatty-marker >&2 &\nexec python3 server.py --listen \"$1\"\n",
    )
    .unwrap();
    // Never ready: it must cost only its own time limit.
    std::fs::create_dir_all(dir.join("hang")).unwrap();
    std::fs::write(dir.join("hang/run.sh"), "exec sleep 6001\n").unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
}

/// Processes whose command line contains `marker`.
fn running(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// RFC 4180 rows: quoted cells may hold commas, doubled quotes, line breaks.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}

#[test]
fn batch_grades_every_submission_in_isolation_into_a_csv() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let subs = tmp.path().join("submissions");
    submissions(&subs);
    let csv = tmp.path().join("grades.csv");
    xtask()
        .args(["grade", "ch01", "--batch"])
        .arg(&subs)
        .arg("--csv")
        .arg(&csv)
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args([
            "--only",
            "ready-line,echo-line,half-close,concurrent-reverse",
        ])
        .args(["--timeout", "20", "--build-timeout", "300"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "7 submissions graded against ch01",
        ));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows = csv_rows(&text);
    let header = &rows[0];
    assert_eq!(
        &header[..5],
        &["submission", "status", "score", "max", "percent"]
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .clone()
    };
    let max = row("good")[col("max")].clone();
    assert_ne!(max, "0");
    for full in ["good", "python", "chatty"] {
        let r = row(full);
        assert_eq!(r[col("status")], "graded", "{full}: {text}");
        assert_eq!(r[col("score")], max, "{full}: {text}");
        assert_eq!(r[col("echo-line")], "pass");
        assert_eq!(r[col("concurrent-reverse")], "xfail");
    }
    let starter = row("starter");
    assert_eq!(starter[col("status")], "graded");
    assert_eq!(starter[col("score")], "0");
    assert_eq!(starter[col("echo-line")], "fail");
    assert_eq!(row("broken")[col("status")], "build-failed");
    assert_eq!(row("broken")[col("score")], "0");
    assert_eq!(row("hang")[col("status")], "timeout");
    assert_eq!(row("empty")[col("status")], "invalid");
    // The flood was cut to a bounded tail; nothing it started lives on.
    let feedback = tmp.path().join("work/chatty/progress.txt");
    assert!(std::fs::metadata(&feedback).unwrap().len() <= 300 * 1024);
    let starter_feedback =
        std::fs::read_to_string(tmp.path().join("work/starter/feedback.txt")).unwrap();
    assert!(starter_feedback.contains("not yet implemented: exercise open-listener"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(running("sleep 6001"), Vec::<String>::new());
    assert_eq!(running("netbook-chatty-marker"), Vec::<String>::new());
}

#[test]
fn batch_reports_a_machine_without_cargo_as_infra_error_not_zero() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let subs = tmp.path().join("submissions");
    xtask()
        .args(["exercise", "ch01", "--solution", "--out"])
        .arg(subs.join("good"))
        .assert()
        .success();
    let csv = tmp.path().join("grades.csv");
    xtask()
        .env("NETBOOK_CARGO", tmp.path().join("no-such-cargo"))
        .args(["grade", "ch01", "--batch"])
        .arg(&subs)
        .arg("--csv")
        .arg(&csv)
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args(["--only", "echo-line"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("infra-error"));
    let rows = csv_rows(&std::fs::read_to_string(&csv).unwrap());
    assert_eq!(rows[1][0], "good");
    assert_eq!(rows[1][1], "infra-error");
    assert_eq!(rows[1][2], "", "an infrastructure error has no score");
}

#[test]
fn status_shows_each_stage_of_a_students_own() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let exercises = tmp.path().join("exercises");
    xtask()
        .args(["exercise", "ch01", "--solution", "--out"])
        .arg(exercises.join("ch01-blocking-echo"))
        .assert()
        .success();
    let status = || {
        let mut cmd = xtask();
        cmd.args(["status", "--dir"])
            .arg(&exercises)
            .args(["--only", "ready-line,echo-line"])
            .env("TMPDIR", tmp.path());
        cmd
    };
    status()
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"ch01  \[#{24}\]\s+\d+/\d+\s+points  done").unwrap())
        .stderr(predicate::str::contains("grading ch01"));
    // Unchanged files: the result stands, nothing is graded again.
    let again = status().assert().success();
    again
        .stdout(predicate::str::contains("ch01  [####"))
        .stderr(predicate::str::contains("grading ch01").not());
    if stages().len() > 1 {
        status().assert().stdout(predicate::str::contains(
            "not started: cargo xtask exercise",
        ));
    }
}

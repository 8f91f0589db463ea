//! The `conformance` command line, run as a teacher or student runs it.

use std::path::PathBuf;
use std::process::Command as StdCommand;

use assert_cmd::Command;
use predicates::prelude::*;

fn conformance() -> Command {
    Command::cargo_bin("conformance").expect("the conformance binary is built")
}

/// The mutant without a defect: a correct poll server to grade.
fn good_server() -> String {
    format!(
        "{} --listen {{listen}}",
        env!("CARGO_BIN_EXE_netbook-mutant")
    )
}

#[test]
fn lists_every_check_and_stage() {
    conformance()
        .arg("--list")
        .assert()
        .success()
        .stdout(predicate::str::contains("half-close-burst"))
        .stdout(predicate::str::contains("epoll-registrations"))
        .stdout(predicate::str::contains("ch01"));
}

#[test]
fn grades_a_command_and_writes_json() {
    let json = std::env::temp_dir().join(format!("conformance-cli-{}.json", std::process::id()));
    conformance()
        .args([
            "--stage",
            "ch05",
            "--cmd",
            &good_server(),
            "--only",
            "echo-line,half-close",
            "--seed",
            "42",
        ])
        .arg("--json")
        .arg(&json)
        .assert()
        .success()
        .stdout(predicate::str::contains("seed 42"))
        .stdout(predicate::str::contains("2 passed, 0 failed"));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    assert_eq!(report["seed"], 42);
}

#[test]
fn a_failure_shows_sent_received_reproduce_and_hint() {
    conformance()
        .args([
            "--stage",
            "ch05",
            "--only",
            "half-close-burst",
            "--seed",
            "1",
            "--cmd",
        ])
        .arg(format!("{} --defect close-on-eof", good_server()))
        .assert()
        .code(1)
        .stdout(predicate::str::contains("sent:"))
        .stdout(predicate::str::contains("received:"))
        .stdout(predicate::str::contains("^ first difference at byte 0"))
        .stdout(predicate::str::contains("reproduce:"))
        .stdout(predicate::str::contains("hint: a short read does not mean"));
}

#[test]
fn says_plainly_when_the_descriptor_limit_is_too_low() {
    // Root may raise its own hard limit: drop that capability first, then
    // lower the limit below what clients-2000 needs.
    for tool in ["setpriv", "prlimit"] {
        assert!(
            StdCommand::new(tool).arg("--version").output().is_ok(),
            "{tool} (util-linux) is needed for this test; .ci/run installs it"
        );
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_conformance"));
    let out = StdCommand::new("setpriv")
        .args([
            "--bounding-set=-sys_resource",
            "prlimit",
            "--nofile=600:600",
        ])
        .arg(&bin)
        .args([
            "--stage",
            "ch05",
            "--only",
            "clients-2000",
            "--cmd",
            &good_server(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a skipped check is not a pass:\n{stdout}"
    );
    assert!(stdout.contains("SKIP"), "{stdout}");
    assert!(stdout.contains("needs 2100 descriptors"), "{stdout}");
    assert!(stdout.contains("0 passed, 0 failed, 1 skipped"), "{stdout}");
}

#[test]
fn refuses_bad_input_with_one_line() {
    conformance()
        .args(["--stage", "ch05", "--cmd", "python3 server.py"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must contain {listen}"));
    conformance()
        .args(["--stage", "ch42", "--cmd", &good_server()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no profile for stage \"ch42\""));
    conformance()
        .args([
            "--profile",
            "/no/such/profile.toml",
            "--cmd",
            &good_server(),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read profile"));
}

//! The xtask commands, run as a user runs them.

use assert_cmd::Command;
use predicates::prelude::*;

fn xtask() -> Command {
    let mut cmd = Command::cargo_bin("xtask").expect("the xtask binary is built");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .timeout(std::time::Duration::from_secs(300));
    cmd
}

#[test]
fn run_grades_a_stage_and_ends_with_the_tally() {
    xtask()
        .args([
            "run",
            "ch01",
            "--only",
            "echo-line,concurrent-reverse",
            "--seed",
            "7",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("seed 7"))
        .stdout(predicate::str::contains("XFAIL"))
        .stdout(predicate::str::ends_with("2 passed, 0 failed\n\n"));
}

#[test]
fn run_names_the_known_stages_when_given_an_unknown_one() {
    xtask()
        .args(["run", "ch99"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no stage \"ch99\""))
        .stderr(predicate::str::contains("ch01"));
}

#[test]
fn run_rejects_an_unknown_check_id() {
    xtask()
        .args(["run", "ch01", "--only", "no-such-check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no check \"no-such-check\""));
}

#[test]
fn grade_takes_a_server_in_another_language() {
    xtask()
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "grade",
            "--stage",
            "ch01",
            "--cmd",
            "python3 tests/examples/blocking_echo.py --listen {listen}",
            "--only",
            "ready-line,bad-args,echo-line,half-close,sigterm,concurrent-reverse",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("6 passed, 0 failed"));
}

#[test]
fn grade_fails_and_says_why_when_the_server_is_wrong() {
    // `sleep` never prints a ready line: the check fails, saying so.
    xtask()
        .args([
            "grade",
            "--stage",
            "ch01",
            "--cmd",
            "sh -c 'sleep 20' {listen}",
            "--only",
            "echo-line",
        ])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL"))
        .stdout(predicate::str::contains("0 passed, 1 failed"));
}

#[test]
fn grade_refuses_a_command_without_an_address() {
    xtask()
        .args(["grade", "--stage", "ch01", "--cmd", "python3 server.py"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("{listen}"));
}

//! The suite is tested too: each defect of `netbook-mutant` must be caught by
//! the checks written for it, and by no other (the others must not blame a
//! server wrongly). The mutant without a defect must pass everything.
//!
//! The runs are serialised: the checks measure CPU and latency, which would
//! suffer if several servers were graded at once on a small machine.

use std::sync::Mutex;

use conformance::profile::{Mechanism, Profile, Protocol};
use conformance::report::Outcome;
use conformance::runner::{self, Options};
use conformance::server::ServerCommand;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Ten thousand clients prove nothing about these defects that 2 000 do
/// not; the stages' own runs cover that check.
const NOT_RUN: &[&str] = &["clients-10000"];

fn poll_profile() -> Profile {
    Profile {
        stage: "mutant".into(),
        binary: "netbook-mutant".into(),
        args: Vec::new(),
        title: "poll echo server with one defect".into(),
        protocol: Protocol::Echo,
        chapter: "none".into(),
        checks: None,
        mechanism: Mechanism {
            threads: 1,
            blocks_in: vec!["poll".into()],
            epoll: "none".into(),
        },
        expect: Default::default(),
    }
}

/// Grade the mutant and return the ids of the checks that did not pass.
fn failures(defect: Option<&str>) -> (Vec<&'static str>, String) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = format!(
        "{} --listen {{listen}}",
        env!("CARGO_BIN_EXE_netbook-mutant")
    );
    if let Some(d) = defect {
        cmd.push_str(&format!(" --defect {d}"));
    }
    let profile = poll_profile();
    let only = runner::checks_for(Protocol::Echo)
        .into_iter()
        .map(|c| c.id.to_string())
        .filter(|id| !NOT_RUN.contains(&id.as_str()))
        .collect();
    let options = Options {
        only,
        rerun_base: format!("netbook-mutant --defect {}", defect.unwrap_or("none")),
        ..Options::default()
    };
    let report = runner::run(
        &profile,
        &ServerCommand::new(cmd).unwrap(),
        &options,
        |_, _, _| {},
    )
    .expect("the run starts");
    let failed = report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| r.id)
        .collect();
    (failed, report.render(false))
}

/// `must` fail, `may` fail (named with the reason in the test), nothing else may.
fn assert_caught(defect: &str, must: &[&str], may: &[&str]) {
    let (failed, report) = failures(Some(defect));
    let missed: Vec<&&str> = must.iter().filter(|id| !failed.contains(id)).collect();
    let blamed: Vec<&&str> = failed
        .iter()
        .filter(|id| !must.contains(id) && !may.contains(id))
        .collect();
    assert!(
        missed.is_empty() && blamed.is_empty(),
        "defect {defect}: not caught by {missed:?}; wrongly blamed by {blamed:?}\n{report}"
    );
}

#[test]
fn a_correct_server_passes_every_check() {
    let (failed, report) = failures(None);
    assert!(
        failed.is_empty(),
        "the mutant without a defect failed {failed:?}\n{report}"
    );
}

#[test]
fn drop_partial_is_caught_by_the_big_transfers() {
    assert_caught("drop-partial", &["duplex-8mib", "half-close"], &[]);
}

#[test]
fn close_on_eof_is_caught_by_the_burst() {
    // The 256 KiB half-close loses data only if the last bytes and the FIN
    // are read in the same turn, which is likely but not certain.
    assert_caught("close-on-eof", &["half-close-burst"], &["half-close"]);
}

#[test]
fn dies_on_reset_is_caught_by_the_reset_storm() {
    // fd-exhaustion closes 80 clients whose echo they never read: the
    // kernel resets those connections, which kills this mutant too.
    assert_caught("dies-on-reset", &["reset-storm"], &["fd-exhaustion"]);
}

#[test]
fn one_at_a_time_is_caught_by_every_concurrency_check() {
    assert_caught(
        "one-at-a-time",
        &[
            "concurrent-reverse",
            "clients-500",
            "clients-2000",
            "past-fd-setsize",
            "backpressure",
            "fairness",
            "blocking-call",
        ],
        &[],
    );
}

#[test]
fn spin_is_caught_by_idle_cpu() {
    assert_caught("spin", &["idle-cpu", "blocking-call", "fd-exhaustion"], &[]);
}

#[test]
fn unbounded_is_caught_by_backpressure() {
    assert_caught("unbounded", &["backpressure"], &[]);
}

#[test]
fn threaded_is_caught_by_the_mechanism_checks() {
    assert_caught("threaded", &["threads", "blocking-call"], &[]);
}

#[test]
fn no_reuseaddr_is_caught_by_restart() {
    assert_caught("no-reuseaddr", &["restart"], &[]);
}

#[test]
fn panic_on_bad_args_is_caught_by_bad_args() {
    assert_caught("panic-on-bad-args", &["bad-args"], &[]);
}

#[test]
fn ignore_sigterm_is_caught_by_sigterm() {
    assert_caught("ignore-sigterm", &["sigterm"], &[]);
}

#[test]
fn ignore_sigint_is_caught_by_sigint() {
    assert_caught("ignore-sigint", &["sigint"], &[]);
}

#[test]
fn reuseport_is_caught_by_addr_in_use() {
    assert_caught("reuseport", &["addr-in-use"], &[]);
}

#[test]
fn no_eof_close_is_caught_by_every_check_that_waits_for_eof() {
    assert_caught(
        "no-eof-close",
        &["echo-line", "half-close", "half-close-burst"],
        &[],
    );
}

#[test]
fn stray_epoll_is_caught_by_epoll_registrations() {
    assert_caught("stray-epoll", &["epoll-registrations"], &[]);
}

#[test]
fn emfile_spin_is_caught_by_fd_exhaustion() {
    assert_caught("emfile-spin", &["fd-exhaustion"], &[]);
}

#[test]
fn chatty_stdout_is_caught_by_ready_line() {
    assert_caught("chatty-stdout", &["ready-line"], &[]);
}

#[test]
fn fd_set_overflow_is_caught_past_fd_setsize() {
    assert_caught("fd-set-overflow", &["past-fd-setsize", "clients-2000"], &[]);
}

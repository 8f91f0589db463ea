//! Run a profile's checks against a server command.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::checks::{self, Check, Ctx};
use crate::profile::{Profile, Protocol};
use crate::report::{CheckResult, Failure, Outcome, Report};
use crate::server::{self, ServerCommand};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run only these check ids (all when empty).
    pub only: Vec<String>,
    /// The seed for random inputs (a fresh one when `None`).
    pub seed: Option<u64>,
    /// How a person runs this again, e.g. `cargo xtask run ch01`.
    pub rerun_base: String,
    /// A check that runs longer than this is stopped and fails.
    pub check_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            only: Vec::new(),
            seed: None,
            rerun_base: "conformance".into(),
            check_timeout: Duration::from_secs(120),
        }
    }
}

/// The checks that apply to a profile's protocol.
pub fn checks_for(protocol: Protocol) -> Vec<Check> {
    checks::all()
        .into_iter()
        .filter(|c| c.protocols.contains(&protocol))
        .collect()
}

/// A seed from the clock, for runs that do not give one.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    nanos % 1_000_000_007
}

/// Raise our RLIMIT_NOFILE (which servers we start inherit) as far as
/// allowed, towards `want`. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    // Root may raise the hard limit too; everyone may raise soft to hard.
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return want;
    }
    let to_hard = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &to_hard) } == 0 {
        return lim.rlim_max;
    }
    lim.rlim_cur
}

/// Run every check of `profile` (or those in `options.only`) against
/// `command`, calling `progress` after each one.
pub fn run(
    profile: &Profile,
    command: &ServerCommand,
    options: &Options,
    mut progress: impl FnMut(usize, usize, &CheckResult),
) -> Result<Report, String> {
    let seed = options.seed.unwrap_or_else(fresh_seed);
    let mut selected = checks_for(profile.protocol);
    if let Some(checks) = &profile.checks {
        selected.retain(|c| checks.iter().any(|id| id == c.id));
    }
    if !options.only.is_empty() {
        for id in &options.only {
            if !selected.iter().any(|c| c.id == id) {
                let known: Vec<&str> = selected.iter().map(|c| c.id).collect();
                return Err(format!(
                    "no check {id:?} for a {:?} stage; known: {}",
                    profile.protocol,
                    known.join(", ")
                ));
            }
        }
        selected.retain(|c| options.only.iter().any(|id| id == c.id));
    }
    let need = selected.iter().map(|c| c.fds).max().unwrap_or(64);
    let have = raise_nofile(need + 64);
    let total = selected.len();
    let mut results = Vec::with_capacity(total);
    for (n, check) in selected.into_iter().enumerate() {
        let result = run_one(&check, profile, command, seed, options, have);
        progress(n + 1, total, &result);
        results.push(result);
    }
    Ok(Report {
        stage: profile.stage.clone(),
        command: command.template().to_string(),
        seed,
        results,
    })
}

fn run_one(
    check: &Check,
    profile: &Profile,
    command: &ServerCommand,
    seed: u64,
    options: &Options,
    fds_available: u64,
) -> CheckResult {
    let start = Instant::now();
    let verdict = if check.fds > fds_available {
        Err(Failure::skip(format!(
            "needs {} descriptors in the suite's process, but RLIMIT_NOFILE allows only {fds_available}: \
             raise the hard limit (ulimit -Hn, /etc/security/limits.conf, or run as root) and run again",
            check.fds
        )))
    } else {
        run_with_deadline(check, profile, command, seed, options)
    };
    let duration = start.elapsed();
    let expected = profile.expected_failure(check.id);
    let (outcome, detail, failure) = match (verdict, expected) {
        (Ok(figure), None) => (Outcome::Pass, figure, None),
        (Ok(figure), Some(_)) => (
            Outcome::Xpass,
            format!("declared limitation did not show: {figure}"),
            None,
        ),
        (Err(f), _) if f.skipped => (Outcome::Skip, f.summary.clone(), Some(f)),
        (Err(f), None) => (Outcome::Fail, f.summary.clone(), Some(f)),
        (Err(f), Some(_)) => (Outcome::Xfail, f.summary.clone(), Some(f)),
    };
    CheckResult {
        id: check.id,
        title: check.title,
        group: check.group,
        outcome,
        duration,
        detail,
        failure,
        expected_because: expected
            .map(|e| format!("{} (see {}; fixed by {})", e.why, e.section, e.fixed_by)),
    }
}

/// Run the check on its own thread; if it overruns, kill the servers it
/// started (which unblocks its I/O) and report a failure.
fn run_with_deadline(
    check: &Check,
    profile: &Profile,
    command: &ServerCommand,
    seed: u64,
    options: &Options,
) -> Result<String, Failure> {
    let (tx, rx) = mpsc::channel();
    let (profile, command, id, run) = (profile.clone(), command.clone(), check.id, check.run);
    let rerun_base = options.rerun_base.clone();
    let handle = thread::Builder::new()
        .name(format!("check {id}"))
        .spawn(move || {
            let mut ctx = Ctx::new(&command, &profile, id, seed, &rerun_base);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut ctx)))
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        "the check itself panicked (a bug in the suite)",
                    ))
                })
                .map_err(|f| match server::take_died() {
                    // The server crashed (a panic, say) and the check only saw
                    // the connection go: say so, with what it printed.
                    Some((status, stderr)) if f.server_stderr.is_none() => f
                        .detail(format!("the server died during the check ({status})"))
                        .with_stderr(&stderr),
                    _ => f,
                });
            let _ = tx.send(result);
        })
        .map_err(|e| Failure::new(format!("cannot start a thread: {e}")))?;
    match rx.recv_timeout(options.check_timeout) {
        Ok(result) => {
            let _ = handle.join();
            result
        }
        Err(_) => {
            server::kill_all();
            let _ = rx.recv_timeout(Duration::from_secs(10));
            Err(Failure::new(format!(
                "the check did not finish within {} s; its servers were killed",
                options.check_timeout.as_secs()
            )))
        }
    }
}

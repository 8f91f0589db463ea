//! The stage contract: ready line, arguments, the port, signals.

use std::time::Duration;

use super::Ctx;
use crate::net::Fleet;
use crate::report::Failure;
use crate::server::{Launch, Server, ServerCommand, Started, describe_status};

/// Exactly one stdout line, `listening on HOST:PORT`, naming a port that answers.
pub fn ready_line(ctx: &mut Ctx) -> Result<String, Failure> {
    // Starting at all proves the first line was a well-formed ready line.
    let mut server = ctx.start()?;
    ctx.probe(&mut server, Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(300));
    let extra = server.extra_stdout();
    if !extra.is_empty() {
        return Err(Failure::new(format!(
            "{} more line(s) on stdout after the ready line",
            extra.len()
        ))
        .detail(format!("first extra line: {:?}", extra[0]))
        .reproduce(server.command_line.clone())
        .hint("stdout carries only the ready line; log to stderr (and only with --trace)"));
    }
    Ok(format!("listening on {}", server.addr))
}

/// Malformed arguments: a clear error line, a non-zero exit, no panic.
pub fn bad_args(ctx: &mut Ctx) -> Result<String, Failure> {
    let cases: [(&str, String); 3] = [
        (
            "an address that is not one",
            ctx.command
                .render_raw("not-an-address", "not-an-address", "not-a-port"),
        ),
        (
            "a port out of range",
            ctx.command
                .render_raw("127.0.0.1:99999", "127.0.0.1", "99999"),
        ),
        (
            "an unknown option",
            format!(
                "{} --no-such-option",
                ctx.command.render_raw("127.0.0.1:0", "127.0.0.1", "0")
            ),
        ),
    ];
    for (what, line) in cases {
        let command = ServerCommand::literal(line.clone());
        expect_clean_exit(&command, &line, what)?;
    }
    Ok("3 malformed command lines refused".into())
}

/// Start `command` (already substituted) and require a quick, clean,
/// non-zero exit with a short message on stderr.
fn expect_clean_exit(command: &ServerCommand, line: &str, what: &str) -> Result<(), Failure> {
    // What a crash report looks like, in Rust and in Python.
    const FORBIDDEN: [&str; 3] = ["panicked", "Traceback", "RUST_BACKTRACE"];
    let launch = Launch::default();
    match Server::spawn(command, &launch) {
        Err(f) => Err(f),
        Ok(Started::Ready(mut server)) => {
            let addr = server.addr;
            server.kill();
            Err(Failure::new(format!("given {what}, the server started (on {addr}) instead of refusing"))
                .reproduce(line.to_string())
                .hint("validate every argument before binding; print one error line to stderr and exit non-zero"))
        }
        Ok(Started::Exited { status, stderr, .. }) => {
            let fail = |summary: String| {
                Failure::new(summary)
                    .reproduce(line.to_string())
                    .with_stderr(&stderr)
            };
            if status.success() {
                return Err(fail(format!("given {what}, it exited with status 0"))
                    .hint("exit non-zero on bad input, so scripts notice"));
            }
            if status.code().is_none() {
                return Err(fail(format!(
                    "given {what}, it died: {}",
                    describe_status(status)
                )));
            }
            let text = stderr.trim();
            if text.is_empty() {
                return Err(
                    fail(format!("given {what}, it exited without a word on stderr"))
                        .hint("say what was wrong, on one line"),
                );
            }
            if let Some(word) = FORBIDDEN.iter().find(|w| text.contains(*w)) {
                return Err(fail(format!(
                    "given {what}, it printed a {word:?} trace instead of an error line"
                ))
                .hint(
                    "catch the error and print one line (Rust: no unwrap/expect on user input)",
                ));
            }
            if text.lines().count() > 5 {
                return Err(fail(format!(
                    "given {what}, it printed {} lines on stderr; one clear line is enough",
                    text.lines().count()
                )));
            }
            Ok(())
        }
    }
}

/// A second server on the same port must fail clearly, and the first keeps serving.
pub fn addr_in_use(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut first = ctx.start()?;
    let line = ctx.command.render(first.addr);
    let launch = Launch {
        addr: Some(first.addr),
        ..Launch::default()
    };
    match Server::spawn(ctx.command, &launch)? {
        Started::Ready(_) => {
            return Err(Failure::new(format!(
                "a second server started on {}, which was in use",
                first.addr
            ))
            .reproduce(format!("{line} & {line}"))
            .hint("SO_REUSEPORT lets two sockets share a port: do not set it"));
        }
        Started::Exited { status, stderr, .. } => {
            let fail = |s: String| {
                Failure::new(s)
                    .reproduce(format!("{line} &  {line}"))
                    .with_stderr(&stderr)
            };
            if status.success() || status.code().is_none() {
                return Err(fail(format!(
                    "the second server ended with {}, not a non-zero exit",
                    describe_status(status)
                )));
            }
            let text = stderr.to_lowercase();
            if !text.contains("in use") {
                return Err(fail(
                    "the second server's error does not say the address is in use".into(),
                )
                .hint("report EADDRINUSE in words: \"address already in use\""));
            }
            if stderr.contains("panicked") || stderr.contains("Traceback") {
                return Err(fail(
                    "the second server printed a panic or a traceback instead of one error line"
                        .into(),
                ));
            }
        }
    }
    ctx.probe(&mut first, Duration::from_secs(5))?;
    first.require_alive("after a second server tried its port")?;
    Ok("second server refused; first still serves".into())
}

/// SIGKILL with clients connected, then a new server on the same port at once.
pub fn restart(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut first = ctx.start()?;
    let addr = first.addr;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut fleet = Fleet::connect(addr, 5, Duration::from_secs(2)).map_err(|(_, f)| f)?;
    // Only the first is sure to be served by a one-at-a-time server; the
    // others sit in the backlog, which is just as good for this check.
    ctx.probe_on(&mut fleet.streams[0], 0, deadline)?;
    first.kill();
    // The kernel closed the server's sockets first: its side of each
    // connection now waits in FIN_WAIT/TIME_WAIT on this very port.
    let launch = Launch {
        addr: Some(addr),
        ..Launch::default()
    };
    let mut second = match Server::spawn(ctx.command, &launch)? {
        Started::Ready(server) => server,
        Started::Exited {
            status,
            stderr,
            command_line,
        } => {
            return Err(Failure::new(format!(
                "restarted on {addr} right after SIGKILL, it exited ({})",
                describe_status(status)
            ))
            .reproduce(format!("{command_line} & sleep 0.2; nc {} {} & sleep 0.2; kill -9 %1; {command_line}", addr.ip(), addr.port()))
            .hint("set SO_REUSEADDR before bind(): without it the port stays taken while old connections sit in TIME_WAIT")
            .with_stderr(&stderr));
        }
    };
    drop(fleet);
    ctx.probe(&mut second, Duration::from_secs(5))?;
    Ok(format!("back on {addr} at once"))
}

pub fn sigterm(ctx: &mut Ctx) -> Result<String, Failure> {
    stop_by_signal(ctx, libc::SIGTERM, "SIGTERM")
}

pub fn sigint(ctx: &mut Ctx) -> Result<String, Failure> {
    stop_by_signal(ctx, libc::SIGINT, "SIGINT")
}

/// With one client served and one idle, the signal must end the server with status 0.
fn stop_by_signal(ctx: &mut Ctx, signal: i32, name: &str) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut fleet = Fleet::connect(server.addr, 2, Duration::from_secs(2)).map_err(|(_, f)| f)?;
    ctx.probe_on(&mut fleet.streams[0], 0, deadline)?;
    let start = std::time::Instant::now();
    server.signal(signal)?;
    let limit = Duration::from_secs(3);
    let Some(status) = server.wait_exit(limit) else {
        return Err(Failure::new(format!("still running {} s after {name}", limit.as_secs()))
            .reproduce(format!("{} & sleep 0.5; kill -{} %1; wait %1; echo $?", server.command_line, &name[3..]))
            .hint("a blocking call returns EINTR when a handler without SA_RESTART runs: check a stop flag there"));
    };
    if status.code() != Some(0) {
        return Err(Failure::new(format!(
            "after {name} it ended with {}, not exit status 0",
            describe_status(status)
        ))
        .reproduce(format!(
            "{} & sleep 0.5; kill -{} %1; wait %1; echo $?",
            server.command_line,
            &name[3..]
        ))
        .hint("handle the signal: set a flag, leave the loop, return from main")
        .with_stderr(&server.stderr_tail()));
    }
    drop(fleet); // closed only now, after the exit
    Ok(format!(
        "exit 0 after {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    ))
}

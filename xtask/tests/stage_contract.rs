//! Every stage binary keeps the command-line side of the stage contract:
//! --help, one-line errors with exit 2, and --trace showing the syscalls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use assert_cmd::Command;
use predicates::prelude::*;

/// Every stage binary named by a profile, built in release.
fn stage_binaries() -> Vec<PathBuf> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let profiles = conformance::profile::load_all(&conformance::profile::default_dir()).unwrap();
    let mut names: Vec<String> = profiles.into_iter().map(|p| p.binary).collect();
    names.sort();
    names.dedup();
    let mut build = StdCommand::new(env!("CARGO"));
    build
        .current_dir(&root)
        .args(["build", "--release", "--quiet"]);
    for n in &names {
        build.args(["-p", n]);
    }
    assert!(
        build.status().unwrap().success(),
        "building the stages failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    names
        .iter()
        .map(|n| target.join("release").join(n))
        .collect()
}

#[test]
fn every_stage_explains_itself_and_refuses_bad_arguments() {
    for bin in stage_binaries() {
        Command::new(&bin)
            .arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("--listen"))
            .stdout(predicate::str::contains("--trace"));
        for bad in [&["--bogus"][..], &["--listen", "nowhere"], &["--listen"]] {
            let out = Command::new(&bin)
                .args(bad)
                .timeout(Duration::from_secs(5))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{} {bad:?}: {stderr}",
                bin.display()
            );
            assert_eq!(
                stderr.lines().count(),
                1,
                "{} {bad:?}: one line, got {stderr:?}",
                bin.display()
            );
            assert!(
                !stderr.contains("panicked"),
                "{} {bad:?}: {stderr}",
                bin.display()
            );
        }
    }
}

#[test]
fn every_stage_traces_accept_read_and_write() {
    for bin in stage_binaries() {
        let mut child = StdCommand::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--trace"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        let addr = ready
            .trim()
            .strip_prefix("listening on ")
            .expect("ready line")
            .to_string();
        let request: &[u8] = if bin.to_string_lossy().contains("http") {
            b"GET / HTTP/1.0\r\n\r\n"
        } else {
            b"trace me\n"
        };
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = [0u8; 8];
        stream.read_exact(&mut answer).unwrap();
        drop(stream);
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill() has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let mut trace = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut trace)
            .unwrap();
        assert!(status.success(), "{}: SIGTERM gave {status}", bin.display());
        let lower = trace.to_lowercase();
        for word in ["accept", "read", "write"] {
            assert!(
                lower.contains(word),
                "{}: --trace shows no {word:?} line:\n{trace}",
                bin.display()
            );
        }
    }
}

//! The netbook conformance suite.
//!
//! It grades any server — ours, or a student's in any language — from the
//! outside, over loopback, knowing only the stage contract: a command line
//! with `{listen}` in it and the ready line `listening on HOST:PORT`.
//!
//! - [`checks`]: every check, with a stable id.
//! - [`profile`]: what each stage is expected to pass (tests/profiles/*.toml).
//! - [`runner`]: runs a profile's checks against a command, giving a [`report::Report`].
//! - [`server`], [`net`], [`procfs`]: the server process, clients, and /proc.
//! - [`grading`], [`formats`]: points per check, and reports as JSON, JUnit XML, TAP.

// A Failure carries a whole report (sent, received, reproduce, hint); it is
// built once per failing check, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod checks;
pub mod formats;
pub mod grading;
pub mod net;
pub mod procfs;
pub mod profile;
pub mod report;
pub mod runner;
pub mod server;

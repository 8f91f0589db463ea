//! `cargo xtask book [--serve|--check]`: the book, through its own builder.
//!
//! The builder (book/builder, package `netbook-book`) links a pinned
//! mdBook; it is a workspace member but not a default one, so plain
//! `cargo build`, `cargo test` and `cargo xtask run` never compile mdBook.
//! The first `cargo xtask book` does (about two minutes on two cores).

use clap::Args;

use crate::stages;

#[derive(Args)]
pub struct BookArgs {
    /// Serve the book on http://127.0.0.1:3000 and rebuild it when a source changes.
    #[arg(long, conflicts_with = "check")]
    serve: bool,
    /// Check the book: fresh fragments, includes and anchors, links, a real browser.
    #[arg(long)]
    check: bool,
    /// The port for --serve.
    #[arg(long, requires = "serve")]
    port: Option<u16>,
}

pub fn book(args: BookArgs) -> Result<bool, String> {
    if !stages::binary("netbook-book").exists() {
        eprintln!(
            "book: building the book's builder (mdBook and about 110 crates, in release); \
             the first time takes a few minutes"
        );
    }
    let mut cmd = stages::cargo_run_release("netbook-book");
    if args.serve {
        cmd.arg("serve");
        if let Some(port) = args.port {
            cmd.args(["--port", &port.to_string()]);
        }
    } else if args.check {
        cmd.arg("check");
    } else {
        cmd.arg("build");
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(status.success())
}

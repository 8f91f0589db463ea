//! `cargo xtask`: the workbook's own tooling, in Rust.
//!
//! - `run [STAGE|all]`: build stages in release and grade them against their profiles.
//! - `serve STAGE`: run one stage in the foreground, and say how to talk to it.
//! - `grade --stage STAGE --cmd '...'`: grade any server command (any language).
//! - `test`: everything CI runs: fmt, clippy, unit and integration tests, the
//!   suite against every stage.
//! - `bench [--quick]`: benchmarks, written as tables and plots into the book.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod book;
mod run;
mod stages;
mod test;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "netbook's tooling: run, serve, grade and test the stages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a stage (or all) and run the conformance suite against its profile.
    Run(run::RunArgs),
    /// Run one stage's server in the foreground.
    Serve(run::ServeArgs),
    /// Grade any server command against a stage's profile.
    Grade(run::GradeArgs),
    /// Everything CI runs: fmt, clippy, tests, the suite against every stage.
    Test(test::TestArgs),
    /// Build the book (--serve: for authors; --check: everything CI checks).
    Book(book::BookArgs),
    /// Benchmarks: idle-connection latency, echo throughput, HTTP; tables and plots for the book.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => run::serve(args),
        Command::Grade(args) => run::grade(args),
        Command::Test(args) => test::test(args),
        Command::Book(args) => book::book(args),
        Command::Bench(args) => bench::bench(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::from(2)
        }
    }
}

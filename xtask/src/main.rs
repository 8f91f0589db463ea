//! `cargo xtask`: the workbook's own tooling, in Rust.
//!
//! - `run [STAGE|all]`: build stages in release and grade them against their profiles.
//! - `serve STAGE`: run one stage in the foreground, and say how to talk to it.
//! - `grade STAGE --crate DIR | --cmd '...' | --batch DIR --csv FILE`: grade a
//!   student's crate, any server command (any language), or a folder of submissions.
//! - `exercise STAGE --out DIR`: a starter crate made from the stage's code.
//! - `status`: which of a student's own stages (exercises/) pass.
//! - `test`: everything CI runs: fmt, clippy, unit and integration tests, the
//!   suite against every stage.
//! - `bench [--quick]`: benchmarks, written as tables and plots into the book.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod book;
mod classroom;
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
    /// Grade a student's crate, any server command, or a folder of submissions.
    Grade(Box<classroom::GradeArgs>),
    /// Write a starter crate for a stage: its code with the exercises cut out.
    Exercise(classroom::ExerciseArgs),
    /// A student's progress: which of their own stages pass.
    Status(classroom::StatusArgs),
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
        Command::Grade(args) => classroom::grade(*args),
        Command::Exercise(args) => classroom::exercise(args),
        Command::Status(args) => classroom::status(args),
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

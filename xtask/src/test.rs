//! `cargo xtask test`: everything CI checks, in one command.

use std::process::Command;
use std::time::Instant;

use clap::Args;

use crate::stages;

#[derive(Args)]
pub struct TestArgs {
    /// Skip fmt and clippy (for a quick local loop).
    #[arg(long)]
    no_lint: bool,
}

/// One step: a command line run from the workspace root.
struct Step {
    name: &'static str,
    args: Vec<&'static str>,
}

pub fn test(args: TestArgs) -> Result<bool, String> {
    let mut steps = Vec::new();
    if !args.no_lint {
        steps.push(Step {
            name: "format",
            args: vec!["fmt", "--all", "--", "--check"],
        });
        steps.push(Step {
            name: "clippy",
            args: vec![
                "clippy",
                "--workspace",
                "--all-targets",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ],
        });
    }
    steps.push(Step {
        name: "unit and integration tests",
        args: vec!["test", "--workspace", "--quiet"],
    });
    steps.push(Step {
        name: "the suite against every stage",
        args: vec!["xtask", "run", "all"],
    });
    steps.push(Step {
        name: "the book (includes, links, browser)",
        args: vec!["xtask", "book", "--check"],
    });

    let mut results = Vec::new();
    for step in &steps {
        eprintln!("\n=== {} (cargo {}) ===", step.name, step.args.join(" "));
        let start = Instant::now();
        let status = Command::new(env!("CARGO"))
            .current_dir(stages::root())
            .args(&step.args)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        results.push((step.name, status.success(), start.elapsed()));
    }
    println!("\nxtask test summary:");
    for (name, ok, took) in &results {
        println!(
            "  {:<32} {:<4} {:>6.1} s",
            name,
            if *ok { "ok" } else { "FAIL" },
            took.as_secs_f64()
        );
    }
    let failed = results.iter().filter(|r| !r.1).count();
    println!("steps: {} passed, {failed} failed", results.len() - failed);
    Ok(failed == 0)
}

//! `netbook-book`: builds and checks the netbook book.
//!
//! - `build`: regenerate the fragments that come from the stage profiles
//!   (book/src/generated/), check every `{{#include}}`, then run mdBook
//!   (pinned, as a library) into book/build.
//! - `serve [--port N]`: build, serve book/build on 127.0.0.1, and rebuild
//!   when a source changes (for authors; refresh the browser by hand).
//! - `check`: everything a reader would notice is wrong, checked before a
//!   reader does: stale fragments, includes and anchors that resolve to
//!   nothing, broken links and images, and the pages as a real headless
//!   Chromium renders them (code blocks, images, search), with a screenshot.
//!
//! It is run through `cargo xtask book [--serve|--check]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod browser;
mod config;
mod fragments;
mod html;
mod includes;
mod log;
mod serve;

/// Where everything is.
pub struct Paths {
    /// The workspace root.
    pub root: PathBuf,
    /// book/
    pub book: PathBuf,
    /// book/src/
    pub src: PathBuf,
    /// Where mdBook writes the HTML (book/build).
    pub build: PathBuf,
    /// tests/profiles/
    pub profiles: PathBuf,
    /// Artifacts a person may want to look at: target/netbook/book/.
    pub artifacts: PathBuf,
}

impl Paths {
    fn find() -> Result<Paths, String> {
        let book = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("the builder must sit in book/builder")?
            .to_path_buf();
        let root = book
            .parent()
            .ok_or("book/ must sit in the workspace")?
            .to_path_buf();
        let settings = config::load(&book)?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(Paths {
            src: book.join(&settings.src),
            build: book.join(&settings.build_dir),
            profiles: conformance::profile::default_dir(),
            artifacts: target.join("netbook").join("book"),
            root,
            book,
        })
    }

    /// A path shown to people: relative to the workspace root when it can be.
    pub fn show(&self, path: &Path) -> String {
        // Resolve `a/../` lexically: includes are written relative to pages.
        let mut clean = PathBuf::new();
        for part in path.components() {
            match part {
                std::path::Component::ParentDir if clean.file_name().is_some() => {
                    clean.pop();
                }
                other => clean.push(other),
            }
        }
        clean
            .strip_prefix(&self.root)
            .unwrap_or(&clean)
            .display()
            .to_string()
    }
}

const USAGE: &str = "usage: netbook-book <build | serve [--port N] | check>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Paths::find().and_then(|paths| match args.first().map(String::as_str) {
        Some("build") if args.len() == 1 => build(&paths).map(|()| true),
        Some("check") if args.len() == 1 => check(&paths),
        Some("serve") => serve::parse_port(&args[1..]).and_then(|port| serve::run(&paths, port)),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => Err(format!("unexpected arguments {args:?}\n{USAGE}")),
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("netbook-book: error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Regenerate the fragments, check the includes, render the book.
pub fn build(paths: &Paths) -> Result<(), String> {
    for changed in fragments::write(paths)? {
        eprintln!("book: regenerated {}", paths.show(&changed));
    }
    let problems = includes::check(paths)?;
    if !problems.is_empty() {
        return Err(format!(
            "{} broken include(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ));
    }
    render(paths)?;
    eprintln!(
        "book: built {}",
        paths.show(&paths.build.join("index.html"))
    );
    Ok(())
}

/// Run mdBook. It reports problems only through `tracing` (a missing
/// include logs an error and the build still "succeeds"), so collect what it
/// logs and treat any error or warning as a failure.
fn render(paths: &Paths) -> Result<(), String> {
    let logged = log::capture(|| {
        mdbook_driver::MDBook::load(&paths.book)
            .and_then(|book| book.build())
            .map_err(|e| format!("mdBook: {e:#}"))
    });
    let (result, messages) = logged;
    result?;
    if !messages.is_empty() {
        return Err(format!(
            "mdBook reported {} problem(s):\n  {}",
            messages.len(),
            messages.join("\n  ")
        ));
    }
    Ok(())
}

/// One step of `check`: its name and what it found wrong.
struct Step {
    name: &'static str,
    problems: Vec<String>,
    took: f64,
}

fn timed(
    steps: &mut Vec<Step>,
    name: &'static str,
    f: impl FnOnce() -> Result<Vec<String>, String>,
) -> bool {
    eprintln!("book check: {name} ...");
    let start = Instant::now();
    let mut problems = match f() {
        Ok(problems) => problems,
        Err(e) => vec![e],
    };
    // The same fault often shows twice (a zoomable image is two <img>s).
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    let ok = problems.is_empty();
    steps.push(Step {
        name,
        problems,
        took: start.elapsed().as_secs_f64(),
    });
    ok
}

fn check(paths: &Paths) -> Result<bool, String> {
    let start = Instant::now();
    let mut steps = Vec::new();
    timed(
        &mut steps,
        "book.toml keeps the book offline and strict",
        || config::check(&paths.book),
    );
    timed(&mut steps, "generated fragments are fresh", || {
        fragments::check(paths)
    });
    timed(&mut steps, "every {{#include}} and anchor resolves", || {
        includes::check(paths)
    });
    timed(
        &mut steps,
        "every profile's chapter shows its table",
        || fragments::check_chapters(paths),
    );
    let built = timed(&mut steps, "mdBook renders without a complaint", || {
        render(paths).map(|()| Vec::new())
    });
    if built {
        timed(&mut steps, "links, fragments and images resolve", || {
            html::check(paths)
        });
        timed(&mut steps, "the sections profiles name exist", || {
            fragments::check_sections(paths)
        });
        timed(
            &mut steps,
            "headless Chromium: code, images, search",
            || browser::check(paths),
        );
    }

    println!("\nbook check:");
    for step in &steps {
        let verdict = if step.problems.is_empty() {
            "ok"
        } else {
            "FAIL"
        };
        println!("  {:<46} {verdict:<4} {:>6.1} s", step.name, step.took);
        for problem in &step.problems {
            for (i, line) in problem.lines().enumerate() {
                let lead = if i == 0 { "- " } else { "  " };
                println!("      {lead}{line}");
            }
        }
    }
    if !built {
        println!("  (the HTML and browser checks need a successful build: not run)");
    }
    let failed = steps.iter().filter(|s| !s.problems.is_empty()).count();
    println!(
        "book check: {} passed, {failed} failed, {:.1} s",
        steps.len() - failed,
        start.elapsed().as_secs_f64()
    );
    if failed == 0 {
        println!(
            "screenshot of a chapter page: {}",
            paths.show(&paths.artifacts.join("ch01.png"))
        );
    }
    Ok(failed == 0 && built)
}

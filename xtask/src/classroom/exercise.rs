//! `cargo xtask exercise chNN`: a starter crate made from the stage's own code.
//!
//! The starter is the chapter crate with every exercise region (regions.rs)
//! replaced by a `todo!` with its hint, made standalone so that it builds in
//! any folder: its Cargo.toml is a workspace of its own that carries the
//! workbook's `[workspace.*]` tables, the path crates it uses (`plumbing`)
//! are copied in beside it, and the workbook's Cargo.lock pins the versions
//! the reference was tested with.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use conformance::grading::Points;
use conformance::profile::{self, Profile};

use super::regions::{self, Region};
use crate::stages;

#[derive(Args)]
pub struct ExerciseArgs {
    /// The stage, e.g. ch05.
    stage: String,
    /// Where to write the starter (default: exercises/<chapter crate> in the workbook).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write the reference solution, markers removed, instead: a teacher's key.
    #[arg(long)]
    solution: bool,
    /// Write into a folder that is not empty (only the starter's own files are overwritten).
    #[arg(long)]
    force: bool,
    /// Print the stage's exercises as a Markdown list (for the book) and write nothing.
    #[arg(long)]
    list: bool,
}

/// The file that marks a folder as an exercise of some stage (`status` reads it).
pub const MARKER: &str = ".netbook-exercise.toml";

/// The stage a folder made by `exercise` belongs to, if it is one.
pub fn marked_stage(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table.get("stage")?.as_str().map(str::to_string)
}

/// One source file of the chapter and its regions.
struct Source {
    /// Relative to the chapter crate.
    path: PathBuf,
    text: String,
    regions: Vec<Region>,
}

/// The chapter crate of a stage.
pub fn chapter_dir(profile: &Profile) -> PathBuf {
    stages::root().join("chapters").join(&profile.binary)
}

pub fn exercise(args: ExerciseArgs) -> Result<bool, String> {
    let profile = profile::find(&profile::default_dir(), &args.stage)?;
    let chapter = chapter_dir(&profile);
    if !chapter.join("Cargo.toml").is_file() {
        return Err(format!(
            "stage {} has no chapter crate at {}",
            profile.stage,
            chapter.display()
        ));
    }
    let files = files_under(&chapter)?;
    let mut sources = Vec::new();
    for path in &files {
        if path.extension().is_some_and(|e| e == "rs") {
            let text = read(&chapter.join(path))?;
            let found = regions::find(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            sources.push(Source {
                path: path.clone(),
                text,
                regions: found,
            });
        }
    }
    let count: usize = sources.iter().map(|s| s.regions.len()).sum();
    if count == 0 && !args.solution {
        return Err(format!(
            "{} has no exercise regions yet: mark them in its source with \
             `// ANCHOR: exercise-NAME hint` ... `// ANCHOR_END: exercise-NAME`",
            chapter.display()
        ));
    }
    if args.list {
        print!("{}", markdown_list(&profile, &sources));
        return Ok(true);
    }

    let out = args.out.clone().unwrap_or_else(|| {
        stages::root()
            .join("exercises")
            .join(chapter.file_name().expect("a chapter dir has a name"))
    });
    prepare_out(&out, args.force)?;
    let out = out
        .canonicalize()
        .map_err(|e| format!("{}: {e}", out.display()))?;

    // The chapter's files: sources transformed, the rest as they are.
    for path in &files {
        let from = chapter.join(path);
        let to = out.join(path);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if let Some(source) = sources.iter().find(|s| &s.path == path) {
            let text = if args.solution {
                regions::solution(&source.text)
            } else {
                regions::starter(&source.text)
            }
            .map_err(|e| format!("{}: {e}", path.display()))?;
            write(&to, &text)?;
        } else if path.as_os_str() != "Cargo.toml" {
            std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    let (manifest, copied) = standalone_manifest(&chapter)?;
    write(&out.join("Cargo.toml"), &manifest)?;
    for (from, name) in &copied {
        for path in files_under(from)? {
            let to = out.join(name).join(&path);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::copy(from.join(&path), &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    let lock = stages::root().join("Cargo.lock");
    if lock.is_file() {
        std::fs::copy(&lock, out.join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    }
    write(&out.join(".gitignore"), "/target\n")?;
    let names: Vec<String> = sources
        .iter()
        .flat_map(|s| s.regions.iter().map(|r| format!("{:?}", r.name)))
        .collect();
    write(
        &out.join(MARKER),
        &format!(
            "# Written by `cargo xtask exercise`; `cargo xtask status` reads it.\n\
             stage = {:?}\nkind = {:?}\nexercises = [{}]\n",
            profile.stage,
            if args.solution { "solution" } else { "starter" },
            names.join(", ")
        ),
    )?;
    let points = Points::shipped()?;
    write(
        &out.join("README.md"),
        &readme(&profile, &points, &sources, &out, args.solution),
    )?;

    let what = if args.solution {
        "the reference solution"
    } else {
        "a starter"
    };
    println!(
        "wrote {what} for {} ({}) to {}",
        profile.stage,
        profile.title,
        out.display()
    );
    if !args.solution {
        for s in &sources {
            for r in &s.regions {
                println!(
                    "  exercise {:<16} {}:{}",
                    r.name,
                    s.path.display(),
                    starter_line(&s.text, r)
                );
            }
        }
    }
    println!("next: read {}/README.md, then", out.display());
    println!(
        "  cargo xtask grade {} --crate {}",
        profile.stage,
        super::quote(&out.to_string_lossy())
    );
    Ok(true)
}

/// Refuse to write over someone's work.
fn prepare_out(out: &Path, force: bool) -> Result<(), String> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .next()
            .is_none();
        if !empty && !force {
            return Err(format!(
                "{} is not empty: it may hold a student's work; choose another --out, \
                 or add --force to overwrite the starter's files in it",
                out.display()
            ));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))
}

/// The chapter's Cargo.toml made standalone, and the path crates to copy in
/// beside it (`(source dir, folder name in the starter)`).
fn standalone_manifest(chapter: &Path) -> Result<(String, Vec<(PathBuf, String)>), String> {
    let root_text = read(&stages::root().join("Cargo.toml"))?;
    let root: toml::Table = toml::from_str(&root_text).map_err(|e| format!("Cargo.toml: {e}"))?;
    let chapter_text = read(&chapter.join("Cargo.toml"))?;
    let manifest: toml::Table =
        toml::from_str(&chapter_text).map_err(|e| format!("chapter Cargo.toml: {e}"))?;
    if manifest.contains_key("workspace") {
        return Err("the chapter's Cargo.toml has a [workspace] of its own".into());
    }
    let deps = root
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    // Path dependencies of the workspace, rewritten to a copy beside the crate.
    let mut copied = Vec::new();
    let mut rewrites = Vec::new();
    for (name, spec) in &deps {
        if let Some(path) = spec.get("path").and_then(|p| p.as_str()) {
            let from = stages::root().join(path);
            let folder = Path::new(path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.clone());
            rewrites.push((format!("path = {path:?}"), format!("path = {folder:?}")));
            copied.push((from, folder));
        }
    }
    // The [workspace.*] tables and the release profile, as the workbook has them.
    let mut sections: Vec<String> = Vec::new();
    let mut keep = false;
    for line in root_text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            keep = t.starts_with("[workspace.") || t == "[profile.release]";
            if keep {
                sections.push(String::new());
            }
        }
        if let (true, Some(section)) = (keep && !t.starts_with('#'), sections.last_mut()) {
            let mut line = line.to_string();
            for (from, to) in &rewrites {
                line = line.replace(from, to);
            }
            section.push_str(&line);
            section.push('\n');
        }
    }
    let sections: Vec<&str> = sections.iter().map(|s| s.trim_end()).collect();
    let text = format!(
        "{}\n\n\
         # A workspace of its own, so that this crate builds in any folder. The\n\
         # tables below are the workbook's; `plumbing` is copied in beside it.\n\
         [workspace]\nresolver = \"3\"\n\n{}\n",
        chapter_text.trim_end(),
        sections.join("\n\n")
    );
    // It must parse, and every dependency it inherits must be declared.
    let parsed: toml::Table =
        toml::from_str(&text).map_err(|e| format!("the starter's Cargo.toml: {e}"))?;
    let declared = parsed
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = manifest.get(table).and_then(|d| d.as_table()) {
            for (name, spec) in deps {
                if spec.get("path").is_some() {
                    return Err(format!(
                        "the chapter depends on {name} by path: make it a workspace dependency"
                    ));
                }
                let inherits = spec.get("workspace").and_then(|w| w.as_bool()) == Some(true);
                if inherits && !declared.contains_key(name) {
                    return Err(format!("workspace dependency {name} not found"));
                }
            }
        }
    }
    Ok((text, copied))
}

/// Every file under `dir`, relative to it, sorted; `target/` and dot files left out.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let entries =
            std::fs::read_dir(dir.join(&rel)).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if name_str.starts_with('.') || (rel.as_os_str().is_empty() && name_str == "target") {
                continue;
            }
            let path = rel.join(&name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where the `todo!` of region `r` sits in the starter (1-based).
fn starter_line(text: &str, r: &Region) -> usize {
    let mut removed = 0;
    let mut inside = false;
    for line in text.lines().take(r.start_line - 1) {
        let t = line.trim_start();
        if t.starts_with("// ANCHOR: exercise-") {
            inside = true; // becomes the todo! line
        } else if t.starts_with("// ANCHOR_END: exercise-") {
            inside = false;
            removed += 1;
        } else if inside || regions::is_anchor_line(line) {
            removed += 1;
        }
    }
    r.start_line - removed
}

/// The book page of a stage: its source in the workbook, if there.
fn chapter_page(profile: &Profile) -> String {
    let src = stages::root()
        .join("book")
        .join("src")
        .join(&profile.chapter);
    if src.is_file() {
        format!(
            "`{}` in the workbook (`{}` in the built book)",
            src.display(),
            profile.chapter.replace(".md", ".html")
        )
    } else {
        format!(
            "`{}` in the workbook's book (`{}` in the built book)",
            Path::new("book/src").join(&profile.chapter).display(),
            profile.chapter.replace(".md", ".html")
        )
    }
}

fn readme(
    profile: &Profile,
    points: &Points,
    sources: &[Source],
    out: &Path,
    solution: bool,
) -> String {
    let stage = &profile.stage;
    let bin = &profile.binary;
    let dir = super::quote(&out.to_string_lossy());
    let mut s = String::new();
    let _ = writeln!(s, "# {stage}: {}\n", profile.title);
    if solution {
        let _ = writeln!(
            s,
            "The workbook's reference code for stage {stage} (`{bin}`), as a crate that builds on \
             its own: the teacher's key to the exercise `cargo xtask exercise {stage}` hands out.\n"
        );
    } else {
        let count: usize = sources.iter().map(|x| x.regions.len()).sum();
        let _ = writeln!(
            s,
            "This is the workbook's stage {stage} (`{bin}`) with {count} piece(s) taken out. Each \
             is a `todo!(\"exercise NAME: hint\")`: the server builds and runs, and panics with \
             the hint when it reaches one. Put the code back until the suite passes.\n"
        );
    }
    let _ = writeln!(s, "Read first: the chapter, {}.\n", chapter_page(profile));
    if !solution {
        let _ = writeln!(s, "## The exercises\n");
        let _ = writeln!(s, "| exercise | where | hint |\n|---|---|---|");
        for src in sources {
            for r in &src.regions {
                let _ = writeln!(
                    s,
                    "| {} | {}:{} | {} |",
                    r.name,
                    src.path.display(),
                    starter_line(&src.text, r),
                    r.hint.replace('|', "\\|")
                );
            }
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "## Build and try it\n\n```sh\ncargo build --release\n\
         ./target/release/{bin} --listen 127.0.0.1:0     # prints `listening on HOST:PORT`\n\
         printf 'hello\\n' | nc -N 127.0.0.1 PORT           # in another terminal\n\
         ./target/release/{bin} --listen 127.0.0.1:0 --trace   # every syscall on stderr\n```\n"
    );
    let _ = writeln!(
        s,
        "## Grade it\n\nFrom the workbook (its folder, or any folder inside it):\n\n```sh\n\
         cargo xtask grade {stage} --crate {dir}\n\
         cargo xtask grade {stage} --crate {dir} --only echo-line --seed 1   # one check again\n\
         cargo xtask status                                   # every stage of yours, if you keep them in exercises/\n```\n\n\
         Without the workbook's xtask, with the suite's own command line (`cargo install --path tests` in the workbook):\n\n\
         ```sh\nconformance --stage {stage} --cmd '{}/target/release/{bin} --listen {{listen}}'\n```\n\n\
         Each failure shows what was sent, what came back (the first wrong byte marked), the \
         command that reproduces it and a hint. `--format json|junit|tap` writes a report for \
         tools.\n",
        out.display()
    );
    let _ = writeln!(
        s,
        "## What the grade counts\n\nPoints per check come from the workbook's \
         `tests/profiles/points.toml`. A check this stage is expected to fail (a limitation the \
         chapter explains and a later stage removes) is worth nothing here.\n"
    );
    let _ = writeln!(s, "| check | points | what it checks |\n|---|---|---|");
    let mut total = 0;
    for check in conformance::grading::graded_checks(profile) {
        let worth = points.worth(stage, check.id);
        let cell = match profile.expected_failure(check.id) {
            Some(e) => format!("— (expected to fail: fixed by {})", e.fixed_by),
            None => {
                total += worth;
                worth.to_string()
            }
        };
        let _ = writeln!(
            s,
            "| {} | {cell} | {} |",
            check.id,
            check.title.replace('|', "\\|")
        );
    }
    let _ = writeln!(s, "| **total** | **{total}** | |\n");
    let _ = writeln!(
        s,
        "## What is here\n\n- `src/`: the stage's code{}.\n\
         - `plumbing/`: the workbook's small shared crate (arguments, the ready line, signals, \
         `--trace`): not part of the exercise.\n\
         - `Cargo.toml`: a workspace of its own, so the crate builds in any folder; `Cargo.lock`: \
         the versions the reference was tested with.\n\
         - `{MARKER}`: which stage this is, for `cargo xtask status`.",
        if solution {
            ""
        } else {
            ", with the exercises cut out"
        }
    );
    s
}

/// The exercises as a Markdown list, for the book's exercises section.
fn markdown_list(profile: &Profile, sources: &[Source]) -> String {
    let mut s = format!(
        "Exercises for {} (`cargo xtask exercise {}` writes the starter):\n\n",
        profile.stage, profile.stage
    );
    for src in sources {
        for r in &src.regions {
            let _ = writeln!(s, "- **{}** (`{}`): {}", r.name, src.path.display(), r.hint);
        }
    }
    s
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

//! Fragments generated from the stage profiles (tests/profiles/*.toml).
//!
//! - `generated/<stage>.md`: "what the suite says" for one profile, a table
//!   of every check with its expected outcome, included by the chapter page.
//! - `generated/matrix.md`: stages × checks, included by the introduction.
//! - `generated/exercises-<stage>.md`: the exercise regions marked in the
//!   stage's sources (`// ANCHOR: exercise-NAME hint`), which
//!   `cargo xtask exercise` turns into `todo!()`s; included by the chapter's
//!   Exercises section.
//!
//! They are committed, so the book reads well on GitHub too; `check`
//! regenerates them in memory and compares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conformance::checks::{self, Check};
use conformance::profile::{self, Profile, Protocol};

use crate::Paths;

const DIR: &str = "generated";
const MATRIX: &str = "matrix.md";

/// The pages SUMMARY.md lists, in order (`ch01-blocking-echo.md`, ...).
pub fn summary_pages(paths: &Paths) -> Result<Vec<String>, String> {
    let path = paths.src.join("SUMMARY.md");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut pages = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                let target = rest[..end].trim();
                if !target.is_empty() {
                    pages.push(target.to_string());
                }
                rest = &rest[end..];
            }
        }
    }
    Ok(pages)
}

/// The book page that teaches `stage`: its profile's `chapter`, or else the
/// page SUMMARY.md lists as `<stage>-*.md` (for a stage whose profile has
/// not landed yet).
fn chapter_of(stage: &str, profiles: &[Profile], pages: &[String]) -> Option<String> {
    if let Some(p) = profiles.iter().find(|p| p.stage == stage) {
        return Some(p.chapter.clone());
    }
    pages
        .iter()
        .find(|page| page.starts_with(&format!("{stage}-")))
        .cloned()
}

/// mdBook's id for a heading: lower case, letters, digits, `-` and `_` kept,
/// spaces become `-`, everything else dropped.
pub fn heading_id(text: &str) -> String {
    let mut id = String::new();
    for c in text.trim().chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            id.extend(c.to_lowercase());
        } else if c.is_whitespace() {
            id.push('-');
        }
    }
    id
}

/// The headings of a markdown page as (id, text), honouring `{#custom-id}`.
fn headings(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let (text, id) = match text.rsplit_once("{#") {
            Some((t, rest)) if rest.ends_with('}') => {
                (t.trim().to_string(), rest[..rest.len() - 1].to_string())
            }
            _ => (text.to_string(), heading_id(&plain(text))),
        };
        out.push((id, plain(&text)));
    }
    out
}

/// Heading text as it reads: no backticks, emphasis or link brackets.
fn plain(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '`' | '*' | '[' | ']'))
        .collect()
}

/// Escape a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn load(paths: &Paths) -> Result<(Vec<Profile>, Vec<String>), String> {
    Ok((profile::load_all(&paths.profiles)?, summary_pages(paths)?))
}

/// The text of a section link: the heading's own words when the page has it.
fn section_link(section: &str, paths: &Paths) -> String {
    let (page, fragment) = section.split_once('#').unwrap_or((section, ""));
    let words = std::fs::read_to_string(paths.src.join(page))
        .ok()
        .and_then(|md| {
            headings(&md)
                .into_iter()
                .find(|(id, _)| id == fragment)
                .map(|(_, text)| text)
        })
        .unwrap_or_else(|| fragment.replace('-', " "));
    format!("[{}]({section})", cell(&words))
}

/// Does the profile grade this check? Its protocol's checks, narrowed to the
/// profile's `checks` list when it has one (pitfall variants do).
fn applies(check: &Check, p: &Profile) -> bool {
    check.protocols.contains(&p.protocol)
        && p.checks
            .as_ref()
            .is_none_or(|only| only.iter().any(|id| id == check.id))
}

fn mechanism_sentence(p: &Profile) -> String {
    let threads = match p.mechanism.threads {
        1 => "one thread".to_string(),
        n => format!("{n} threads"),
    };
    let blocks = if p.mechanism.blocks_in.is_empty() {
        "never blocked: it spins".to_string()
    } else {
        let calls: Vec<String> = p
            .mechanism
            .blocks_in
            .iter()
            .map(|c| format!("`{c}`"))
            .collect();
        format!("blocked in {}", calls.join(" or "))
    };
    let epoll = match p.mechanism.epoll.as_str() {
        "none" => "no epoll instance".to_string(),
        "level" => "an epoll instance watching its sockets level-triggered".to_string(),
        "edge" => "an epoll instance watching every socket edge-triggered (`EPOLLET`)".to_string(),
        other => format!("epoll mode `{other}`"),
    };
    format!("While it idles, the suite expects to find {threads}, {blocks}, and {epoll}.")
}

fn stage_fragment(
    p: &Profile,
    all: &[Check],
    profiles: &[Profile],
    pages: &[String],
    paths: &Paths,
) -> String {
    let mut out = format!(
        "<!-- Generated from tests/profiles/{stage}.toml by `cargo xtask book`: edit the profile, not this file. -->\n\n\
         The profile `{stage}` grades the binary `{binary}`{args} ({protocol}). {mechanism}\n\n\
         | Check | What it checks | Expected | Why, where the book explains it, what fixes it |\n\
         |---|---|---|---|\n",
        stage = p.stage,
        binary = p.binary,
        args = if p.args.is_empty() {
            String::new()
        } else {
            format!(" with `{}`", p.args.join(" "))
        },
        protocol = match p.protocol {
            Protocol::Echo => "an echo server",
            Protocol::Http => "an HTTP server",
        },
        mechanism = mechanism_sentence(p),
    );
    if p.checks.is_some() {
        out = out.replacen(
            "\n\n| Check |",
            "\n\nIt grades only the checks below: the ones that show its pitfall every time.\n\n| Check |",
            1,
        );
    }
    let (mut pass, mut xfail) = (0, 0);
    for check in all.iter().filter(|c| applies(c, p)) {
        match p.expected_failure(check.id) {
            None => {
                pass += 1;
                out.push_str(&format!(
                    "| `{}` | {} | pass | |\n",
                    check.id,
                    cell(check.title)
                ));
            }
            Some(exp) => {
                xfail += 1;
                let fixed = match chapter_of(&exp.fixed_by, profiles, pages) {
                    Some(page) => format!("[{}]({page})", exp.fixed_by),
                    None => exp.fixed_by.clone(),
                };
                out.push_str(&format!(
                    "| `{}` | {} | **xfail** | {}. See {}; fixed by {fixed}. |\n",
                    check.id,
                    cell(check.title),
                    cell(&exp.why),
                    section_link(&exp.section, paths),
                ));
            }
        }
    }
    out.push_str(&format!(
        "\n{} checks: {pass} expected to pass, {xfail} expected to fail (xfail). \
         Run them with `cargo xtask run {}`.\n",
        pass + xfail,
        p.stage
    ));
    out
}

/// A stage proper (`ch01`), not a variant (`ch07-pitfall-no-drain`).
fn is_main_stage(p: &Profile) -> bool {
    !p.stage.contains('-')
}

fn matrix(all: &[Check], profiles: &[Profile]) -> String {
    let stages: Vec<&Profile> = profiles.iter().filter(|p| is_main_stage(p)).collect();
    let mut out = String::from(
        "<!-- Generated from tests/profiles/*.toml by `cargo xtask book`: edit the profiles, not this file. -->\n\n\
         | Check | What it checks |",
    );
    for p in &stages {
        out.push_str(&format!(" [{}]({}) |", p.stage, p.chapter));
    }
    out.push_str("\n|---|---|");
    for _ in &stages {
        out.push_str(":---:|");
    }
    out.push('\n');
    for check in all {
        if !stages.iter().any(|p| applies(check, p)) {
            continue;
        }
        out.push_str(&format!("| `{}` | {} |", check.id, cell(check.title)));
        for p in &stages {
            let mark = if !applies(check, p) {
                "·".to_string()
            } else if let Some(exp) = p.expected_failure(check.id) {
                format!("[xfail]({})", exp.section)
            } else {
                "pass".to_string()
            };
            out.push_str(&format!(" {mark} |"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{} stages so far. “pass”: the stage is expected to pass the check; \
         “xfail”: the stage is expected to fail it, and the link goes to the section \
         that explains why; “·”: the stage is not graded on that check (it speaks \
         another protocol).\n",
        stages.len()
    ));
    out
}

/// Every generated file, by path under book/src, with its content.
pub fn generate(paths: &Paths) -> Result<BTreeMap<PathBuf, String>, String> {
    let (profiles, pages) = load(paths)?;
    let all = checks::all();
    let mut files = BTreeMap::new();
    for p in &profiles {
        files.insert(
            Path::new(DIR).join(format!("{}.md", p.stage)),
            stage_fragment(p, &all, &profiles, &pages, paths),
        );
    }
    files.insert(Path::new(DIR).join(MATRIX), matrix(&all, &profiles));
    for p in profiles.iter().filter(|p| is_main_stage(p)) {
        files.insert(
            Path::new(DIR).join(format!("exercises-{}.md", p.stage)),
            exercises_fragment(p, paths)?,
        );
    }
    Ok(files)
}

/// The exercise regions of a stage's sources, as a table.
fn exercises_fragment(p: &Profile, paths: &Paths) -> Result<String, String> {
    let src = paths.root.join("chapters").join(&p.binary).join("src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .map_err(|e| format!("cannot read {}: {e}", src.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in text.lines() {
            let Some((_, rest)) = line.split_once("ANCHOR: exercise-") else {
                continue;
            };
            let (id, hint) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            rows.push(format!("| `{id}` | `src/{name}` | {} |", cell(hint.trim())));
        }
    }
    let mut out = format!(
        "<!-- Generated from the exercise markers in chapters/{}/src by `cargo xtask book`: do not edit by hand. -->\n\n",
        p.binary
    );
    if rows.is_empty() {
        out.push_str("This stage has no exercise regions yet.\n");
        return Ok(out);
    }
    out.push_str(&format!(
        "`cargo xtask exercise {stage} --out DIR` writes a starter crate in which each region below is a \
         `todo!()` carrying its hint; `cargo xtask grade {stage} --crate DIR` grades your solution \
         against this chapter's profile.\n\n| exercise | file | what to write |\n| --- | --- | --- |\n",
        stage = p.stage
    ));
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    Ok(out)
}

/// Markdown files in book/src/generated that nothing generates any more.
fn leftovers(paths: &Paths, files: &BTreeMap<PathBuf, String>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(paths.src.join(DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .map(|e| Path::new(DIR).join(e.file_name()))
        .filter(|rel| rel.extension().is_some_and(|e| e == "md") && !files.contains_key(rel))
        .collect();
    out.sort();
    out
}

/// Write the fragments that changed; remove the ones nothing generates.
/// Returns the paths touched.
pub fn write(paths: &Paths) -> Result<Vec<PathBuf>, String> {
    let files = generate(paths)?;
    std::fs::create_dir_all(paths.src.join(DIR)).map_err(|e| e.to_string())?;
    let mut touched = Vec::new();
    for (rel, content) in &files {
        let path = paths.src.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
            std::fs::write(&path, content)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            touched.push(path);
        }
    }
    for rel in leftovers(paths, &files) {
        let path = paths.src.join(rel);
        std::fs::remove_file(&path)
            .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        touched.push(path);
    }
    Ok(touched)
}

/// The fragments on disk are what the profiles generate now.
pub fn check(paths: &Paths) -> Result<Vec<String>, String> {
    let files = generate(paths)?;
    let fix = "run `cargo xtask book` to regenerate it, and commit the result";
    let mut problems = Vec::new();
    for (rel, content) in &files {
        let path = paths.src.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == *content => {}
            Ok(_) => problems.push(format!(
                "{} is stale (its profile or the suite's checks changed): {fix}",
                paths.show(&path)
            )),
            Err(_) => problems.push(format!("{} is missing: {fix}", paths.show(&path))),
        }
    }
    for rel in leftovers(paths, &files) {
        problems.push(format!(
            "{} is generated from no profile any more: `cargo xtask book` removes it",
            paths.show(&paths.src.join(rel))
        ));
    }
    Ok(problems)
}

/// Each profile's chapter is in SUMMARY.md and includes the profile's
/// table; the introduction includes the matrix.
pub fn check_chapters(paths: &Paths) -> Result<Vec<String>, String> {
    let (profiles, pages) = load(paths)?;
    let mut problems = Vec::new();
    let includes = |page: &str, fragment: &str| -> Result<bool, String> {
        let path = paths.src.join(page);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", paths.show(&path)))?;
        Ok(text.contains(&format!("{{{{#include {DIR}/{fragment}}}}}")))
    };
    for p in &profiles {
        if !pages.contains(&p.chapter) {
            problems.push(format!(
                "tests/profiles/{}.toml names chapter {:?}, which SUMMARY.md does not list",
                p.stage, p.chapter
            ));
            continue;
        }
        match includes(&p.chapter, &format!("{}.md", p.stage)) {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "book/src/{} does not show its profile's table: add `{{{{#include {DIR}/{}.md}}}}` \
                 under its \"What the suite says\" heading",
                p.chapter, p.stage
            )),
            Err(e) => problems.push(e),
        }
        if is_main_stage(p) {
            match includes(&p.chapter, &format!("exercises-{}.md", p.stage)) {
                Ok(true) => {}
                Ok(false) => problems.push(format!(
                    "book/src/{} does not list its exercises: add `{{{{#include {DIR}/exercises-{}.md}}}}` \
                     under its \"Exercises\" heading",
                    p.chapter, p.stage
                )),
                Err(e) => problems.push(e),
            }
        }
    }
    match includes("introduction.md", MATRIX) {
        Ok(true) => {}
        Ok(false) => problems.push(format!(
            "book/src/introduction.md does not include the matrix: add `{{{{#include {DIR}/{MATRIX}}}}}`"
        )),
        Err(e) => problems.push(e),
    }
    Ok(problems)
}

/// Every `section` a profile names is a real heading in the rendered book.
pub fn check_sections(paths: &Paths) -> Result<Vec<String>, String> {
    let profiles = profile::load_all(&paths.profiles)?;
    let mut problems = Vec::new();
    for p in &profiles {
        for (id, exp) in &p.expect {
            let (page, fragment) = exp.section.split_once('#').unwrap_or((&exp.section, ""));
            let html = paths.build.join(Path::new(page).with_extension("html"));
            let Ok(text) = std::fs::read_to_string(&html) else {
                problems.push(format!(
                    "tests/profiles/{}.toml [expect.{id}] section = {:?}: there is no page {page}",
                    p.stage, exp.section
                ));
                continue;
            };
            if fragment.is_empty() {
                problems.push(format!(
                    "tests/profiles/{}.toml [expect.{id}] section = {:?}: name the section (page.md#anchor)",
                    p.stage, exp.section
                ));
            } else if !crate::html::ids(&text).contains(fragment) {
                problems.push(format!(
                    "tests/profiles/{}.toml [expect.{id}] section = {:?}: {page} has no heading with id {fragment:?}",
                    p.stage, exp.section
                ));
            }
        }
    }
    Ok(problems)
}

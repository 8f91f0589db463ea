//! Every `{{#include path:anchor}}` in the book resolves to real, non-empty
//! text. mdBook logs a missing file and carries on, and renders a misspelt
//! anchor as an empty code block without a word: a chapter would silently
//! lose its code. The syntax below is mdBook 0.5's own (links.rs).

use std::path::{Path, PathBuf};

use regex::Regex;

use crate::Paths;

/// A `{{#...}}` directive, as mdBook's preprocessor matches it.
const DIRECTIVE: &str = r"(?x)
    \\\{\{\#.*\}\}          # an escaped directive, left alone
    |
    \{\{\s*\#([a-zA-Z0-9_]+)\s+([^}]+)\}\}";

const ANCHOR_START: &str = r"ANCHOR:\s*(?P<name>[\w_-]+)";
const ANCHOR_END: &str = r"ANCHOR_END:\s*(?P<name>[\w_-]+)";

/// What follows the path after `:`.
enum Selector {
    Whole,
    Lines(Option<usize>, Option<usize>),
    Anchor(String),
}

fn selector(rest: Option<&str>) -> Selector {
    let Some(rest) = rest else {
        return Selector::Whole;
    };
    let mut parts = rest.splitn(3, ':');
    let first = parts.next().unwrap_or("");
    let start = if first.is_empty() {
        None
    } else if let Ok(n) = first.parse::<usize>() {
        Some(n.saturating_sub(1))
    } else {
        return Selector::Anchor(first.to_string());
    };
    match (start, parts.next()) {
        (Some(s), None) => Selector::Lines(Some(s), Some(s + 1)),
        (s, Some(end)) => Selector::Lines(s, end.parse().ok()),
        (None, None) => Selector::Whole,
    }
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            markdown_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// The lines between `ANCHOR: name` and `ANCHOR_END: name`, without the
/// markers of other anchors; `None` when the anchor never starts.
fn anchored(text: &str, name: &str, start: &Regex, end: &Regex) -> Option<(String, bool)> {
    let mut inside = false;
    let mut found = false;
    let mut closed = false;
    let mut kept = Vec::new();
    for line in text.lines() {
        if inside {
            if let Some(cap) = end.captures(line) {
                if &cap["name"] == name {
                    closed = true;
                    break;
                }
            } else if !start.is_match(line) {
                kept.push(line);
            }
        } else if start.captures(line).is_some_and(|cap| &cap["name"] == name) {
            inside = true;
            found = true;
        }
    }
    found.then(|| (kept.join("\n"), closed))
}

/// Every problem with the book's directives, one line each.
pub fn check(paths: &Paths) -> Result<Vec<String>, String> {
    let directive = Regex::new(DIRECTIVE).map_err(|e| e.to_string())?;
    let start = Regex::new(ANCHOR_START).map_err(|e| e.to_string())?;
    let end = Regex::new(ANCHOR_END).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    markdown_files(&paths.src, &mut files)?;
    files.sort();

    let mut problems = Vec::new();
    for md in &files {
        let text = std::fs::read_to_string(md)
            .map_err(|e| format!("cannot read {}: {e}", md.display()))?;
        for cap in directive.captures_iter(&text) {
            let (Some(kind), Some(args)) = (cap.get(1), cap.get(2)) else {
                continue; // escaped
            };
            let whole = cap.get(0).map_or("", |m| m.as_str());
            let line = text[..kind.start()].matches('\n').count() + 1;
            let at = format!("{}:{line}: {whole}", paths.show(md));
            let kind = kind.as_str();
            if kind == "title" {
                continue;
            }
            if !["include", "rustdoc_include", "playground"].contains(&kind) {
                problems.push(format!(
                    "{at}: mdBook knows no directive #{kind}; it would be printed as it is"
                ));
                continue;
            }
            let target = args.as_str().split_whitespace().next().unwrap_or("");
            let (file, rest) = match target.split_once(':') {
                Some((f, r)) if kind != "playground" => (f, Some(r)),
                _ => (target, None),
            };
            let path = md.parent().unwrap_or(&paths.src).join(file);
            let Ok(included) = std::fs::read_to_string(&path) else {
                problems.push(format!(
                    "{at}: no file {} (paths are relative to the page)",
                    paths.show(&path)
                ));
                continue;
            };
            match selector(rest) {
                Selector::Whole => {
                    if included.trim().is_empty() {
                        problems.push(format!("{at}: {} is empty", paths.show(&path)));
                    }
                }
                Selector::Lines(from, to) => {
                    let count = included.lines().count();
                    let from = from.unwrap_or(0);
                    let to = to.unwrap_or(count);
                    if from >= count || to > count || from >= to {
                        problems.push(format!(
                            "{at}: lines {}..{to} are outside {} ({count} lines)",
                            from + 1,
                            paths.show(&path)
                        ));
                    }
                }
                Selector::Anchor(name) => match anchored(&included, &name, &start, &end) {
                    None => {
                        let known: Vec<String> = start
                            .captures_iter(&included)
                            .map(|c| c["name"].to_string())
                            .collect();
                        problems.push(format!(
                            "{at}: {} has no `ANCHOR: {name}` (its anchors: {})",
                            paths.show(&path),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ));
                    }
                    Some((_, false)) => problems.push(format!(
                        "{at}: `ANCHOR: {name}` in {} has no `ANCHOR_END: {name}`",
                        paths.show(&path)
                    )),
                    Some((body, true)) if body.trim().is_empty() => problems.push(format!(
                        "{at}: anchor {name} in {} encloses nothing",
                        paths.show(&path)
                    )),
                    Some(_) => {}
                },
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_mdbook() {
        assert!(matches!(selector(None), Selector::Whole));
        assert!(matches!(selector(Some("listener")), Selector::Anchor(a) if a == "listener"));
        assert!(matches!(
            selector(Some("3")),
            Selector::Lines(Some(2), Some(3))
        ));
        assert!(matches!(
            selector(Some("3:")),
            Selector::Lines(Some(2), None)
        ));
        assert!(matches!(
            selector(Some(":5")),
            Selector::Lines(None, Some(5))
        ));
    }

    #[test]
    fn anchors_are_found_and_closed() {
        let start = Regex::new(ANCHOR_START).unwrap();
        let end = Regex::new(ANCHOR_END).unwrap();
        let text =
            "a\n// ANCHOR: one\nb\n// ANCHOR: two\nc\n// ANCHOR_END: two\n// ANCHOR_END: one\n";
        assert_eq!(
            anchored(text, "one", &start, &end),
            Some(("b\nc".into(), true))
        );
        assert_eq!(
            anchored(text, "two", &start, &end),
            Some(("c".into(), true))
        );
        assert_eq!(anchored(text, "three", &start, &end), None);
        assert_eq!(
            anchored("// ANCHOR: open\nx\n", "open", &start, &end),
            Some(("x".into(), false))
        );
    }
}

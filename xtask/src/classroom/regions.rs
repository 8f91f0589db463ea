//! Exercise regions in a chapter's source.
//!
//! ```text
//! fn write_all(conn: &Socket, mut data: &[u8]) -> io::Result<()> {
//!     // ANCHOR: exercise-write-all send() may take only part of data: keep sending the rest.
//!     ...the reference code...
//!     // ANCHOR_END: exercise-write-all
//! }
//! ```
//!
//! The markers are mdBook anchors: mdBook's `{{#include file:anchor}}` drops
//! every line that matches `ANCHOR:\s*NAME` or `ANCHOR_END:\s*NAME` (any name,
//! whatever follows it), so the book never shows them, and the hint after the
//! name is free text. (A whole-file `{{#include file}}` keeps every line; the
//! book includes by anchor.) The starter replaces each region by a `todo!`
//! carrying the hint, at the region's indentation.
//!
//! A region is a run of whole statements at the end of a block, or statements
//! whose bindings nothing after them uses, so that `todo!(...);` in their place
//! still compiles: the tests build every stage's starter.

/// One exercise region of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The name after `exercise-`, e.g. `write-all`.
    pub name: String,
    /// The hint text after the name.
    pub hint: String,
    /// 1-based line numbers of the two markers.
    pub start_line: usize,
    pub end_line: usize,
}

const START: &str = "// ANCHOR: exercise-";
const END: &str = "// ANCHOR_END: exercise-";

/// Is this line any mdBook anchor marker (the book's, or an exercise's)?
pub fn is_anchor_line(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("// ANCHOR:") || t.starts_with("// ANCHOR_END:")
}

/// The name at the start of `rest` (mdBook's `[\w_-]+`) and what follows it.
fn split_name(rest: &str) -> (&str, &str) {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    (&rest[..end], rest[end..].trim())
}

/// Every exercise region of `source`, checked: each has a hint and an end,
/// names are unique, regions do not nest.
pub fn find(source: &str) -> Result<Vec<Region>, String> {
    let mut regions: Vec<Region> = Vec::new();
    let mut open: Option<Region> = None;
    for (i, line) in source.lines().enumerate() {
        let n = i + 1;
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(START) {
            let (name, hint) = split_name(rest);
            if let Some(o) = &open {
                return Err(format!(
                    "line {n}: exercise {name:?} starts inside exercise {:?} (line {}); regions do not nest",
                    o.name, o.start_line
                ));
            }
            if name.is_empty() {
                return Err(format!("line {n}: `{START}` needs a name"));
            }
            if hint.is_empty() {
                return Err(format!(
                    "line {n}: exercise {name:?} has no hint: write it after the name"
                ));
            }
            if regions.iter().any(|r| r.name == name) {
                return Err(format!("line {n}: a second exercise named {name:?}"));
            }
            open = Some(Region {
                name: name.into(),
                hint: hint.into(),
                start_line: n,
                end_line: 0,
            });
        } else if let Some(rest) = t.strip_prefix(END) {
            let (name, _) = split_name(rest);
            match open.take() {
                Some(mut r) if r.name == name => {
                    r.end_line = n;
                    regions.push(r);
                }
                Some(r) => {
                    return Err(format!(
                        "line {n}: end of exercise {name:?}, but exercise {:?} (line {}) is open",
                        r.name, r.start_line
                    ));
                }
                None => return Err(format!("line {n}: end of exercise {name:?}, never started")),
            }
        }
    }
    if let Some(r) = open {
        return Err(format!(
            "line {}: exercise {:?} never ends (`{END}{}`)",
            r.start_line, r.name, r.name
        ));
    }
    Ok(regions)
}

/// The hint as the literal of a `todo!` (a format string: braces doubled).
fn todo_literal(name: &str, hint: &str) -> String {
    let mut out = String::from("\"exercise ");
    for ch in format!("{name}: {hint}").chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '{' => out.push_str("{{"),
            '}' => out.push_str("}}"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Until the exercises are done, the names their code used go unused; the
/// starter says so rather than print a page of warnings (or invite `cargo
/// fix` to rename them).
const ALLOW: &str = "\
// Exercises leave some names unused until they are written: delete this\n\
// line when yours are done, and let the compiler check what is left.\n\
#![allow(unused, unreachable_code)]\n";

/// The starter's version of `source`: every exercise region replaced by a
/// `todo!` with its hint, and every anchor marker (the book's too) removed.
pub fn starter(source: &str) -> Result<String, String> {
    let regions = find(source)?;
    let mut out = String::with_capacity(source.len());
    let mut inside = false;
    // After the file's leading `//!` lines (inner attributes may follow them).
    let allow_at = if regions.is_empty() {
        usize::MAX
    } else {
        source.lines().take_while(|l| l.starts_with("//!")).count()
    };
    for (i, line) in source.lines().enumerate() {
        let n = i + 1;
        if i == allow_at {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(ALLOW);
            if !line.trim().is_empty() {
                out.push('\n');
            }
        }
        if let Some(r) = regions.iter().find(|r| r.start_line == n) {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!(
                "{indent}todo!({});\n",
                todo_literal(&r.name, &r.hint)
            ));
            inside = true;
        } else if regions.iter().any(|r| r.end_line == n) {
            inside = false;
        } else if !inside && !is_anchor_line(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// The reference with the markers removed (a teacher's solution key).
pub fn solution(source: &str) -> Result<String, String> {
    find(source)?;
    Ok(source
        .lines()
        .filter(|l| !is_anchor_line(l))
        .map(|l| format!("{l}\n"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
fn main() {
    // ANCHOR: loop
    work();
    // ANCHOR_END: loop
}

fn work() -> u32 {
    let a = 1;
    // ANCHOR: exercise-add-one Add one to a, and say \"{done}\" \\o/.
    let b = a + 1;
    b
    // ANCHOR_END: exercise-add-one
}
";

    #[test]
    fn finds_regions_with_their_hints() {
        let regions = find(SOURCE).unwrap();
        assert_eq!(
            regions,
            vec![Region {
                name: "add-one".into(),
                hint: "Add one to a, and say \"{done}\" \\o/.".into(),
                start_line: 9,
                end_line: 12,
            }]
        );
    }

    #[test]
    fn the_starter_has_a_todo_with_the_hint_and_no_markers() {
        let starter = starter(SOURCE).unwrap();
        assert_eq!(
            starter,
            "\
// Exercises leave some names unused until they are written: delete this
// line when yours are done, and let the compiler check what is left.
#![allow(unused, unreachable_code)]

fn main() {
    work();
}

fn work() -> u32 {
    let a = 1;
    todo!(\"exercise add-one: Add one to a, and say \\\"{{done}}\\\" \\\\o/.\");
}
"
        );
        let solution = solution(SOURCE).unwrap();
        assert!(!solution.contains("ANCHOR"));
        assert!(solution.contains("let b = a + 1;"));
    }

    #[test]
    fn refuses_broken_regions() {
        let err = |s: &str| find(s).unwrap_err();
        assert!(err("// ANCHOR: exercise-x\n// ANCHOR_END: exercise-x\n").contains("no hint"));
        assert!(err("// ANCHOR: exercise-x hint\n").contains("never ends"));
        assert!(err("// ANCHOR_END: exercise-x\n").contains("never started"));
        assert!(err("// ANCHOR: exercise-x h\n// ANCHOR: exercise-y h\n").contains("do not nest"));
        assert!(
            err("// ANCHOR: exercise-x h\n// ANCHOR_END: exercise-x\n// ANCHOR: exercise-x h\n")
                .contains("second exercise")
        );
        assert!(err("// ANCHOR: exercise-x h\n// ANCHOR_END: exercise-y\n").contains("is open"));
    }
}

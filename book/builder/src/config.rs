//! The parts of book.toml the builder relies on.
//!
//! mdBook reads book.toml itself; this only reads back where the sources
//! and the output are, and checks the settings that keep the book strict
//! (a SUMMARY typo is an error) and offline (no playground, no CDN).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct BookToml {
    #[serde(default)]
    book: BookSection,
    #[serde(default)]
    build: BuildSection,
    #[serde(default)]
    output: Output,
}

#[derive(Deserialize, Default)]
struct BookSection {
    src: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct BuildSection {
    build_dir: Option<PathBuf>,
    create_missing: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Output {
    html: Option<Html>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Html {
    playground: Option<Playground>,
    mathjax_support: Option<bool>,
    #[serde(default)]
    additional_js: Vec<String>,
    #[serde(default)]
    additional_css: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Playground {
    runnable: Option<bool>,
}

/// Where the book's sources and output are, relative to book/.
pub struct Settings {
    pub src: PathBuf,
    pub build_dir: PathBuf,
}

fn read(book: &Path) -> Result<BookToml, String> {
    let path = book.join("book.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn load(book: &Path) -> Result<Settings, String> {
    let toml = read(book)?;
    Ok(Settings {
        src: toml.book.src.unwrap_or_else(|| "src".into()),
        build_dir: toml.build.build_dir.unwrap_or_else(|| "book".into()),
    })
}

/// The settings without which the book is neither strict nor offline.
pub fn check(book: &Path) -> Result<Vec<String>, String> {
    let toml = read(book)?;
    let mut problems = Vec::new();
    if toml.build.create_missing != Some(false) {
        problems.push(
            "book.toml: set `[build] create-missing = false` (otherwise a SUMMARY.md typo \
             silently creates an empty page)"
                .to_string(),
        );
    }
    let html = toml.output.html.unwrap_or_default();
    if html.playground.and_then(|p| p.runnable) != Some(false) {
        problems.push(
            "book.toml: set `[output.html.playground] runnable = false` (otherwise every Rust \
             block offers to run on play.rust-lang.org)"
                .to_string(),
        );
    }
    if html.mathjax_support == Some(true) {
        problems.push(
            "book.toml: mathjax-support loads MathJax from a CDN; the book is offline".into(),
        );
    }
    for extra in html.additional_js.iter().chain(&html.additional_css) {
        if extra.contains("://") {
            problems.push(format!(
                "book.toml: {extra} is remote; ship the file with the book"
            ));
        }
    }
    Ok(problems)
}

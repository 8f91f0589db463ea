//! Links and images in the rendered HTML: every internal `href`/`src`
//! points at a file that exists and, with `#fragment`, at an element with
//! that id; nothing is loaded from the network (links to other sites are
//! fine, they are the reader's choice; scripts, styles and images are not).

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use crate::Paths;

/// One start tag: its name and its attributes, entities decoded.
struct Tag {
    name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn decode_entities(value: &str) -> String {
    if !value.contains('&') {
        return value.to_string();
    }
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The start tags of a document, skipping comments and the insides of
/// `<script>` and `<style>`. Good enough for HTML that mdBook writes.
fn tags(html: &str) -> Vec<Tag> {
    let bytes = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off + 1;
        if html[i..].starts_with("!--") {
            i = html[i..].find("-->").map_or(html.len(), |e| i + e + 3);
            continue;
        }
        let name_len = html[i..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(html.len() - i);
        if name_len == 0 {
            continue; // `</x>`, `<!DOCTYPE`, or a stray `<`
        }
        let name = html[i..i + name_len].to_ascii_lowercase();
        i += name_len;
        let mut attrs = Vec::new();
        loop {
            while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'>' {
                i += 1;
                break;
            }
            let start = i;
            while i < bytes.len()
                && !matches!(bytes[i], b'=' | b'>' | b'/')
                && !bytes[i].is_ascii_whitespace()
            {
                i += 1;
            }
            let attr = html[start..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < bytes.len() && bytes[i] == b'=' {
                i += 1;
                if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                    let quote = bytes[i] as char;
                    i += 1;
                    let end = html[i..].find(quote).map_or(html.len(), |e| i + e);
                    value = decode_entities(&html[i..end]);
                    i = (end + 1).min(html.len());
                } else {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    value = decode_entities(&html[start..i]);
                }
            }
            if !attr.is_empty() {
                attrs.push((attr, value));
            }
        }
        if name == "script" || name == "style" {
            let close = format!("</{name}");
            i = html[i.min(html.len())..]
                .to_ascii_lowercase()
                .find(&close)
                .map_or(html.len(), |e| i + e);
        }
        out.push(Tag { name, attrs });
        if i >= html.len() {
            break;
        }
    }
    out
}

/// Every id (and old-style `<a name>`) in a document.
pub fn ids(html: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for tag in tags(html) {
        if let Some(id) = tag.attr("id") {
            out.insert(id.to_string());
        }
        if let Some(name) = tag.attr("name").filter(|_| tag.name == "a") {
            out.insert(name.to_string());
        }
    }
    out
}

/// `%XX` escapes decoded (a malformed one is kept as it is); bytes that
/// are not UTF-8 become U+FFFD.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                html_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "html") {
                out.push(path);
            }
        }
    }
}

/// `base/rel` without `..` leaving `root`; `None` if it would.
fn resolve(root: &Path, base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for component in Path::new(rel).components() {
        match component {
            Component::ParentDir => {
                if !out.pop() || !out.starts_with(root) {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    out.starts_with(root).then_some(out)
}

/// Which attributes of which tags make the browser fetch something.
fn loads(tag: &str, attr: &str, rel: Option<&str>) -> bool {
    match (tag, attr) {
        ("a", "href") => false,
        ("link", "href") => !matches!(rel, Some("canonical" | "alternate" | "next" | "prev")),
        (_, "src" | "href" | "poster" | "data") => true,
        _ => false,
    }
}

pub fn check(paths: &Paths) -> Result<Vec<String>, String> {
    let root = &paths.build;
    let mut files = Vec::new();
    html_files(root, &mut files);
    files.sort();
    if files.is_empty() {
        return Ok(vec![format!("no HTML under {}", paths.show(root))]);
    }
    // ids of every page, read once.
    let mut id_cache: BTreeMap<PathBuf, HashSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut links = 0usize;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let page = paths.show(file);
        // The 404 page is served from anywhere on a web server and uses
        // absolute paths (`site-url`); it is not part of the reading path.
        let is_404 = file.file_name().is_some_and(|n| n == "404.html");
        for tag in tags(&text) {
            for (attr, value) in &tag.attrs {
                if !matches!(attr.as_str(), "href" | "src" | "poster" | "data") {
                    continue;
                }
                let url = value.trim();
                if url.is_empty() {
                    continue;
                }
                let lower = url.to_ascii_lowercase();
                let scheme = lower
                    .split_once(':')
                    .filter(|(s, _)| {
                        !s.is_empty()
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                    })
                    .map(|(s, _)| s.to_string());
                if lower.starts_with("//") || matches!(scheme.as_deref(), Some("http" | "https")) {
                    if loads(&tag.name, attr, tag.attr("rel")) {
                        problems.push(format!(
                            "{page}: <{} {attr}=\"{url}\"> loads from the network; the book must work offline",
                            tag.name
                        ));
                    }
                    continue;
                }
                if scheme.is_some() {
                    continue; // mailto:, data:, javascript:
                }
                if is_404 && url.starts_with('/') {
                    continue;
                }
                links += 1;
                let (path_part, fragment) = match url.split_once('#') {
                    Some((p, f)) => (p, Some(percent_decode(f))),
                    None => (url, None),
                };
                let path_part = path_part.split('?').next().unwrap_or("");
                let target = if path_part.is_empty() {
                    Some(file.clone())
                } else {
                    let base = file.parent().unwrap_or(root);
                    resolve(root, base, &percent_decode(path_part))
                        .map(|p| if p.is_dir() { p.join("index.html") } else { p })
                };
                let Some(target) = target.filter(|t| t.is_file()) else {
                    problems.push(format!(
                        "{page}: <{} {attr}=\"{url}\">: no such file in the book",
                        tag.name
                    ));
                    continue;
                };
                let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
                    continue;
                };
                if target.extension().is_none_or(|e| e != "html") {
                    continue;
                }
                if !id_cache.contains_key(&target) {
                    let html = std::fs::read_to_string(&target).unwrap_or_default();
                    id_cache.insert(target.clone(), ids(&html));
                }
                if !id_cache[&target].contains(&fragment) {
                    problems.push(format!(
                        "{page}: <{} {attr}=\"{url}\">: {} has no element with id {fragment:?}",
                        tag.name,
                        paths.show(&target)
                    ));
                }
            }
        }
    }
    if links == 0 {
        problems.push("found no internal links at all: the checker is not reading the HTML".into());
    }
    eprintln!("  {} pages, {links} internal links and images", files.len());
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_and_skips_scripts() {
        let html = r#"<a href="x.html#a&amp;b" id=top><script>if (a<b) { x = "<img src=nope>"; }</script><img src='i.svg'><!-- <a href="c"> -->"#;
        let t = tags(html);
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "script", "img"]);
        assert_eq!(t[0].attr("href"), Some("x.html#a&b"));
        assert_eq!(t[0].attr("id"), Some("top"));
        assert_eq!(t[2].attr("src"), Some("i.svg"));
    }

    #[test]
    fn decodes() {
        assert_eq!(decode_entities("a&#39;b&#x27;c&lt;"), "a'b'c<");
        assert_eq!(percent_decode("one%20two%2"), "one two%2");
    }

    #[test]
    fn resolve_stays_inside() {
        let root = Path::new("/b");
        assert_eq!(
            resolve(root, Path::new("/b/x"), "../y.html"),
            Some(PathBuf::from("/b/y.html"))
        );
        assert_eq!(resolve(root, Path::new("/b"), "../etc/passwd"), None);
    }
}

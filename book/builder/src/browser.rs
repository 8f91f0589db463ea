//! The book as a real browser shows it: headless Chromium (Debian's
//! `chromium` package) loads the pages over HTTP from loopback.
//!
//! - A probe page loads every page of the book in turn in an iframe and
//!   reports, from the live DOM, its code blocks (present, not empty,
//!   highlighted), its images (decoded, with a size), and every resource it
//!   fetched (all from the book's own origin: the book works offline).
//! - `index.html?search=WORD` must list results, from the bundled index.
//! - A screenshot of the ch01 page is kept in target/netbook/book/ch01.png.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Paths;
use crate::serve::StaticServer;

const PROBE: &str = "/__netbook_probe.html";
/// The page the screenshot shows and whose search results are expected.
const SHOWCASE: &str = "ch01-blocking-echo";
/// A word the showcase page uses and the search must find there.
const SEARCH_WORD: &str = "backlog";
const INSTALL: &str = "apt-get install -y --no-install-recommends chromium";

/// Effective uid from /proc (the builder does not link libc for one call).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Chromium binary: $NETBOOK_CHROMIUM, or `chromium` on PATH; in CI
/// (CI=true, as root) it is installed with apt-get if missing.
fn find_chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NETBOOK_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let find = || {
        ["chromium", "chromium-browser"]
            .iter()
            .find_map(|n| on_path(n))
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") && is_root() {
        eprintln!("  chromium is missing; CI=true and root: {INSTALL}");
        for args in [vec!["update", "-qq"], INSTALL.split(' ').skip(1).collect()] {
            let status = Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("cannot run apt-get: {e}"))?;
            if !status.success() {
                return Err(format!("apt-get {} failed", args.join(" ")));
            }
        }
        return find().ok_or_else(|| "chromium installed, yet not on PATH".to_string());
    }
    Err(format!(
        "the browser check needs headless Chromium, which is not installed.\n\
         Install it with:  sudo {INSTALL}\n\
         (or point NETBOOK_CHROMIUM at a Chrome/Chromium binary)"
    ))
}

/// Run Chromium headless on `url` with `extra` flags; its stdout.
fn chromium(bin: &Path, extra: &[String], url: &str, timeout: Duration) -> Result<String, String> {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let profile = std::env::temp_dir().join(format!(
        "netbook-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    // Its own process group, so a hung browser goes down with its children.
    .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    let tail = || {
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    match status {
        None => Err(format!(
            "chromium did not finish within {} s on {url}\n{}",
            timeout.as_secs(),
            tail()
        )),
        Some(s) if !s.success() => Err(format!("chromium exited with {s} on {url}\n{}", tail())),
        Some(_) => Ok(out),
    }
}

/// The probe: loads each page in an iframe, one after another, and writes
/// what it saw into `<pre id="netbook-probe">`.
fn probe_page(pages: &[String]) -> String {
    let list = pages
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>netbook probe</title></head>
<body>
<iframe id="frame" style="width:1280px;height:900px"></iframe>
<pre id="netbook-probe">pending</pre>
<script>
const pages = [{list}];
const out = [];
const frame = document.getElementById('frame');
function next(i) {{
  if (i >= pages.length) {{
    document.getElementById('netbook-probe').textContent = out.join('\n') + '\ndone';
    return;
  }}
  const page = pages[i];
  frame.onload = () => setTimeout(() => {{
    const d = frame.contentDocument, w = frame.contentWindow;
    out.push(page + ' title ' + d.title);
    const codes = [...d.querySelectorAll('pre > code')];
    out.push(page + ' code ' + codes.length);
    codes.forEach((c, k) => {{
      if (c.textContent.trim() === '') out.push(page + ' empty-code ' + k);
      if (!c.classList.contains('hljs')) out.push(page + ' unhighlighted-code ' + k + ' ' + c.className);
    }});
    // mdBook 0.5 shows each image twice: inline, and a zoomed copy.
    const imgs = [...d.querySelectorAll('main img')];
    out.push(page + ' images ' + imgs.filter(img => !img.closest('.img-wrapper')).length);
    imgs.forEach(img => {{
      if (!(img.complete && img.naturalWidth > 0 && img.naturalHeight > 0))
        out.push(page + ' broken-image ' + img.getAttribute('src'));
    }});
    out.push(page + ' tables ' + d.querySelectorAll('main table').length);
    w.performance.getEntriesByType('resource').forEach(r => {{
      if (!r.name.startsWith(location.origin + '/')) out.push(page + ' remote ' + r.name);
    }});
    next(i + 1);
  }}, 300);
  frame.src = page;
}}
next(0);
</script>
</body></html>
"#
    )
}

/// Undo the HTML escaping of a text node.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Fenced code blocks in a markdown page (its own text; included files are
/// inside the fences), and its images.
fn expected(md: &str) -> (usize, usize) {
    let fences = md
        .lines()
        .filter(|l| l.trim_start().starts_with("```"))
        .count();
    let images = md.matches("![").count() + md.matches("<img ").count();
    (fences / 2, images)
}

pub fn check(paths: &Paths) -> Result<Vec<String>, String> {
    let bin = find_chromium()?;
    let pages: Vec<String> = crate::fragments::summary_pages(paths)?
        .into_iter()
        .map(|p| Path::new(&p).with_extension("html").display().to_string())
        .collect();
    let server = StaticServer::start(
        paths.build.clone(),
        0,
        vec![(PROBE.to_string(), probe_page(&pages))],
    )?;
    let base = format!("http://{}", server.addr);
    let mut problems = Vec::new();

    // 1. Every page: code, images, tables, nothing fetched from elsewhere.
    let budget = 2_000 + 1_000 * pages.len() as u64;
    let dom = chromium(
        &bin,
        &[
            "--dump-dom".into(),
            format!("--virtual-time-budget={budget}"),
        ],
        &format!("{base}{PROBE}"),
        Duration::from_secs(120),
    )?;
    let report = dom
        .split_once("<pre id=\"netbook-probe\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(text, _)| unescape(text))
        .ok_or("the probe page wrote no report (did its script run?)")?;
    if !report.trim_end().ends_with("done") {
        problems.push(format!(
            "the probe did not get through every page in its time budget; it saw:\n{report}"
        ));
    }
    let mut code_blocks = 0;
    for page in &pages {
        let seen = |what: &str| -> Option<usize> {
            report
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{page} {what} ")))
                .and_then(|n| n.trim().parse().ok())
        };
        let md = std::fs::read_to_string(paths.src.join(Path::new(page).with_extension("md")))
            .unwrap_or_default();
        let (fences, images) = expected(&md);
        match seen("code") {
            None => {
                problems.push(format!("{page}: the probe never saw it load"));
                continue;
            }
            Some(n) if n != fences => problems.push(format!(
                "{page}: {n} code blocks in the browser, {fences} in the markdown"
            )),
            Some(n) => code_blocks += n,
        }
        if let Some(n) = seen("images").filter(|&n| n != images) {
            problems.push(format!(
                "{page}: {n} images in the browser, {images} in the markdown"
            ));
        }
        for line in report
            .lines()
            .filter(|l| l.starts_with(&format!("{page} ")))
        {
            let what = line[page.len() + 1..].split(' ').next().unwrap_or("");
            if ["empty-code", "unhighlighted-code", "broken-image", "remote"].contains(&what) {
                problems.push(line.to_string());
            }
        }
        if md.contains("{{#include generated/") && seen("tables").unwrap_or(0) == 0 {
            problems.push(format!(
                "{page}: includes a generated table, but the browser shows none"
            ));
        }
    }
    eprintln!(
        "  {} pages loaded in Chromium, {code_blocks} code blocks",
        pages.len()
    );

    // 2. Search, offline, from the bundled index.
    let dom = chromium(
        &bin,
        &["--dump-dom".into(), "--virtual-time-budget=5000".into()],
        &format!("{base}/index.html?search={SEARCH_WORD}"),
        Duration::from_secs(60),
    )?;
    let results = dom
        .split_once("id=\"mdbook-searchresults\"")
        .and_then(|(_, rest)| rest.split_once("</ul>"))
        .map(|(list, _)| list.to_string())
        .unwrap_or_default();
    let hits = results.matches("<li").count();
    if hits == 0 {
        problems.push(format!(
            "search for {SEARCH_WORD:?} (index.html?search={SEARCH_WORD}) shows no results"
        ));
    } else if !results.contains(&format!("{SHOWCASE}.html")) {
        problems.push(format!(
            "search for {SEARCH_WORD:?} shows {hits} results, none on {SHOWCASE}.html"
        ));
    } else {
        eprintln!("  search for {SEARCH_WORD:?}: {hits} results");
    }

    // 3. The screenshot a person can look at.
    std::fs::create_dir_all(&paths.artifacts).map_err(|e| e.to_string())?;
    let shot = paths.artifacts.join("ch01.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &bin,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600".into(),
            "--virtual-time-budget=3000".into(),
        ],
        &format!("{base}/{SHOWCASE}.html"),
        Duration::from_secs(60),
    )?;
    match std::fs::read(&shot) {
        Ok(png) if png.starts_with(b"\x89PNG") && png.len() > 20_000 => {
            eprintln!(
                "  screenshot: {} ({} KiB)",
                paths.show(&shot),
                png.len() / 1024
            );
        }
        Ok(png) => problems.push(format!(
            "the screenshot {} is suspiciously small ({} bytes): is the page blank?",
            paths.show(&shot),
            png.len()
        )),
        Err(e) => problems.push(format!("no screenshot at {}: {e}", paths.show(&shot))),
    }
    drop(server);
    Ok(problems)
}

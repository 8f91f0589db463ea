//! `serve`: the book on http://127.0.0.1:PORT, rebuilt when a source changes.
//!
//! mdbook-driver has no server of its own, so this is a small static file
//! server: a thread per connection, one request per connection. It is an
//! author's tool on loopback, not one of the book's designs. There is no live
//! reload: refresh the browser after the terminal says "built".
//!
//! The browser check uses the same server, so the pages are tested over
//! HTTP, as a reader's browser would fetch them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::Paths;

const DEFAULT_PORT: u16 = 3000;

/// A static file server running on a thread until dropped.
pub struct StaticServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StaticServer {
    /// Serve `root` on 127.0.0.1:`port` (0: any free port). `extra` pages
    /// (path, HTML) are served from memory, for the browser check's probe.
    pub fn start(
        root: PathBuf,
        port: u16,
        extra: Vec<(String, String)>,
    ) -> Result<StaticServer, String> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let extra = Arc::new(extra);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, extra) = (root.clone(), Arc::clone(&extra));
                std::thread::spawn(move || {
                    let _ = answer(conn, &root, &extra);
                });
            }
        });
        Ok(StaticServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Read one request, send one response, close.
fn answer(mut conn: TcpStream, root: &Path, extra: &[(String, String)]) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split(['?', '#']).next().unwrap_or("/");

    let (status, kind, body): (&str, &str, Vec<u8>) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD only\n".to_vec(),
        )
    } else if let Some((_, page)) = extra.iter().find(|(p, _)| p == path) {
        (
            "200 OK",
            "text/html; charset=utf-8",
            page.clone().into_bytes(),
        )
    } else {
        let decoded = crate::html::percent_decode(path);
        let rel = decoded.trim_start_matches('/');
        if rel.split('/').any(|part| part == "..") {
            ("403 Forbidden", "text/plain", b"no\n".to_vec())
        } else {
            let mut file = root.join(rel);
            if file.is_dir() {
                file = file.join("index.html");
            }
            match std::fs::read(&file) {
                Ok(body) => ("200 OK", content_type(&file), body),
                Err(_) => (
                    "404 Not Found",
                    "text/html; charset=utf-8",
                    std::fs::read(root.join("404.html"))
                        .unwrap_or_else(|_| b"not found\n".to_vec()),
                ),
            }
        }
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes())?;
    if method != "HEAD" {
        conn.write_all(&body)?;
    }
    conn.flush()
}

pub fn parse_port(args: &[String]) -> Result<u16, String> {
    match args {
        [] => Ok(DEFAULT_PORT),
        [flag, value] if flag == "--port" => value
            .parse()
            .map_err(|_| format!("--port wants a number, not {value:?}")),
        _ => Err(format!("serve takes only `--port N`, not {args:?}")),
    }
}

/// The newest modification time and the number of files under `paths`,
/// skipping the generated fragments (the build writes them).
fn fingerprint(roots: &[PathBuf], skip: &Path) -> (Option<SystemTime>, usize) {
    fn walk(p: &Path, skip: &Path, newest: &mut Option<SystemTime>, count: &mut usize) {
        if p == skip {
            return;
        }
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(p) {
                for entry in entries.flatten() {
                    walk(&entry.path(), skip, newest, count);
                }
            }
        } else {
            *count += 1;
            if let Ok(m) = meta.modified()
                && newest.is_none_or(|n| m > n)
            {
                *newest = Some(m);
            }
        }
    }
    let (mut newest, mut count) = (None, 0);
    for root in roots {
        walk(root, skip, &mut newest, &mut count);
    }
    (newest, count)
}

pub fn run(paths: &Paths, port: u16) -> Result<bool, String> {
    if let Err(e) = crate::build(paths) {
        eprintln!("book: build failed: {e}");
    }
    let server = StaticServer::start(paths.build.clone(), port, Vec::new())?;
    eprintln!(
        "book: serving {} on http://{}/ (Ctrl-C stops it); rebuilding when a source changes",
        paths.show(&paths.build),
        server.addr
    );
    let watched = vec![
        paths.src.clone(),
        paths.book.join("book.toml"),
        paths.root.join("chapters"),
        paths.profiles.clone(),
    ];
    let skip = paths.src.join("generated");
    let mut seen = fingerprint(&watched, &skip);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = fingerprint(&watched, &skip);
        if now == seen {
            continue;
        }
        seen = now;
        match crate::build(paths) {
            Ok(()) => eprintln!("book: rebuilt; refresh the page"),
            Err(e) => eprintln!("book: build failed: {e}"),
        }
    }
}

//! HTTP: the probe that the shared checks use for HTTP stages, and the
//! HTTP group of checks.
//!
//! What a server needs to take these checks, in any language:
//!
//! - the stage contract (`--listen HOST:PORT`, the ready line, signals);
//! - HTTP/1.1 and 1.0 over it: GET and HEAD, with Content-Length,
//!   Content-Type and Date on every response; `/` answers 200;
//! - `--root DIR`: serve the files under DIR, `GET /NAME` answering DIR/NAME.
//!   The checks that fetch files start the server with `--root` on a
//!   directory of their own (a 1000-byte `small.html`, an `other.txt`, a
//!   4 MiB `big.bin` of seeded random bytes), with a `secret.txt` placed
//!   next to it, outside the root, for the traversal check. The directory
//!   is removed afterwards, unless the check failed unexpectedly: then the
//!   failure names it, so that the reproduction works by hand.
//!
//! The segment check (`http-cork`) sends 200 `GET /small.html` one after
//! another on one keep-alive connection and counts, on the client's side,
//! how many TCP segments with data each response arrives in (the change of
//! `TCP_INFO.tcpi_data_segs_in`); 95 % must arrive in one. Any way of
//! sending a small response in one segment passes: TCP_CORK around a header
//! and a body, MSG_MORE, writev(), or one buffer. ch08 sends header and body
//! in two calls with the cork; its variant profile `ch08-no-cork` runs the
//! same binary with `--no-cork`, where the check is a declared XFAIL: that
//! run prints the segments the cork saves, and would turn XPASS (a failed
//! run) if the count ever stopped telling the two apart.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Check, Ctx};
use crate::net::{self, End, Exchange, Judgement};
use crate::procfs;
use crate::profile::Protocol;
use crate::report::{Failure, escape};
use crate::server::{Launch, Server};

const HTTP: &[Protocol] = &[Protocol::Http];
const MIB: usize = 1024 * 1024;

/// The HTTP group (run by stages whose profile says `protocol = "http"`).
pub fn checks() -> Vec<Check> {
    vec![
        check(
            "http-get",
            "GET: 200, exact Content-Length, Content-Type and Date",
            get,
        ),
        check(
            "http-statuses",
            "HEAD has no body; 404 for a missing file; 405 + Allow (or 501)",
            statuses,
        ),
        check("http-curl", "curl gets 200 and the exact file", curl),
        check(
            "http-keep-alive",
            "keep-alive: requests one after another, then two pipelined",
            keep_alive,
        ),
        check(
            "http-close",
            "Connection: close and HTTP/1.0: one response, then close",
            close,
        ),
        check(
            "http-bad-request",
            "malformed requests get 400; the server lives",
            bad_request,
        ),
        check(
            "http-header-flood",
            "1 MiB of headers without end: 431 and close, bounded RSS",
            header_flood,
        ),
        check(
            "http-traversal",
            "paths that climb out of the root (.., %2e%2e) are refused",
            traversal,
        ),
        check(
            "http-big-file",
            "a 4 MiB file comes back byte-exact",
            big_file,
        ),
        check(
            "http-cork",
            "a small response arrives in one TCP segment",
            cork,
        ),
    ]
}

fn check(
    id: &'static str,
    title: &'static str,
    run: fn(&mut Ctx) -> Result<String, Failure>,
) -> Check {
    Check {
        id,
        title,
        group: "http",
        protocols: HTTP,
        fds: 64,
        run,
    }
}

/// `GET /` on a keep-alive connection; a 200 with a complete body is right.
pub struct GetExchange;

impl Exchange for GetExchange {
    fn request(&self, _i: usize) -> Vec<u8> {
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec()
    }

    fn judge(&self, _i: usize, received: &[u8]) -> Judgement {
        let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if received.len() > 64 * 1024 {
                Judgement::Wrong("no end of headers in 64 KiB".into())
            } else {
                Judgement::Incomplete
            };
        };
        let head = String::from_utf8_lossy(&received[..head_end]);
        let status = head.lines().next().unwrap_or("");
        if !(status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200")) {
            return Judgement::Wrong(format!("status line {status:?}, expected 200"));
        }
        let length = head.lines().skip(1).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        let Some(length) = length else {
            return Judgement::Wrong("no valid Content-Length header".into());
        };
        let body = received.len() - head_end - 4;
        if body < length {
            Judgement::Incomplete
        } else if body == length {
            Judgement::Right
        } else {
            Judgement::Wrong(format!("{} bytes after a body of {length}", body - length))
        }
    }
}

// ---------------------------------------------------------------------------
// The files the checks serve.

/// A directory of files for `--root`, removed when dropped unless a check
/// failed unexpectedly with it (then it stays, for the reproduction by hand).
struct Fixture {
    /// Holds `www/` (the root) and `secret.txt`, which must stay out of reach.
    dir: PathBuf,
    root: PathBuf,
    small: Vec<u8>,
    other: Vec<u8>,
    big: Vec<u8>,
    secret: Vec<u8>,
    keep: bool,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Fixture {
    /// Write the files; with `big`, also the 4 MiB `big.bin`.
    fn new(ctx: &mut Ctx, big: bool) -> Result<Fixture, Failure> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "netbook-{}-{}-{nanos}",
            ctx.check_id,
            std::process::id()
        ));
        let root = dir.join("www");
        let mut small = b"<!doctype html>\n<title>netbook</title>\n<p>".to_vec();
        while small.len() < 995 {
            small.extend_from_slice(b"cork ");
        }
        small.truncate(995);
        small.extend_from_slice(b"</p>\n");
        let fixture = Fixture {
            secret: format!("netbook secret {:016x}\n", ctx.seed).into_bytes(),
            other: b"the other file\n".to_vec(),
            big: if big {
                ctx.random_bytes(4 * MIB)
            } else {
                Vec::new()
            },
            small,
            dir,
            root,
            keep: false,
        };
        let write = |path: &Path, data: &[u8]| {
            std::fs::write(path, data).map_err(|e| {
                Failure::skip(format!(
                    "cannot write the check's file {}: {e}",
                    path.display()
                ))
            })
        };
        std::fs::create_dir_all(fixture.root.join("sub")).map_err(|e| {
            Failure::skip(format!(
                "cannot create {}: {e}",
                fixture.root.join("sub").display()
            ))
        })?;
        write(&fixture.root.join("small.html"), &fixture.small)?;
        write(&fixture.root.join("other.txt"), &fixture.other)?;
        write(&fixture.root.join("sub/inner.txt"), b"inside\n")?;
        write(&fixture.dir.join("secret.txt"), &fixture.secret)?;
        if big {
            write(&fixture.root.join("big.bin"), &fixture.big)?;
        }
        Ok(fixture)
    }

    /// Start the server with `--root` on this fixture.
    fn start(&self, ctx: &Ctx) -> Result<Server, Failure> {
        let launch = Launch {
            extra_args: vec!["--root".into(), self.root.to_string_lossy().into_owned()],
            ..Launch::default()
        };
        ctx.start_with(&launch).map_err(|f| {
            f.hint(
                "the HTTP checks start the server with `--root DIR` appended: serve the files \
                 under DIR",
            )
        })
    }

    /// Keep the files after a failure, and say where they are.
    fn kept(&mut self, f: Failure) -> Failure {
        self.keep = true;
        f.detail(format!(
            "the files served are kept in {} (the root is www/)",
            self.dir.display()
        ))
    }
}

/// Run a check's body with a fixture; keep the fixture if it fails.
fn with_fixture(
    ctx: &mut Ctx,
    big: bool,
    body: impl FnOnce(&mut Ctx, &Fixture) -> Result<String, Failure>,
) -> Result<String, Failure> {
    let mut fixture = Fixture::new(ctx, big)?;
    let expected = ctx.profile.expected_failure(ctx.check_id).is_some();
    body(ctx, &fixture).map_err(|f| {
        // A declared limitation (XFAIL) shows on every run: nothing to keep.
        if f.skipped || expected {
            f
        } else {
            fixture.kept(f)
        }
    })
}

// ---------------------------------------------------------------------------
// A client that reads responses one at a time.

/// One response as read off the wire.
struct Reply {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The head as it came, for messages.
    head: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection that keeps bytes read past one response for the next.
struct Client {
    stream: TcpStream,
    addr: SocketAddr,
    pending: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Result<Client, Failure> {
        Ok(Client {
            stream: net::connect(addr, Duration::from_secs(5))?,
            addr,
            pending: Vec::new(),
        })
    }

    fn send(&mut self, request: &[u8]) -> Result<(), Failure> {
        net::write_all(
            &mut self.stream,
            request,
            Instant::now() + Duration::from_secs(5),
        )
        .map_err(|f| f.sent(request))
    }

    /// One read() into `pending`, of whatever has arrived (up to 64 KiB);
    /// how the read ended if nothing came.
    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return Err(End::Reset);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(End::Eof),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(End::Timeout);
                }
                Err(_) => return Err(End::Reset),
            }
        }
    }

    /// Read exactly one response. `head_only`: it answers a HEAD, so no
    /// body follows its head whatever Content-Length says.
    fn reply(&mut self, head_only: bool, deadline: Instant) -> Result<Reply, Failure> {
        let incomplete = |got: &[u8], end: End, what: &str| {
            Failure::new(format!(
                "no complete response: {} after {} bytes ({what})",
                end.describe(),
                got.len()
            ))
            .detail(format!("received: {}", escape(got, 200)))
        };
        let head_len = loop {
            if let Some(at) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.pending.len() > 64 * 1024 {
                return Err(Failure::new("no end of the response head in 64 KiB")
                    .detail(format!("received: {}", escape(&self.pending, 200))));
            }
            if let Err(end) = self.fill(deadline) {
                return Err(incomplete(&self.pending, end, "the head never ended"));
            }
        };
        let head = self.pending[..head_len].to_vec();
        let text = String::from_utf8_lossy(&head[..head_len - 4]).into_owned();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("").to_string();
        let status = match status_line.split(' ').collect::<Vec<_>>()[..] {
            [version, code, ..] if version.starts_with("HTTP/1.") && code.len() == 3 => {
                code.parse::<u16>().ok()
            }
            _ => None,
        };
        let Some(status) = status else {
            return Err(Failure::new(format!(
                "not an HTTP/1.x status line: {}",
                escape(status_line.as_bytes(), 80)
            ))
            .hint("a response starts with `HTTP/1.1 200 OK\\r\\n`: version, code, reason"));
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let mut reply = Reply {
            status,
            status_line,
            headers,
            body: Vec::new(),
            head,
        };
        let length = match reply.header("content-length") {
            Some(v) => v.parse::<usize>().map_err(|_| {
                Failure::new(format!("Content-Length {v:?} is not a number"))
                    .detail(format!("head: {}", escape(&reply.head, 300)))
            })?,
            None => {
                return Err(Failure::new(format!(
                    "no Content-Length in the response to this request ({})",
                    reply.status_line
                ))
                .detail(format!("head: {}", escape(&reply.head, 300)))
                .hint("every response says how long its body is, or the client cannot tell where the next response starts"));
            }
        };
        let body_len = if head_only { 0 } else { length };
        while self.pending.len() < head_len + body_len {
            if let Err(end) = self.fill(deadline) {
                let got = self.pending.len() - head_len;
                return Err(Failure::new(format!(
                    "the body stopped after {got} of {body_len} bytes (Content-Length): {}",
                    end.describe()
                ))
                .detail(format!("head: {}", escape(&reply.head, 300)))
                .hint("a partial send() or sendfile() must be finished when the socket has room again"));
            }
        }
        reply.body = self.pending[head_len..head_len + body_len].to_vec();
        self.pending.drain(..head_len + body_len);
        Ok(reply)
    }

    /// Bytes that arrive within `wait` although no response is due.
    fn unexpected_bytes(&mut self, wait: Duration) -> Vec<u8> {
        let _ = self.fill(Instant::now() + wait);
        std::mem::take(&mut self.pending)
    }

    /// Wait for the server to close: what came before, and how it ended.
    fn until_closed(&mut self, wait: Duration) -> (Vec<u8>, End) {
        let mut got = std::mem::take(&mut self.pending);
        let (more, end) = net::read_to_end(&mut self.stream, 64 * 1024, Instant::now() + wait);
        got.extend_from_slice(&more);
        (got, end)
    }

    /// `printf '...' | nc HOST PORT` for a request.
    fn nc(&self, request: &[u8]) -> String {
        nc(self.addr, request)
    }
}

/// `printf '...' | nc HOST PORT`: sends `request` by hand.
fn nc(addr: SocketAddr, request: &[u8]) -> String {
    format!(
        "printf '{}' | nc {} {}",
        printf_escape(request),
        addr.ip(),
        addr.port()
    )
}

/// A request as a printf(1) format string.
fn printf_escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            b'%' => out.push_str("%%"),
            b'\'' => out.push_str("'\\''"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// Send one request on a new connection and read its response.
fn exchange(server: &Server, request: &[u8], head_only: bool) -> Result<Reply, Failure> {
    let mut client = Client::connect(server.addr)?;
    client.send(request)?;
    client
        .reply(head_only, Instant::now() + Duration::from_secs(5))
        .map_err(|f| {
            f.sent(request).reproduce(format!(
                "{} &  then  {}",
                server.command_line,
                client.nc(request)
            ))
        })
}

/// A failure for a response that is not what was expected.
fn wrong(server: &Server, request: &[u8], summary: String, reply: &Reply) -> Failure {
    Failure::new(summary)
        .sent(request)
        .detail(format!("received: {}", escape(&reply.head, 300)))
        .reproduce(format!(
            "{} &  then  {}",
            server.command_line,
            nc(server.addr, request)
        ))
}

fn check_headers(server: &Server, request: &[u8], reply: &Reply) -> Result<(), Failure> {
    for name in ["Content-Type", "Date"] {
        if reply.header(name).is_none() {
            return Err(wrong(
                server,
                request,
                format!("the response has no {name} header"),
                reply,
            )
            .hint("every response carries Content-Length, Content-Type and Date (RFC 9110 wants Date from any server with a clock)"));
        }
    }
    let date = reply.header("Date").unwrap_or("");
    if !(date.ends_with(" GMT") && date.len() == 29) {
        return Err(wrong(
            server,
            request,
            format!("Date {date:?} is not an HTTP date"),
            reply,
        )
        .hint("the format is IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT` (always GMT, 29 characters)"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The checks.

/// GET / and a file: 200, the exact body, the three headers, nothing more.
fn get(ctx: &mut Ctx) -> Result<String, Failure> {
    with_fixture(ctx, false, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        let mut client = Client::connect(server.addr)?;
        let mut sizes = Vec::new();
        for (path, expected) in [("/", None), ("/small.html", Some(&fixture.small))] {
            let request = get_request(path);
            client.send(&request)?;
            let reply = client
                .reply(false, Instant::now() + Duration::from_secs(5))
                .map_err(|f| {
                    f.sent(&request).reproduce(format!(
                        "{} &  then  {}",
                        server.command_line,
                        client.nc(&request)
                    ))
                })?;
            if reply.status != 200 {
                return Err(wrong(
                    &server,
                    &request,
                    format!("GET {path}: {}, expected 200", reply.status_line),
                    &reply,
                ));
            }
            check_headers(&server, &request, &reply)?;
            if let Some(expected) = expected {
                if &reply.body != expected {
                    return Err(wrong(
                        &server,
                        &request,
                        format!("GET {path}: the body is not the file's content"),
                        &reply,
                    )
                    .compare(expected, &reply.body));
                }
            }
            // Exact: nothing may follow the body that Content-Length announced.
            let extra = client.unexpected_bytes(Duration::from_millis(200));
            if !extra.is_empty() {
                return Err(wrong(
                    &server,
                    &request,
                    format!(
                        "GET {path}: {} more bytes arrived after the {}-byte body that Content-Length announced",
                        extra.len(),
                        reply.body.len()
                    ),
                    &reply,
                )
                .detail(format!("the extra bytes: {}", escape(&extra, 80)))
                .hint("Content-Length must count the body exactly: its bytes, not its characters, and no trailing newline"));
            }
            sizes.push(format!("GET {path} 200 ({} bytes)", reply.body.len()));
        }
        server.require_alive("after two GETs")?;
        Ok(sizes.join(", "))
    })
}

/// HEAD, 404 and 405.
fn statuses(ctx: &mut Ctx) -> Result<String, Failure> {
    with_fixture(ctx, false, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        // HEAD: the head a GET would get, no body.
        let request = b"HEAD /small.html HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        let mut client = Client::connect(server.addr)?;
        client.send(&request)?;
        let reply = client
            .reply(true, Instant::now() + Duration::from_secs(5))
            .map_err(|f| f.sent(&request))?;
        let length = reply.header("content-length").unwrap_or("");
        if reply.status != 200 || length != fixture.small.len().to_string() {
            return Err(wrong(
                &server,
                &request,
                format!(
                    "HEAD /small.html: {} with Content-Length {length:?}; expected 200 and {}, the length a GET gets",
                    reply.status_line,
                    fixture.small.len()
                ),
                &reply,
            ));
        }
        let extra = client.unexpected_bytes(Duration::from_millis(200));
        if !extra.is_empty() {
            return Err(wrong(
                &server,
                &request,
                format!(
                    "HEAD /small.html: {} bytes of body followed the head",
                    extra.len()
                ),
                &reply,
            )
            .hint("HEAD gets the same head as GET, Content-Length included, and no body"));
        }
        // 404, on a connection that stays usable.
        let request = get_request("/no-such-file.txt");
        let reply = exchange(&server, &request, false)?;
        if reply.status != 404 {
            return Err(wrong(
                &server,
                &request,
                format!("a missing file: {}, expected 404", reply.status_line),
                &reply,
            ));
        }
        // A method the server does not serve: 405 with the methods that are
        // allowed, or 501 from a server that does not know the method at
        // all (RFC 9110, 15.5.6 and 15.6.2 both fit a static file server).
        let request = b"DELETE /small.html HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        let reply = exchange(&server, &request, false)?;
        let allow = reply.header("allow").unwrap_or("").to_ascii_uppercase();
        let allowed = allow.contains("GET") && allow.contains("HEAD");
        if !(reply.status == 405 && allowed || reply.status == 501) {
            return Err(wrong(
                &server,
                &request,
                format!(
                    "DELETE: {} with Allow {:?}; expected 405 with an Allow header naming GET and HEAD (or 501)",
                    reply.status_line,
                    reply.header("allow")
                ),
                &reply,
            )
            .hint("RFC 9110: a 405 must carry Allow, the methods the resource supports"));
        }
        server.require_alive("after HEAD, 404 and DELETE")?;
        Ok(format!(
            "HEAD 200 without body, 404, DELETE {}",
            if reply.status == 405 {
                "405 with Allow"
            } else {
                "501"
            }
        ))
    })
}

/// curl, a client people use, gets 200 and the file, over 1.1 and 1.0.
fn curl(ctx: &mut Ctx) -> Result<String, Failure> {
    let available = Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        return Err(Failure::skip(
            "curl is not installed: apt-get install -y curl",
        ));
    }
    with_fixture(ctx, false, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        let out = fixture.dir.join("curl-out");
        let mut figures = Vec::new();
        for (version, path) in [
            ("--http1.1", "/"),
            ("--http1.1", "/small.html"),
            ("--http1.0", "/small.html"),
        ] {
            let url = format!("http://{}{path}", server.addr);
            let _ = std::fs::remove_file(&out);
            let args = [
                "-sS",
                "--noproxy",
                "*",
                version,
                "--max-time",
                "10",
                "-o",
                &out.to_string_lossy(),
                "-w",
                "%{http_code}",
                &url,
            ];
            let by_hand = format!("{} &  then  curl -v {version} {url}", server.command_line);
            let run = Command::new("curl").args(args).output()?;
            let code = String::from_utf8_lossy(&run.stdout).trim().to_string();
            let body = std::fs::read(&out).unwrap_or_default();
            if !run.status.success() || code != "200" {
                return Err(Failure::new(format!(
                    "curl {version} {url}: HTTP status {code}, curl exit {}",
                    run.status.code().unwrap_or(-1)
                ))
                .detail(format!(
                    "curl said: {}",
                    String::from_utf8_lossy(&run.stderr).trim()
                ))
                .reproduce(by_hand)
                .hint("curl -v shows what it sent and received; exit 28 is a timeout (a body shorter than Content-Length?), 52 an empty reply, 8 a malformed one"));
            }
            if path == "/small.html" && body != fixture.small {
                return Err(Failure::new(format!(
                    "curl {version} {url}: the body is not the file's content"
                ))
                .compare(&fixture.small, &body)
                .reproduce(by_hand));
            }
            figures.push(format!("{} {path}", &version[2..]));
        }
        server.require_alive("after curl")?;
        Ok(format!("200 for {}", figures.join(", ")))
    })
}

/// Several requests on one connection, one after another and pipelined.
fn keep_alive(ctx: &mut Ctx) -> Result<String, Failure> {
    with_fixture(ctx, false, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        let mut client = Client::connect(server.addr)?;
        let deadline = || Instant::now() + Duration::from_secs(5);
        let (line, addr) = (server.command_line.clone(), server.addr);
        let by_hand = |request: &[u8]| format!("{line} &  then  {}", nc(addr, request));
        // One after another.
        for (n, path) in ["/small.html", "/other.txt", "/small.html"]
            .iter()
            .enumerate()
        {
            let request = get_request(path);
            if let Err(f) = client.send(&request) {
                return Err(Failure::new(format!(
                    "request {} of 3 on one connection could not be sent: {}",
                    n + 1,
                    f.summary
                ))
                .hint("HTTP/1.1 keeps the connection open after a response unless `Connection: close` was asked"));
            }
            let reply = client.reply(false, deadline()).map_err(|f| {
                Failure::new(format!(
                    "request {} of 3 on one keep-alive connection: {}",
                    n + 1,
                    f.summary
                ))
                .sent(&request)
                .reproduce(by_hand(&[get_request("/small.html"), get_request("/other.txt")].concat()))
                .hint("HTTP/1.1 connections stay open by default: after a response, go back to reading the next request")
            })?;
            if reply.status != 200 {
                return Err(wrong(
                    &server,
                    &request,
                    format!("request {} of 3: {}", n + 1, reply.status_line),
                    &reply,
                ));
            }
        }
        // Two requests in one write; the answers must come in that order.
        let pipelined = [get_request("/other.txt"), get_request("/small.html")].concat();
        client.send(&pipelined)?;
        for (n, expected) in [&fixture.other, &fixture.small].iter().enumerate() {
            let reply = client.reply(false, deadline()).map_err(|f| {
                Failure::new(format!(
                    "two pipelined requests (GET /other.txt, GET /small.html) in one write: response {} of 2: {}",
                    n + 1,
                    f.summary
                ))
                .sent(&pipelined)
                .reproduce(by_hand(&pipelined))
                .hint("one read may bring more than one request: answer the first, keep the rest of the bytes, and parse them next")
            })?;
            if reply.status != 200 || &&reply.body != expected {
                return Err(wrong(
                    &server,
                    &pipelined,
                    format!(
                        "two pipelined requests: response {} of 2 is {} with a {}-byte body; expected 200 with {} bytes",
                        n + 1,
                        reply.status_line,
                        reply.body.len(),
                        expected.len()
                    ),
                    &reply,
                )
                .hint("answers go out in the order the requests came, one whole response after the other"));
            }
        }
        server.require_alive("after keep-alive and pipelined requests")?;
        Ok("3 requests one after another, then 2 pipelined, on one connection".into())
    })
}

/// `Connection: close`, and HTTP/1.0 without keep-alive: close after one answer.
fn close(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let cases: [(&str, &[u8]); 2] = [
        (
            "Connection: close",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        ("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n"),
    ];
    for (what, request) in cases {
        let mut client = Client::connect(server.addr)?;
        client.send(request)?;
        let reply = client
            .reply(false, Instant::now() + Duration::from_secs(5))
            .map_err(|f| f.sent(request))?;
        if reply.status != 200 {
            return Err(wrong(
                &server,
                request,
                format!("{what}: {}, expected 200", reply.status_line),
                &reply,
            ));
        }
        let (extra, end) = client.until_closed(Duration::from_secs(3));
        if end != End::Eof || !extra.is_empty() {
            return Err(wrong(
                &server,
                request,
                format!(
                    "{what}: after the response, expected the server to close; got {} more bytes and: {}",
                    extra.len(),
                    end.describe()
                ),
                &reply,
            )
            .hint(if what == "HTTP/1.0" {
                "HTTP/1.0 closes after each response unless the client sent `Connection: keep-alive`"
            } else {
                "`Connection: close` means this is the last response: send it, then close"
            }));
        }
    }
    server.require_alive("after closing connections")?;
    Ok("closed after the response, both times".into())
}

/// Malformed requests: 400, and the server goes on serving.
fn bad_request(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let cases: [(&str, &[u8]); 4] = [
        ("a request line of one word", b"HELLO\r\n\r\n"),
        (
            "a request line of four words",
            b"GET / HTTP/1.1 extra\r\nHost: localhost\r\n\r\n",
        ),
        (
            "a header line without a colon",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nthis is not a header\r\n\r\n",
        ),
        (
            "binary bytes (a TLS ClientHello)",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let reply = exchange(&server, request, false).map_err(|f| Failure {
            summary: format!("{what}: {}", f.summary),
            hint: Some("a request that cannot be parsed gets `400 Bad Request` (a status line, headers, then close), never silence or a crash".into()),
            ..f
        })?;
        server.require_alive(&format!("after {what}"))?;
        if reply.status != 400 {
            return Err(wrong(
                &server,
                request,
                format!("{what}: {}, expected 400", reply.status_line),
                &reply,
            ));
        }
    }
    let rtt = ctx
        .probe(&mut server, Duration::from_secs(5))
        .map_err(|f| {
            Failure::new(format!(
                "after 4 malformed requests, GET / was not served: {}",
                f.summary
            ))
        })?;
    Ok(format!(
        "4 malformed requests got 400; GET / served after, in {:.1} ms",
        rtt.as_secs_f64() * 1000.0
    ))
}

/// A request head that never ends, sent up to 1 MiB.
struct Flood {
    what: &'static str,
    /// Sent once, first.
    prefix: &'static [u8],
    /// Repeated after the prefix, never with the empty line that would end the head.
    filler: &'static [u8],
    /// The statuses that refuse it rightly; the first is the one to use.
    accepted: &'static [u16],
    /// The shell that produces the same bytes, for the reproduction.
    shell: &'static str,
}

/// What a flood got back.
struct Flooded {
    /// The first line of the answer, if one came.
    status_line: Option<String>,
    /// How much was sent before the answer came or sending failed.
    sent: usize,
    /// The server's highest RSS seen meanwhile.
    rss_peak: u64,
    /// How the connection ended.
    end: End,
}

const FLOODS: [Flood; 2] = [
    Flood {
        what: "headers that never end",
        prefix: b"GET / HTTP/1.1\r\nHost: localhost\r\n",
        filler: b"X-Flood: 0123456789abcdef0123456789abcdef0123456789abcdef01234\r\n",
        accepted: &[431, 400, 413],
        shell: "(printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n'; yes 'X-Flood: 0123456789' | head -c 1048576)",
    },
    Flood {
        what: "a request line that never ends",
        prefix: b"GET /",
        filler: b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        accepted: &[414, 400],
        shell: "(printf 'GET /'; head -c 1048576 /dev/zero | tr '\\0' a)",
    },
];

/// Send up to 1 MiB of a head that never ends, watching for an answer and
/// the server's RSS as it goes; then read what comes until the server
/// closes (or 5 s pass).
fn flood(server: &Server, flood: &Flood, pid: u32) -> Result<Flooded, Failure> {
    const TOTAL: usize = MIB;
    let mut client = Client::connect(server.addr)?;
    let stream = &mut client.stream;
    let mut chunk = flood.prefix.to_vec();
    while chunk.len() < 16 * 1024 {
        chunk.extend_from_slice(flood.filler);
    }
    let mut sent = 0;
    let mut got = Vec::new();
    let mut rss_peak = procfs::rss_bytes(pid).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sent < TOTAL && Instant::now() < deadline {
        let piece = if sent == 0 {
            &chunk[..]
        } else {
            &chunk[flood.prefix.len()..]
        };
        // A server that stops reading (rightly) makes this time out; one
        // that closes makes it fail. Either way, stop sending.
        if net::write_all(stream, piece, Instant::now() + Duration::from_secs(2)).is_err() {
            break;
        }
        sent += piece.len();
        rss_peak = rss_peak.max(procfs::rss_bytes(pid).unwrap_or(0));
        // Has an answer come already?
        stream.set_nonblocking(true)?;
        let mut buf = [0u8; 4096];
        let read = stream.read(&mut buf);
        stream.set_nonblocking(false)?;
        match read {
            Ok(n) if n > 0 => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => break,
        }
    }
    let (rest, end) = net::read_to_end(stream, 64 * 1024, Instant::now() + Duration::from_secs(5));
    got.extend_from_slice(&rest);
    rss_peak = rss_peak.max(procfs::rss_bytes(pid).unwrap_or(0));
    let status_line = (!got.is_empty()).then(|| {
        let text = String::from_utf8_lossy(&got);
        text.lines().next().unwrap_or("").to_string()
    });
    Ok(Flooded {
        status_line,
        sent,
        rss_peak,
        end,
    })
}

/// 1 MiB of head, twice: refused early (431 or 414), closed, memory kept.
fn header_flood(ctx: &mut Ctx) -> Result<String, Failure> {
    const RSS_GROWTH_LIMIT: u64 = 32 * MIB as u64;
    let mut server = ctx.start()?;
    let pid = server.pid()?;
    ctx.probe(&mut server, Duration::from_secs(5))?;
    let base = procfs::rss_bytes(pid).unwrap_or(0);
    let mut figures = Vec::new();
    let mut peak = base;
    for case in &FLOODS {
        let what = case.what;
        let by_hand = format!(
            "{} &  then  {} | nc {} {}",
            server.command_line,
            case.shell,
            server.addr.ip(),
            server.addr.port()
        );
        let got = flood(&server, case, pid)?;
        peak = peak.max(got.rss_peak);
        server
            .require_alive(&format!("while a client sent {what}"))
            .map_err(|f| f.reproduce(by_hand.clone()))?;
        let code = got
            .status_line
            .as_deref()
            .and_then(|s| s.split(' ').nth(1))
            .and_then(|c| c.parse::<u16>().ok());
        let kib = got.sent / 1024;
        let expected = case.accepted[0];
        let Some(code) = code.filter(|c| case.accepted.contains(c)) else {
            return Err(Failure::new(match &got.status_line {
                Some(line) => {
                    format!("{what}: after {kib} KiB the answer was {line:?}; expected {expected}")
                }
                None => format!(
                    "{what}: after {kib} KiB, no answer ({}); expected {expected}",
                    got.end.describe()
                ),
            })
            .reproduce(by_hand)
            .hint("bound the request head (8 KiB is usual): past the limit, answer 431 (headers) or 414 (request line) and close, instead of buffering without end"));
        };
        if !matches!(got.end, End::Eof | End::Reset) {
            return Err(Failure::new(format!(
                "{what}: the server answered {code} after {kib} KiB but did not close the connection"
            ))
            .reproduce(by_hand)
            .hint("after refusing a head that is too long, close: the rest of the stream cannot be parsed"));
        }
        figures.push(format!("{code} ({kib} KiB sent)"));
    }
    let growth = peak.saturating_sub(base);
    let mib = |b: u64| b as f64 / MIB as f64;
    if growth > RSS_GROWTH_LIMIT {
        return Err(Failure::new(format!(
            "the server's RSS grew by {:.1} MiB (limit {:.0}) while clients sent 1 MiB heads",
            mib(growth),
            mib(RSS_GROWTH_LIMIT)
        ))
        .reproduce(ctx.rerun())
        .hint(
            "stop reading a request head at its limit; do not keep what a client sends past it",
        ));
    }
    ctx.probe(&mut server, Duration::from_secs(5))
        .map_err(|f| {
            Failure::new(format!(
                "after the floods, GET / was not served: {}",
                f.summary
            ))
        })?;
    Ok(format!(
        "{}; RSS +{:.1} MiB",
        figures.join(", "),
        mib(growth)
    ))
}

/// `..`, raw and percent-encoded, must not reach the file next to the root.
fn traversal(ctx: &mut Ctx) -> Result<String, Failure> {
    with_fixture(ctx, false, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        let targets = [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/..%2fsecret.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt",
        ];
        let mut codes = Vec::new();
        for target in targets {
            let request = get_request(target);
            let reply = exchange(&server, &request, false)?;
            let leaked = reply
                .body
                .windows(fixture.secret.len())
                .any(|w| w == fixture.secret.as_slice());
            if reply.status == 200 || leaked {
                return Err(wrong(
                    &server,
                    &request,
                    format!(
                        "GET {target}: {}{}: the file outside the root was served",
                        reply.status_line,
                        if leaked { ", with the secret in the body" } else { "" }
                    ),
                    &reply,
                )
                .hint("decode %XX first, then split the path at '/' and refuse any `..` segment (403, 400 or 404); never join a raw path to the root"));
            }
            codes.push(reply.status);
            server.require_alive(&format!("after GET {target}"))?;
        }
        codes.sort();
        codes.dedup();
        let codes: Vec<String> = codes.iter().map(u16::to_string).collect();
        Ok(format!(
            "{} climbing paths refused ({})",
            targets.len(),
            codes.join(", ")
        ))
    })
}

/// A 4 MiB file, byte for byte.
fn big_file(ctx: &mut Ctx) -> Result<String, Failure> {
    with_fixture(ctx, true, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        let request = get_request("/big.bin");
        let mut client = Client::connect(server.addr)?;
        let start = Instant::now();
        client.send(&request)?;
        let reply = client
            .reply(false, start + Duration::from_secs(30))
            .map_err(|f| {
                f.sent(&request).reproduce(format!(
                    "{} &  then  curl -sS http://{}/big.bin | cmp - {}",
                    server.command_line,
                    server.addr,
                    fixture.root.join("big.bin").display()
                ))
            })?;
        let secs = start.elapsed().as_secs_f64();
        if reply.status != 200 || reply.body != fixture.big {
            return Err(wrong(
                &server,
                &request,
                format!(
                    "GET /big.bin: {}, {} bytes; expected 200 and the file's {} bytes",
                    reply.status_line,
                    reply.body.len(),
                    fixture.big.len()
                ),
                &reply,
            )
            .compare(&fixture.big, &reply.body)
            .hint("send the file in a loop: sendfile() and send() may take only part of it; go on from where they stopped when the socket has room"));
        }
        server.require_alive("after the big file")?;
        Ok(format!("4 MiB in {:.2} s ({:.0} MiB/s)", secs, 4.0 / secs))
    })
}

/// TCP_INFO's count of segments with data received on this socket.
fn data_segs_in(stream: &TcpStream) -> Result<u32, Failure> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the
    // call; the kernel writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Failure::skip(format!(
            "getsockopt(TCP_INFO) failed: {}",
            io::Error::last_os_error()
        )));
    }
    // Older kernels fill in a shorter struct: the field must be inside it.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_in) + 4;
    if (len as usize) < needed {
        return Err(Failure::skip(format!(
            "this kernel's TCP_INFO is {len} bytes, too short for tcpi_data_segs_in (Linux 4.6 or later)"
        )));
    }
    Ok(info.tcpi_data_segs_in)
}

/// The lesson of ch08: a small response in one segment.
fn cork(ctx: &mut Ctx) -> Result<String, Failure> {
    const RUNS: usize = 200;
    /// Share of responses that must arrive in one segment. Not all: a
    /// server descheduled for 200 ms mid-response on a busy machine sees its
    /// cork time out and the kernel send what it holds.
    const MIN_SINGLE: usize = RUNS * 95 / 100;
    with_fixture(ctx, false, |ctx, fixture| {
        let mut server = fixture.start(ctx)?;
        let mut client = Client::connect(server.addr)?;
        let request = get_request("/small.html");
        let mut histogram = [0usize; 6]; // 0, 1, 2, 3, 4, 5 or more
        let mut response_len = 0;
        for run in 0..RUNS {
            let before = data_segs_in(&client.stream)?;
            client.send(&request)?;
            let reply = client
                .reply(false, Instant::now() + Duration::from_secs(5))
                .map_err(|f| {
                    Failure::new(format!(
                        "response {} of {RUNS} to GET /small.html on one keep-alive connection: {}",
                        run + 1,
                        f.summary
                    ))
                    .sent(&request)
                    .reproduce(format!(
                        "{} &  then  {}",
                        server.command_line,
                        nc(server.addr, &[request.clone(), request.clone()].concat())
                    ))
                    .hint("this check sends its requests one after another on one connection: keep it open after each response (HTTP/1.1 keep-alive)")
                })?;
            let after = data_segs_in(&client.stream)?;
            if reply.status != 200 || reply.body != fixture.small {
                return Err(wrong(
                    &server,
                    &request,
                    format!(
                        "GET /small.html: {}, {} bytes",
                        reply.status_line,
                        reply.body.len()
                    ),
                    &reply,
                ));
            }
            response_len = reply.head.len() + reply.body.len();
            histogram[(after.wrapping_sub(before) as usize).min(5)] += 1;
        }
        server.require_alive("after the segment count")?;
        let single = histogram[1];
        let most = (0..histogram.len())
            .max_by_key(|&n| histogram[n])
            .unwrap_or(1);
        let others: Vec<String> = (0..histogram.len())
            .filter(|&n| n != 1 && histogram[n] > 0)
            .map(|n| {
                let label = if n == 5 {
                    "5+".to_string()
                } else {
                    n.to_string()
                };
                format!("{} in {label}", histogram[n])
            })
            .collect();
        let figure = format!(
            "{most} segment{} per {response_len}-byte response: {single} of {RUNS} in one{}",
            if most == 1 { "" } else { "s" },
            if others.is_empty() {
                String::new()
            } else {
                format!(", {}", others.join(", "))
            }
        );
        if single < MIN_SINGLE {
            return Err(Failure::new(figure)
                .detail(format!(
                    "counted by the client: TCP_INFO tcpi_data_segs_in before and after each of {RUNS} GET /small.html on one connection; at least {MIN_SINGLE} must arrive in one segment"
                ))
                .reproduce(format!(
                    "{} &  then  curl -s http://{}/small.html >/dev/null  and watch: sudo tcpdump -i lo -n 'tcp port {}'",
                    server.command_line,
                    server.addr,
                    server.addr.port()
                ))
                .hint("header and body sent in two calls leave as two segments: set TCP_CORK before the header and clear it after the body (or send with MSG_MORE, or writev() both)"));
        }
        Ok(figure)
    })
}

//! The part of HTTP/1.1 a small file server needs, and nothing more: read a
//! request head, turn its path into a file name that cannot leave the root,
//! and write a response head.
//!
//! There are no system calls in this file: it only looks at bytes. main.rs
//! does the reading, the sending and the opening of files.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The most a request head (the request line and the headers) may take.
/// Past this we answer 414 or 431 and close: a client that never ends its
/// headers must not make us buffer without limit. 8 KiB is the usual
/// figure (nginx's default buffer for one header line, Apache's limit).
pub const MAX_HEAD: usize = 8 * 1024;

/// What `/` answers: a page built into the binary, sent from memory.
pub const HOME_PAGE: &str = "<!doctype html>
<html lang=\"en\">
<head><meta charset=\"utf-8\"><title>netbook ch08</title></head>
<body>
<h1>ch08-http-cork</h1>
<p>An HTTP/1.1 server on an edge-triggered epoll loop. Each response goes
out in two calls, the header and then the body, with TCP_CORK around the
pair, so that a small response leaves in one TCP segment.</p>
<ul>
<li><a href=\"/lesson.html\">lesson.html</a></li>
<li><a href=\"/hello.txt\">hello.txt</a></li>
</ul>
</body>
</html>
";

// ANCHOR: status
/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UriTooLong,
    HeadersTooLarge,
    InternalError,
    VersionNotSupported,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UriTooLong => 414,
            Status::HeadersTooLarge => 431,
            Status::InternalError => 500,
            Status::VersionNotSupported => 505,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UriTooLong => "URI Too Long",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::InternalError => "Internal Server Error",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// The body of an error response: one line a person can read in curl.
    pub fn message(self) -> &'static str {
        match self {
            Status::Ok => "ok\n",
            Status::BadRequest => "400 Bad Request: that is not an HTTP/1.x request\n",
            Status::Forbidden => "403 Forbidden: the path climbs out of the root\n",
            Status::NotFound => "404 Not Found\n",
            Status::MethodNotAllowed => "405 Method Not Allowed: GET and HEAD only\n",
            Status::UriTooLong => "414 URI Too Long: the request line passed 8 KiB\n",
            Status::HeadersTooLarge => "431 Request Header Fields Too Large: over 8 KiB\n",
            Status::InternalError => "500 Internal Server Error\n",
            Status::VersionNotSupported => "505 HTTP Version Not Supported: HTTP/1.x only\n",
        }
    }

    /// After these we close the connection: we cannot tell where the next
    /// request would begin, or we refuse to read any further.
    pub fn ends_connection(self) -> bool {
        matches!(
            self,
            Status::BadRequest
                | Status::UriTooLong
                | Status::HeadersTooLarge
                | Status::VersionNotSupported
        )
    }
}
// ANCHOR_END: status

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Any other well-formed method: 405.
    Other,
}

/// A request head, parsed.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The request target as it came: percent-encoded, maybe with a query.
    pub target: String,
    /// May the connection carry another request after this one? HTTP/1.1
    /// says yes unless `Connection: close`; HTTP/1.0 says no unless
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The request announces a body (Content-Length above 0, or
    /// Transfer-Encoding). We never read bodies, so we answer and close:
    /// the body's bytes would be taken for the next request.
    pub has_body: bool,
}

// ANCHOR: parse_request
/// What the bytes at the front of a connection's input hold.
#[derive(Debug)]
pub enum Parsed {
    /// No whole head yet: read more.
    Incomplete,
    /// A request whose head took the first `usize` bytes of the input.
    Request(Request, usize),
    /// Malformed, or too long: answer with this status, then close.
    Invalid(Status),
}

/// Look for one request head at the front of `input`.
pub fn parse_request(input: &[u8]) -> Parsed {
    // Empty lines before a request line are allowed, and skipped.
    let start = input
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let rest = &input[start..];
    match end_of_head(rest) {
        Some(len) if start + len <= MAX_HEAD => match parse_head(&rest[..len]) {
            Ok(request) => Parsed::Request(request, start + len),
            Err(status) => Parsed::Invalid(status),
        },
        None if input.len() < MAX_HEAD => Parsed::Incomplete,
        // MAX_HEAD bytes and no end in sight: which part is too long?
        _ => Parsed::Invalid(match rest.iter().position(|&b| b == b'\n') {
            Some(line_end) if line_end < MAX_HEAD => Status::HeadersTooLarge,
            _ if rest.is_empty() => Status::BadRequest,
            _ => Status::UriTooLong,
        }),
    }
}

/// Where the head ends: just past the first empty line. `\r\n\r\n` is the
/// rule; a bare `\n\n` (someone typing into nc) is accepted too.
fn end_of_head(bytes: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            let line = &bytes[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// `METHOD TARGET VERSION`, then `Name: value` lines, then an empty line.
fn parse_head(head: &[u8]) -> Result<Request, Status> {
    let text = std::str::from_utf8(head).map_err(|_| Status::BadRequest)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(Status::BadRequest);
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(Status::BadRequest);
    }
    // Origin form only ("/path?query"), printable bytes only.
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::BadRequest);
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(Status::VersionNotSupported),
        _ => return Err(Status::BadRequest),
    };
    let (mut host, mut close, mut keep_alive, mut has_body) = (false, false, false, false);
    for line in lines.take_while(|l| !l.is_empty()) {
        // No space before the colon, and no line that starts with one
        // (the obsolete "folded" header): both are errors since RFC 7230.
        let Some((name, value)) = line.split_once(':') else {
            return Err(Status::BadRequest);
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(Status::BadRequest);
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Status::BadRequest);
            }
            has_body |= value.bytes().any(|b| b != b'0');
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    // HTTP/1.1 requires Host (RFC 9112, 3.2).
    if http11 && !host {
        return Err(Status::BadRequest);
    }
    Ok(Request {
        method: match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            _ => Method::Other,
        },
        target: target.to_string(),
        keep_alive: !close && (http11 || keep_alive),
        has_body,
    })
}

/// The characters of a method or header name (RFC 9110, "token").
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
// ANCHOR_END: parse_request

// ANCHOR: file_path
/// The file a target names, relative to the root, or why there is none.
/// The target is percent-decoded first and split at `/` afterwards, so
/// that `%2e%2e` and `..%2f` are caught like a plain `..`.
pub fn file_path(target: &str) -> Result<PathBuf, Status> {
    // The query (`?...`) does not name a file.
    let path = target.split('?').next().unwrap_or("");
    let decoded = percent_decode(path).ok_or(Status::BadRequest)?;
    let mut relative = PathBuf::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Status::Forbidden),
            // A NUL cannot be in a file name; the kernel would refuse it.
            s if s.contains(&0) => return Err(Status::BadRequest),
            s => relative.push(OsStr::from_bytes(s)),
        }
    }
    Ok(relative)
}

/// `%41` becomes `A`. `None` for a `%` without two hex digits after it.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}
// ANCHOR_END: file_path

/// The Content-Type for a file, from its extension.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" | "rs" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

// ANCHOR: response_head
/// The status line and the headers of a response, with the empty line that
/// ends them: everything before the body, in one buffer.
pub fn response_head(
    status: Status,
    content_type: &str,
    content_length: u64,
    keep_alive: bool,
    now: u64,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: netbook-ch08\r\nContent-Type: {content_type}\r\n\
         Content-Length: {content_length}\r\nConnection: {}\r\n",
        status.code(),
        status.reason(),
        http_date(now),
        if keep_alive { "keep-alive" } else { "close" },
    );
    if status == Status::MethodNotAllowed {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}
// ANCHOR_END: response_head

/// `Sun, 06 Nov 1994 08:49:37 GMT` for a time in seconds since 1970.
pub fn http_date(secs: u64) -> String {
    // 1 January 1970 was a Thursday.
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let in_day = secs % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day counted from 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for days on or after 1970).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> Request {
        match parse_request(text.as_bytes()) {
            Parsed::Request(r, len) => {
                assert_eq!(len, text.len());
                r
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn invalid(text: &[u8]) -> Status {
        match parse_request(text) {
            Parsed::Invalid(status) => status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn reads_a_get_and_its_connection_rules() {
        let r = request("GET /a.txt?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.target, "/a.txt?x=1");
        assert!(r.keep_alive && !r.has_body);
        assert!(!request("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!request("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(request("HEAD / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n").has_body);
        // Bare newlines, and blank lines before the request line.
        assert_eq!(
            request("\r\n\nGET / HTTP/1.1\nHost: h\n\n").method,
            Method::Get
        );
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n"),
            Parsed::Incomplete
        ));
        assert!(matches!(parse_request(b""), Parsed::Incomplete));
        // A second request behind the first is left for the next call.
        let two = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n";
        assert!(matches!(parse_request(two), Parsed::Request(_, 28)));
    }

    #[test]
    fn refuses_malformed_heads() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"G\xffT / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        ] {
            assert_eq!(invalid(bad), Status::BadRequest, "{bad:?}");
        }
        assert_eq!(
            invalid(b"GET / HTTP/2.0\r\n\r\n"),
            Status::VersionNotSupported
        );
    }

    #[test]
    fn bounds_the_head() {
        let long_line = format!("GET /{} HTTP/1.1", "a".repeat(MAX_HEAD));
        assert_eq!(invalid(long_line.as_bytes()), Status::UriTooLong);
        let mut endless = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        while endless.len() < MAX_HEAD {
            endless.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(invalid(&endless), Status::HeadersTooLarge);
        assert_eq!(invalid(&[b'\n'; MAX_HEAD]), Status::BadRequest);
    }

    #[test]
    fn keeps_paths_inside_the_root() {
        assert_eq!(file_path("/a/b.txt?q"), Ok(PathBuf::from("a/b.txt")));
        assert_eq!(file_path("/"), Ok(PathBuf::new()));
        assert_eq!(file_path("/a%20b"), Ok(PathBuf::from("a b")));
        for climb in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/..%2fx",
            "/a/..",
        ] {
            assert_eq!(file_path(climb), Err(Status::Forbidden), "{climb}");
        }
        assert_eq!(file_path("/%zz"), Err(Status::BadRequest));
        assert_eq!(file_path("/a%00b"), Err(Status::BadRequest));
    }

    #[test]
    fn writes_heads_with_a_date() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        let head = response_head(Status::MethodNotAllowed, "text/plain", 5, false, 0);
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(head.contains("\r\nContent-Length: 5\r\n"));
        assert!(head.contains("\r\nConnection: close\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }
}

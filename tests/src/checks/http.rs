//! HTTP: the probe that the shared checks use for HTTP stages, and the
//! HTTP group of checks.

use super::Check;
use crate::net::{Exchange, Judgement};

/// The HTTP group (run by stages whose profile says `protocol = "http"`).
pub fn checks() -> Vec<Check> {
    Vec::new()
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

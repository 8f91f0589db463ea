//! Clients: one at a time with deadlines, or thousands at once driven by poll(2).
//!
//! Every read and write the suite does has a deadline, so a server that
//! hangs makes a check fail with a message, never makes the suite hang.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::report::{Failure, escape};

/// How a read from the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Got what was asked for.
    Complete,
    /// The server closed the connection (FIN).
    Eof,
    /// The server reset the connection (RST).
    Reset,
    /// Nothing more came before the deadline.
    Timeout,
}

impl End {
    pub fn describe(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Eof => "the server closed the connection (EOF)",
            End::Reset => "the server reset the connection",
            End::Timeout => "nothing more arrived before the deadline",
        }
    }
}

/// Connect with a deadline.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        Failure::new(format!("cannot connect to {addr}: {e}")).hint(
            if e.kind() == io::ErrorKind::TimedOut {
                "the listen backlog is full: the server is not calling accept()"
            } else {
                "is the server still listening?"
            },
        )
    })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Write everything, with a deadline (a server that never reads makes this time out).
pub fn write_all(stream: &mut TcpStream, data: &[u8], deadline: Instant) -> Result<(), Failure> {
    let mut sent = 0;
    while sent < data.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::new(format!(
                "could only send {sent} of {} bytes before the deadline: the server stopped reading",
                data.len()
            )));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "sending failed after {sent} of {} bytes: {e}",
                    data.len()
                )));
            }
        }
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Read until `want` bytes have arrived, EOF, a reset, or the deadline.
pub fn read_up_to(stream: &mut TcpStream, want: usize, deadline: Instant) -> (Vec<u8>, End) {
    let mut got = Vec::with_capacity(want.min(1 << 20));
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, End::Timeout);
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return (got, End::Reset);
        }
        let room = (want - got.len()).min(buf.len());
        match stream.read(&mut buf[..room]) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return (got, End::Timeout),
            Err(_) => return (got, End::Reset),
        }
    }
    (got, End::Complete)
}

/// Read until EOF (or reset, or the deadline), keeping at most `limit` bytes.
pub fn read_to_end(stream: &mut TcpStream, limit: usize, deadline: Instant) -> (Vec<u8>, End) {
    let (got, end) = read_up_to(stream, limit + 1, deadline);
    (
        got,
        if end == End::Complete {
            End::Timeout
        } else {
            end
        },
    )
}

/// Send `msg`, expect exactly `msg` back within `timeout`.
pub fn echo_round_trip(
    stream: &mut TcpStream,
    msg: &[u8],
    timeout: Duration,
) -> Result<Duration, Failure> {
    let start = Instant::now();
    let deadline = start + timeout;
    write_all(stream, msg, deadline)?;
    let (got, end) = read_up_to(stream, msg.len(), deadline);
    if got != msg {
        return Err(Failure::new(format!(
            "the echo did not come back within {:.1} s: {}",
            timeout.as_secs_f64(),
            end.describe()
        ))
        .sent(msg)
        .compare(msg, &got));
    }
    Ok(start.elapsed())
}

/// Close with SO_LINGER 0: the kernel sends RST instead of FIN.
pub fn reset(stream: TcpStream) {
    let socket = socket2::Socket::from(stream);
    let _ = socket.set_linger(Some(Duration::ZERO));
    drop(socket);
}

/// Shut down the write side (send FIN) and keep reading.
pub fn half_close(stream: &TcpStream) -> Result<(), Failure> {
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| Failure::new(format!("shutdown(SHUT_WR) failed: {e}")))
}

/// What one connection of a protocol sends and expects back.
pub trait Exchange: Sync {
    /// The request connection `i` sends.
    fn request(&self, i: usize) -> Vec<u8>;
    /// Judge what has arrived so far.
    fn judge(&self, i: usize, received: &[u8]) -> Judgement;
}

/// The verdict on a response so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Incomplete,
    Right,
    Wrong(String),
}

/// Echo: each connection sends a distinct line and must get it back.
pub struct EchoExchange {
    pub label: &'static str,
}

impl Exchange for EchoExchange {
    fn request(&self, i: usize) -> Vec<u8> {
        format!("{} {i}\n", self.label).into_bytes()
    }

    fn judge(&self, i: usize, received: &[u8]) -> Judgement {
        let expected = self.request(i);
        if received == expected.as_slice() {
            Judgement::Right
        } else if received.len() < expected.len() && expected.starts_with(received) {
            Judgement::Incomplete
        } else {
            Judgement::Wrong(format!(
                "expected {}, received {}",
                escape(&expected, 40),
                escape(received, 40)
            ))
        }
    }
}

/// Many connections held open at once.
pub struct Fleet {
    pub streams: Vec<TcpStream>,
}

/// What happened to each connection of a fleet.
#[derive(Debug, Default)]
pub struct Tally {
    pub right: usize,
    /// Closed or reset by the server before a full answer.
    pub closed: Vec<usize>,
    /// No full answer before the deadline.
    pub hung: Vec<usize>,
    /// A wrong answer: (connection, what was wrong).
    pub wrong: Vec<(usize, String)>,
}

impl Tally {
    pub fn summary(&self, total: usize) -> String {
        let first = |v: &[usize]| {
            v.iter()
                .min()
                .map_or(String::new(), |i| format!(" (first: #{i})"))
        };
        format!(
            "{} of {total} answered right, {} closed by the server{}, {} hung{}, {} wrong",
            self.right,
            self.closed.len(),
            first(&self.closed),
            self.hung.len(),
            first(&self.hung),
            self.wrong.len()
        )
    }
}

impl Fleet {
    /// Open `n` connections one after the other. On failure, returns the
    /// ones that did connect and what went wrong.
    pub fn connect(
        addr: SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> Result<Fleet, (Fleet, Failure)> {
        let mut fleet = Fleet {
            streams: Vec::with_capacity(n),
        };
        for i in 0..n {
            match connect(addr, timeout) {
                Ok(stream) => fleet.streams.push(stream),
                Err(f) => {
                    let f = Failure::new(format!(
                        "connection #{i} of {n} could not be opened: {}",
                        f.summary
                    ))
                    .hint(f.hint.unwrap_or_default());
                    return Err((fleet, f));
                }
            }
        }
        Ok(fleet)
    }

    /// Client-side ports, to find these connections in /proc.
    pub fn local_ports(&self) -> Vec<u16> {
        self.streams
            .iter()
            .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
            .collect()
    }

    /// Every connection sends its request (in `order`), then all answers are
    /// awaited together with poll(2) until `deadline`.
    pub fn exchange_all(
        &mut self,
        exchange: &dyn Exchange,
        order: &[usize],
        deadline: Instant,
    ) -> Tally {
        let n = self.streams.len();
        let mut tally = Tally::default();
        let mut received: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut pending: Vec<usize> = Vec::with_capacity(n);
        for &i in order {
            let request = exchange.request(i);
            // Requests are small; a blocking write with a deadline is enough.
            match write_all(&mut self.streams[i], &request, deadline) {
                Ok(()) => pending.push(i),
                Err(_) => tally.closed.push(i),
            }
        }
        for &i in &pending {
            let _ = self.streams[i].set_nonblocking(true);
        }
        let mut buf = [0u8; 4096];
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tally.hung.extend(pending.iter().copied());
                break;
            }
            let mut pfds: Vec<libc::pollfd> = pending
                .iter()
                .map(|&i| libc::pollfd {
                    fd: self.streams[i].as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let timeout_ms = left.as_millis().clamp(1, 1000) as i32;
            // SAFETY: pfds is a valid, exclusively borrowed array of pollfd.
            let rc =
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
            if rc < 0 {
                continue; // EINTR
            }
            let mut still = Vec::with_capacity(pending.len());
            for (k, &i) in pending.iter().enumerate() {
                if pfds[k].revents == 0 {
                    still.push(i);
                    continue;
                }
                let verdict = loop {
                    match self.streams[i].read(&mut buf) {
                        Ok(0) => break Some(Err(())),
                        Ok(got) => {
                            received[i].extend_from_slice(&buf[..got]);
                            match exchange.judge(i, &received[i]) {
                                Judgement::Incomplete => continue,
                                Judgement::Right => break Some(Ok(None)),
                                Judgement::Wrong(why) => break Some(Ok(Some(why))),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break Some(Err(())),
                    }
                };
                match verdict {
                    None => still.push(i),
                    Some(Ok(None)) => tally.right += 1,
                    Some(Ok(Some(why))) => tally.wrong.push((i, why)),
                    Some(Err(())) => tally.closed.push(i),
                }
            }
            pending = still;
        }
        for s in &self.streams {
            let _ = s.set_nonblocking(false);
        }
        tally
    }
}

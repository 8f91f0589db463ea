//! Echo checks, and the load and robustness checks that use the stage's probe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;

use super::Ctx;
use crate::net::{self, End, Fleet};
use crate::procfs;
use crate::profile::Protocol;
use crate::report::{Failure, first_difference};
use crate::server::{Launch, Server};

const MIB: usize = 1024 * 1024;

/// A line goes out and comes back; after our FIN, the server's.
pub fn echo_line(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let line = b"hello, netbook\n";
    let by_hand = ctx.by_hand(&server, "hello, netbook\n");
    let mut stream = net::connect(server.addr, Duration::from_secs(5))?;
    let rtt = net::echo_round_trip(&mut stream, line, Duration::from_secs(5)).map_err(|f| {
        f.reproduce(by_hand.clone())
            .hint("read what arrived and write all of it back; a partial send() must be finished")
    })?;
    net::half_close(&stream)?;
    let (rest, end) = net::read_to_end(&mut stream, 1024, Instant::now() + Duration::from_secs(5));
    if end != End::Eof || !rest.is_empty() {
        return Err(Failure::new(format!(
            "after the client shut down its side, expected EOF; got {} more bytes and: {}",
            rest.len(),
            end.describe()
        ))
        .reproduce(by_hand)
        .hint("read() returning 0 means the client is done sending: flush what you owe it, then close"));
    }
    server.require_alive("after one echo")?;
    Ok(format!("round trip {:.2} ms", rtt.as_secs_f64() * 1000.0))
}

/// Stream `data` in random chunks on one thread while reading it back on
/// another; optionally half-close when done. Returns what came back.
fn stream_through(
    stream: &TcpStream,
    data: Arc<Vec<u8>>,
    chunks: Vec<usize>,
    then_half_close: bool,
    deadline: Instant,
) -> Result<(Vec<u8>, End, Option<String>), Failure> {
    let mut writer = stream.try_clone()?;
    let written = Arc::new(AtomicU64::new(0));
    let written_by_writer = Arc::clone(&written);
    let data_for_writer = Arc::clone(&data);
    let handle = thread::spawn(move || -> Result<(), Failure> {
        let mut at = 0;
        for size in chunks {
            let end = (at + size).min(data_for_writer.len());
            net::write_all(&mut writer, &data_for_writer[at..end], deadline)?;
            at = end;
            written_by_writer.store(at as u64, Ordering::Relaxed);
            if at == data_for_writer.len() {
                break;
            }
        }
        if then_half_close {
            net::half_close(&writer)?;
        }
        Ok(())
    });
    let mut reader = stream.try_clone()?;
    let (got, end) = if then_half_close {
        net::read_to_end(&mut reader, data.len() + 1024, deadline)
    } else {
        net::read_up_to(&mut reader, data.len(), deadline)
    };
    if end != End::Complete && end != End::Eof {
        // Unblock the writer if it is stuck behind a server that stopped reading.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    let write_result = handle
        .join()
        .unwrap_or_else(|_| Err(Failure::new("the writer thread panicked")));
    let sending = match write_result {
        Ok(()) => None,
        Err(f) => Some(format!(
            "sending stopped after {} of {} bytes: {}",
            written.load(Ordering::Relaxed),
            data.len(),
            f.summary
        )),
    };
    Ok((got, end, sending))
}

fn random_chunks(ctx: &mut Ctx, total: usize, max: usize) -> Vec<usize> {
    let mut chunks = Vec::new();
    let mut sum = 0;
    while sum < total {
        let size = ctx.rng.random_range(1..=max);
        chunks.push(size);
        sum += size;
    }
    chunks
}

/// 8 MiB of random bytes written in random chunks while being read back.
pub fn duplex(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let data = Arc::new(ctx.random_bytes(8 * MIB));
    let chunks = random_chunks(ctx, data.len(), 64 * 1024);
    let stream = net::connect(server.addr, Duration::from_secs(5))?;
    let start = Instant::now();
    let (got, end, sending) = stream_through(
        &stream,
        Arc::clone(&data),
        chunks,
        false,
        start + Duration::from_secs(30),
    )?;
    if got != *data {
        let at = first_difference(&data, &got).unwrap_or(0);
        return Err(Failure::new(format!(
            "the echo differs from what was sent at byte {at} of {} ({})",
            data.len(),
            end.describe()
        ))
        .compare(&data, &got)
        .details(sending)
        .reproduce(ctx.rerun())
        .hint(if got.len() < data.len() && data.starts_with(&got) {
            "bytes went missing at the end: a partial send() whose rest was never sent, or a loop that stopped reading"
        } else {
            "wrong bytes: a partial send() whose rest was dropped, or a buffer reused before it was fully sent"
        }));
    }
    server.require_alive("after the transfer")?;
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "8 MiB each way in {:.2} s ({:.0} MiB/s)",
        secs,
        8.0 / secs
    ))
}

/// 256 KiB, then shutdown(WR): every byte must come back, then EOF.
pub fn half_close(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let data = Arc::new(ctx.random_bytes(256 * 1024));
    let chunks = random_chunks(ctx, data.len(), 16 * 1024);
    let stream = net::connect(server.addr, Duration::from_secs(5))?;
    let (got, end, sending) = stream_through(
        &stream,
        Arc::clone(&data),
        chunks,
        true,
        Instant::now() + Duration::from_secs(15),
    )?;
    if got != *data || end != End::Eof {
        return Err(Failure::new(format!(
            "after the client's FIN: received {} of {} bytes, then {}",
            got.len(),
            data.len(),
            end.describe()
        ))
        .compare(&data, &got)
        .details(sending)
        .reproduce(ctx.rerun())
        .hint("EOF from the client only means it is done sending: send everything still queued for it, then close"));
    }
    server.require_alive("after the half-close")?;
    Ok("256 KiB back, then EOF".into())
}

/// A few bytes and the FIN in one segment: one readiness event for both.
pub fn half_close_burst(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    for round in 0..3 {
        let payload = format!("burst {round}\n").into_bytes();
        let stream = net::connect(server.addr, Duration::from_secs(5))?;
        let socket = socket2::SockRef::from(&stream);
        // With the cork in, the bytes wait in the send queue; shutdown()
        // then attaches the FIN to that very segment.
        socket.set_tcp_nodelay(false)?;
        socket.set_tcp_cork(true)?;
        (&stream).write_all(&payload)?;
        net::half_close(&stream)?;
        let mut reader = stream.try_clone()?;
        let (got, end) =
            net::read_to_end(&mut reader, 1024, Instant::now() + Duration::from_secs(3));
        if got != payload || end != End::Eof {
            return Err(Failure::new(format!(
                "round {round}: data and FIN sent together; received {} of {} bytes, then {}",
                got.len(),
                payload.len(),
                end.describe()
            ))
            .sent(&payload)
            .compare(&payload, &got)
            .reproduce(format!(
                "{} &  then  python3 -c \"import socket;s=socket.create_connection(('{}',{}));s.setsockopt(6,3,1);s.send(b'burst\\\\n');s.shutdown(1);print(s.recv(99),s.recv(99))\"",
                server.command_line,
                server.addr.ip(),
                server.addr.port()
            ))
            .hint("a short read does not mean the socket is drained: data and FIN can arrive in one event, and edge-triggered epoll will not tell you again. Read until EAGAIN (or 0)"));
        }
    }
    server.require_alive("after the bursts")?;
    Ok("3 bursts echoed, each then EOF".into())
}

/// Clients that vanish with RST while the server has work for them.
pub fn reset_storm(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let payload: Vec<u8> = match ctx.profile.protocol {
        Protocol::Echo => ctx.random_bytes(64 * 1024),
        Protocol::Http => b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Half-Written: ".to_vec(),
    };
    for wave in 0..3 {
        let mut streams = Vec::new();
        for _ in 0..10 {
            let stream = net::connect(server.addr, Duration::from_secs(5))?;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = (&stream).write_all(&payload);
            streams.push(stream);
        }
        // Let the server start answering, so its writes hit the reset.
        thread::sleep(Duration::from_millis(20));
        for stream in streams {
            net::reset(stream);
        }
        server.require_alive(&format!("when wave {wave} of 10 clients reset their connections")).map_err(|f| {
            f.hint("ECONNRESET/EPIPE concern one connection: close it and carry on; and send with MSG_NOSIGNAL so SIGPIPE cannot kill you")
        })?;
    }
    thread::sleep(Duration::from_millis(100));
    server.require_alive("after 30 clients reset their connections")?;
    let rtt = ctx.probe(&mut server, Duration::from_secs(5)).map_err(|f| {
        Failure::new(format!("after 30 resets, a new client was not served: {}", f.summary))
            .hint("a reset connection must be closed and forgotten; is it still in your list, or did it stall the loop?")
    })?;
    Ok(format!(
        "alive; next client served in {:.1} ms",
        rtt.as_secs_f64() * 1000.0
    ))
}

/// A connects, B connects; B must be served while A is still connected.
pub fn concurrent_reverse(ctx: &mut Ctx) -> Result<String, Failure> {
    let server = ctx.start()?;
    let mut a = net::connect(server.addr, Duration::from_secs(5))?;
    let mut b = net::connect(server.addr, Duration::from_secs(5))?;
    let by_hand = format!(
        "{} &  then, in two terminals: nc {host} {port}  (leave it open)  and  printf 'second\\n' | nc {host} {port}",
        server.command_line,
        host = server.addr.ip(),
        port = server.addr.port()
    );
    net::echo_round_trip(&mut b, b"second\n", Duration::from_secs(2)).map_err(|f| {
        Failure::new(format!("the second client was not served while the first stayed connected: {}", f.summary))
            .details_from(f)
            .reproduce(by_hand.clone())
            .hint("a server that serves one connection at a time leaves everybody else in the listen backlog")
    })?;
    net::echo_round_trip(&mut a, b"first\n", Duration::from_secs(2))
        .map_err(|f| f.reproduce(by_hand))?;
    Ok("both served".into())
}

impl Failure {
    /// Add a detail line if there is one.
    fn details(self, line: Option<String>) -> Failure {
        match line {
            Some(line) => self.detail(line),
            None => self,
        }
    }

    /// Keep another failure's detail lines under a new summary.
    fn details_from(mut self, other: Failure) -> Failure {
        self.details.extend(other.details);
        self
    }
}

/// N clients connect, all send, all must get their answer.
fn many_clients(ctx: &mut Ctx, n: usize) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let start = Instant::now();
    let mut fleet = Fleet::connect(server.addr, n, Duration::from_secs(3))
        .map_err(|(_, f)| f.reproduce(ctx.rerun()))?;
    let connected = start.elapsed();
    let order: Vec<usize> = (0..n).rev().collect();
    let exchange = ctx.exchange();
    let deadline = Instant::now() + Duration::from_secs(10) + Duration::from_millis(n as u64);
    let tally = fleet.exchange_all(exchange.as_ref(), &order, deadline);
    if tally.right != n {
        let mut f = Failure::new(tally.summary(n)).reproduce(ctx.rerun());
        if let Some((i, why)) = tally.wrong.first() {
            f = f.detail(format!("connection #{i}: {why}"));
        }
        f = f.hint(if !tally.closed.is_empty() && tally.closed.iter().all(|&i| i >= 1000) {
            "connections past about 1 000 were closed: is the server refusing descriptors at or over FD_SETSIZE (select's ceiling)?"
        } else if !tally.hung.is_empty() {
            "some clients never got an answer: does the loop serve every ready connection, every time round?"
        } else {
            "every connection needs its own state: what was read from it and what is still owed to it"
        });
        return Err(f);
    }
    server.require_alive(&format!("with {n} clients"))?;
    Ok(format!(
        "connected in {:.2} s, all answered in {:.2} s",
        connected.as_secs_f64(),
        start.elapsed().as_secs_f64() - connected.as_secs_f64()
    ))
}

pub fn clients_500(ctx: &mut Ctx) -> Result<String, Failure> {
    many_clients(ctx, 500)
}

pub fn clients_2000(ctx: &mut Ctx) -> Result<String, Failure> {
    many_clients(ctx, 2_000)
}

pub fn clients_10000(ctx: &mut Ctx) -> Result<String, Failure> {
    many_clients(ctx, 10_000)
}

/// 1 100 clients: more descriptors than select can watch. Each must be
/// served or refused, none may hang, the server must survive and go on.
pub fn past_fd_setsize(ctx: &mut Ctx) -> Result<String, Failure> {
    const N: usize = 1_100;
    let mut server = ctx.start()?;
    let mut fleet = Fleet::connect(server.addr, N, Duration::from_secs(3)).map_err(|(_, f)| {
        f.reproduce(ctx.rerun())
            .hint("connections are piling up unaccepted: is the loop stuck on one client?")
    })?;
    let order: Vec<usize> = (0..N).collect();
    let exchange = ctx.exchange();
    let tally = fleet.exchange_all(
        exchange.as_ref(),
        &order,
        Instant::now() + Duration::from_secs(10),
    );
    server.require_alive(&format!("with {N} clients connected")).map_err(|f| {
        f.hint("FD_SET with a descriptor >= FD_SETSIZE (1024) writes past the fd_set: refuse such connections instead")
    })?;
    if !tally.hung.is_empty() || !tally.wrong.is_empty() {
        return Err(Failure::new(tally.summary(N))
            .reproduce(ctx.rerun())
            .hint("a connection you cannot watch must be closed at once, not left hanging"));
    }
    drop(fleet);
    ctx.probe(&mut server, Duration::from_secs(5))
        .map_err(|f| {
            Failure::new(format!(
                "after the {N} clients left, a new one was not served: {}",
                f.summary
            ))
        })?;
    Ok(format!(
        "{} served, {} refused; alive after",
        tally.right,
        tally.closed.len()
    ))
}

/// With 10 idle clients, the server should sleep in the kernel.
pub fn idle_cpu(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let mut fleet = Fleet::connect(server.addr, 10, Duration::from_secs(3)).map_err(|(_, f)| f)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    // A one-at-a-time server can answer only the first; that is fine here.
    ctx.probe_on(&mut fleet.streams[0], 0, deadline)?;
    thread::sleep(Duration::from_millis(300));
    let pid = server.pid()?;
    let window = Duration::from_secs(3);
    let busy = procfs::busy(pid, window)
        .ok_or_else(|| Failure::new("cannot read the server's CPU time"))?;
    let figures = format!(
        "{:.1} % of a core; runnable {:.1} % of the time",
        busy.cpu * 100.0,
        busy.runnable * 100.0
    );
    if busy.judged() > 0.05 {
        return Err(Failure::new(format!(
            "with 10 idle clients over {} s the server never slept: {figures} (limit 5 %)",
            window.as_secs()
        ))
        .reproduce(format!("{} &  then: top -p $!", server.command_line))
        .hint("a loop that polls without waiting burns a core: block in accept/read, select, poll or epoll_wait instead"));
    }
    Ok(format!("{figures} over {} s", window.as_secs()))
}

/// A client writes 256 MiB and never reads: the server must stop reading
/// from it (bounded memory) and keep serving everyone else.
pub fn backpressure(ctx: &mut Ctx) -> Result<String, Failure> {
    const TOTAL: usize = 256 * MIB;
    const RSS_LIMIT: u64 = 100 * MIB as u64;
    let mut server = ctx.start()?;
    let pid = server.pid()?;
    let hog = net::connect(server.addr, Duration::from_secs(5))?;
    hog.set_nonblocking(true)?;
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sent = 0usize;
    let mut max_rss = procfs::rss_bytes(pid).unwrap_or(0);
    let mut last_progress = Instant::now();
    let give_up = Instant::now() + Duration::from_secs(40);
    let mut last_sample = Instant::now();
    // Write until the server stops taking bytes for a second, or all 256 MiB are in.
    while sent < TOTAL
        && last_progress.elapsed() < Duration::from_secs(1)
        && Instant::now() < give_up
    {
        match (&hog).write(&chunk[..chunk.len().min(TOTAL - sent)]) {
            Ok(n) => {
                sent += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: hog.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 50) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                server.require_alive("while a client flooded it")?;
                return Err(Failure::new(format!("the flooding client's connection failed after {sent} bytes: {e}"))
                    .hint("a client that does not read is not an error: stop reading from it until it drains"));
            }
        }
        if last_sample.elapsed() > Duration::from_millis(50) {
            max_rss = max_rss.max(procfs::rss_bytes(pid).unwrap_or(0));
            last_sample = Instant::now();
        }
    }
    max_rss = max_rss.max(procfs::rss_bytes(pid).unwrap_or(0));
    server.require_alive("while a client flooded it")?;
    let mib = |b: u64| b as f64 / MIB as f64;
    if max_rss > RSS_LIMIT {
        return Err(Failure::new(format!(
            "the server's RSS reached {:.0} MiB (limit {:.0}) while a client wrote {:.0} MiB and read nothing",
            mib(max_rss),
            mib(RSS_LIMIT),
            mib(sent as u64)
        ))
        .reproduce(ctx.rerun())
        .hint("bound each connection's output queue; when it is full, stop reading from that connection until it drains"));
    }
    // The flooder is stuck now (or done). Someone else must still be served.
    let polite = ctx.probe(&mut server, Duration::from_secs(1)).map_err(|f| {
        Failure::new(format!(
            "while one client ({:.0} MiB sent, reading nothing) was stuck, another was not served within 1 s: {}",
            mib(sent as u64),
            f.summary
        ))
        .reproduce(ctx.rerun())
        .hint("a blocking write to a client that does not read stalls the whole loop: queue the bytes and wait for writability instead")
    })?;
    Ok(format!(
        "flooder stuck after {:.0} MiB; RSS peak {:.1} MiB; other client served in {:.1} ms",
        mib(sent as u64),
        mib(max_rss),
        polite.as_secs_f64() * 1000.0
    ))
}

/// A greedy client streams both ways; a polite one's round trips must stay quick.
pub fn fairness(ctx: &mut Ctx) -> Result<String, Failure> {
    let mut server = ctx.start()?;
    let greedy = net::connect(server.addr, Duration::from_secs(5))?;
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut s = greedy.try_clone()?;
        let stop = Arc::clone(&stop);
        let data = ctx.random_bytes(64 * 1024);
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = s.write(&data) {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) {
                        break;
                    }
                }
            }
        })
    };
    let reader = {
        let mut s = greedy.try_clone()?;
        let stop = Arc::clone(&stop);
        let moved = Arc::clone(&moved);
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        moved.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        })
    };
    // Let the greedy client get going.
    thread::sleep(Duration::from_millis(300));
    // Up to two windows of polite round trips. A server that starves the
    // polite client does so in every window; a machine that stalls us for a
    // moment (another process taking both cores) rarely spoils two, so one
    // window under the bound is a pass. Round trips are paced at 5 ms, so a
    // window holds a few hundred and p99 is not just the single worst one.
    let result = (|| -> Result<Result<Window, Vec<Window>>, Failure> {
        let mut polite = net::connect(server.addr, Duration::from_secs(2))?;
        let mut spoiled = Vec::new();
        let mut i = 0;
        for _ in 0..2 {
            let mut samples = Vec::new();
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                let msg = format!("polite {i:05}\n");
                samples.push(net::echo_round_trip(
                    &mut polite,
                    msg.as_bytes(),
                    Duration::from_secs(2),
                )?);
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
            let window = Window::of(samples);
            if window.p99 <= FAIRNESS_P99 {
                return Ok(Ok(window));
            }
            spoiled.push(window);
        }
        Ok(Err(spoiled))
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = greedy.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    let _ = reader.join();
    server.require_alive("while a greedy client streamed")?;
    let hint = "serve each ready connection a bounded amount per turn (a budget), so one client cannot hold the loop";
    let windows = result.map_err(|f| {
        Failure::new(format!(
            "while a greedy client streamed, a polite client's round trip failed: {}",
            f.summary
        ))
        .reproduce(ctx.rerun())
        .hint(hint)
    })?;
    let greedy_mib = moved.load(Ordering::Relaxed) as f64 / MIB as f64;
    match windows {
        Ok(window) => Ok(format!("{window}; greedy moved {greedy_mib:.0} MiB")),
        Err(spoiled) => Err(Failure::new(format!(
            "polite round trips over the {FAIRNESS_P99:?} p99 bound in both windows: {}; the greedy client moved {greedy_mib:.0} MiB",
            spoiled.iter().map(Window::to_string).collect::<Vec<_>>().join("; then ")
        ))
        .reproduce(ctx.rerun())
        .hint(hint)),
    }
}

/// The p99 bound on a polite client's round trip beside a greedy one.
const FAIRNESS_P99: Duration = Duration::from_millis(200);

/// Round-trip times of one measuring window.
struct Window {
    trips: usize,
    p50: Duration,
    p99: Duration,
}

impl Window {
    fn of(mut samples: Vec<Duration>) -> Window {
        samples.sort();
        let pct = |p: f64| {
            samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Window {
            trips: samples.len(),
            p50: pct(0.50),
            p99: pct(0.99),
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms over {} trips",
            ms(self.p50),
            ms(self.p99),
            self.trips
        )
    }
}

/// RLIMIT_NOFILE 48 and 80 clients: the server must not spin at the limit,
/// and must serve new clients once the others leave.
pub fn fd_exhaustion(ctx: &mut Ctx) -> Result<String, Failure> {
    const LIMIT: u64 = 48;
    const CLIENTS: usize = 80;
    let launch = Launch {
        nofile: Some(LIMIT),
        ..Launch::default()
    };
    let mut server: Server = ctx.start_with(&launch)?;
    let pid = server.pid()?;
    let mut fleet =
        Fleet::connect(server.addr, CLIENTS, Duration::from_secs(3)).map_err(|(_, f)| f)?;
    let request = ctx.exchange().request(0);
    for s in &mut fleet.streams {
        let _ = net::write_all(s, &request, Instant::now() + Duration::from_secs(1));
    }
    thread::sleep(Duration::from_millis(500));
    server.require_alive(&format!(
        "at its descriptor limit ({LIMIT}) with {CLIENTS} clients"
    ))?;
    let busy = procfs::busy(pid, Duration::from_secs(2))
        .ok_or_else(|| Failure::new("cannot read the server's CPU time"))?;
    let repro = format!(
        "prlimit --nofile={LIMIT} -- {}   then open {CLIENTS} connections",
        server.command_line
    );
    if busy.judged() > 0.5 {
        return Err(Failure::new(format!(
            "at its descriptor limit the server never sleeps: {:.0} % of a core, runnable {:.0} % of the time (limit 50 %)",
            busy.cpu * 100.0,
            busy.runnable * 100.0
        ))
        .reproduce(repro)
        .hint("accept() fails with EMFILE but the connection stays queued, so a level-triggered loop wakes at once, forever: stop watching the listener for a while, or use a reserve descriptor to accept and close"));
    }
    drop(fleet);
    thread::sleep(Duration::from_millis(200));
    let rtt = ctx
        .probe(&mut server, Duration::from_secs(5))
        .map_err(|f| {
            Failure::new(format!(
                "after the {CLIENTS} clients left, a new client was not served: {}",
                f.summary
            ))
            .reproduce(repro.clone())
            .hint("once descriptors are free again, accept must resume")
        })?;
    Ok(format!(
        "{:.1} % of a core (runnable {:.1} %) at the limit; served again in {:.0} ms",
        busy.cpu * 100.0,
        busy.runnable * 100.0,
        rtt.as_secs_f64() * 1000.0
    ))
}

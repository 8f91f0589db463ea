//! The load generator: its own process (`netbook-bench loadgen --job JSON`),
//! so that its CPU is not the server's and can be measured apart.
//!
//! A job is one of:
//! - `latency`: hold N idle connections, time one active client's round trips;
//! - `throughput`: C clients in a closed loop (echo S bytes, wait for them, again);
//! - `http`: C keep-alive clients in a closed loop of `GET`s;
//! - `segments`: one keep-alive client, data segments per response from TCP_INFO.
//!
//! The result goes to stdout as one JSON document. While it measures, the
//! generator reads the server's CPU time from /proc (schedstat) and its own from
//! getrusage, so every figure comes with the evidence of who was busy.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats;

/// What the orchestrator asks the generator to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Job {
    Latency(LatencyJob),
    Throughput(LoopJob),
    Http(LoopJob),
    Segments(SegmentsJob),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyJob {
    pub addr: SocketAddr,
    /// The server's processes, for its CPU time.
    pub server_pids: Vec<u32>,
    /// Idle-connection counts, in increasing order; connections are added.
    pub idle_steps: Vec<usize>,
    /// Round trips per run, and runs per step.
    pub round_trips: usize,
    pub runs: usize,
    /// A run stops early after this long (a slow server still gives a figure).
    pub run_limit_ms: u64,
    /// Bytes per round trip.
    pub size: usize,
    /// How long to watch the server's CPU with every connection idle.
    pub idle_cpu_ms: u64,
    /// How long opening one step's idle connections may take.
    pub setup_limit_ms: u64,
}

/// A closed loop of many clients: echo (`size` bytes) or HTTP (`request`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopJob {
    pub addr: SocketAddr,
    pub server_pids: Vec<u32>,
    pub clients: usize,
    /// Echo: bytes per round trip.
    #[serde(default)]
    pub size: usize,
    /// HTTP: the path to GET.
    #[serde(default)]
    pub path: String,
    pub warmup_ms: u64,
    pub window_ms: u64,
    pub connect_limit_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentsJob {
    pub addr: SocketAddr,
    pub path: String,
    pub requests: usize,
}

/// What the generator found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Outcome {
    Latency(LatencyResult),
    Loop(LoopResult),
    Segments(SegmentsResult),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyResult {
    pub steps: Vec<LatencyStep>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyStep {
    pub idle: usize,
    /// Did the server hold every idle connection (seen in /proc)?
    pub reached: bool,
    pub note: Option<String>,
    pub setup_s: f64,
    /// The server's CPU (share of one core) while every connection idled.
    pub idle_cpu: Option<f64>,
    pub runs: Vec<LatencyRun>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyRun {
    pub count: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub wall_s: f64,
    /// The server's CPU time per round trip, in µs.
    pub server_cpu_us_per_rt: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopResult {
    pub connected: usize,
    /// Completed exchanges in the window.
    pub completed: u64,
    pub window_s: f64,
    pub per_s: f64,
    /// The generator's CPU in the window, as a share of one core.
    pub gen_cpu: f64,
    /// The server's, from /proc (all its processes added).
    pub server_cpu: Option<f64>,
    /// Connections the server closed or broke during the run.
    pub broken: usize,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SegmentsResult {
    /// Data segments received per response (tcpi_data_segs_in deltas).
    pub per_response: Vec<u32>,
    pub response_bytes: usize,
    pub note: Option<String>,
}

/// Run a job; the result as JSON on stdout.
pub fn main(job_json: &str) -> Result<(), String> {
    let job: Job = serde_json::from_str(job_json).map_err(|e| format!("bad job: {e}"))?;
    raise_nofile_limit();
    let outcome = match job {
        Job::Latency(job) => Outcome::Latency(latency(&job)?),
        Job::Throughput(job) => Outcome::Loop(closed_loop(&job, Proto::Echo { size: job.size })?),
        Job::Http(job) => {
            let request = http_request(&job.path);
            Outcome::Loop(closed_loop(&job, Proto::Http { request })?)
        }
        Job::Segments(job) => Outcome::Segments(segments(&job)?),
    };
    let text = serde_json::to_string(&outcome).map_err(|e| e.to_string())?;
    let mut out = io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

/// Ten thousand idle connections need ten thousand descriptors: lift the
/// soft limit to the hard one.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The hard RLIMIT_NOFILE of this process.
pub fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        1024
    }
}

// ---------------------------------------------------------------- CPU time

/// This process's CPU time (user + system), in seconds, from getrusage.
fn own_cpu_s() -> f64 {
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The server's CPU time in seconds (all its processes and threads).
///
/// From `/proc/PID/task/TID/schedstat` (nanoseconds, brought up to date at
/// every context switch, so exact for a server that sleeps between events),
/// or else from `/proc/PID/stat` (clock ticks of 10 ms: too coarse for the
/// cost of one round trip).
fn server_cpu_s(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for &pid in pids {
        total += match schedstat_ns(pid) {
            Some(ns) => ns as f64 / 1e9,
            None => conformance::procfs::cpu_ticks(pid)? as f64 / clock_ticks_per_second(),
        };
    }
    Some(total)
}

/// Time on CPU of every thread of `pid`, in ns; `None` if schedstat is missing.
fn schedstat_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Socket descriptors a process holds, from /proc/PID/fd.
fn socket_count(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false)
        })
        .count()
}

// ---------------------------------------------------------------- latency

fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Close with RST (SO_LINGER 0) instead of FIN: thousands of connections
/// per run would otherwise leave thousands of TIME_WAIT entries holding
/// loopback ports for a minute. Only done after the measurement.
fn abort(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: linger is a valid struct of the size given; the fd is open.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

fn latency(job: &LatencyJob) -> Result<LatencyResult, String> {
    let msg: Vec<u8> = (0..job.size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut reply = vec![0u8; job.size];
    // The active client connects first, before any idle one.
    let mut active = connect(job.addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {}: {e}", job.addr))?;
    active
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let server = job.server_pids.first().copied();
    // Sockets the server holds besides the idle ones: the listener, the active client.
    let base = server.map(socket_count).unwrap_or(0).max(2);
    let mut idle: Vec<TcpStream> = Vec::new();
    let mut result = LatencyResult::default();
    let mut broken = false;
    for &target in &job.idle_steps {
        let mut step = LatencyStep {
            idle: target,
            ..LatencyStep::default()
        };
        if broken {
            step.note = Some("skipped: an earlier step failed".into());
            result.steps.push(step);
            continue;
        }
        let setup = Instant::now();
        let deadline = setup + Duration::from_millis(job.setup_limit_ms);
        if let Err(why) = open_idle(job.addr, server, base, target, &mut idle, deadline) {
            step.note = Some(why);
            step.setup_s = setup.elapsed().as_secs_f64();
            result.steps.push(step);
            broken = true;
            continue;
        }
        step.reached = true;
        step.setup_s = setup.elapsed().as_secs_f64();
        // The idle figure: nothing moves, what does the server do?
        if job.idle_cpu_ms > 0 {
            let t0 = Instant::now();
            let c0 = server_cpu_s(&job.server_pids);
            std::thread::sleep(Duration::from_millis(job.idle_cpu_ms));
            let c1 = server_cpu_s(&job.server_pids);
            if let (Some(a), Some(b)) = (c0, c1) {
                step.idle_cpu = Some((b - a) / t0.elapsed().as_secs_f64());
            }
        }
        // A few untimed round trips wake everything up (caches, the scheduler).
        for _ in 0..5 {
            if let Err(e) = round_trip(&mut active, &msg, &mut reply) {
                step.note = Some(format!("warm-up round trip failed: {e}"));
                broken = true;
                break;
            }
        }
        if broken {
            result.steps.push(step);
            continue;
        }
        for _ in 0..job.runs {
            let mut samples = Vec::with_capacity(job.round_trips);
            let start = Instant::now();
            let limit = start + Duration::from_millis(job.run_limit_ms);
            let c0 = server_cpu_s(&job.server_pids);
            while samples.len() < job.round_trips && Instant::now() < limit {
                let t = Instant::now();
                if let Err(e) = round_trip(&mut active, &msg, &mut reply) {
                    step.note = Some(format!("round trip failed: {e}"));
                    broken = true;
                    break;
                }
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let wall = start.elapsed().as_secs_f64();
            let c1 = server_cpu_s(&job.server_pids);
            if broken || samples.is_empty() {
                break;
            }
            let cpu = match (c0, c1) {
                (Some(a), Some(b)) => Some((b - a) * 1e6 / samples.len() as f64),
                _ => None,
            };
            step.runs.push(LatencyRun {
                count: samples.len(),
                median_us: stats::percentile(&mut samples, 50.0),
                p99_us: stats::percentile(&mut samples, 99.0),
                wall_s: wall,
                server_cpu_us_per_rt: cpu,
            });
        }
        result.steps.push(step);
    }
    idle.into_iter().for_each(abort);
    abort(active);
    Ok(result)
}

fn round_trip(stream: &mut TcpStream, msg: &[u8], reply: &mut [u8]) -> io::Result<()> {
    stream.write_all(msg)?;
    stream.read_exact(reply)?;
    if reply != msg {
        return Err(io::Error::other("the echo differs from what was sent"));
    }
    Ok(())
}

/// Open idle connections until there are `target`, and wait until the server
/// holds them all (its descriptors in /proc), pacing the connects so the
/// listen backlog never overflows.
fn open_idle(
    addr: SocketAddr,
    server: Option<u32>,
    base: usize,
    target: usize,
    idle: &mut Vec<TcpStream>,
    deadline: Instant,
) -> Result<(), String> {
    const AHEAD: usize = 512;
    let held = |server: Option<u32>| server.map(|pid| socket_count(pid).saturating_sub(base));
    while idle.len() < target {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {target} idle connections opened in time",
                idle.len()
            ));
        }
        if let Some(h) = held(server)
            && idle.len() >= h + AHEAD
        {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let batch = (target - idle.len()).min(128);
        for _ in 0..batch {
            match connect(addr, Duration::from_secs(3)) {
                Ok(s) => idle.push(s),
                Err(e) => {
                    return Err(format!(
                        "idle connection #{} could not be opened: {e}",
                        idle.len()
                    ));
                }
            }
        }
    }
    loop {
        match held(server) {
            None => return Ok(()),
            Some(h) if h >= target => return Ok(()),
            Some(h) => {
                if Instant::now() > deadline {
                    return Err(format!(
                        "the server holds {h} of {target} idle connections after the time limit"
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

// ---------------------------------------------------------------- closed loop

/// What one exchange is.
enum Proto {
    /// Send `size` bytes, expect them back.
    Echo { size: usize },
    /// Send a GET, expect a 200 with a Content-Length body.
    Http { request: Vec<u8> },
}

fn http_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: netbook-bench\r\n\r\n")
        .into_bytes()
}

/// Where the response ends, once the header has arrived: header length +
/// Content-Length. An error for anything but a 200 with a length.
fn http_response_len(head: &[u8]) -> Option<Result<usize, String>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&head[..end]);
    let status = text.lines().next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Some(Err(format!("status line {status:?}")));
    }
    let length = text.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    Some(match length {
        Some(n) => Ok(end + 4 + n),
        None => Err("no Content-Length".into()),
    })
}

/// One client of the closed loop.
struct Client {
    stream: TcpStream,
    /// Bytes of the current request written so far.
    sent: usize,
    /// Bytes of the current response read so far.
    received: usize,
    /// HTTP: the header so far, then the whole response length.
    head: Vec<u8>,
    want: Option<usize>,
    /// Registered for EPOLLOUT (a write was short).
    wants_out: bool,
    dead: bool,
}

struct Epoll(i32);

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: i32, fd: i32, token: u64, events: i32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

fn closed_loop(job: &LoopJob, proto: Proto) -> Result<LoopResult, String> {
    let request: Vec<u8> = match &proto {
        Proto::Echo { size } => (0..*size).map(|i| b'a' + (i % 26) as u8).collect(),
        Proto::Http { request } => request.clone(),
    };
    let mut result = LoopResult::default();
    let connect_deadline = Instant::now() + Duration::from_millis(job.connect_limit_ms);
    let mut clients: Vec<Client> = Vec::with_capacity(job.clients);
    for i in 0..job.clients {
        let left = connect_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            result.note = Some(format!(
                "only {i} of {} clients connected in time",
                job.clients
            ));
            break;
        }
        match connect(job.addr, left.min(Duration::from_secs(3))) {
            Ok(stream) => {
                stream.set_nonblocking(true).map_err(|e| e.to_string())?;
                clients.push(Client {
                    stream,
                    sent: 0,
                    received: 0,
                    head: Vec::new(),
                    want: None,
                    wants_out: false,
                    dead: false,
                });
            }
            Err(e) => {
                result.note = Some(format!("client #{i} could not connect: {e}"));
                break;
            }
        }
    }
    result.connected = clients.len();
    if clients.is_empty() {
        return Ok(result);
    }
    let epoll = Epoll::new().map_err(|e| format!("epoll_create1: {e}"))?;
    for (i, c) in clients.iter().enumerate() {
        epoll
            .ctl(
                libc::EPOLL_CTL_ADD,
                c.stream.as_raw_fd(),
                i as u64,
                libc::EPOLLIN,
            )
            .map_err(|e| format!("epoll_ctl: {e}"))?;
    }
    let mut completed: u64 = 0;
    let mut broken = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    for (i, c) in clients.iter_mut().enumerate() {
        if !push_request(&epoll, i, c, &request, true) {
            broken += 1;
        }
    }
    let start = Instant::now();
    let window_start = start + Duration::from_millis(job.warmup_ms);
    let window_end = window_start + Duration::from_millis(job.window_ms);
    let mut at_start: Option<(u64, f64, Option<f64>, Instant)> = None;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        let now = Instant::now();
        if at_start.is_none() && now >= window_start {
            at_start = Some((completed, own_cpu_s(), server_cpu_s(&job.server_pids), now));
        }
        if now >= window_end {
            break;
        }
        if broken == clients.len() {
            result.note = Some("every connection was closed by the server".into());
            break;
        }
        let wait = if at_start.is_none() {
            window_start - now
        } else {
            window_end - now
        };
        let timeout = (wait.as_millis() as i32).clamp(1, 100);
        // SAFETY: events is a valid, exclusively borrowed array of epoll_event.
        let n =
            unsafe { libc::epoll_wait(epoll.0, events.as_mut_ptr(), events.len() as i32, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for ev in &events[..n as usize] {
            let token = ev.u64;
            let flags = ev.events;
            let i = token as usize;
            let c = &mut clients[i];
            if c.dead {
                continue;
            }
            if flags & libc::EPOLLOUT as u32 != 0
                && c.wants_out
                && !push_request(&epoll, i, c, &request, false)
            {
                broken += 1;
                continue;
            }
            if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                continue;
            }
            match pull_response(c, &proto, &mut buf) {
                Ok(0) => {}
                Ok(done) => {
                    completed += done;
                    if !push_request(&epoll, i, c, &request, true) {
                        broken += 1;
                    }
                }
                Err(why) => {
                    c.dead = true;
                    broken += 1;
                    if result.note.is_none() {
                        result.note = Some(format!("client #{i}: {why}"));
                    }
                }
            }
        }
    }
    let end = Instant::now();
    let (c0, g0, s0, t0) = at_start.unwrap_or((completed, own_cpu_s(), None, end));
    let window = end.duration_since(t0).as_secs_f64().max(1e-9);
    result.completed = completed - c0;
    result.window_s = window;
    result.per_s = result.completed as f64 / window;
    result.gen_cpu = (own_cpu_s() - g0) / window;
    result.server_cpu = match (s0, server_cpu_s(&job.server_pids)) {
        (Some(a), Some(b)) => Some((b - a) / window),
        _ => None,
    };
    result.broken = broken;
    drop(epoll);
    clients.into_iter().for_each(|c| abort(c.stream));
    Ok(result)
}

/// Start (or continue) writing the client's request. False if the
/// connection broke.
fn push_request(epoll: &Epoll, token: usize, c: &mut Client, request: &[u8], new: bool) -> bool {
    if new {
        c.sent = 0;
    }
    while c.sent < request.len() {
        match c.stream.write(&request[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !c.wants_out {
                    c.wants_out = true;
                    let _ = epoll.ctl(
                        libc::EPOLL_CTL_MOD,
                        c.stream.as_raw_fd(),
                        token as u64,
                        libc::EPOLLIN | libc::EPOLLOUT,
                    );
                }
                return true;
            }
            Err(_) => {
                c.dead = true;
                return false;
            }
        }
    }
    if c.wants_out {
        c.wants_out = false;
        let _ = epoll.ctl(
            libc::EPOLL_CTL_MOD,
            c.stream.as_raw_fd(),
            token as u64,
            libc::EPOLLIN,
        );
    }
    true
}

/// Read what has arrived. Ok(1) when the response is complete (the caller
/// sends the next request), Ok(0) when more is to come.
fn pull_response(c: &mut Client, proto: &Proto, buf: &mut [u8]) -> Result<u64, String> {
    loop {
        let n = match c.stream.read(buf) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e.to_string()),
        };
        c.received += n;
        let want = match proto {
            Proto::Echo { size } => *size,
            Proto::Http { .. } => {
                if c.want.is_none() {
                    c.head.extend_from_slice(&buf[..n]);
                    match http_response_len(&c.head) {
                        None if c.head.len() > 64 * 1024 => {
                            return Err("no end of header in 64 KiB".into());
                        }
                        None => continue,
                        Some(Err(why)) => return Err(why),
                        Some(Ok(len)) => c.want = Some(len),
                    }
                }
                c.want.unwrap_or(usize::MAX)
            }
        };
        if c.received > want {
            return Err(format!(
                "{} bytes came back for an exchange of {want}",
                c.received
            ));
        }
        if c.received == want {
            c.received = 0;
            c.want = None;
            c.head.clear();
            return Ok(1);
        }
    }
}

// ---------------------------------------------------------------- segments

/// Data segments this socket has received so far (TCP_INFO).
pub fn data_segs_in(stream: &TcpStream) -> io::Result<u32> {
    // SAFETY: tcp_info is plain data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len are valid for writes of the sizes given.
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
        return Err(io::Error::last_os_error());
    }
    // An older kernel returns a shorter struct: the field must be inside it.
    let end = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_in) + 4;
    if (len as usize) < end {
        return Err(io::Error::other(format!(
            "TCP_INFO returned {len} bytes, too old for tcpi_data_segs_in"
        )));
    }
    Ok(info.tcpi_data_segs_in)
}

fn segments(job: &SegmentsJob) -> Result<SegmentsResult, String> {
    let mut result = SegmentsResult::default();
    let mut stream = connect(job.addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {}: {e}", job.addr))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let request = http_request(&job.path);
    let mut buf = vec![0u8; 256 * 1024];
    for i in 0..job.requests {
        let before = data_segs_in(&stream).map_err(|e| e.to_string())?;
        stream
            .write_all(&request)
            .map_err(|e| format!("request #{i}: {e}"))?;
        let mut head = Vec::new();
        let mut got = 0usize;
        let mut want = None;
        while want.is_none_or(|w| got < w) {
            let n = match stream.read(&mut buf) {
                Ok(0) => return Err(format!("response #{i}: the server closed the connection")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("response #{i}: {e}")),
            };
            got += n;
            if want.is_none() {
                head.extend_from_slice(&buf[..n]);
                match http_response_len(&head) {
                    None => {}
                    Some(Err(why)) => return Err(format!("response #{i}: {why}")),
                    Some(Ok(len)) => want = Some(len),
                }
            }
        }
        // The last segment's ACK state settles at once on loopback; the
        // counter is read after the whole response has arrived.
        let after = data_segs_in(&stream).map_err(|e| e.to_string())?;
        result.per_response.push(after - before);
        result.response_bytes = got;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_response_lengths() {
        assert_eq!(http_response_len(b"HTTP/1.1 200 OK\r\nContent"), None);
        assert_eq!(
            http_response_len(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"),
            Some(Ok(38 + 5))
        );
        assert!(matches!(
            http_response_len(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Some(Err(_))
        ));
    }

    #[test]
    fn a_job_survives_the_json_round_trip() {
        let job = Job::Throughput(LoopJob {
            addr: "127.0.0.1:1".parse().unwrap(),
            server_pids: vec![1],
            clients: 3,
            size: 64,
            path: String::new(),
            warmup_ms: 1,
            window_ms: 2,
            connect_limit_ms: 3,
        });
        let text = serde_json::to_string(&job).unwrap();
        let back: Job = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, Job::Throughput(j) if j.clients == 3));
    }
}

//! The orchestrator: which servers, which measurements, in which order.
//!
//! Every measurement starts a fresh server on an ephemeral loopback port,
//! runs the load generator as a separate process against it, and kills the
//! server's whole process group afterwards. Runs of the same cell are
//! interleaved across servers (run 1 of every server, then run 2, ...), so
//! that a change in the machine's load while the bench runs shifts every
//! server alike instead of one.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::loadgen::{self, Job, LatencyJob, LoopJob, LoopResult, Outcome, SegmentsJob};
use crate::machine::{self, Machine};
use crate::peers::{self, Stage};
use crate::stats::Summary;

/// What a run measures, and how much of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub quick: bool,
    pub idle_steps: Vec<usize>,
    pub latency_round_trips: usize,
    pub latency_runs: usize,
    pub latency_size: usize,
    pub idle_cpu_ms: u64,
    pub clients: Vec<usize>,
    pub sizes: Vec<usize>,
    pub runs: usize,
    pub warmup_ms: u64,
    pub window_ms: u64,
    pub http_clients: Vec<usize>,
    pub http_body: usize,
    pub segment_requests: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            idle_steps: vec![0, 100, 1_000, 10_000],
            latency_round_trips: 1_000,
            latency_runs: 5,
            latency_size: 64,
            idle_cpu_ms: 1_000,
            clients: vec![1, 64, 1_000],
            sizes: vec![64, 4 * 1024, 64 * 1024],
            runs: 5,
            warmup_ms: 250,
            window_ms: 1_000,
            http_clients: vec![1, 64],
            http_body: 1_000,
            segment_requests: 200,
        }
    }

    /// Seconds, for CI: every code path, no figure worth reading.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            idle_steps: vec![0, 100],
            latency_round_trips: 50,
            latency_runs: 2,
            latency_size: 64,
            idle_cpu_ms: 50,
            clients: vec![1, 8],
            sizes: vec![64, 64 * 1024],
            runs: 2,
            warmup_ms: 20,
            window_ms: 80,
            http_clients: vec![1, 8],
            http_body: 1_000,
            segment_requests: 10,
        }
    }
}

/// Everything a run found, as written to results.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub plan: Plan,
    /// What was skipped or went wrong, and why.
    pub notes: Vec<String>,
    /// The generator-bottleneck check, in words.
    pub generator_check: Vec<String>,
    pub latency: Vec<LatencySeries>,
    pub throughput: Vec<ThroughputCell>,
    pub http: Vec<HttpCell>,
    pub segments: Vec<SegmentsRow>,
    pub nginx: Option<String>,
    /// The stages measured and where each was found.
    pub stages: Vec<String>,
}

/// One server's latency against the number of idle connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencySeries {
    /// `ch05` or `tokio`.
    pub server: String,
    /// `poll`, `tokio (current-thread)`.
    pub label: String,
    pub points: Vec<LatencyPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyPoint {
    pub idle: usize,
    /// Over runs: each run's median round trip, in µs.
    pub median_us: Option<Summary>,
    /// Over runs: each run's 99th percentile, in µs.
    pub p99_us: Option<Summary>,
    /// Over runs: the server's CPU per round trip, in µs.
    pub cpu_per_rt_us: Option<Summary>,
    /// The server's CPU with every connection idle (share of one core).
    pub idle_cpu: Option<f64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThroughputCell {
    pub server: String,
    pub label: String,
    pub clients: usize,
    pub size: usize,
    /// Round trips per second, over runs.
    pub per_s: Option<Summary>,
    pub gen_cpu: Option<Summary>,
    pub server_cpu: Option<Summary>,
    /// The server's CPU time per round trip, in µs: what one round trip
    /// costs it, whatever share of the machine it was given.
    #[serde(default)]
    pub cpu_us_per_rt: Option<Summary>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpCell {
    pub server: String,
    pub label: String,
    pub clients: usize,
    /// Requests per second, over runs.
    pub per_s: Option<Summary>,
    pub server_cpu: Option<Summary>,
    pub gen_cpu: Option<Summary>,
    /// The server's CPU time per request, in µs.
    pub cpu_us_per_req: Option<Summary>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentsRow {
    pub server: String,
    pub label: String,
    /// Data segments per response, over every response.
    pub per_response: Option<Summary>,
    pub responses: usize,
    pub response_bytes: usize,
    pub note: Option<String>,
}

/// How `run` was asked to behave.
pub struct Options {
    pub quick: bool,
    pub install_nginx: bool,
    pub out: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    pub only: Vec<String>,
    /// Only these servers (`ch05`, `tokio`, `nginx`); empty: all.
    pub servers: Vec<String>,
}

/// The workspace root: this crate lives in xtask/bench.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A server to measure: a stage, or the tokio peer.
struct Peer {
    server: String,
    label: String,
    program: PathBuf,
    args: Vec<String>,
    one_at_a_time: bool,
    fd_setsize: bool,
}

impl Peer {
    fn start(&self) -> Result<conformance::server::Server, String> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        peers::start(&self.program, &args).map_err(|e| format!("{}: {e}", self.server))
    }
}

fn interrupted() -> Result<(), String> {
    if plumbing::stop_requested() {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

pub fn run(options: Options) -> Result<PathBuf, String> {
    plumbing::install_signal_handlers();
    loadgen::raise_nofile_limit();
    let root = root();
    let plan = if options.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let out = options.out.clone().unwrap_or_else(|| {
        if options.quick {
            target_dir().join("netbook/bench-quick")
        } else {
            root.join("book/src/generated/bench")
        }
    });
    let bin_dir = options
        .bin_dir
        .clone()
        .unwrap_or_else(|| target_dir().join("release"));
    if let Some(bad) = options
        .only
        .iter()
        .find(|o| !["latency", "throughput", "http"].contains(&o.as_str()))
    {
        return Err(format!(
            "--only {bad:?}: the parts are latency, throughput and http"
        ));
    }
    let wants = |part: &str| options.only.is_empty() || options.only.iter().any(|o| o == part);

    let (stages, mut notes) = peers::discover(&root);
    let mut present: Vec<Stage> = Vec::new();
    for s in stages {
        if s.path(&bin_dir).is_file() {
            present.push(s);
        } else {
            notes.push(format!(
                "{}: {} is not built (cargo build --release -p {}): skipped",
                s.stage,
                s.path(&bin_dir).display(),
                s.binary
            ));
        }
    }
    let mut echo: Vec<Peer> = present
        .iter()
        .filter(|s| s.protocol == "echo")
        .map(|s| Peer {
            server: s.stage.clone(),
            label: s.label(),
            program: s.path(&bin_dir),
            args: Vec::new(),
            one_at_a_time: s.one_at_a_time,
            fd_setsize: s.fd_setsize,
        })
        .collect();
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    echo.push(Peer {
        server: "tokio".into(),
        label: "tokio, current-thread".into(),
        program: me.clone(),
        args: vec!["tokio-echo".into()],
        one_at_a_time: false,
        fd_setsize: false,
    });
    // A second reference for the throughput runs only: the same peer with
    // TCP_NODELAY, which shows what Nagle's algorithm costs the others.
    let tokio_nodelay = Peer {
        server: "tokio-nodelay".into(),
        label: "tokio, current-thread, TCP_NODELAY".into(),
        program: me.clone(),
        args: vec!["tokio-echo".into(), "--nodelay".into()],
        one_at_a_time: false,
        fd_setsize: false,
    };

    let chosen =
        |name: &str| options.servers.is_empty() || options.servers.iter().any(|s| s == name);
    echo.retain(|p| chosen(&p.server));
    present.retain(|s| chosen(&s.stage));
    let throughput_extra: Vec<&Peer> = if chosen(&tokio_nodelay.server) {
        vec![&tokio_nodelay]
    } else {
        Vec::new()
    };
    let nginx_wanted = chosen("nginx");

    let mut results = Results {
        machine: Machine::probe(&root),
        plan: plan.clone(),
        notes: Vec::new(),
        generator_check: Vec::new(),
        latency: Vec::new(),
        throughput: Vec::new(),
        http: Vec::new(),
        segments: Vec::new(),
        nginx: None,
        stages: present
            .iter()
            .map(|s| format!("{} `{}` (from {})", s.stage, s.binary, s.source))
            .collect(),
    };
    eprintln!("bench: {}", results.machine.stamp());
    eprintln!(
        "bench: servers {}",
        echo.iter()
            .map(|p| format!("{} ({})", p.server, p.label))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for n in &notes {
        eprintln!("bench: note: {n}");
    }
    let started = Instant::now();
    let outcome = (|| -> Result<(), String> {
        if wants("latency") {
            latency_section(&plan, &echo, &mut results)?;
        }
        if wants("throughput") {
            let mut peers: Vec<&Peer> = echo.iter().collect();
            peers.extend(throughput_extra.iter().copied());
            throughput_section(&plan, &peers, &mut results)?;
        }
        if wants("http") {
            http_section(
                &plan,
                &present,
                &bin_dir,
                &options,
                nginx_wanted,
                &mut results,
            )?;
        }
        Ok(())
    })();
    conformance::server::kill_all();
    outcome?;
    notes.append(&mut results.notes);
    results.notes = notes;
    machine::sample_load();
    results.machine.load_after = Some(machine::load_average());
    results.machine.load_max = machine::load_max();
    results.generator_check = crate::report::generator_check(&results);
    eprintln!(
        "bench: measured in {:.0} s; writing {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    crate::report::write_all(&results, &out)?;
    let checked = crate::validate::check_dir(&out)?;
    eprintln!("bench: {checked}");
    Ok(out)
}

/// Run the generator in its own process; its JSON answer.
fn loadgen(job: &Job, limit: Duration) -> Result<Outcome, String> {
    interrupted()?;
    machine::sample_load();
    let json = serde_json::to_string(job).map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(me);
    cmd.args(["loadgen", "--job", &json])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: pre_exec runs in the forked child before exec; prctl is
    // async-signal-safe. The generator dies with us if we are killed.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the load generator: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for the load generator: {e}")),
        }
        if Instant::now() > deadline || plumbing::stop_requested() {
            let _ = child.kill();
            let _ = child.wait();
            interrupted()?;
            return Err(format!(
                "the load generator overran its {} s limit and was killed",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("the load generator failed ({status})"));
    }
    serde_json::from_str(text.trim()).map_err(|e| format!("bad answer from the generator: {e}"))
}

// ---------------------------------------------------------------- latency

fn latency_section(plan: &Plan, peers: &[Peer], results: &mut Results) -> Result<(), String> {
    eprintln!("bench: idle-connection latency");
    for peer in peers {
        let mut points = Vec::new();
        let mut steps = Vec::new();
        for &n in &plan.idle_steps {
            if peer.one_at_a_time && n > 0 {
                points.push(skipped(
                    n,
                    "one client at a time: an idle connection would hold the server",
                ));
            } else if peer.fd_setsize && n + 16 > libc::FD_SETSIZE {
                points.push(skipped(
                    n,
                    "beyond FD_SETSIZE (1 024): select() cannot watch that many",
                ));
            } else if (n as u64) + 64 > results.machine.nofile {
                points.push(skipped(
                    n,
                    "RLIMIT_NOFILE is too low for that many connections",
                ));
            } else {
                steps.push(n);
            }
        }
        let started = if steps.is_empty() {
            None
        } else {
            match peer.start().and_then(|mut server| {
                let pid = server.pid().map_err(|f| f.summary)?;
                Ok((server, pid))
            }) {
                Ok(started) => Some(started),
                Err(e) => {
                    results.notes.push(format!("{}: latency: {e}", peer.server));
                    None
                }
            }
        };
        if let Some((mut server, pid)) = started {
            let setup_limit_ms = if plan.quick { 10_000 } else { 60_000 };
            let run_limit_ms = if plan.quick { 2_000 } else { 6_000 };
            let job = LatencyJob {
                addr: server.addr,
                server_pids: vec![pid],
                idle_steps: steps.clone(),
                round_trips: plan.latency_round_trips,
                runs: plan.latency_runs,
                run_limit_ms,
                size: plan.latency_size,
                idle_cpu_ms: plan.idle_cpu_ms,
                setup_limit_ms,
            };
            let limit = Duration::from_millis(
                steps.len() as u64
                    * (setup_limit_ms
                        + plan.idle_cpu_ms
                        + plan.latency_runs as u64 * run_limit_ms
                        + 5_000),
            );
            let answer = loadgen(&Job::Latency(job), limit);
            let alive = server.alive();
            drop(server);
            let result = match answer {
                Ok(Outcome::Latency(r)) => r,
                Ok(_) => return Err("the generator answered another question".into()),
                Err(e) if e == "interrupted" => return Err(e),
                Err(e) => {
                    results.notes.push(format!("{}: latency: {e}", peer.server));
                    Default::default()
                }
            };
            if !alive {
                results.notes.push(format!(
                    "{}: the server died during the latency runs",
                    peer.server
                ));
            }
            for step in result.steps {
                let of = |f: fn(&loadgen::LatencyRun) -> Option<f64>| {
                    Summary::of(&step.runs.iter().filter_map(f).collect::<Vec<_>>())
                };
                points.push(LatencyPoint {
                    idle: step.idle,
                    median_us: of(|r| Some(r.median_us)),
                    p99_us: of(|r| Some(r.p99_us)),
                    cpu_per_rt_us: of(|r| r.server_cpu_us_per_rt),
                    idle_cpu: step.idle_cpu,
                    note: step.note,
                });
            }
        }
        points.sort_by_key(|p| p.idle);
        for p in &points {
            eprintln!(
                "  {:<6} {:>6} idle: {}",
                peer.server,
                p.idle,
                match (&p.median_us, &p.note) {
                    (Some(m), _) => format!("median {:.1} µs", m.median),
                    (None, Some(n)) => n.clone(),
                    (None, None) => "no figure".into(),
                }
            );
        }
        results.latency.push(LatencySeries {
            server: peer.server.clone(),
            label: peer.label.clone(),
            points,
        });
    }
    Ok(())
}

fn skipped(idle: usize, why: &str) -> LatencyPoint {
    LatencyPoint {
        idle,
        median_us: None,
        p99_us: None,
        cpu_per_rt_us: None,
        idle_cpu: None,
        note: Some(why.into()),
    }
}

// ---------------------------------------------------------------- throughput

fn loop_limit(plan: &Plan) -> Duration {
    Duration::from_millis(plan.warmup_ms + plan.window_ms + 20_000)
}

fn throughput_section(plan: &Plan, peers: &[&Peer], results: &mut Results) -> Result<(), String> {
    eprintln!("bench: throughput (echo round trips per second)");
    for &size in &plan.sizes {
        for &clients in &plan.clients {
            let mut runs: Vec<Vec<LoopResult>> = vec![Vec::new(); peers.len()];
            let mut notes: Vec<Option<String>> = vec![None; peers.len()];
            for _ in 0..plan.runs {
                for (k, peer) in peers.iter().enumerate() {
                    if peer.one_at_a_time && clients > 1 {
                        notes[k] = Some("one client at a time".into());
                        continue;
                    }
                    if peer.fd_setsize && clients + 16 > libc::FD_SETSIZE {
                        notes[k] = Some("beyond FD_SETSIZE".into());
                        continue;
                    }
                    match measure_loop(peer, clients, size, "", plan) {
                        Ok(r) => {
                            if r.note.is_some() {
                                notes[k] = r.note.clone();
                            }
                            runs[k].push(r);
                        }
                        Err(e) if e == "interrupted" => return Err(e),
                        Err(e) => notes[k] = Some(e),
                    }
                }
            }
            for (k, peer) in peers.iter().enumerate() {
                let cell = ThroughputCell {
                    server: peer.server.clone(),
                    label: peer.label.clone(),
                    clients,
                    size,
                    per_s: summary(&runs[k], |r| Some(r.per_s)),
                    gen_cpu: summary(&runs[k], |r| Some(r.gen_cpu)),
                    server_cpu: summary(&runs[k], |r| r.server_cpu),
                    cpu_us_per_rt: summary(&runs[k], cpu_us_per_exchange),
                    note: notes[k].clone(),
                };
                eprintln!(
                    "  {:<6} C={clients:<5} S={size:<6} {}",
                    peer.server,
                    match (&cell.per_s, &cell.note) {
                        (Some(s), _) => format!(
                            "{:.0}/s (gen {:.0}%, server {:.0}%)",
                            s.median,
                            cell.gen_cpu.map_or(f64::NAN, |c| c.median * 100.0),
                            cell.server_cpu.map_or(f64::NAN, |c| c.median * 100.0)
                        ),
                        (None, Some(n)) => n.clone(),
                        (None, None) => "no figure".into(),
                    }
                );
                results.throughput.push(cell);
            }
        }
    }
    Ok(())
}

/// The server's CPU time per completed exchange in a run, in µs.
fn cpu_us_per_exchange(r: &LoopResult) -> Option<f64> {
    let cpu = r.server_cpu?;
    (r.per_s > 0.0).then(|| cpu * 1e6 / r.per_s)
}

fn summary(runs: &[LoopResult], f: impl Fn(&LoopResult) -> Option<f64>) -> Option<Summary> {
    Summary::of(&runs.iter().filter_map(f).collect::<Vec<_>>())
}

/// One closed-loop run against a fresh server: echo (`path` empty) or HTTP.
fn measure_loop(
    peer: &Peer,
    clients: usize,
    size: usize,
    path: &str,
    plan: &Plan,
) -> Result<LoopResult, String> {
    let mut server = peer.start()?;
    let pid = server.pid().map_err(|f| f.summary)?;
    let job = LoopJob {
        addr: server.addr,
        server_pids: vec![pid],
        clients,
        size,
        path: path.to_string(),
        warmup_ms: plan.warmup_ms,
        window_ms: plan.window_ms,
        connect_limit_ms: 10_000,
    };
    let job = if path.is_empty() {
        Job::Throughput(job)
    } else {
        Job::Http(job)
    };
    let answer = loadgen(&job, loop_limit(plan));
    let alive = server.alive();
    drop(server);
    match answer? {
        Outcome::Loop(mut r) => {
            if !alive {
                r.note = Some("the server died during the run".into());
            }
            Ok(r)
        }
        _ => Err("the generator answered another question".into()),
    }
}

// ---------------------------------------------------------------- HTTP

fn http_section(
    plan: &Plan,
    stages: &[Stage],
    bin_dir: &Path,
    options: &Options,
    nginx_wanted: bool,
    results: &mut Results,
) -> Result<(), String> {
    eprintln!("bench: HTTP");
    let mut nginx = peers::nginx_binary().filter(|_| nginx_wanted);
    if nginx.is_none() && nginx_wanted && options.install_nginx {
        peers::install_nginx()?;
        nginx = peers::nginx_binary();
    }
    let tmp = target_dir().join(format!("netbook/bench-tmp-{}", std::process::id()));
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).map_err(|e| format!("cannot create {}: {e}", www.display()))?;
    // Readable by nginx's worker, which runs as nobody when started by root.
    for dir in [&tmp, &www] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    std::fs::write(www.join("bench.html"), page(plan.http_body))
        .map_err(|e| format!("cannot write the page: {e}"))?;
    let path = "/bench.html";

    let mut servers: Vec<HttpServer> = Vec::new();
    match stages.iter().find(|s| s.protocol == "http") {
        Some(ch08) => {
            let www_arg = www.to_string_lossy().into_owned();
            for (label, extra) in [("cork", None), ("no-cork", Some("--no-cork"))] {
                let mut args = vec!["--root".to_string(), www_arg.clone()];
                args.extend(extra.map(String::from));
                servers.push(HttpServer::Stage(Peer {
                    server: ch08.stage.clone(),
                    label: label.into(),
                    program: ch08.path(bin_dir),
                    args,
                    one_at_a_time: false,
                    fd_setsize: false,
                }));
            }
        }
        None => results.notes.push(
            "HTTP: no HTTP stage (ch08) on this branch: only nginx, if any, is measured".into(),
        ),
    }
    match &nginx {
        _ if !nginx_wanted => {}
        Some(bin) => {
            results.nginx = Some(peers::nginx_version(bin));
            servers.push(HttpServer::Nginx(bin.clone()));
        }
        None => results.notes.push(
            "HTTP: nginx is not installed: no nginx figures (cargo xtask bench --install-nginx \
             installs it with apt-get)"
                .into(),
        ),
    }
    let outcome = http_measure(plan, &servers, path, &tmp, results);
    let _ = std::fs::remove_dir_all(&tmp);
    outcome
}

enum HttpServer {
    Stage(Peer),
    Nginx(PathBuf),
}

impl HttpServer {
    fn names(&self) -> (String, String) {
        match self {
            HttpServer::Stage(p) => (p.server.clone(), p.label.clone()),
            HttpServer::Nginx(_) => ("nginx".into(), "1 worker, sendfile, tcp_nopush".into()),
        }
    }
}

/// A page of `size` bytes.
fn page(size: usize) -> Vec<u8> {
    let mut body = b"<!doctype html><title>netbook bench</title><p>".to_vec();
    while body.len() < size {
        body.push(b'a' + (body.len() % 26) as u8);
    }
    body.truncate(size);
    body
}

fn http_measure(
    plan: &Plan,
    servers: &[HttpServer],
    path: &str,
    tmp: &Path,
    results: &mut Results,
) -> Result<(), String> {
    for &clients in &plan.http_clients {
        let mut runs: Vec<Vec<LoopResult>> = vec![Vec::new(); servers.len()];
        let mut notes: Vec<Option<String>> = vec![None; servers.len()];
        for _ in 0..plan.runs {
            for (k, server) in servers.iter().enumerate() {
                let r = match server {
                    HttpServer::Stage(peer) => measure_loop(peer, clients, 0, path, plan),
                    HttpServer::Nginx(bin) => nginx_loop(bin, tmp, clients, path, plan),
                };
                match r {
                    Ok(r) => {
                        if r.note.is_some() {
                            notes[k] = r.note.clone();
                        }
                        runs[k].push(r);
                    }
                    Err(e) if e == "interrupted" => return Err(e),
                    Err(e) => notes[k] = Some(e),
                }
            }
        }
        for (k, server) in servers.iter().enumerate() {
            let (name, label) = server.names();
            let cell = HttpCell {
                server: name,
                label,
                clients,
                per_s: summary(&runs[k], |r| Some(r.per_s)),
                server_cpu: summary(&runs[k], |r| r.server_cpu),
                gen_cpu: summary(&runs[k], |r| Some(r.gen_cpu)),
                cpu_us_per_req: summary(&runs[k], cpu_us_per_exchange),
                note: notes[k].clone(),
            };
            eprintln!(
                "  {:<6} {:<8} C={clients:<4} {}",
                cell.server,
                cell.label.split(',').next().unwrap_or(""),
                match (&cell.per_s, &cell.note) {
                    (Some(s), _) => format!("{:.0} requests/s", s.median),
                    (None, Some(n)) => n.clone(),
                    (None, None) => "no figure".into(),
                }
            );
            results.http.push(cell);
        }
    }
    for server in servers {
        let (name, label) = server.names();
        let answer = (|| -> Result<loadgen::SegmentsResult, String> {
            let job = |addr| {
                Job::Segments(SegmentsJob {
                    addr,
                    path: path.to_string(),
                    requests: plan.segment_requests,
                })
            };
            let outcome = match server {
                HttpServer::Stage(peer) => {
                    let server = peer.start()?;
                    loadgen(&job(server.addr), Duration::from_secs(60))?
                }
                HttpServer::Nginx(bin) => {
                    let group = peers::start_nginx(bin, tmp, &tmp.join("www"))?;
                    loadgen(&job(group.addr), Duration::from_secs(60))?
                }
            };
            match outcome {
                Outcome::Segments(s) => Ok(s),
                _ => Err("the generator answered another question".into()),
            }
        })();
        let row = match answer {
            Ok(s) => SegmentsRow {
                server: name,
                label,
                per_response: Summary::of(
                    &s.per_response
                        .iter()
                        .map(|&n| f64::from(n))
                        .collect::<Vec<_>>(),
                ),
                responses: s.per_response.len(),
                response_bytes: s.response_bytes,
                note: s.note,
            },
            Err(e) if e == "interrupted" => return Err(e),
            Err(e) => SegmentsRow {
                server: name,
                label,
                per_response: None,
                responses: 0,
                response_bytes: 0,
                note: Some(e),
            },
        };
        eprintln!(
            "  {:<6} {:<8} segments per response: {}",
            row.server,
            row.label.split(',').next().unwrap_or(""),
            row.per_response.map_or_else(
                || row.note.clone().unwrap_or_default(),
                |s| format!(
                    "median {} (min {}, max {}) over {}",
                    s.median, s.min, s.max, row.responses
                )
            )
        );
        results.segments.push(row);
    }
    Ok(())
}

fn nginx_loop(
    bin: &Path,
    tmp: &Path,
    clients: usize,
    path: &str,
    plan: &Plan,
) -> Result<LoopResult, String> {
    let group = peers::start_nginx(bin, tmp, &tmp.join("www"))?;
    // Let the master start its worker before counting the group's CPU.
    std::thread::sleep(Duration::from_millis(50));
    let job = Job::Http(LoopJob {
        addr: group.addr,
        server_pids: group.pids(),
        clients,
        size: 0,
        path: path.to_string(),
        warmup_ms: plan.warmup_ms,
        window_ms: plan.window_ms,
        connect_limit_ms: 10_000,
    });
    let answer = loadgen(&job, loop_limit(plan));
    drop(group);
    match answer? {
        Outcome::Loop(r) => Ok(r),
        _ => Err("the generator answered another question".into()),
    }
}

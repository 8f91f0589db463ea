//! The servers under measurement: the stages (found on disk), the tokio
//! reference peer, and nginx.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conformance::server::{Launch, Server, ServerCommand};
use serde::Deserialize;

/// The stages the book has, in order. Each may or may not exist on this
/// branch yet: the bench measures those it finds.
pub const STAGES: [&str; 8] = [
    "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08",
];

/// A stage found on disk.
#[derive(Debug, Clone)]
pub struct Stage {
    /// `ch05`.
    pub stage: String,
    /// The cargo package and binary, `ch05-poll`.
    pub binary: String,
    /// `echo` or `http`.
    pub protocol: String,
    /// Serves one client at a time (ch01): only one client in the loops.
    pub one_at_a_time: bool,
    /// Multiplexes with select(): no descriptor may reach FD_SETSIZE.
    pub fd_setsize: bool,
    /// Where it was found: its profile, or its chapter directory.
    pub source: String,
}

impl Stage {
    /// `poll`, `epoll-level`: the binary's name without `chNN-`.
    pub fn label(&self) -> String {
        self.binary
            .split_once('-')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_else(|| self.binary.clone())
    }

    pub fn path(&self, bin_dir: &Path) -> PathBuf {
        bin_dir.join(&self.binary)
    }
}

/// The part of a profile the bench reads; anything else is ignored, so a
/// profile from a newer branch never stops the bench.
#[derive(Deserialize)]
struct ProfileHead {
    stage: String,
    binary: String,
    protocol: String,
    #[serde(default)]
    mechanism: Option<MechanismHead>,
    #[serde(default)]
    expect: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
struct MechanismHead {
    #[serde(default)]
    blocks_in: Vec<String>,
}

/// Every stage of [`STAGES`] this checkout has: from `tests/profiles/chNN.toml`
/// (variants such as `ch07-pitfall-*` are not benchmarked), or failing that from a
/// `chapters/chNN-*` crate. The notes say what is missing and why.
pub fn discover(root: &Path) -> (Vec<Stage>, Vec<String>) {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for name in STAGES {
        let profile = root.join("tests/profiles").join(format!("{name}.toml"));
        if profile.exists() {
            match read_profile(&profile) {
                Ok(stage) => {
                    found.push(stage);
                    continue;
                }
                Err(e) => notes.push(format!("{name}: {e}; looking for its chapter instead")),
            }
        }
        match chapter_dir(root, name) {
            Some(dir) => {
                let binary = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                notes.push(format!(
                    "{name}: no tests/profiles/{name}.toml yet; measured from chapters/{binary}"
                ));
                found.push(Stage {
                    stage: name.to_string(),
                    protocol: if name >= "ch08" { "http" } else { "echo" }.into(),
                    one_at_a_time: binary.contains("blocking"),
                    fd_setsize: binary.contains("select"),
                    source: format!("chapters/{binary}"),
                    binary,
                });
            }
            None => notes.push(format!(
                "{name}: not on this branch (no tests/profiles/{name}.toml, no chapters/{name}-*): skipped"
            )),
        }
    }
    (found, notes)
}

fn read_profile(path: &Path) -> Result<Stage, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let head: ProfileHead =
        toml::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let blocks_in = head.mechanism.map(|m| m.blocks_in).unwrap_or_default();
    Ok(Stage {
        one_at_a_time: head.expect.contains_key("concurrent-reverse"),
        fd_setsize: blocks_in.iter().any(|b| b == "select"),
        source: format!(
            "tests/profiles/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        stage: head.stage,
        binary: head.binary,
        protocol: head.protocol,
    })
}

fn chapter_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("chapters"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.join("Cargo.toml").exists()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}-")))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

/// Start a server that prints `listening on HOST:PORT` (a stage, or the tokio
/// peer) on an ephemeral loopback port. Dropping it kills its process group.
pub fn start(program: &Path, args: &[&str]) -> Result<Server, String> {
    let mut template = shell_quote(&program.to_string_lossy());
    for a in args {
        template.push(' ');
        template.push_str(&shell_quote(a));
    }
    template.push_str(" --listen {listen}");
    let command = ServerCommand::new(template)?;
    let launch = Launch {
        nofile: Some(crate::loadgen::nofile_hard_limit()),
        ..Launch::default()
    };
    Server::start(&command, &launch).map_err(|f| {
        let mut why = f.summary;
        if let Some(stderr) = f.server_stderr {
            why.push_str(&format!(" (stderr: {})", stderr.trim()));
        }
        why
    })
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

// ---------------------------------------------------------------- tokio

/// The reference peer: the echo server a Rust programmer would write with
/// tokio, on a current-thread runtime (one thread, like the stages), with
/// the same contract (`--listen`, the ready line). Like the stages it
/// leaves Nagle's algorithm on, unless `nodelay`.
pub fn tokio_echo(listen: SocketAddr, nodelay: bool) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot build the runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        drop(out);
        loop {
            let mut stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // EMFILE and friends: let the backlog wait a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if nodelay {
                // Segments leave at once instead of waiting (Nagle) for the
                // ACK of the previous one, which the client may delay 40 ms.
                let _ = stream.set_nodelay(true);
            }
            tokio::spawn(async move {
                // Allocated on the first byte, so idle connections cost no buffer.
                let mut buf = Vec::new();
                loop {
                    if stream.readable().await.is_err() {
                        return;
                    }
                    if buf.is_empty() {
                        buf = vec![0u8; 16 * 1024];
                    }
                    let n = match stream.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => return,
                    };
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

// ---------------------------------------------------------------- nginx

/// nginx from the distribution, if installed.
pub fn nginx_binary() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/nginx")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nginx")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// `apt-get install nginx`, only when asked (`--install-nginx`).
pub fn install_nginx() -> Result<(), String> {
    for args in [
        vec!["update", "-qq"],
        vec!["install", "-y", "-qq", "--no-install-recommends", "nginx"],
    ] {
        eprintln!("bench: apt-get {}", args.join(" "));
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

/// nginx's version line (`nginx version: nginx/1.26.3`).
pub fn nginx_version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default()
}

/// A process group we started (nginx): killed, every process of it, on drop.
pub struct Group {
    child: Child,
    pub addr: SocketAddr,
}

impl Group {
    /// Every process in the group (nginx's master and its worker).
    pub fn pids(&self) -> Vec<u32> {
        let leader = self.child.id();
        let mut pids = vec![leader];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if pid != leader && process_group(pid) == Some(leader) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let leader = self.child.id() as i32;
        // SIGTERM first: nginx's master stops its worker and reaps it, so no
        // zombie is left for init. Then SIGKILL whatever is left of the group.
        // SAFETY: kill() has no memory-safety preconditions.
        unsafe { libc::kill(leader, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above; the negative PID names the process group we created.
        unsafe { libc::kill(-leader, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// A port that was free a moment ago (nginx cannot report one it picked).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Start nginx, one worker, serving `www`, on a fresh loopback port. Its
/// configuration, logs and temporary files stay in `dir`.
pub fn start_nginx(nginx: &Path, dir: &Path, www: &Path) -> Result<Group, String> {
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, www, port))
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", nginx.display()))?;
    let stderr = child.stderr.take();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let group = Group { child, addr };
    wait_ready(group, stderr, Instant::now() + Duration::from_secs(10))
}

/// Wait until nginx answers on its port, or say why it never will.
fn wait_ready(
    mut group: Group,
    stderr: Option<std::process::ChildStderr>,
    deadline: Instant,
) -> Result<Group, String> {
    loop {
        if TcpStream::connect(group.addr).is_ok() {
            return Ok(group);
        }
        if let Ok(Some(status)) = group.child.try_wait() {
            let said = stderr
                .map(|s| {
                    BufReader::new(s)
                        .lines()
                        .map_while(Result::ok)
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default();
            return Err(format!("nginx exited ({status}): {said}"));
        }
        if Instant::now() > deadline {
            return Err("nginx did not answer within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One worker, no access log, sendfile and tcp_nopush (TCP_CORK) on as in
/// most production configurations, keep-alive effectively unlimited.
pub fn nginx_config(dir: &Path, www: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    types {{ text/html html; }}
    default_type application/octet-stream;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
        location / {{ }}
    }}
}}
",
        www = www.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_stages_from_profiles_and_chapters() {
        let dir = std::env::temp_dir().join(format!("netbook-bench-disc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tests/profiles")).unwrap();
        std::fs::create_dir_all(dir.join("chapters/ch02-busy-loop")).unwrap();
        std::fs::write(dir.join("chapters/ch02-busy-loop/Cargo.toml"), "").unwrap();
        std::fs::write(
            dir.join("tests/profiles/ch03.toml"),
            "stage = \"ch03\"\nbinary = \"ch03-select\"\nprotocol = \"echo\"\nfuture = 1\n\
             [mechanism]\nblocks_in = [\"select\"]\n",
        )
        .unwrap();
        let (found, notes) = discover(&dir);
        let names: Vec<&str> = found.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["ch02", "ch03"]);
        assert!(found[1].fd_setsize && !found[0].fd_setsize);
        assert_eq!(found[1].label(), "select");
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("ch01: not on this branch"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("/a/b-c"), "/a/b-c");
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}

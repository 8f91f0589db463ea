//! Starting, watching and stopping the server under test.
//!
//! The suite knows a server only by its command line, in which `{listen}`
//! (HOST:PORT), `{host}` and `{port}` are replaced by an address. It waits
//! for the ready line `listening on HOST:PORT`, and kills the server's whole
//! process group when done, so nothing it started outlives a check.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::report::Failure;

/// Process groups of servers still running, so that a check that overruns
/// can have its servers killed from outside.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// SIGKILL every server the suite started and has not yet stopped.
pub fn kill_all() {
    let groups = LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner());
    for &pgid in groups.iter() {
        // SAFETY: kill() has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// How long a server may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of the server's stderr to keep for failure reports.
const STDERR_KEEP: usize = 16 * 1024;

/// A server command line with `{listen}`, `{host}` or `{port}` in it.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    template: String,
}

impl ServerCommand {
    /// Fails if the template names no address at all: the suite could not
    /// tell the server where to listen.
    pub fn new(template: impl Into<String>) -> Result<ServerCommand, String> {
        let template = template.into();
        if !["{listen}", "{port}"].iter().any(|p| template.contains(p)) {
            return Err(format!(
                "the server command {template:?} must contain {{listen}} (HOST:PORT) or {{port}}, \
                 for example 'python3 server.py --listen {{listen}}'"
            ));
        }
        if shell_words(&template).is_none() {
            return Err(format!(
                "cannot split the server command {template:?} into words"
            ));
        }
        Ok(ServerCommand { template })
    }

    /// A command line used as it is, with nothing to substitute (the
    /// bad-arguments check builds its own).
    pub fn literal(line: String) -> ServerCommand {
        ServerCommand { template: line }
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// Does the server pick its own port when given port 0 (`{listen}`), or
    /// must the suite choose one (`{port}` only)?
    fn takes_listen(&self) -> bool {
        self.template.contains("{listen}")
    }

    /// The command line for `addr`, as a string a person can paste.
    pub fn render(&self, addr: SocketAddr) -> String {
        self.render_raw(
            &addr.to_string(),
            &addr.ip().to_string(),
            &addr.port().to_string(),
        )
    }

    /// The command line with arbitrary (possibly malformed) values.
    pub fn render_raw(&self, listen: &str, host: &str, port: &str) -> String {
        self.template
            .replace("{listen}", listen)
            .replace("{host}", host)
            .replace("{port}", port)
    }
}

/// Split a command into words; `None` if the quoting is broken.
fn shell_words(command: &str) -> Option<Vec<String>> {
    shlex::split(command).filter(|w| !w.is_empty())
}

/// Does the command need a shell (pipes, `&&`, variables, redirections)?
fn needs_shell(command: &str) -> bool {
    command.contains(['|', '&', ';', '$', '<', '>', '`', '(', ')', '*'])
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Listen here instead of on a fresh ephemeral port.
    pub addr: Option<SocketAddr>,
    /// Give the server this RLIMIT_NOFILE (soft and hard).
    pub nofile: Option<u64>,
    /// Extra words appended to the command line.
    pub extra_args: Vec<String>,
}

/// A running (or exited) server process.
pub struct Server {
    child: Child,
    /// The address it listens on (from its ready line).
    pub addr: SocketAddr,
    /// The exact command line it was started with.
    pub command_line: String,
    pid: Option<u32>,
    extra_stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<StderrTail>>,
    exit: Option<ExitStatus>,
}

#[derive(Default)]
struct StderrTail {
    kept: VecDeque<u8>,
    total: usize,
}

/// The result of starting a process that may or may not become ready.
pub enum Started {
    Ready(Server),
    /// It exited before printing the ready line.
    Exited {
        status: ExitStatus,
        stderr: String,
        command_line: String,
    },
}

impl Server {
    /// Start the server and wait for its ready line. Any problem is a
    /// failure that says what the server did instead.
    pub fn start(command: &ServerCommand, launch: &Launch) -> Result<Server, Failure> {
        match Server::spawn(command, launch)? {
            Started::Ready(server) => Ok(server),
            Started::Exited {
                status,
                stderr,
                command_line,
            } => Err(Failure::new(format!(
                "the server exited ({}) before printing `listening on HOST:PORT`",
                describe_status(status)
            ))
            .reproduce(command_line)
            .hint(if stderr.contains("panicked at") {
                "it panicked: its stderr below says where (in a starter, a `todo!` names the \
                 exercise to write)"
            } else {
                "print exactly `listening on HOST:PORT` to stdout and flush it once the socket \
                 listens"
            })
            .with_stderr(&stderr)),
        }
    }

    /// Start the process; report whether it became ready or exited first.
    pub fn spawn(command: &ServerCommand, launch: &Launch) -> Result<Started, Failure> {
        let addr = match (launch.addr, command.takes_listen()) {
            (Some(addr), _) => addr,
            (None, true) => SocketAddr::from(([127, 0, 0, 1], 0)),
            (None, false) => SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        };
        let mut line = command.render(addr);
        for word in &launch.extra_args {
            line.push(' ');
            line.push_str(&shlex::try_quote(word).map_err(|e| Failure::new(e.to_string()))?);
        }
        let direct = !needs_shell(&line);
        let mut cmd = if direct {
            let words = shell_words(&line)
                .ok_or_else(|| Failure::new(format!("cannot split {line:?} into words")))?;
            let mut cmd = Command::new(&words[0]);
            cmd.args(&words[1..]);
            cmd
        } else {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(&line);
            cmd
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(limit) = launch.nofile {
            // SAFETY: pre_exec runs in the forked child before exec; it only
            // calls setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            Failure::new(format!("cannot start the server command {line:?}: {e}"))
                .hint("check the path of the program and that it is executable")
        })?;

        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child.id() as i32);
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let extra_stdout = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout was piped");
        let extra = Arc::clone(&extra_stdout);
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).split(b'\n');
            if let Some(Ok(first)) = lines.next() {
                let _ = ready_tx.send(String::from_utf8_lossy(&first).into_owned());
            }
            // Keep draining so that a chatty server never blocks on a full
            // pipe, but remember only the first few lines.
            for l in lines.map_while(Result::ok) {
                let mut kept = extra.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() < 20 {
                    kept.push(String::from_utf8_lossy(&l).into_owned());
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(StderrTail::default()));
        let stderr = child.stderr.take().expect("stderr was piped");
        let tail = Arc::clone(&stderr_tail);
        let (stderr_done_tx, stderr_done) = mpsc::channel::<()>();
        thread::spawn(move || {
            drain_stderr(stderr, tail);
            let _ = stderr_done_tx.send(());
        });

        let mut server = Server {
            child,
            addr,
            command_line: line.clone(),
            pid: None,
            extra_stdout,
            stderr: stderr_tail,
            exit: None,
        };
        match server.await_ready(&ready_rx, command.takes_listen() || launch.addr.is_some())? {
            Some(ready_addr) => {
                server.addr = ready_addr;
                server.pid = if direct {
                    Some(server.child.id())
                } else {
                    None
                };
                Ok(Started::Ready(server))
            }
            None => {
                let status = server.wait_exit(Duration::from_secs(2)).unwrap_or_else(|| {
                    // Unreachable in practice: await_ready saw it exit.
                    ExitStatus::from_raw(0)
                });
                // Let the drain thread reach the end of the pipe, so the
                // report shows everything the server said before exiting.
                let _ = stderr_done.recv_timeout(Duration::from_secs(1));
                Ok(Started::Exited {
                    status,
                    stderr: server.stderr_tail(),
                    command_line: line,
                })
            }
        }
    }

    /// Wait for the ready line; `Ok(None)` if the process exited first.
    fn await_ready(
        &mut self,
        ready: &Receiver<String>,
        needs_line: bool,
    ) -> Result<Option<SocketAddr>, Failure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => return self.parse_ready_line(&line).map(Some),
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: either it exited, or it closed stdout.
                    if self.wait_exit(Duration::from_millis(500)).is_some() {
                        return Ok(None);
                    }
                    if !needs_line && TcpStream::connect(self.addr).is_ok() {
                        return Ok(Some(self.addr));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.try_exit().is_some() {
                        return Ok(None);
                    }
                    // A server told its port (`{port}`) may forget the ready
                    // line; the ready-line check will say so, the others can
                    // still run once the port answers.
                    if !needs_line && TcpStream::connect(self.addr).is_ok() {
                        return Ok(Some(self.addr));
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Failure::new(format!(
                    "no ready line within {} s",
                    READY_TIMEOUT.as_secs()
                ))
                .reproduce(self.command_line.clone())
                .hint(
                    "print `listening on HOST:PORT` to stdout and flush it: a pipe is block-buffered, \
                     so without a flush the line sits in your process (Python: print(..., flush=True))",
                )
                .with_stderr(&self.stderr_tail()));
            }
        }
    }

    fn parse_ready_line(&self, line: &str) -> Result<SocketAddr, Failure> {
        let bad = |why: &str| {
            Failure::new(format!("bad ready line: {why}"))
                .detail(format!(
                    "received: {}",
                    crate::report::escape(line.as_bytes(), 120)
                ))
                .detail(
                    "expected: \"listening on HOST:PORT\", e.g. \"listening on 127.0.0.1:41234\"",
                )
                .reproduce(self.command_line.clone())
                .with_stderr(&self.stderr_tail())
        };
        let Some(rest) = line.strip_prefix("listening on ") else {
            return Err(bad("it must start with `listening on `"));
        };
        let addr: SocketAddr = rest
            .trim_end_matches('\r')
            .parse()
            .map_err(|_| bad("HOST:PORT does not parse as an address"))?;
        if addr.port() == 0 {
            return Err(bad(
                "it shows port 0: print the port the kernel chose (getsockname)",
            ));
        }
        if self.addr.port() != 0 && addr.port() != self.addr.port() {
            return Err(bad(&format!(
                "it was told port {} but announced {}",
                self.addr.port(),
                addr.port()
            )));
        }
        Ok(addr)
    }

    /// The server's PID, found through its listening socket when it was
    /// started by a shell.
    pub fn pid(&mut self) -> Result<u32, Failure> {
        if let Some(pid) = self.pid {
            return Ok(pid);
        }
        let pid =
            crate::procfs::listener_pid(self.child.id(), self.addr.port()).ok_or_else(|| {
                Failure::new(format!(
                    "cannot find the process listening on port {} in the server's process group",
                    self.addr.port()
                ))
            })?;
        self.pid = Some(pid);
        Ok(pid)
    }

    /// Lines the server printed to stdout after the ready line.
    pub fn extra_stdout(&self) -> Vec<String> {
        self.extra_stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last lines of the server's stderr.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = tail.kept.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(12);
        lines[from..].join("\n")
    }

    /// Send a signal to the server process itself.
    pub fn signal(&mut self, signal: i32) -> Result<(), Failure> {
        let pid = self.pid()?;
        // SAFETY: kill() has no memory-safety preconditions.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(Failure::new(format!(
                "cannot signal the server: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Has it exited? (Does not block.)
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Is it still running?
    pub fn alive(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// A failure unless the server is still running.
    pub fn require_alive(&mut self, during: &str) -> Result<(), Failure> {
        match self.try_exit() {
            None => Ok(()),
            Some(status) => Err(Failure::new(format!(
                "the server died {during} ({})",
                describe_status(status)
            ))
            .with_stderr(&self.stderr_tail())),
        }
    }

    /// SIGKILL the whole process group and reap it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            // SAFETY: kill() has no memory-safety preconditions; the negative
            // PID names the process group we created for the server.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
            self.exit = Some(ExitStatus::from_raw(libc::SIGKILL));
        } else {
            // The leader is gone; make sure nothing else in its group lingers.
            // SAFETY: as above.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
    }
}

thread_local! {
    /// The last server on this thread that died on its own (not killed by
    /// us), with its status and stderr: a check's failure may not say so.
    static DIED: std::cell::RefCell<Option<(String, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// Take the status and stderr of the last server this thread started that
/// died on its own (a panic, a crash), if any.
pub fn take_died() -> Option<(String, String)> {
    DIED.with(|d| d.borrow_mut().take())
}

impl Drop for Server {
    fn drop(&mut self) {
        // A panic prints first and closes the sockets while it unwinds, so a
        // client may see EOF before the process has exited: let it finish.
        let crashed = |tail: &str| {
            tail.contains("panicked at") || tail.contains("Traceback (most recent call last)")
        };
        let mut status = self.try_exit();
        if status.is_none() && crashed(&self.stderr_tail()) {
            status = self.wait_exit(Duration::from_millis(500));
        }
        let died = status.filter(|s| !s.success() && s.signal() != Some(libc::SIGKILL));
        self.kill();
        let stderr = self.stderr_tail();
        if died.is_some() || crashed(&stderr) {
            let how = died.map_or_else(|| "it crashed".to_string(), describe_status);
            DIED.with(|d| *d.borrow_mut() = Some((how, stderr)));
        }
        let pgid = self.child.id() as i32;
        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&g| g != pgid);
    }
}

impl Failure {
    /// Attach the server's last stderr lines, if it printed any.
    pub fn with_stderr(mut self, stderr: &str) -> Failure {
        if !stderr.trim().is_empty() {
            self.server_stderr = Some(stderr.to_string());
        }
        self
    }
}

fn drain_stderr(mut stderr: impl Read, tail: Arc<Mutex<StderrTail>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.total += n;
        tail.kept.extend(&buf[..n]);
        let excess = tail.kept.len().saturating_sub(STDERR_KEEP);
        tail.kept.drain(..excess);
    }
}

/// "exit status 1", "killed by SIGSEGV", ...
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => format!("killed by {}", signal_name(sig)),
        None => status.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGABRT => "SIGABRT (an abort: a Rust panic in a non-unwinding function, or FD_SET past FD_SETSIZE?)".into(),
        libc::SIGSEGV => "SIGSEGV (memory corruption)".into(),
        libc::SIGPIPE => "SIGPIPE (a write to a closed connection without MSG_NOSIGNAL)".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        other => format!("signal {other}"),
    }
}

/// A port that was free a moment ago, for servers that take `{port}`.
pub fn free_port() -> Result<u16, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

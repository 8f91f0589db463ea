//! `netbook-mutant`: a correct poll(2) echo server with one defect switched on
//! at a time, to prove that each check of the suite catches the mistake it is
//! written for, and that the other checks do not blame it wrongly.
//!
//! ```text
//! netbook-mutant --listen 127.0.0.1:0 [--defect NAME]
//! ```
//!
//! Without `--defect` it passes every echo, load and mechanism check of a
//! poll stage. `--defect list` prints the defects.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// The defects, each a classic mistake.
const DEFECTS: &[(&str, &str)] = &[
    (
        "drop-partial",
        "tiny send buffer, and the unsent rest of a partial send() is dropped",
    ),
    (
        "close-on-eof",
        "on EOF closes at once, dropping what was read but not yet echoed",
    ),
    (
        "dies-on-reset",
        "exits when a connection reports ECONNRESET or EPIPE",
    ),
    ("one-at-a-time", "serves one connection at a time, blocking"),
    ("spin", "poll() with a zero timeout: never sleeps"),
    (
        "unbounded",
        "keeps reading from a client that does not read: the queue grows without bound",
    ),
    ("threaded", "a thread per connection, with blocking I/O"),
    ("no-reuseaddr", "does not set SO_REUSEADDR"),
    (
        "panic-on-bad-args",
        "unwraps its arguments: a malformed one panics",
    ),
    ("ignore-sigterm", "ignores SIGTERM"),
    ("ignore-sigint", "ignores SIGINT"),
    (
        "reuseport",
        "sets SO_REUSEPORT, so a second server may share its port",
    ),
    (
        "no-eof-close",
        "never closes a connection whose client has finished sending",
    ),
    (
        "stray-epoll",
        "holds an epoll instance, as an epoll server would, while it polls",
    ),
    (
        "emfile-spin",
        "keeps polling the listener when accept() fails with EMFILE",
    ),
    (
        "chatty-stdout",
        "prints a line to stdout for every connection",
    ),
    (
        "fd-set-overflow",
        "puts every descriptor in an fd_set, as a select server would, even past FD_SETSIZE",
    ),
];

/// How many bytes a connection may have queued before we stop reading it.
const QUEUE_LIMIT: usize = 256 * 1024;

struct Conn {
    socket: Socket,
    queue: VecDeque<u8>,
    peer_closed: bool,
}

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let defect = word_after(&words, "--defect").unwrap_or_default();
    if defect == "list" {
        for (name, what) in DEFECTS {
            println!("{name:<18} {what}");
        }
        return;
    }
    if !defect.is_empty() && !DEFECTS.iter().any(|(n, _)| *n == defect) {
        fail(&format!("unknown defect {defect:?} (try --defect list)"));
    }
    let has = |name: &str| defect == name;
    let listen = word_after(&words, "--listen").unwrap_or_else(|| "127.0.0.1:7099".into());
    let listen: SocketAddr = if has("panic-on-bad-args") {
        listen.parse().unwrap()
    } else {
        listen
            .parse()
            .unwrap_or_else(|_| fail(&format!("--listen {listen:?}: expected HOST:PORT")))
    };
    if let Some(unknown) = words
        .iter()
        .enumerate()
        .find(|(i, w)| {
            w.starts_with("--")
                && !["--listen", "--defect"].contains(&w.as_str())
                && (*i == 0 || !["--listen", "--defect"].contains(&words[i - 1].as_str()))
        })
        .map(|(_, w)| w)
    {
        if !has("panic-on-bad-args") {
            fail(&format!("unknown option {unknown}"));
        }
    }

    install_signals(has("ignore-sigterm"), has("ignore-sigint"));
    let listener = Socket::new(Domain::for_address(listen), Type::STREAM, None)
        .unwrap_or_else(|e| fail(&format!("socket: {e}")));
    if !has("no-reuseaddr") {
        listener
            .set_reuse_address(true)
            .unwrap_or_else(|e| fail(&format!("SO_REUSEADDR: {e}")));
    }
    if has("reuseport") {
        listener
            .set_reuse_port(true)
            .unwrap_or_else(|e| fail(&format!("SO_REUSEPORT: {e}")));
    }
    // Kept open for the life of the process, registered with the listener.
    let _stray_epoll = has("stray-epoll").then(|| {
        // SAFETY: epoll_create1 and epoll_ctl on descriptors this process owns.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), &mut ev);
            ep
        }
    });
    if let Err(e) = listener
        .bind(&listen.into())
        .and_then(|_| listener.listen(1024))
    {
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            fail(&format!(
                "cannot listen on {listen}: address already in use"
            ));
        }
        fail(&format!("cannot listen on {listen}: {e}"));
    }
    let local = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or_else(|| fail("getsockname failed"));
    println!("listening on {local}");
    let _ = io::stdout().flush();

    if has("one-at-a-time") {
        serve_one_at_a_time(&listener);
    } else if has("threaded") {
        serve_threaded(&listener);
    } else {
        serve_poll(listener, &defect);
    }
}

fn serve_poll(listener: Socket, defect: &str) {
    let has = |name: &str| defect == name;
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| fail(&format!("O_NONBLOCK: {e}")));
    let mut conns: Vec<Conn> = Vec::new();
    let mut listener_paused_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while !stopping() {
        if listener_paused_until.is_some_and(|t| Instant::now() >= t) {
            listener_paused_until = None;
        }
        let mut fds = Vec::with_capacity(conns.len() + 1);
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: if listener_paused_until.is_none() {
                libc::POLLIN
            } else {
                0
            },
            revents: 0,
        });
        for c in &conns {
            let mut events = 0;
            if !c.peer_closed && (c.queue.len() < QUEUE_LIMIT || has("unbounded")) {
                events |= libc::POLLIN;
            }
            if !c.queue.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.socket.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        if has("fd-set-overflow") {
            // SAFETY: an all-zero fd_set is a valid empty set.
            let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
            for f in &fds {
                // SAFETY: deliberately wrong past FD_SETSIZE: that is this defect.
                unsafe { libc::FD_SET(f.fd, &mut set) };
            }
        }
        let timeout = if has("spin") {
            0
        } else if listener_paused_until.is_some() {
            50
        } else {
            -1
        };
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue; // EINTR: look at the stop flag.
        }
        // Connections accepted now join after this turn: fds[] describes the old ones.
        let mut fresh = Vec::new();
        if fds[0].revents & libc::POLLIN != 0 {
            loop {
                match listener.accept() {
                    Ok((socket, _)) => {
                        if has("chatty-stdout") {
                            println!("accepted a connection");
                        }
                        let _ = socket.set_nonblocking(true);
                        if has("drop-partial") {
                            let _ = socket.set_send_buffer_size(4096);
                        }
                        fresh.push(Conn {
                            socket,
                            queue: VecDeque::new(),
                            peer_closed: false,
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        if !has("emfile-spin") {
                            listener_paused_until =
                                Some(Instant::now() + Duration::from_millis(100));
                        }
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let mut closed = vec![false; conns.len()];
        for (i, c) in conns.iter_mut().enumerate() {
            let revents = fds[i + 1].revents;
            if revents == 0 {
                continue;
            }
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !c.peer_closed {
                // close-on-eof reads twice per event, so that data and a FIN
                // arriving together are both seen before anything is echoed.
                let reads = if has("close-on-eof") { 2 } else { 1 };
                for _ in 0..reads {
                    match (&c.socket).read(&mut buf) {
                        Ok(0) => {
                            c.peer_closed = true;
                            if has("close-on-eof") {
                                c.queue.clear();
                            }
                            break;
                        }
                        Ok(n) => c.queue.extend(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            on_conn_error(&e, defect);
                            closed[i] = true;
                            break;
                        }
                    }
                }
            }
            if !closed[i] && !c.queue.is_empty() {
                let (front, _) = c.queue.as_slices();
                match c.socket.send_with_flags(front, libc::MSG_NOSIGNAL) {
                    Ok(n) => {
                        if has("drop-partial") {
                            c.queue.clear();
                        } else {
                            c.queue.drain(..n);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        on_conn_error(&e, defect);
                        closed[i] = true;
                    }
                }
            }
            if c.peer_closed && c.queue.is_empty() && !has("no-eof-close") {
                closed[i] = true;
            }
        }
        let mut i = 0;
        conns.retain(|_| {
            let keep = !closed[i];
            i += 1;
            keep
        });
        conns.append(&mut fresh);
    }
}

fn on_conn_error(e: &io::Error, defect: &str) {
    if defect == "dies-on-reset" && matches!(e.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE))
    {
        eprintln!("netbook-mutant: connection error {e}: giving up");
        std::process::exit(1);
    }
}

fn serve_one_at_a_time(listener: &Socket) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stopping() {
        let Ok((socket, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        echo_blocking(&socket, &mut buf);
    }
}

fn echo_blocking(socket: &Socket, buf: &mut [u8]) {
    loop {
        match (&*socket).read(buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut data = &buf[..n];
                while !data.is_empty() {
                    match socket.send_with_flags(data, libc::MSG_NOSIGNAL) {
                        Ok(k) => data = &data[k..],
                        Err(e) if e.kind() == io::ErrorKind::Interrupted && !stopping() => {}
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

fn serve_threaded(listener: &Socket) {
    while !stopping() {
        let Ok((socket, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        std::thread::spawn(move || echo_blocking(&socket, &mut vec![0u8; 16 * 1024]));
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stopping() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

fn install_signals(ignore_sigterm: bool, ignore_sigint: bool) {
    extern "C" fn on_stop(_: libc::c_int) {
        STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        // Blocking mutants may not see EINTR on the thread that waits;
        // a mutant need not be graceful, only exit 0.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    for (signal, handler) in [
        (
            libc::SIGINT,
            if ignore_sigint {
                libc::SIG_IGN
            } else {
                on_stop as *const () as libc::sighandler_t
            },
        ),
        (
            libc::SIGTERM,
            if ignore_sigterm {
                libc::SIG_IGN
            } else {
                on_stop as *const () as libc::sighandler_t
            },
        ),
        (libc::SIGPIPE, libc::SIG_IGN),
    ] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn word_after(words: &[String], flag: &str) -> Option<String> {
    words
        .iter()
        .position(|w| w == flag)
        .and_then(|i| words.get(i + 1).cloned())
}

fn fail(message: &str) -> ! {
    eprintln!("netbook-mutant: error: {message}");
    std::process::exit(2);
}

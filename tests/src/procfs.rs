//! What /proc says about the server, read without privileges.
//!
//! The mechanism checks use this to see *how* a server works: its threads,
//! the system call each thread is blocked in, and what its epoll instance
//! watches. CPU and memory figures come from here too.

use std::fs;
use std::time::{Duration, Instant};

/// CPU time (user + system) the process has used, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ... utime(14) stime(15), counted from 1 in proc(5).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The process group of a process.
fn pgrp(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Nanoseconds all the process's threads spent running or waiting to run
/// (on a run queue), from /proc/PID/task/*/schedstat.
fn runnable_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        total += fields.next().unwrap_or(0) + fields.next().unwrap_or(0);
        any = true;
    }
    any.then_some(total)
}

/// How busy a process is over a window, in two measures.
#[derive(Debug, Clone, Copy)]
pub struct Busy {
    /// CPU time used / wall time (1.0 = a whole core).
    pub cpu: f64,
    /// Time running or waiting to run / wall time: a process that never
    /// sleeps scores about 1.0 per thread however loaded the machine is,
    /// while its CPU share drops when other processes compete for the cores.
    pub runnable: f64,
}

impl Busy {
    /// The measure to judge by: runnable share where the kernel keeps
    /// schedstat (load-proof), else CPU share.
    pub fn judged(&self) -> f64 {
        self.runnable.max(self.cpu)
    }
}

/// CPU and runnable share of the process over `window`.
pub fn busy(pid: u32, window: Duration) -> Option<Busy> {
    let ticks0 = cpu_ticks(pid)?;
    let run0 = runnable_ns(pid);
    let start = Instant::now();
    std::thread::sleep(window);
    let ticks = cpu_ticks(pid)?.saturating_sub(ticks0);
    let wall = start.elapsed().as_secs_f64();
    let cpu = ticks as f64 / clock_ticks_per_second() / wall;
    let runnable = match (run0, runnable_ns(pid)) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9 / wall,
        _ => cpu,
    };
    Some(Busy { cpu, runnable })
}

/// A field in kB from /proc/PID/status, in bytes.
fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let value = line[name.len()..].trim_start_matches(':').trim();
    let number: u64 = value.split_whitespace().next()?.parse().ok()?;
    Some(if value.ends_with("kB") {
        number * 1024
    } else {
        number
    })
}

/// Resident memory, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

/// How many threads the process has.
pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads")
}

/// What each thread is doing right now: `None` for running, or the number
/// of the system call it is blocked in.
pub fn thread_syscalls(pid: u32) -> Vec<(u32, Option<i64>)> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(text) = fs::read_to_string(task.path().join("syscall")) else {
            continue;
        };
        let first = text.split_whitespace().next().unwrap_or("");
        // "running", or a syscall number; -1 means blocked outside a syscall.
        out.push((tid, first.parse::<i64>().ok().filter(|&n| n >= 0)));
    }
    out
}

/// The families of blocking calls the mechanism checks speak of.
pub fn syscall_family(nr: i64) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let family = match nr {
        43 | 288 => "accept",
        0 | 17 | 19 | 45 | 47 | 295 => "read",
        1 | 18 | 20 | 44 | 46 | 296 | 40 => "write",
        23 | 270 => "select",
        7 | 271 => "poll",
        232 | 281 | 441 => "epoll",
        35 | 230 => "sleep",
        202 => "futex",
        61 | 247 => "wait",
        _ => "other",
    };
    #[cfg(target_arch = "aarch64")]
    let family = match nr {
        202 | 242 => "accept",
        63 | 65 | 207 | 212 | 67 => "read",
        64 | 66 | 206 | 211 | 68 | 71 => "write",
        72 => "select",
        73 => "poll",
        22 | 441 => "epoll",
        101 | 115 => "sleep",
        98 => "futex",
        260 | 95 => "wait",
        _ => "other",
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let family = {
        let _ = nr;
        "other"
    };
    family
}

/// Socket inodes on `port` from /proc/net/tcp{,6}: (inode, is_listener, remote port).
fn sockets_on_port(port: u16) -> Vec<(u64, bool, u16)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let remote_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let (Some(lp), Some(rp)) = (local_port, remote_port) else {
                continue;
            };
            if lp != port {
                continue;
            }
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            if inode != 0 {
                out.push((inode, f[3] == "0A", rp));
            }
        }
    }
    out
}

/// The process's descriptors: (fd, link target).
pub fn fds(pid: u32) -> Vec<(i32, String)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<(i32, String)> = dir
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    out.sort();
    out
}

/// The PID in `leader`'s process group that holds the socket listening on `port`.
pub fn listener_pid(leader: u32, port: u16) -> Option<u32> {
    let inodes: Vec<String> = sockets_on_port(port)
        .into_iter()
        .filter(|s| s.1)
        .map(|s| format!("socket:[{}]", s.0))
        .collect();
    let procs = fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid != leader && pgrp(pid) != Some(leader) {
            continue;
        }
        if fds(pid).iter().any(|(_, t)| inodes.contains(t)) {
            return Some(pid);
        }
    }
    None
}

/// The server's descriptors for its listener and for connections whose
/// remote (client) port is in `client_ports`.
pub fn server_socket_fds(pid: u32, port: u16, client_ports: &[u16]) -> (Vec<i32>, Vec<i32>) {
    let sockets = sockets_on_port(port);
    let mut listeners = Vec::new();
    let mut conns = Vec::new();
    for (fd, target) in fds(pid) {
        for &(inode, listening, remote) in &sockets {
            if target == format!("socket:[{inode}]") {
                if listening {
                    listeners.push(fd);
                } else if client_ports.contains(&remote) {
                    conns.push(fd);
                }
            }
        }
    }
    (listeners, conns)
}

/// One registration in an epoll instance, from /proc/PID/fdinfo.
#[derive(Debug, Clone, Copy)]
pub struct EpollEntry {
    pub fd: i32,
    pub events: u32,
}

/// EPOLLET in the `events` mask.
pub const EPOLLET: u32 = 1 << 31;

/// Every epoll instance the process holds: (its fd, what it watches).
pub fn epoll_instances(pid: u32) -> Vec<(i32, Vec<EpollEntry>)> {
    let mut out = Vec::new();
    for (fd, target) in fds(pid) {
        if target != "anon_inode:[eventpoll]" {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let mut entries = Vec::new();
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |name: &str| {
                words
                    .iter()
                    .position(|w| *w == name)
                    .and_then(|i| words.get(i + 1))
                    .copied()
            };
            let (Some(tfd), Some(events)) = (field("tfd:"), field("events:")) else {
                continue;
            };
            if let (Ok(fd), Ok(events)) = (tfd.parse(), u32::from_str_radix(events, 16)) {
                entries.push(EpollEntry { fd, events });
            }
        }
        out.push((fd, entries));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinning_process_is_runnable_all_the_time_and_a_sleeping_one_is_not() {
        // Child processes, not threads of this one: cargo test runs other
        // tests as threads of this very process, so it is never idle.
        let mut spinner = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let spinning = busy(spinner.id(), Duration::from_millis(500)).unwrap();
        let sleeping = busy(sleeper.id(), Duration::from_millis(500)).unwrap();
        for child in [&mut spinner, &mut sleeper] {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Runnable counts time spent waiting for a core too, so a spinner
        // scores near 1.0 however loaded the machine is.
        assert!(spinning.runnable > 0.8, "{spinning:?}");
        assert!(sleeping.judged() < 0.05, "{sleeping:?}");
    }

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(threads(me).unwrap() >= 1);
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        assert!(cpu_ticks(me).is_some());
    }

    #[test]
    fn finds_a_listener_and_its_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        let (listeners, _) = server_socket_fds(me, port, &[]);
        use std::os::fd::AsRawFd;
        assert_eq!(listeners, vec![listener.as_raw_fd()]);
        let leader = pgrp(me).unwrap();
        assert_eq!(listener_pid(leader, port), Some(me));
    }

    #[test]
    fn reads_epoll_registrations_and_the_et_bit() {
        // SAFETY: plain syscalls on descriptors this test owns.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(ep >= 0);
            let mut pipe = [0i32; 2];
            assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0);
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 7,
            };
            assert_eq!(
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, pipe[0], &mut ev),
                0
            );
            let found = epoll_instances(std::process::id());
            let (_, entries) = found.iter().find(|(fd, _)| *fd == ep).unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].fd, pipe[0]);
            assert_ne!(entries[0].events & EPOLLET, 0);
            libc::close(ep);
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
    }
}

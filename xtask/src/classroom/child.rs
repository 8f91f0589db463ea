//! Running a student's build or a grading run as a child process: a time
//! limit, output kept to a bounded tail, and everything it started killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    Exited(ExitStatus),
    /// Killed, with everything it started, at the time limit.
    TimedOut,
}

/// The end of what a child wrote: at most `keep` bytes, and how many in all.
#[derive(Debug, Default)]
pub struct Tail {
    pub kept: VecDeque<u8>,
    pub total: u64,
    keep: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.kept.extend(bytes);
        let excess = self.kept.len().saturating_sub(self.keep);
        self.kept.drain(..excess);
    }

    /// The kept bytes as text, with a note when some were dropped.
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.kept.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let dropped = self.total - self.kept.len() as u64;
        if dropped > 0 {
            format!("[... {dropped} earlier bytes not kept ...]\n{text}")
        } else {
            text
        }
    }
}

/// What came of running a child.
#[derive(Debug)]
pub struct Run {
    pub ended: Ended,
    pub stdout: Tail,
    pub stderr: Tail,
}

/// The longest stdout line handed to `on_line`; longer ones are cut.
const MAX_LINE: usize = 1 << 20;

/// Run `cmd` for at most `limit`, keeping the last `keep` bytes of stdout
/// and of stderr, and handing each stdout line (cut at 1 MiB) to `on_line`.
/// At the limit, the child and every process it started are killed.
pub fn run(
    mut cmd: Command,
    limit: Duration,
    keep: usize,
    mut on_line: impl FnMut(&[u8]) + Send + 'static,
) -> std::io::Result<Run> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let out_tail = Arc::new(Mutex::new(Tail {
        keep,
        ..Tail::default()
    }));
    let err_tail = Arc::new(Mutex::new(Tail {
        keep,
        ..Tail::default()
    }));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    {
        let tail = Arc::clone(&out_tail);
        let done = done_tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                // Read one line, but never hold more than MAX_LINE of it.
                let mut cut = false;
                let n = loop {
                    let buf = match reader.fill_buf() {
                        Ok(buf) => buf,
                        Err(_) => break 0,
                    };
                    if buf.is_empty() {
                        break line.len();
                    }
                    let (take, end) = match buf.iter().position(|&b| b == b'\n') {
                        Some(i) => (i + 1, true),
                        None => (buf.len(), false),
                    };
                    let room = MAX_LINE.saturating_sub(line.len());
                    line.extend_from_slice(&buf[..take.min(room)]);
                    cut |= take > room;
                    lock(&tail).push(&buf[..take]);
                    reader.consume(take);
                    if end {
                        break line.len().max(1);
                    }
                };
                if n == 0 {
                    break;
                }
                if !cut {
                    on_line(&line);
                }
            }
            let _ = done.send(());
        });
    }
    {
        let tail = Arc::clone(&err_tail);
        let done = done_tx;
        thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                lock(&tail).push(&buf[..n]);
            }
            let _ = done.send(());
        });
    }
    let deadline = start + limit;
    let ended = loop {
        if let Some(status) = child.try_wait()? {
            break Ended::Exited(status);
        }
        if Instant::now() >= deadline {
            kill_tree(child.id());
            let _ = child.wait();
            break Ended::TimedOut;
        }
        thread::sleep(Duration::from_millis(25));
    };
    // Whatever it left behind in its process group goes too.
    // SAFETY: kill() has no memory-safety preconditions; the group is the
    // one we created for the child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    // A grandchild in another process group may still hold the pipes: wait
    // a moment for the readers, then go on without them.
    let reader_deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        let left = reader_deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let take = |t: &Arc<Mutex<Tail>>| std::mem::take(&mut *lock(t));
    Ok(Run {
        ended,
        stdout: take(&out_tail),
        stderr: take(&err_tail),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILL `pid`, every process descended from it (found through /proc),
/// and their process groups: the servers a grading run starts live in
/// groups of their own and would outlive it otherwise.
pub fn kill_tree(pid: u32) {
    let mut parents: Vec<(u32, u32, i32)> = Vec::new(); // (pid, ppid, pgid)
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the command name (which may hold spaces and parens).
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(ppid), Some(pgid)) = (
                fields.get(1).and_then(|f| f.parse().ok()),
                fields.get(2).and_then(|f| f.parse().ok()),
            ) {
                parents.push((p, ppid, pgid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(p, ppid, _) in &parents {
            if ppid == parent && !tree.contains(&p) {
                tree.push(p);
            }
        }
        i += 1;
    }
    // Stop the parent first so that it starts nothing new, then the rest.
    for &p in &tree {
        // SAFETY: kill() has no memory-safety preconditions.
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    for &(p, _, pgid) in &parents {
        if tree.contains(&p) && pgid > 1 {
            // SAFETY: as above; the group belongs to one of its descendants.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_tail_of_endless_output_and_stops_at_the_limit() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("yes 'spam spam spam'");
        let lines = Arc::new(Mutex::new(0u64));
        let counter = Arc::clone(&lines);
        let start = Instant::now();
        let run = run(cmd, Duration::from_millis(500), 4096, move |_| {
            *lock(&counter) += 1;
        })
        .unwrap();
        assert!(matches!(run.ended, Ended::TimedOut));
        assert!(run.stdout.kept.len() <= 4096);
        assert!(run.stdout.total > 100_000, "{}", run.stdout.total);
        assert!(*lock(&lines) > 1000);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(run.stdout.text().starts_with("[... "));
    }

    #[test]
    fn kills_grandchildren_in_other_process_groups() {
        // The grandchild puts itself in a new session (as the suite puts
        // its servers in groups of their own) and sleeps.
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("setsid sleep 300 & echo $!; wait");
        let pid = Arc::new(Mutex::new(String::new()));
        let seen = Arc::clone(&pid);
        let run = run(cmd, Duration::from_millis(500), 4096, move |l| {
            *lock(&seen) = String::from_utf8_lossy(l).trim().to_string();
        })
        .unwrap();
        assert!(matches!(run.ended, Ended::TimedOut));
        let pid: i32 = lock(&pid).parse().unwrap();
        thread::sleep(Duration::from_millis(200));
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        assert!(!alive, "the grandchild {pid} survived");
    }
}

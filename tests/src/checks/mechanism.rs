//! Mechanism checks: a stage passes only by the mechanism its chapter teaches.
//!
//! All of this is read from /proc while the server idles with three clients
//! connected: the thread count, the system call each thread sleeps in, and
//! what its epoll instance watches.

use std::thread;
use std::time::{Duration, Instant};

use super::Ctx;
use crate::net::Fleet;
use crate::procfs;
use crate::report::Failure;
use crate::server::Server;

/// Start the server and leave it idle with three connected clients.
fn idle_with_clients(ctx: &mut Ctx) -> Result<(Server, Fleet), Failure> {
    let server = ctx.start()?;
    let mut fleet = Fleet::connect(server.addr, 3, Duration::from_secs(3)).map_err(|(_, f)| f)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    // Only the first is sure to be served by a one-at-a-time server.
    ctx.probe_on(&mut fleet.streams[0], 0, deadline)?;
    // Give the others time to be accepted by servers that can.
    thread::sleep(Duration::from_millis(300));
    Ok((server, fleet))
}

pub fn threads(ctx: &mut Ctx) -> Result<String, Failure> {
    let (mut server, _fleet) = idle_with_clients(ctx)?;
    let pid = server.pid()?;
    let count = procfs::threads(pid).ok_or_else(|| Failure::new("cannot read /proc/PID/status"))?;
    let want = ctx.profile.mechanism.threads;
    if count != want {
        return Err(Failure::new(format!(
            "the server has {count} threads with 3 clients connected; this stage should have {want}"
        ))
        .reproduce(format!("{} &  then: grep Threads /proc/$!/status", server.command_line))
        .hint("this chapter is about serving many clients from one thread with its readiness mechanism, not with threads"));
    }
    Ok(format!("{count} thread(s)"))
}

pub fn blocking_call(ctx: &mut Ctx) -> Result<String, Failure> {
    let (mut server, _fleet) = idle_with_clients(ctx)?;
    let pid = server.pid()?;
    let allowed = &ctx.profile.mechanism.blocks_in;
    let mut running = 0usize;
    let mut seen: Vec<&'static str> = Vec::new();
    let mut total = 0usize;
    for _ in 0..20 {
        for (_, call) in procfs::thread_syscalls(pid) {
            total += 1;
            match call {
                None => running += 1,
                Some(nr) => seen.push(procfs::syscall_family(nr)),
            }
        }
        thread::sleep(Duration::from_millis(25));
    }
    if total == 0 {
        return Err(Failure::new("cannot read /proc/PID/task/*/syscall"));
    }
    let mut families = seen.clone();
    families.sort();
    families.dedup();
    let summary = format!(
        "{} of {total} samples running, blocked in: {}",
        running,
        if families.is_empty() {
            "nothing".to_string()
        } else {
            families.join(", ")
        }
    );
    let repro = format!(
        "{} &  then: cat /proc/$!/task/*/syscall",
        server.command_line
    );
    if allowed.is_empty() {
        // A busy loop: it should be running, not sleeping, most of the time.
        if running * 2 < total {
            return Err(
                Failure::new(format!("this stage should never block, but: {summary}"))
                    .reproduce(repro)
                    .hint("a non-blocking busy loop never sleeps in the kernel"),
            );
        }
        return Ok(format!("busy: {summary}"));
    }
    let wrong: Vec<&str> = families
        .iter()
        .copied()
        .filter(|f| !allowed.iter().any(|a| a == f))
        .collect();
    if !wrong.is_empty() || running * 5 > total {
        return Err(Failure::new(format!(
            "idle, it should sleep in {}; {summary}",
            allowed.join(" or ")
        ))
        .reproduce(repro)
        .hint("this stage's chapter teaches one readiness mechanism: the loop must wait in it"));
    }
    Ok(summary)
}

pub fn epoll_registrations(ctx: &mut Ctx) -> Result<String, Failure> {
    let (mut server, fleet) = idle_with_clients(ctx)?;
    let pid = server.pid()?;
    let mode = ctx.profile.mechanism.epoll.clone();
    let instances = procfs::epoll_instances(pid);
    let repro = format!(
        "{} &  then: cat /proc/$!/fdinfo/<the eventpoll fd>",
        server.command_line
    );
    if mode == "none" {
        if !instances.is_empty() {
            return Err(Failure::new(format!(
                "this stage should not use epoll, but it holds {} epoll instance(s)",
                instances.len()
            ))
            .reproduce(repro));
        }
        return Ok("no epoll instance, as declared".into());
    }
    let (listeners, conns) =
        procfs::server_socket_fds(pid, server.addr.port(), &fleet.local_ports());
    let Some((epfd, entries)) = instances.iter().max_by_key(|(_, e)| e.len()) else {
        return Err(Failure::new("no epoll instance found in /proc/PID/fd").reproduce(repro));
    };
    let watched = |fd: &i32| entries.iter().find(|e| e.fd == *fd);
    let mut problems = Vec::new();
    for fd in &listeners {
        if watched(fd).is_none() {
            problems.push(format!("the listener (fd {fd}) is not registered"));
        }
    }
    if conns.len() < 3 {
        problems.push(format!(
            "only {} of the 3 client connections are open in the server",
            conns.len()
        ));
    }
    for fd in &conns {
        match watched(fd) {
            None => problems.push(format!("connection fd {fd} is not registered")),
            Some(e) => {
                let edge = e.events & procfs::EPOLLET != 0;
                if mode == "edge" && !edge {
                    problems.push(format!(
                        "connection fd {fd} is registered without EPOLLET (events {:#x})",
                        e.events
                    ));
                }
                if mode == "level" && edge {
                    problems.push(format!(
                        "connection fd {fd} is registered with EPOLLET (events {:#x})",
                        e.events
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(Failure::new(format!(
            "epoll fd {epfd}, declared {mode}-triggered: {}",
            problems.join("; ")
        ))
        .reproduce(repro)
        .hint("register every socket you serve, with the flags this chapter teaches"));
    }
    Ok(format!(
        "epoll fd {epfd} watches {} fds; listener and 3 connections, {mode}-triggered",
        entries.len()
    ))
}

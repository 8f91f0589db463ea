//! Stage 1: a blocking echo server.
//!
//! The simplest server that is correct: accept one client, send back every
//! byte it sends until it closes, then accept the next. Every call blocks, so
//! while one client is connected everybody else waits in the listen backlog.
//! That is the limitation the next stage removes.

use std::io::{self, Read};
use std::net::SocketAddr;

use plumbing::trace;
use socket2::{Domain, Protocol, Socket, Type};

/// How many connections the kernel may hold for us before we accept them.
const BACKLOG: i32 = 1024;

fn main() {
    let args = plumbing::Cli::new(
        "ch01-blocking-echo",
        7001,
        "blocking echo server, one client at a time",
    )
    .parse();
    plumbing::install_signal_handlers();

    // ANCHOR: listener
    let listener = match open_listener(args.listen) {
        Ok(listener) => listener,
        Err(e) => plumbing::fail(plumbing::explain_bind_error(args.listen, &e)),
    };
    let local = match listener.local_addr().map(|a| a.as_socket()) {
        Ok(Some(addr)) => addr,
        _ => plumbing::fail("cannot read the listening address back"),
    };
    plumbing::announce(local);
    // ANCHOR_END: listener

    // ANCHOR: accept_loop
    while !plumbing::stop_requested() {
        let (conn, peer) = match listener.accept() {
            Ok(pair) => pair,
            // A signal interrupted accept(): go round and look at the stop flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                trace!("accept -> {}", plumbing::errno_name(&e));
                pause_after_accept_error(&e);
                continue;
            }
        };
        let peer = peer.as_socket().map_or("?".to_string(), |a| a.to_string());
        trace!("accept -> fd {} from {peer}", fd(&conn));

        // One client at a time: nobody else is served until this returns.
        match echo_until_eof(&conn) {
            Ok(()) => trace!("fd {}: client closed, closing", fd(&conn)),
            Err(e) => trace!("fd {}: {}, closing", fd(&conn), plumbing::errno_name(&e)),
        }
        // Dropping the socket closes it.
    }
    // ANCHOR_END: accept_loop
}

// ANCHOR: open_listener
/// socket(), setsockopt(SO_REUSEADDR), bind(), listen().
fn open_listener(addr: SocketAddr) -> io::Result<Socket> {
    // ANCHOR: exercise-open-listener Create a TCP socket for addr's family, turn on SO_REUSEADDR, bind it to addr, listen with BACKLOG, and return it.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Without SO_REUSEADDR a restarted server cannot bind while connections
    // of its previous life sit in TIME_WAIT on this port (up to a minute).
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
    // ANCHOR_END: exercise-open-listener
}
// ANCHOR_END: open_listener

// ANCHOR: echo_until_eof
/// Read what the client sends and write it back, until it closes its side.
fn echo_until_eof(conn: &Socket) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    // ANCHOR: exercise-read-until-eof Loop: read() into buf; 0 bytes is EOF (return Ok); EINTR: go round again unless plumbing::stop_requested(); any other error: return it; otherwise write_all() the bytes you read.
    loop {
        // A signal that arrived while we were writing set the flag but
        // interrupted nothing: look before blocking in read() again.
        if plumbing::stop_requested() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = match (&*conn).read(&mut buf) {
            Ok(0) => return Ok(()), // EOF: the client shut down its side.
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if plumbing::stop_requested() {
                    return Err(e);
                }
                continue;
            }
            Err(e) => return Err(e), // ECONNRESET and friends: give up on this client.
        };
        trace!("read fd {} -> {n} bytes", fd(conn));
        write_all(conn, &buf[..n])?;
    }
    // ANCHOR_END: exercise-read-until-eof
}
// ANCHOR_END: echo_until_eof

// ANCHOR: write_all
/// send() may take only part of the buffer; keep going until all of it is sent.
fn write_all(conn: &Socket, mut data: &[u8]) -> io::Result<()> {
    // ANCHOR: exercise-write-all send_with_flags(data, libc::MSG_NOSIGNAL) may send only part of data: keep sending the rest until none is left; retry on EINTR unless a stop was requested.
    while !data.is_empty() {
        // MSG_NOSIGNAL: if the client has gone, return EPIPE instead of
        // raising SIGPIPE, whose default action would kill the whole server.
        let result = conn.send_with_flags(data, libc::MSG_NOSIGNAL);
        trace!("write fd {} -> {}", fd(conn), plumbing::describe(&result));
        match result {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !plumbing::stop_requested() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
    // ANCHOR_END: exercise-write-all
}
// ANCHOR_END: write_all

/// accept() fails for two kinds of reasons. ECONNABORTED and friends are
/// about one client that has already gone: just try again. EMFILE/ENFILE
/// (out of descriptors) and ENOBUFS/ENOMEM would fail again at once, so
/// wait a moment instead of spinning.
fn pause_after_accept_error(e: &io::Error) {
    if matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn fd(socket: &Socket) -> i32 {
    use std::os::fd::AsRawFd;
    socket.as_raw_fd()
}

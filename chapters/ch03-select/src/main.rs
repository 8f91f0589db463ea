//! Stage 3: select().
//!
//! Stage 2 asked every socket "anything for me?" over and over and burned a
//! core doing it. Here the loop hands the kernel the list of sockets it cares
//! about and sleeps in select() until at least one of them is readable: the
//! listener (a client is waiting to be accepted) or a connection (bytes, EOF
//! or an error have arrived). An idle server now costs nothing.
//!
//! Like the classic examples, it writes each reply straight away. When the
//! client's side is full, `send_all` waits for that one socket to become
//! writable, and while it waits nobody else is served: one client that
//! sends but never reads stalls every other client. The next stage fixes
//! that with an output queue per connection.
//!
//! select() has a hard ceiling too: an fd_set holds descriptors 0 to 1023
//! (FD_SETSIZE) only, so a connection whose descriptor is 1024 or more is
//! refused.

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Once;

use plumbing::trace;
use socket2::{Domain, Protocol, Socket, Type};

/// How many connections the kernel may hold for us before we accept them.
const BACKLOG: i32 = 1024;

/// The most one read() takes.
const READ_SIZE: usize = 16 * 1024;

fn main() {
    let args = plumbing::Cli::new(
        "ch03-select",
        7003,
        "echo server on select(): sleeps until a client is readable",
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

    // ANCHOR: select_loop
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = [0u8; READ_SIZE];
    while !plumbing::stop_requested() {
        // select() overwrites the sets we pass with its answer (only the
        // ready descriptors stay set), so the question is asked afresh on
        // every turn: the listener and every connection, for reading.
        let mut readfds = FdSet::new();
        // Nothing waits for writability here: replies are written at once.
        let mut writefds = FdSet::new();
        readfds.insert(fd(&listener));
        let mut max_fd = fd(&listener);
        for conn in &conns {
            readfds.insert(fd(&conn.socket));
            max_fd = max_fd.max(fd(&conn.socket));
        }
        // Sleep until something is readable. No timeout: nothing else to do.
        match select(max_fd + 1, &mut readfds, &mut writefds) {
            Ok(n) => trace!("select -> {n} ready"),
            // A signal arrived: go round and look at the stop flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => plumbing::fail(format!("select: {e}")),
        }
        // Serve the readable connections, and forget (which closes) the
        // ones that are finished.
        conns.retain_mut(|conn| {
            if !readfds.contains(fd(&conn.socket)) {
                return true;
            }
            trace!("fd {} readable", fd(&conn.socket));
            conn.echo_once(&mut buf) == Next::Keep
        });
        // Accept last: the new connections were not part of this question.
        if readfds.contains(fd(&listener)) {
            trace!("fd {} (listener) readable", fd(&listener));
            accept_new(&listener, &mut conns);
        }
    }
    // ANCHOR_END: select_loop
}

// ANCHOR: open_listener
/// socket(), setsockopt(SO_REUSEADDR), bind(), listen(), and O_NONBLOCK.
fn open_listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Without SO_REUSEADDR a restarted server cannot bind while connections
    // of its previous life sit in TIME_WAIT on this port (up to a minute).
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // accept() on an empty backlog now returns EAGAIN instead of waiting:
    // select() may say "readable" for a client that has already gone.
    socket.set_nonblocking(true)?;
    Ok(socket)
}
// ANCHOR_END: open_listener

// ANCHOR: accept_new
/// Accept every client waiting in the backlog, until accept() says EAGAIN.
fn accept_new(listener: &Socket, conns: &mut Vec<Conn>) {
    loop {
        let (socket, peer) = match listener.accept() {
            Ok(pair) => pair,
            // Nobody is waiting: the normal way out.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ECONNABORTED (that client already left), or EMFILE (out of
                // descriptors). EMFILE is a real weakness here: the client
                // stays in the backlog, so the listener stays readable, so
                // select() returns at once and we spin on a failing accept()
                // until a descriptor is freed. Stage 6 sheds it.
                trace!("accept -> {}", plumbing::errno_name(&e));
                return;
            }
        };
        // An fd_set has room for descriptors below FD_SETSIZE only. Never
        // let a bigger one near it: libc's FD_SET would abort the process,
        // and the kernel would read and write past the end of the set.
        if !fits_in_fd_set(fd(&socket)) {
            trace!(
                "accept -> fd {} is >= FD_SETSIZE ({}), closing",
                fd(&socket),
                libc::FD_SETSIZE
            );
            static WARN_ONCE: Once = Once::new();
            WARN_ONCE.call_once(|| {
                eprintln!(
                    "ch03-select: warning: refusing connections whose descriptor is {} or more \
                     (select() cannot watch them)",
                    libc::FD_SETSIZE
                );
            });
            continue; // dropping the socket closes it
        }
        let peer = peer.as_socket().map_or("?".to_string(), |a| a.to_string());
        // On Linux an accepted socket does NOT inherit O_NONBLOCK from the
        // listener: without this, the first read() on an idle client would
        // block the whole loop.
        if let Err(e) = socket.set_nonblocking(true) {
            trace!("fd {}: set_nonblocking -> {}, closing", fd(&socket), e);
            continue; // dropping the socket closes it
        }
        trace!("accept -> fd {} from {peer}", fd(&socket));
        conns.push(Conn::new(socket));
    }
}
// ANCHOR_END: accept_new

// ANCHOR: conn
/// One client. Every reply is written before the next read, so there is
/// nothing else to remember about it.
struct Conn {
    socket: Socket,
}
// ANCHOR_END: conn

/// What the loop should do with a connection after its turn.
#[derive(PartialEq)]
enum Next {
    Keep,
    Close,
}

impl Conn {
    fn new(socket: Socket) -> Conn {
        Conn { socket }
    }

    // ANCHOR: echo_once
    /// The socket is readable: one read(), and the reply written at once.
    fn echo_once(&mut self, buf: &mut [u8]) -> Next {
        // ANCHOR: exercise-echo-once One read(): 0 bytes is EOF, so return Next::Close; n bytes: send_all() them back at once (close on error); EAGAIN: the readiness was stale, keep the connection; any other error: close_on_error.
        let result = (&self.socket).read(buf);
        trace!(
            "read fd {} -> {}",
            fd(&self.socket),
            plumbing::describe(&result)
        );
        match result {
            // Every byte read before has already been echoed: a half-closed
            // client has all its data back, and closing sends our EOF.
            Ok(0) => {
                trace!(
                    "fd {}: client closed, all echoed, closing",
                    fd(&self.socket)
                );
                return Next::Close;
            }
            Ok(n) => {
                if let Err(e) = send_all(&self.socket, &buf[..n]) {
                    return self.close_on_error(&e);
                }
            }
            // "Readable" was stale: nothing to read after all.
            Err(e) if is_retry_later(&e) => {}
            // ECONNRESET and friends.
            Err(e) => return self.close_on_error(&e),
        }
        Next::Keep
        // ANCHOR_END: exercise-echo-once
    }
    // ANCHOR_END: echo_once

    fn close_on_error(&self, e: &io::Error) -> Next {
        trace!(
            "fd {}: {}, closing",
            fd(&self.socket),
            plumbing::errno_name(e)
        );
        Next::Close
    }
}

// ANCHOR: send_all
/// Write all of `data`, the way the classic examples do. When the client's
/// side is full (EAGAIN), wait for THIS socket alone to become writable.
/// While we wait, nobody else is served: a client that sends and never
/// reads its echo stalls the whole server.
fn send_all(socket: &Socket, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // MSG_NOSIGNAL: if the client has gone, return EPIPE instead of
        // raising SIGPIPE, whose default action would kill the whole server.
        let result = socket.send_with_flags(data, libc::MSG_NOSIGNAL);
        trace!("write fd {} -> {}", fd(socket), plumbing::describe(&result));
        match result {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(socket)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !plumbing::stop_requested() => {}
            // EPIPE, ECONNRESET: the client has gone.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sleep in select() with only `socket` in the write set.
fn wait_writable(socket: &Socket) -> io::Result<()> {
    // ANCHOR: exercise-wait-writable Sleep in select() with only this socket in a write set (an empty read set) until it is writable; retry on EINTR unless a stop was requested; return other errors.
    loop {
        let mut readfds = FdSet::new();
        let mut writefds = FdSet::new();
        writefds.insert(fd(socket));
        trace!("fd {}: send buffer full, waiting for it alone", fd(socket));
        match select(fd(socket) + 1, &mut readfds, &mut writefds) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !plumbing::stop_requested() => {}
            Err(e) => return Err(e),
        }
    }
    // ANCHOR_END: exercise-wait-writable
}
// ANCHOR_END: send_all

/// EAGAIN/EWOULDBLOCK: the call would have had to wait; EINTR: a signal
/// interrupted it. Either way, nothing happened: try again later.
fn is_retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn fd(socket: &Socket) -> i32 {
    use std::os::fd::AsRawFd;
    socket.as_raw_fd()
}

// ANCHOR: fd_set
/// A set of descriptors for select(): one bit for each fd in 0..FD_SETSIZE.
struct FdSet(libc::fd_set);

impl FdSet {
    fn new() -> FdSet {
        let mut set = MaybeUninit::<libc::fd_set>::uninit();
        // SAFETY: FD_ZERO clears every bit of the set, which is then fully
        // initialised (an fd_set is plain bits).
        unsafe {
            libc::FD_ZERO(set.as_mut_ptr());
            FdSet(set.assume_init())
        }
    }

    /// Add `fd`. Callers make sure it fits: accept_new closes any
    /// connection whose descriptor does not.
    fn insert(&mut self, fd: RawFd) {
        assert!(fits_in_fd_set(fd), "fd {fd} does not fit in an fd_set");
        // SAFETY: 0 <= fd < FD_SETSIZE, so the bit lies inside the set.
        unsafe { libc::FD_SET(fd, &mut self.0) }
    }

    fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: FD_ISSET is only reached with 0 <= fd < FD_SETSIZE, so the
        // bit lies inside the set.
        fits_in_fd_set(fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
    }
}

fn fits_in_fd_set(fd: RawFd) -> bool {
    (0..libc::FD_SETSIZE as RawFd).contains(&fd)
}
// ANCHOR_END: fd_set

// ANCHOR: select
/// select() with no timeout: sleep until a descriptor of `readfds` is
/// readable or one of `writefds` is writable. On return the sets hold only
/// the ready descriptors.
fn select(nfds: RawFd, readfds: &mut FdSet, writefds: &mut FdSet) -> io::Result<i32> {
    // ANCHOR: exercise-select-call Call libc::select(nfds, read set, write set, no except set, no timeout) inside an unsafe block with a SAFETY comment; a negative result is io::Error::last_os_error(), otherwise return the count.
    // SAFETY: both sets are valid fd_sets holding only descriptors below
    // nfds <= FD_SETSIZE, so the kernel stays inside them; a null except set
    // and a null timeout (wait forever) are allowed.
    let n = unsafe {
        libc::select(
            nfds,
            &mut readfds.0,
            &mut writefds.0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n)
    }
    // ANCHOR_END: exercise-select-call
}
// ANCHOR_END: select

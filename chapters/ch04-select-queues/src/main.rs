//! Stage 4: select() with an output queue per connection.
//!
//! Stage 3 wrote every reply at once, and when a client did not read its
//! echo it waited for that one client while everybody else waited too. Here
//! each connection gets an output queue: what we read goes into it, and
//! select() watches two things per connection, "readable" (only while the
//! queue has room) and "writable" (only while the queue holds something).
//! Nothing ever waits on one client.
//!
//! The queue is bounded. A client that sends and never reads fills its
//! queue, and then we stop reading from it until it drains: the kernel's
//! buffers fill up behind it and its own send() blocks. That is
//! backpressure: neither memory nor the other clients suffer for it.
//!
//! select() still has its ceiling: descriptors of 1024 (FD_SETSIZE) and up
//! are refused.

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

/// Stop reading from a client whose queue holds this much, until it drains.
/// A queue never holds more than QUEUE_LIMIT + READ_SIZE - 1 bytes.
const QUEUE_LIMIT: usize = 256 * 1024;

fn main() {
    let args = plumbing::Cli::new(
        "ch04-select-queues",
        7004,
        "echo server on select() with a bounded output queue per client",
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
        // every turn: the listener for reading, each connection for reading
        // while its queue has room, for writing while its queue is not empty.
        let mut readfds = FdSet::new();
        let mut writefds = FdSet::new();
        readfds.insert(fd(&listener));
        let mut max_fd = fd(&listener);
        for conn in &conns {
            if conn.wants_to_read() {
                readfds.insert(fd(&conn.socket));
            }
            if !conn.queue.is_empty() {
                writefds.insert(fd(&conn.socket));
            }
            max_fd = max_fd.max(fd(&conn.socket));
        }
        // Sleep until something is ready. No timeout: nothing else to do.
        match select(max_fd + 1, &mut readfds, &mut writefds) {
            Ok(n) => trace!("select -> {n} ready"),
            // A signal arrived: go round and look at the stop flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => plumbing::fail(format!("select: {e}")),
        }
        // Serve the ready connections, and forget (which closes) the ones
        // that are finished.
        conns.retain_mut(|conn| {
            let readable = readfds.contains(fd(&conn.socket));
            let writable = writefds.contains(fd(&conn.socket));
            if !readable && !writable {
                return true;
            }
            trace!(
                "fd {}{}{}",
                fd(&conn.socket),
                if readable { " readable" } else { "" },
                if writable { " writable" } else { "" }
            );
            conn.on_ready(readable, writable, &mut buf) == Next::Keep
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
                    "ch04-select-queues: warning: refusing connections whose descriptor is {} or more \
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
/// One client, and what we still owe it.
///
/// The classic Python select example keeps a queue per client as well, but
/// gets three things wrong. When recv() returns nothing it closes the socket
/// and throws the queue away, so a client that sends and then shuts down its
/// side never gets the end of its echo. Its queues have no limit, so a client
/// that never reads makes the server keep everything it sends. And it hands
/// one message to one send() without looking at how much send() took, so
/// the rest of a partly sent message is lost.
struct Conn {
    socket: Socket,
    /// Bytes read from the client and not yet echoed back.
    queue: Vec<u8>,
    /// The client has shut down its sending side: read() returned 0.
    eof: bool,
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
        Conn {
            socket,
            queue: Vec::new(),
            eof: false,
        }
    }

    // ANCHOR: wants_to_read
    /// Should select() watch this client for reading? Not after its EOF, and
    /// not while its queue is full: that is the backpressure.
    fn wants_to_read(&self) -> bool {
        // ANCHOR: exercise-wants-to-read Watch a client for reading only while it has not sent EOF and its queue is below QUEUE_LIMIT: that is the backpressure.
        !self.eof && self.queue.len() < QUEUE_LIMIT
        // ANCHOR_END: exercise-wants-to-read
    }
    // ANCHOR_END: wants_to_read

    // ANCHOR: on_ready
    /// select() says this client is readable, writable, or both.
    fn on_ready(&mut self, readable: bool, writable: bool, buf: &mut [u8]) -> Next {
        // ANCHOR: exercise-on-ready Readable: read_some(); writable: flush_queue() (close_on_error on either error). Close only once the client has sent EOF and its queue is empty, so a half-closed client gets every byte back.
        if readable {
            if let Err(e) = self.read_some(buf) {
                return self.close_on_error(&e);
            }
        }
        if writable {
            if let Err(e) = self.flush_queue() {
                return self.close_on_error(&e);
            }
        }
        // A client that has shut down its side still gets everything queued
        // before its EOF; only then do we close.
        if self.eof && self.queue.is_empty() {
            trace!(
                "fd {}: client closed, all echoed, closing",
                fd(&self.socket)
            );
            return Next::Close;
        }
        Next::Keep
        // ANCHOR_END: exercise-on-ready
    }
    // ANCHOR_END: on_ready

    // ANCHOR: read_some
    /// One read(): new bytes join the queue.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let result = (&self.socket).read(buf);
        trace!(
            "read fd {} -> {}",
            fd(&self.socket),
            plumbing::describe(&result)
        );
        match result {
            Ok(0) => self.eof = true,
            Ok(n) => self.queue.extend_from_slice(&buf[..n]),
            // "Readable" was stale: nothing to read after all.
            Err(e) if is_retry_later(&e) => {}
            // ECONNRESET and friends.
            Err(e) => return Err(e),
        }
        Ok(())
    }
    // ANCHOR_END: read_some

    // ANCHOR: flush_queue
    /// One send() from the front of the queue. It may take only part: the
    /// rest stays queued for the next time the socket is writable.
    fn flush_queue(&mut self) -> io::Result<()> {
        // ANCHOR: exercise-flush-queue One send_with_flags(&self.queue, libc::MSG_NOSIGNAL): drain what it took from the front of the queue, keep the rest for the next writable; EAGAIN: later; other errors: return them.
        // MSG_NOSIGNAL: if the client has gone, return EPIPE instead of
        // raising SIGPIPE, whose default action would kill the whole server.
        let result = self.socket.send_with_flags(&self.queue, libc::MSG_NOSIGNAL);
        trace!(
            "write fd {} -> {}",
            fd(&self.socket),
            plumbing::describe(&result)
        );
        match result {
            Ok(n) => {
                self.queue.drain(..n);
            }
            // "Writable" was stale: later.
            Err(e) if is_retry_later(&e) => {}
            // EPIPE, ECONNRESET: the client has gone.
            Err(e) => return Err(e),
        }
        Ok(())
        // ANCHOR_END: exercise-flush-queue
    }
    // ANCHOR_END: flush_queue

    fn close_on_error(&self, e: &io::Error) -> Next {
        trace!(
            "fd {}: {}, closing",
            fd(&self.socket),
            plumbing::errno_name(e)
        );
        Next::Close
    }
}

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
}
// ANCHOR_END: select

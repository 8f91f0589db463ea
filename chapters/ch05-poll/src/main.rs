//! Stage 5: poll().
//!
//! The design of stage 4 (a bounded output queue per connection, read while
//! it has room, write while it holds data) on poll() instead of select().
//! poll() takes an array of `pollfd` entries, one per descriptor, each with
//! the events we ask about and a field for the kernel's answer. There is no
//! bitmap, so there is no FD_SETSIZE ceiling: a descriptor of 1024 or 10 000
//! is served like any other.
//!
//! What poll() keeps from select(): every call hands the kernel the whole
//! array, and the kernel looks at every entry, so each call costs time in
//! proportion to the number of connections, busy or idle. With thousands of
//! idle clients that cost dominates; the epoll stages remove it.

use std::io::{self, Read};
use std::net::SocketAddr;

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
        "ch05-poll",
        7005,
        "echo server on poll() with a bounded output queue per client",
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

    // ANCHOR: poll_loop
    let mut conns: Vec<Conn> = Vec::new();
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut buf = [0u8; READ_SIZE];
    while !plumbing::stop_requested() {
        // Unlike select(), poll() leaves the question (`events`) alone and
        // writes its answer into `revents`, so the array could be kept from
        // one turn to the next. We rebuild it anyway: the question changes
        // every turn (room in a queue, something to write), and rebuilding
        // keeps pollfds[i + 1] in step with conns[i]. Entry 0 is the
        // listener.
        // ANCHOR: exercise-pollfds Build this turn's question: entry 0 the listener with POLLIN, then one pollfd per connection, in the order of conns: POLLIN if it wants_to_read(), POLLOUT if its queue holds data; revents 0.
        pollfds.clear();
        pollfds.push(libc::pollfd {
            fd: fd(&listener),
            events: libc::POLLIN,
            revents: 0,
        });
        for conn in &conns {
            let mut events = 0;
            if conn.wants_to_read() {
                events |= libc::POLLIN;
            }
            if !conn.queue.is_empty() {
                events |= libc::POLLOUT;
            }
            pollfds.push(libc::pollfd {
                fd: fd(&conn.socket),
                events,
                revents: 0,
            });
        }
        // ANCHOR_END: exercise-pollfds
        // Sleep until something is ready. No timeout: nothing else to do.
        match poll(&mut pollfds) {
            Ok(n) => trace!("poll -> {n} ready"),
            // A signal arrived: go round and look at the stop flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => plumbing::fail(format!("poll: {e}")),
        }
        // Serve the ready connections, and forget (which closes) the ones
        // that are finished. retain_mut visits conns in order, so the
        // answers can be walked alongside.
        let mut answers = pollfds[1..].iter();
        conns.retain_mut(|conn| {
            let revents = answers.next().map_or(0, |p| p.revents);
            if revents == 0 {
                return true;
            }
            trace!("fd {} {}", fd(&conn.socket), poll_bits(revents));
            // poll() reports these three whether we asked or not.
            if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return conn.close_on_hangup(revents) == Next::Keep;
            }
            let readable = revents & libc::POLLIN != 0;
            let writable = revents & libc::POLLOUT != 0;
            conn.on_ready(readable, writable, &mut buf) == Next::Keep
        });
        // Accept last: the new connections were not part of this question.
        if pollfds[0].revents != 0 {
            trace!(
                "fd {} (listener) {}",
                fd(&listener),
                poll_bits(pollfds[0].revents)
            );
            accept_new(&listener, &mut conns);
        }
    }
    // ANCHOR_END: poll_loop
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
    // poll() may say "readable" for a client that has already gone.
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
                // poll() returns at once and we spin on a failing accept()
                // until a descriptor is freed. Stage 6 sheds it.
                trace!("accept -> {}", plumbing::errno_name(&e));
                return;
            }
        };
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
    /// Should poll() watch this client for reading? Not after its EOF, and
    /// not while its queue is full: that is the backpressure.
    fn wants_to_read(&self) -> bool {
        !self.eof && self.queue.len() < QUEUE_LIMIT
    }
    // ANCHOR_END: wants_to_read

    // ANCHOR: on_ready
    /// poll() says this client is readable, writable, or both.
    fn on_ready(&mut self, readable: bool, writable: bool, buf: &mut [u8]) -> Next {
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
    }
    // ANCHOR_END: flush_queue

    // ANCHOR: close_on_hangup
    /// POLLERR: an error is pending on the socket (ECONNRESET, say).
    /// POLLHUP: the connection is over in both directions. POLLNVAL: the fd
    /// is not open (a bookkeeping bug). In each case nothing we still send
    /// could arrive, and poll() would report it again at once on every call
    /// if we kept the socket: close it.
    fn close_on_hangup(&self, revents: i16) -> Next {
        // ANCHOR: exercise-close-on-hangup POLLERR, POLLHUP or POLLNVAL: read the pending error with self.socket.take_error() (SO_ERROR) for the trace, and return Next::Close; poll() would report it again on every call otherwise.
        // SO_ERROR says which error, and clears it.
        let error = match self.socket.take_error() {
            Ok(Some(e)) => plumbing::errno_name(&e),
            Ok(None) => "no error".to_string(),
            Err(e) => plumbing::errno_name(&e),
        };
        trace!(
            "fd {}: {} ({error}), closing",
            fd(&self.socket),
            poll_bits(revents)
        );
        Next::Close
        // ANCHOR_END: exercise-close-on-hangup
    }
    // ANCHOR_END: close_on_hangup

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

// ANCHOR: poll
/// poll() with no timeout: sleep until one of the entries is ready. The
/// kernel writes its answer into each entry's `revents`.
fn poll(fds: &mut [libc::pollfd]) -> io::Result<i32> {
    // ANCHOR: exercise-poll-call Call libc::poll(pointer, length as nfds_t, -1) inside an unsafe block with a SAFETY comment; a negative result is io::Error::last_os_error(), otherwise return the count.
    // SAFETY: the pointer and length describe a live, initialised slice of
    // pollfd that the kernel may write `revents` into; -1 waits forever.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n)
    }
    // ANCHOR_END: exercise-poll-call
}
// ANCHOR_END: poll

/// `revents` as the trace shows it: `POLLIN|POLLHUP`.
fn poll_bits(revents: i16) -> String {
    let names = [
        (libc::POLLIN, "POLLIN"),
        (libc::POLLOUT, "POLLOUT"),
        (libc::POLLERR, "POLLERR"),
        (libc::POLLHUP, "POLLHUP"),
        (libc::POLLNVAL, "POLLNVAL"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| revents & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    set.join("|")
}

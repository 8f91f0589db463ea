//! Stage 2: a non-blocking busy loop.
//!
//! Stage 1 served one client at a time because every call could block. Here
//! no call ever blocks: the listener and every accepted socket are put in
//! non-blocking mode, so accept(), read() and send() return EAGAIN at once
//! when they have nothing to do instead of waiting. One loop walks over all
//! the connections again and again, and for each one does whatever can be
//! done right now. Every client is served at once.
//!
//! The price: the loop never rests. With nothing to do it still asks every
//! socket "anything for me?" millions of times a second and keeps a whole
//! core busy. The next stage asks the kernel which sockets are ready instead.

use std::io::{self, Read};
use std::net::SocketAddr;

use plumbing::trace;
use socket2::{Domain, Protocol, Socket, Type};

/// How many connections the kernel may hold for us before we accept them.
const BACKLOG: i32 = 1024;

/// The most one read() takes, and so the most one connection ever holds.
const READ_SIZE: usize = 16 * 1024;

fn main() {
    let args = plumbing::Cli::new(
        "ch02-busy-loop",
        7002,
        "non-blocking echo server: one busy loop serves every client",
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

    // ANCHOR: busy_loop
    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = [0u8; READ_SIZE];
    // Nothing in this loop ever blocks, so a signal never interrupts a call
    // with EINTR: the handler sets the flag and we see it on the next turn.
    while !plumbing::stop_requested() {
        accept_new(&listener, &mut conns);
        // Give every connection one chance to make progress, and forget
        // (which closes) the ones that are finished.
        conns.retain_mut(|conn| conn.make_progress(&mut buf) == Next::Keep);
    }
    // ANCHOR_END: busy_loop
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
    // accept() on an empty backlog now returns EAGAIN instead of waiting.
    socket.set_nonblocking(true)?;
    Ok(socket)
}
// ANCHOR_END: open_listener

// ANCHOR: accept_new
/// Accept every client waiting in the backlog, until accept() says EAGAIN.
fn accept_new(listener: &Socket, conns: &mut Vec<Conn>) {
    // ANCHOR: exercise-accept-new Loop on listener.accept(): WouldBlock (EAGAIN) means nobody is waiting, return; EINTR: go on; other errors: trace and return. Put each new socket in non-blocking mode (it does not inherit O_NONBLOCK from the listener) and push Conn::new(socket).
    loop {
        let (socket, peer) = match listener.accept() {
            Ok(pair) => pair,
            // Nobody is waiting: the normal way out.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ECONNABORTED (that client already left), or EMFILE (out of
                // descriptors): give up for this turn, the next turn retries.
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
    // ANCHOR_END: exercise-accept-new
}
// ANCHOR_END: accept_new

// ANCHOR: conn
/// One client, and what we still owe it.
struct Conn {
    socket: Socket,
    /// Bytes read from the client and not yet echoed back.
    pending: Vec<u8>,
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
            pending: Vec::new(),
            eof: false,
        }
    }

    // ANCHOR: make_progress
    /// Do what can be done for this client right now, without waiting.
    fn make_progress(&mut self, buf: &mut [u8]) -> Next {
        // Read only when everything read before has been echoed. That is the
        // natural backpressure: a client that sends but does not read its
        // echo fills our send buffer, then `pending` stops emptying, then we
        // stop reading, then its own send() blocks. We never hold more than
        // one buffer for it, however much it sends.
        if self.pending.is_empty() && !self.eof {
            if let Err(e) = self.read_some(buf) {
                return self.close_on_error(&e);
            }
        }
        if !self.pending.is_empty() {
            if let Err(e) = self.flush_pending() {
                return self.close_on_error(&e);
            }
        }
        // Closing before everything is echoed would lose data a half-closed
        // client still waits for.
        if self.eof && self.pending.is_empty() {
            trace!(
                "fd {}: client closed, all echoed, closing",
                fd(&self.socket)
            );
            return Next::Close;
        }
        Next::Keep
    }
    // ANCHOR_END: make_progress

    // ANCHOR: read_some
    /// One read(): new bytes go to `pending`; EAGAIN means nothing yet.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<()> {
        // ANCHOR: exercise-read-some One read() into buf: 0 bytes is EOF (set self.eof), n bytes go to self.pending; EAGAIN (is_retry_later) means nothing yet, not an error; any other error: return it.
        let result = (&self.socket).read(buf);
        trace!(
            "read fd {} -> {}",
            fd(&self.socket),
            plumbing::describe(&result)
        );
        match result {
            Ok(0) => self.eof = true,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            // Nothing has arrived: try again on the next turn.
            Err(e) if is_retry_later(&e) => {}
            // ECONNRESET and friends.
            Err(e) => return Err(e),
        }
        Ok(())
        // ANCHOR_END: exercise-read-some
    }
    // ANCHOR_END: read_some

    // ANCHOR: flush_pending
    /// One send() of what we owe. It may take only part: keep the rest.
    fn flush_pending(&mut self) -> io::Result<()> {
        // MSG_NOSIGNAL: if the client has gone, return EPIPE instead of
        // raising SIGPIPE, whose default action would kill the whole server.
        // ANCHOR: exercise-flush-pending One send_with_flags(&self.pending, libc::MSG_NOSIGNAL): drain the bytes it took from pending, keep the rest for the next turn; EAGAIN: try later; any other error: return it.
        let result = self
            .socket
            .send_with_flags(&self.pending, libc::MSG_NOSIGNAL);
        trace!(
            "write fd {} -> {}",
            fd(&self.socket),
            plumbing::describe(&result)
        );
        match result {
            Ok(n) => {
                self.pending.drain(..n);
            }
            // Our send buffer is full (the client reads slowly): later.
            Err(e) if is_retry_later(&e) => {}
            // EPIPE, ECONNRESET: the client has gone.
            Err(e) => return Err(e),
        }
        Ok(())
        // ANCHOR_END: exercise-flush-pending
    }
    // ANCHOR_END: flush_pending

    fn close_on_error(&self, e: &io::Error) -> Next {
        trace!(
            "fd {}: {}, closing",
            fd(&self.socket),
            plumbing::errno_name(e)
        );
        Next::Close
    }
}

/// EAGAIN/EWOULDBLOCK: the call would have had to wait. EINTR cannot happen
/// in a call that never waits, but costs nothing to treat the same way.
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

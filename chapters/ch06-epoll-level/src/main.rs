//! Stage 6: epoll, level-triggered.
//!
//! The design of stage 5 (a bounded output queue per connection, read while
//! it has room, write while it holds data) moved from poll() onto epoll.
//! poll() is handed the whole array of descriptors on every call, and the
//! kernel looks at every entry, so each turn costs time in proportion to the
//! number of connections, busy or idle. epoll keeps the list inside the
//! kernel: we register a socket once (`EPOLL_CTL_ADD`), change what we wait
//! for only when that changes (`EPOLL_CTL_MOD`), and epoll_wait() returns
//! only the sockets that are ready. A turn costs time in proportion to the
//! sockets that are ready, however many clients sit idle.
//!
//! Each registration carries a token that the kernel hands back with every
//! event. Ours is the connection's index in a slab, so an event leads
//! straight to its connection, with no search.
//!
//! Level-triggered (epoll's default) means a socket is reported on every
//! epoll_wait() for as long as it is ready, exactly as poll() would report
//! it: whatever we leave unread now is reported again on the next turn. That
//! makes the loop forgiving, and it is why running out of descriptors needs
//! care (see `shed_connection`).

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use plumbing::trace;
use socket2::{Domain, Protocol, Socket, Type};

/// How many connections the kernel may hold for us before we accept them.
const BACKLOG: i32 = 1024;

/// The most one read() takes.
const READ_SIZE: usize = 16 * 1024;

/// Stop reading from a client whose queue holds this much, until it drains.
/// A queue never holds more than QUEUE_LIMIT + READ_SIZE - 1 bytes.
const QUEUE_LIMIT: usize = 256 * 1024;

/// At most this many events per epoll_wait(); the rest wait for the next turn.
const MAX_EVENTS: usize = 256;

/// The token of the listening socket. Connections use their slab index,
/// which never comes near this value.
const LISTENER: u64 = u64::MAX;

fn main() {
    let args = plumbing::Cli::new(
        "ch06-epoll-level",
        7006,
        "echo server on level-triggered epoll with a bounded output queue per client",
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
    // ANCHOR_END: listener

    // ANCHOR: register_listener
    let epoll = match Epoll::new() {
        Ok(epoll) => epoll,
        Err(e) => plumbing::fail(format!("epoll_create1: {e}")),
    };
    // The listener is registered once, for reading: "readable" on a
    // listening socket means a client is waiting to be accepted.
    if let Err(e) = epoll.add(fd(&listener), LISTENER, IN) {
        plumbing::fail(format!("epoll_ctl(ADD) of the listener: {e}"));
    }
    // One descriptor kept in reserve for the day accept() runs out of them.
    let mut spare = open_spare();
    plumbing::announce(local);
    // ANCHOR_END: register_listener

    // ANCHOR: epoll_loop
    let mut conns = Slab::new();
    let mut events: Vec<libc::epoll_event> = Vec::with_capacity(MAX_EVENTS);
    // One read buffer for everybody: what a read brings goes to the queue
    // at once, so no connection owns a buffer while it is idle.
    let mut buf = [0u8; READ_SIZE];
    while !plumbing::stop_requested() {
        // Sleep until something is ready. No timeout: nothing else to do.
        // Nothing to rebuild either: the kernel keeps the list.
        match epoll.wait(&mut events, -1) {
            Ok(()) => trace!("epoll_wait -> {} ready", events.len()),
            // A signal arrived: go round and look at the stop flag.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => plumbing::fail(format!("epoll_wait: {e}")),
        }
        for event in &events {
            // libc's epoll_event is packed on x86_64: copy the fields out by
            // value. A reference to one of them would be unaligned (E0793).
            let (token, flags) = (event.u64, event.events);
            if token == LISTENER {
                trace!("fd {} (listener) {}", fd(&listener), epoll_bits(flags));
                accept_new(&listener, &epoll, &mut conns, &mut spare);
                continue;
            }
            // The token leads straight to the connection. Each socket
            // appears at most once per epoll_wait(), and a connection is
            // closed only while handling its own event, so no token in this
            // batch names a connection closed earlier in the batch.
            let token = token as usize;
            let Some(conn) = conns.get_mut(token) else {
                continue;
            };
            trace!("fd {} {}", fd(&conn.socket), epoll_bits(flags));
            // epoll reports these two whether we asked or not.
            let next = if flags & (ERR | HUP) != 0 {
                conn.close_on_hangup(flags)
            } else {
                conn.on_ready(flags & IN != 0, flags & OUT != 0, &mut buf)
            };
            let next = match next {
                Next::Keep => conn.update_interest(&epoll, token),
                Next::Close => Next::Close,
            };
            if next == Next::Close {
                close_connection(&epoll, &mut conns, token);
            }
        }
    }
    // ANCHOR_END: epoll_loop
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
    // epoll may say "readable" for a client that has already gone.
    socket.set_nonblocking(true)?;
    Ok(socket)
}
// ANCHOR_END: open_listener

// ANCHOR: accept_new
/// Accept every client waiting in the backlog, until accept() says EAGAIN,
/// and register each one with epoll.
fn accept_new(listener: &Socket, epoll: &Epoll, conns: &mut Slab, spare: &mut Option<File>) {
    loop {
        let (socket, peer) = match listener.accept() {
            Ok(pair) => pair,
            // Nobody is waiting: the normal way out.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_out_of_descriptors(&e) => {
                trace!("accept -> {}", plumbing::errno_name(&e));
                if shed_connection(listener, spare) {
                    continue;
                }
                return;
            }
            Err(e) => {
                // ECONNABORTED (that client already left), or ENOBUFS/ENOMEM
                // (the kernel is short of memory): the next turn tries again.
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
        let conn_fd = fd(&socket);
        let token = conns.insert(Conn::new(socket));
        // A new client has nothing queued: watch it for reading only.
        if let Err(e) = epoll.add(conn_fd, token as u64, IN) {
            trace!("fd {conn_fd}: epoll_ctl(ADD) -> {e}, closing");
            conns.remove(token);
            continue;
        }
        trace!("accept -> fd {conn_fd} from {peer}, token {token}");
    }
}
// ANCHOR_END: accept_new

// ANCHOR: shed_connection
/// accept() failed with EMFILE (our descriptor limit) or ENFILE (the
/// system's). The client stays in the backlog, so the listener stays
/// readable: epoll_wait() returns at once, accept() fails again, and the
/// loop spins while that client hangs. Measured with a limit of 48
/// descriptors and 80 clients: 780 000 turns of the loop in two seconds;
/// with the cure below, 15. Stage 5 had the same weakness.
///
/// Production servers do one of two things. nginx stops accepting for half
/// a second. libuv keeps one descriptor in reserve: it closes the reserve,
/// accepts the waiting client with the freed slot, closes that connection at
/// once, and opens the reserve again. We do libuv's: the client learns at
/// once that we are full (its connection closes) instead of hanging, and the
/// backlog empties, so the listener stops being ready and the loop sleeps.
///
/// Returns whether a client was shed (so the caller may try once more).
fn shed_connection(listener: &Socket, spare: &mut Option<File>) -> bool {
    // ANCHOR: exercise-shed-connection Out of descriptors: close the reserve (spare.take()), accept() the waiting client with the freed slot and drop it at once, then reopen the reserve with open_spare(); return whether a client was shed. No reserve: try to reopen it and return false.
    let Some(reserve) = spare.take() else {
        // The reserve could not be reopened last time (another process took
        // the slot, ENFILE). Try again; until then the loop may spin.
        *spare = open_spare();
        return false;
    };
    drop(reserve); // close(): one descriptor is free now
    let shed = match listener.accept() {
        Ok((socket, _)) => {
            trace!("accept -> fd {}: over the limit, closing", fd(&socket));
            true // dropping the socket closes it
        }
        // accept() reports EMFILE even when nobody waits: it takes a
        // descriptor before it looks at the backlog. EAGAIN here means the
        // backlog is empty, and epoll_wait() will sleep.
        Err(e) => {
            trace!("accept -> {}", plumbing::errno_name(&e));
            false
        }
    };
    *spare = open_spare();
    shed
    // ANCHOR_END: exercise-shed-connection
}

/// The reserve descriptor: /dev/null, opened (with O_CLOEXEC) by std.
fn open_spare() -> Option<File> {
    match File::open("/dev/null") {
        Ok(file) => Some(file),
        Err(e) => {
            trace!("open(/dev/null) for the reserve descriptor -> {e}");
            None
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
// ANCHOR_END: shed_connection

// ANCHOR: close_connection
/// Deregister a connection, then close it.
fn close_connection(epoll: &Epoll, conns: &mut Slab, token: usize) {
    // ANCHOR: exercise-close-connection Take the connection out of the slab, epoll.delete() its fd BEFORE it is closed (trace a failure, do not stop), then drop it, which closes it.
    let Some(conn) = conns.remove(token) else {
        return;
    };
    // EPOLL_CTL_DEL before close(). epoll watches the open socket (the
    // kernel's file), not the descriptor number, and close() removes the
    // registration only when the last descriptor of that file goes. If the
    // file lives on elsewhere (a dup(), a child that inherited it), events
    // keep coming after our close(), carrying this token, which by then may
    // name another connection. Deleting first is exact, for one syscall.
    if let Err(e) = epoll.delete(fd(&conn.socket)) {
        trace!(
            "fd {}: epoll_ctl(DEL) -> {}",
            fd(&conn.socket),
            plumbing::errno_name(&e)
        );
    }
    drop(conn); // close()
    // ANCHOR_END: exercise-close-connection
}
// ANCHOR_END: close_connection

// ANCHOR: conn
/// One client, and what we still owe it.
struct Conn {
    socket: Socket,
    /// Bytes read from the client and not yet echoed back. It owns memory
    /// only while it holds bytes (see `flush_queue`): an idle client costs
    /// a few dozen bytes here, not a buffer.
    queue: Vec<u8>,
    /// The client has shut down its sending side: read() returned 0.
    eof: bool,
    /// What epoll watches for on this socket now, so that we call
    /// epoll_ctl(MOD) only when that must change.
    interest: u32,
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
            interest: IN,
        }
    }

    // ANCHOR: wants_to_read
    /// Should epoll watch this client for reading? Not after its EOF, and
    /// not while its queue is full: that is the backpressure.
    fn wants_to_read(&self) -> bool {
        !self.eof && self.queue.len() < QUEUE_LIMIT
    }
    // ANCHOR_END: wants_to_read

    // ANCHOR: on_ready
    /// epoll says this client is readable, writable, or both.
    fn on_ready(&mut self, readable: bool, writable: bool, buf: &mut [u8]) -> Next {
        if readable {
            if let Err(e) = self.read_some(buf) {
                return self.close_on_error(&e);
            }
        }
        // Write at once what we just read, without waiting for EPOLLOUT.
        // Asking for EPOLLOUT costs an epoll_ctl(MOD) now and another when
        // the queue empties; nearly always the socket takes everything at
        // once and neither call is needed (redis does the same).
        if writable || !self.queue.is_empty() {
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
    /// One read(): new bytes join the queue. Level-triggered, one read per
    /// event is enough: what it leaves is reported again on the next turn,
    /// and meanwhile every other ready client gets its turn too.
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
                // Drained: give the memory back. Ten thousand idle clients
                // should not each keep the peak of their last burst.
                if self.queue.is_empty() {
                    self.queue = Vec::new();
                }
            }
            // The socket's buffer is full: later.
            Err(e) if is_retry_later(&e) => {}
            // EPIPE, ECONNRESET: the client has gone.
            Err(e) => return Err(e),
        }
        Ok(())
    }
    // ANCHOR_END: flush_queue

    // ANCHOR: update_interest
    /// Tell epoll what this client waits for now, if that changed: stage 5
    /// rebuilt its whole question every turn, we edit one entry when needed.
    fn update_interest(&mut self, epoll: &Epoll, token: usize) -> Next {
        // ANCHOR: exercise-update-interest Work out the interest: IN while wants_to_read(), OUT only while the queue holds data. If it differs from self.interest, epoll.modify() the fd with it and remember it; on error close_on_error. Return Next::Keep otherwise.
        let mut wanted = 0;
        if self.wants_to_read() {
            wanted |= IN;
        }
        // EPOLLOUT only while the queue holds something. A socket with room
        // in its send buffer is writable nearly all the time: asking with
        // nothing to send would report it on every turn, for nothing.
        if !self.queue.is_empty() {
            wanted |= OUT;
        }
        if wanted == self.interest {
            return Next::Keep;
        }
        let result = epoll.modify(fd(&self.socket), token as u64, wanted);
        trace!(
            "fd {}: epoll_ctl(MOD, {}) -> {}",
            fd(&self.socket),
            epoll_bits(wanted),
            result
                .as_ref()
                .map_or_else(plumbing::errno_name, |()| "ok".into())
        );
        match result {
            Ok(()) => {
                self.interest = wanted;
                Next::Keep
            }
            Err(e) => self.close_on_error(&e),
        }
        // ANCHOR_END: exercise-update-interest
    }
    // ANCHOR_END: update_interest

    // ANCHOR: close_on_hangup
    /// EPOLLERR: an error is pending on the socket (ECONNRESET, say).
    /// EPOLLHUP: the connection is over in both directions. Either way
    /// nothing we still send could arrive, and level-triggered epoll would
    /// report it again at once on every call if we kept the socket: close it.
    fn close_on_hangup(&self, flags: u32) -> Next {
        // SO_ERROR says which error, and clears it.
        let error = match self.socket.take_error() {
            Ok(Some(e)) => plumbing::errno_name(&e),
            Ok(None) => "no error".to_string(),
            Err(e) => plumbing::errno_name(&e),
        };
        trace!(
            "fd {}: {} ({error}), closing",
            fd(&self.socket),
            epoll_bits(flags)
        );
        Next::Close
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

fn fd(socket: &Socket) -> RawFd {
    socket.as_raw_fd()
}

// ANCHOR: slab
/// The connections, indexed by token: a vector of slots and a list of the
/// free ones. Insert, lookup and remove are O(1), and a freed slot is reused,
/// so tokens stay small.
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slab {
    fn new() -> Slab {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(token) => {
                self.slots[token] = Some(conn);
                token
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    fn get_mut(&mut self, token: usize) -> Option<&mut Conn> {
        self.slots.get_mut(token)?.as_mut()
    }

    fn remove(&mut self, token: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(token)?.take();
        if conn.is_some() {
            self.free.push(token);
        }
        conn
    }
}
// ANCHOR_END: slab

// ANCHOR: epoll
/// The event bits we use, as the u32 that `epoll_event.events` holds.
const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const ERR: u32 = libc::EPOLLERR as u32;
const HUP: u32 = libc::EPOLLHUP as u32;

/// One epoll instance. This thin wrapper holds all the `unsafe` code of the
/// file: three system calls, and the event array the kernel fills in.
struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// epoll_create1(): a new, empty interest list. EPOLL_CLOEXEC so that a
    /// program we might exec does not inherit it.
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; it returns a new
        // descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned to us and nothing else owns it;
        // OwnedFd closes it when the Epoll is dropped.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// EPOLL_CTL_ADD: watch `fd` for `interest`; its events carry `token`.
    fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// EPOLL_CTL_MOD: watch the registered `fd` for `interest` instead.
    fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// EPOLL_CTL_DEL: stop watching `fd`.
    fn delete(&self, fd: RawFd) -> io::Result<()> {
        // The event is ignored for DEL (kernels before 2.6.9 wanted one).
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call; the
        // kernel only reads it.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// epoll_wait(): sleep until a watched socket is ready or `timeout_ms`
    /// passes (-1: no limit), then put the ready ones in `events`, at most
    /// its capacity.
    fn wait(&self, events: &mut Vec<libc::epoll_event>, timeout_ms: i32) -> io::Result<()> {
        events.clear();
        let max = events.capacity().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: the pointer is valid for writing `max` epoll_events (the
        // vector's capacity), and the kernel writes at most `max`.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel initialised the first `n` entries, n <= max.
        unsafe { events.set_len(n as usize) };
        Ok(())
    }
}
// ANCHOR_END: epoll

/// Event bits as the trace shows them: `EPOLLIN|EPOLLHUP`.
fn epoll_bits(flags: u32) -> String {
    let names = [
        (IN, "EPOLLIN"),
        (OUT, "EPOLLOUT"),
        (libc::EPOLLRDHUP as u32, "EPOLLRDHUP"),
        (ERR, "EPOLLERR"),
        (HUP, "EPOLLHUP"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    set.join("|")
}

//! Stage 6: epoll, level-triggered.
//!
//! Stage 5's server, moved from poll() onto epoll. The connection state is
//! the same: each client has an output queue with a bound, we stop reading a
//! client whose queue is full until it drains, and a half-closed client gets
//! everything it sent before we close. What changes is how the loop learns
//! which sockets are ready.
//!
//! poll() is handed the whole list of descriptors on every call and the
//! kernel walks all of it, so each turn costs O(connections) even when one
//! client is active. epoll keeps the list inside the kernel: we register a
//! socket once (`EPOLL_CTL_ADD`), change what we wait for only when that
//! changes (`EPOLL_CTL_MOD`), and epoll_wait() returns only the sockets that
//! are ready. A turn costs O(ready), however many clients sit idle.
//!
//! Each registration carries a token that the kernel hands back with every
//! event. Ours is the connection's index in a slab, so an event leads
//! straight to its connection, with no search.
//!
//! Level-triggered (epoll's default) means a socket is reported on every
//! epoll_wait() for as long as it is ready, exactly like poll(): whatever we
//! leave unread now is reported again on the next turn. That makes the loop
//! forgiving, and it is why running out of descriptors needs care here (see
//! `shed_connection`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use plumbing::trace;
use socket2::{Domain, Protocol, Socket, Type};

/// How many connections the kernel may hold for us before we accept them.
const BACKLOG: i32 = 1024;

/// The size of the one read buffer that every connection shares.
const READ_SIZE: usize = 64 * 1024;

/// The most we hold for one client. Past this we stop reading from it until
/// it reads its echo: a client that sends without reading cannot make us
/// buffer without limit.
const QUEUE_LIMIT: usize = 256 * 1024;

/// At most this many read() calls per connection per event. Level-triggered
/// epoll reports again whatever we leave behind, so stopping early loses
/// nothing, and a client that sends without pause cannot hold the loop.
const READS_PER_EVENT: usize = 4;

/// At most this many accept() calls per listener event, for the same reason.
const ACCEPTS_PER_EVENT: usize = 64;

/// At most this many events per epoll_wait(); more simply wait for the next turn.
const MAX_EVENTS: usize = 256;

/// The token of the listening socket. Connections use their slab index,
/// which never comes near this value.
const LISTENER: u64 = u64::MAX;

fn main() {
    let args = plumbing::Cli::new(
        "ch06-epoll-level",
        7006,
        "echo server on level-triggered epoll, with bounded output queues",
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
    // listening socket means a connection is waiting to be accepted.
    if let Err(e) = epoll.add(fd(&listener), LISTENER, IN) {
        plumbing::fail(format!("epoll_ctl ADD listener: {e}"));
    }
    // One descriptor kept in reserve for the day accept() runs out of them.
    let mut spare = open_spare();
    plumbing::announce(local);
    // ANCHOR_END: register_listener

    // ANCHOR: event_loop
    let mut conns = Slab::new();
    let mut events = Vec::with_capacity(MAX_EVENTS);
    // One read buffer for everybody: a read is echoed (or queued) before the
    // next read, so no connection needs a buffer of its own while idle.
    let mut buf = vec![0u8; READ_SIZE];
    while !plumbing::stop_requested() {
        // Sleep until at least one registered socket is ready. No timeout
        // (-1): an idle server costs no CPU. A signal ends the wait with EINTR.
        if let Err(e) = epoll.wait(&mut events, -1) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            plumbing::fail(format!("epoll_wait: {e}"));
        }
        for event in &events {
            // libc's epoll_event is packed on x86_64: copy the fields out by
            // value. A reference to one of them would be unaligned (E0793).
            let (token, flags) = (event.u64, event.events);
            if token == LISTENER {
                trace!("event listener: {}", event_names(flags));
                accept_new(&listener, &epoll, &mut conns, &mut spare);
            } else {
                // Each socket appears at most once per epoll_wait(), and we
                // close a connection only while handling its own event, so a
                // token in this batch never names a connection already closed.
                serve(&epoll, &mut conns, token as usize, flags, &mut buf);
            }
        }
    }
    // ANCHOR_END: event_loop
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
    // A readiness event is a hint, not a promise (the client may be gone by
    // the time we call accept): the listener must never block the loop.
    socket.set_nonblocking(true)?;
    Ok(socket)
}
// ANCHOR_END: open_listener

// ANCHOR: accept_new
/// Accept the clients waiting in the backlog and register each with epoll.
fn accept_new(listener: &Socket, epoll: &Epoll, conns: &mut Slab, spare: &mut Option<File>) {
    for _ in 0..ACCEPTS_PER_EVENT {
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
            // ECONNABORTED: that client left before we got to it.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => {
                // ENOBUFS, ENOMEM: the kernel is short of memory. Leave the
                // client in the backlog; the next turn tries again.
                trace!("accept -> {}", plumbing::errno_name(&e));
                return;
            }
        };
        let peer = peer.as_socket().map_or("?".to_string(), |a| a.to_string());
        let conn_fd = fd(&socket);
        // On Linux an accepted socket does NOT inherit O_NONBLOCK from the
        // listener: without this, a read() after a stale event would block.
        if let Err(e) = socket.set_nonblocking(true) {
            trace!("fd {conn_fd}: set_nonblocking -> {e}, closing");
            continue; // dropping the socket closes it
        }
        let token = conns.insert(Connection::new(socket));
        // A new client has nothing queued: we wait for its input only.
        if let Err(e) = epoll.add(conn_fd, token as u64, IN) {
            trace!("fd {conn_fd}: epoll_ctl ADD -> {e}, closing");
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
/// readable. Level-triggered, epoll_wait() then returns at once, accept()
/// fails again, and the loop spins at 100 % CPU while that client hangs:
/// about 1.7 million turns in 1.5 seconds on the machine this was written on.
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
    let Some(reserve) = spare.take() else {
        // The reserve could not be reopened last time (another process took
        // the slot, ENFILE). Try again; until then the loop may spin.
        *spare = open_spare();
        return false;
    };
    drop(reserve); // close(): one descriptor is free now
    let shed = match listener.accept() {
        Ok((socket, _)) => {
            trace!("accept -> fd {}: over the limit, closing it", fd(&socket));
            true // dropping the socket closes it
        }
        // accept() reports EMFILE even when nobody waits: it takes a
        // descriptor before it looks at the backlog. EAGAIN here means the
        // backlog is empty, and epoll_wait() will sleep.
        Err(e) => {
            trace!(
                "accept with the reserve freed -> {}",
                plumbing::errno_name(&e)
            );
            false
        }
    };
    *spare = open_spare();
    shed
}

/// The reserve descriptor: /dev/null, opened with O_CLOEXEC by std.
fn open_spare() -> Option<File> {
    match File::open("/dev/null") {
        Ok(file) => Some(file),
        Err(e) => {
            trace!("open /dev/null for the reserve descriptor -> {e}");
            None
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
// ANCHOR_END: shed_connection

// ANCHOR: serve
/// Handle one readiness event of connection `token`.
fn serve(epoll: &Epoll, conns: &mut Slab, token: usize, flags: u32, buf: &mut [u8]) {
    let Some(conn) = conns.get_mut(token) else {
        trace!("event for token {token}, which has no connection: ignored");
        return;
    };
    trace!("event fd {}: {}", fd(&conn.socket), event_names(flags));
    let why = match conn.on_ready(flags, buf) {
        Err(e) => plumbing::errno_name(&e),
        Ok(()) if conn.is_finished() => "client closed, all echoed".to_string(),
        Ok(()) => match conn.update_interest(epoll, token) {
            Ok(()) => return,
            Err(e) => format!("epoll_ctl MOD -> {}", plumbing::errno_name(&e)),
        },
    };
    close_connection(epoll, conns, token, &why);
}
// ANCHOR_END: serve

// ANCHOR: close_connection
/// Deregister a connection, then close it.
fn close_connection(epoll: &Epoll, conns: &mut Slab, token: usize, why: &str) {
    let Some(conn) = conns.remove(token) else {
        return;
    };
    let conn_fd = fd(&conn.socket);
    // EPOLL_CTL_DEL before close(). epoll watches the open socket (the
    // kernel's file), not the descriptor number, and close() removes the
    // registration only when the last descriptor of that file goes. If the
    // file lives on elsewhere (a dup(), a child that inherited it), events
    // keep coming after our close(), carrying this token, which by then
    // names another connection. Deleting first is exact, for one syscall.
    if let Err(e) = epoll.delete(conn_fd) {
        trace!(
            "fd {conn_fd}: epoll_ctl DEL -> {}",
            plumbing::errno_name(&e)
        );
    }
    trace!("fd {conn_fd}: {why}, closing");
    drop(conn); // close()
}
// ANCHOR_END: close_connection

// ANCHOR: connection
/// One client, and what we still owe it.
struct Connection {
    socket: Socket,
    /// Bytes read from the client that its socket would not take yet. Empty
    /// and unallocated almost always: it gets memory at the first short
    /// send() and gives it back when drained, so an idle client costs a few
    /// dozen bytes here, not a buffer.
    queue: VecDeque<u8>,
    /// The client shut down its sending side: read() returned 0.
    peer_closed: bool,
    /// What epoll watches for on this socket now, so that we call
    /// epoll_ctl(MOD) only when it must change.
    interest: u32,
}
// ANCHOR_END: connection

impl Connection {
    fn new(socket: Socket) -> Connection {
        Connection {
            socket,
            queue: VecDeque::new(),
            peer_closed: false,
            interest: IN,
        }
    }

    // ANCHOR: on_ready
    /// Do what the event says can be done without waiting.
    fn on_ready(&mut self, flags: u32, buf: &mut [u8]) -> io::Result<()> {
        // EPOLLERR and EPOLLHUP come whether asked for or not. The next read
        // or send then returns the error (ECONNRESET) or EOF, which is how
        // we learn what happened: treat them as "readable" and "writable".
        if flags & (IN | HUP | ERR) != 0 && self.wants_input() {
            self.drain_reads(buf)?;
        }
        if flags & (OUT | HUP | ERR) != 0 && !self.queue.is_empty() {
            self.flush_queue()?;
        }
        Ok(())
    }
    // ANCHOR_END: on_ready

    // ANCHOR: drain_reads
    /// Read what the client sent and echo it, while the queue has room.
    fn drain_reads(&mut self, buf: &mut [u8]) -> io::Result<()> {
        for _ in 0..READS_PER_EVENT {
            // Backpressure: never read more than the queue can still hold.
            let room = QUEUE_LIMIT - self.queue.len();
            if self.peer_closed || room == 0 {
                break;
            }
            let want = room.min(buf.len());
            let result = (&self.socket).read(&mut buf[..want]);
            trace!(
                "read fd {} -> {}",
                fd(&self.socket),
                plumbing::describe(&result)
            );
            match result {
                Ok(0) => self.peer_closed = true,
                Ok(n) => {
                    self.send_or_queue(&buf[..n])?;
                    // A short read most likely emptied the socket. If it did
                    // not (the FIN came with the data, or more arrived since),
                    // level-triggered epoll reports the socket again next turn.
                    if n < want {
                        break;
                    }
                }
                // Nothing more for now: epoll says when there is.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNRESET and friends.
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    // ANCHOR_END: drain_reads

    // ANCHOR: send_or_queue
    /// Echo `data`: send it at once if nothing is queued ahead of it, and
    /// queue whatever the socket does not take.
    fn send_or_queue(&mut self, data: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        // Bytes must leave in order: if some already wait in the queue,
        // these wait behind them.
        if self.queue.is_empty() {
            while sent < data.len() {
                let n = self.send_some(&data[sent..])?;
                if n == 0 {
                    break; // the socket is full
                }
                sent += n;
            }
        }
        self.queue.extend(&data[sent..]);
        Ok(())
    }
    // ANCHOR_END: send_or_queue

    // ANCHOR: flush_queue
    /// Send what the queue holds, until it is empty or the socket is full.
    fn flush_queue(&mut self) -> io::Result<()> {
        while !self.queue.is_empty() {
            let (front, _) = self.queue.as_slices();
            let n = self.send_some(front)?;
            if n == 0 {
                return Ok(()); // full: EPOLLOUT says when there is room
            }
            self.queue.drain(..n);
        }
        // Drained: give the memory back, so that a client which once had a
        // backlog does not keep its peak buffer for the rest of its life.
        self.queue = VecDeque::new();
        Ok(())
    }
    // ANCHOR_END: flush_queue

    /// One send(). Ok(0) means the socket's buffer is full (EAGAIN).
    fn send_some(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            // MSG_NOSIGNAL: if the client has gone, return EPIPE instead of
            // raising SIGPIPE, whose default action would kill the server.
            let result = self.socket.send_with_flags(data, libc::MSG_NOSIGNAL);
            trace!(
                "write fd {} -> {}",
                fd(&self.socket),
                plumbing::describe(&result)
            );
            match result {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EPIPE, ECONNRESET: the client has gone.
                Err(e) => return Err(e),
            }
        }
    }

    // ANCHOR: update_interest
    /// Tell epoll what this connection waits for now, if that changed.
    fn update_interest(&mut self, epoll: &Epoll, token: usize) -> io::Result<()> {
        let mut wanted = 0;
        if self.wants_input() {
            wanted |= IN;
        }
        // EPOLLOUT only while something waits to be sent. A socket with room
        // in its send buffer is writable nearly all the time: asking for
        // EPOLLOUT with nothing to send would report it on every turn.
        if !self.queue.is_empty() {
            wanted |= OUT;
        }
        if wanted != self.interest {
            trace!(
                "fd {}: epoll_ctl MOD {}",
                fd(&self.socket),
                event_names(wanted)
            );
            epoll.modify(fd(&self.socket), token as u64, wanted)?;
            self.interest = wanted;
        }
        Ok(())
    }
    // ANCHOR_END: update_interest

    /// Should we read from this client? Not after its EOF (the socket would
    /// be readable forever), and not while its queue is full (backpressure:
    /// its bytes wait in the kernel, and then in its own send buffer).
    fn wants_input(&self) -> bool {
        !self.peer_closed && self.queue.len() < QUEUE_LIMIT
    }

    /// The client has closed its side and has every byte back: we may close.
    fn is_finished(&self) -> bool {
        self.peer_closed && self.queue.is_empty()
    }
}

// ANCHOR: slab
/// The connections, indexed by token: a vector of slots and a list of the
/// free ones. Insert, lookup and remove are O(1), and a freed slot is reused,
/// so tokens stay small.
struct Slab {
    slots: Vec<Option<Connection>>,
    free: Vec<usize>,
}

impl Slab {
    fn new() -> Slab {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, conn: Connection) -> usize {
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

    fn get_mut(&mut self, token: usize) -> Option<&mut Connection> {
        self.slots.get_mut(token)?.as_mut()
    }

    fn remove(&mut self, token: usize) -> Option<Connection> {
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

/// "IN|OUT|HUP": the bits of an event, for --trace.
fn event_names(flags: u32) -> String {
    let names = [
        (IN, "IN"),
        (OUT, "OUT"),
        (libc::EPOLLRDHUP as u32, "RDHUP"),
        (libc::EPOLLPRI as u32, "PRI"),
        (ERR, "ERR"),
        (HUP, "HUP"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        "none".to_string()
    } else {
        set.join("|")
    }
}
// ANCHOR_END: epoll

fn fd(socket: &Socket) -> RawFd {
    socket.as_raw_fd()
}

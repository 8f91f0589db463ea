//! Stage 7: epoll, edge-triggered.
//!
//! Stage 6 used epoll level-triggered: a socket is reported on every
//! epoll_wait() for as long as it is ready. With EPOLLET it is reported once
//! per change instead: when new bytes arrive, when room appears in a full
//! send buffer, when the client shuts down its side. Nothing reminds us of
//! bytes we left behind. This is how mio (under tokio) and nginx use epoll:
//! each socket is registered once, for everything, and never modified again
//! (no EPOLL_CTL_MOD in this stage).
//!
//! The price is a contract. On each event, keep going until the kernel says
//! EAGAIN: accept until EAGAIN, read until EAGAIN, write until EAGAIN or
//! until nothing is left. Stop earlier and the leftover bytes wait for an
//! edge that may never come. And a short read is not EAGAIN: when data and
//! the client's FIN arrive together they make one event, and a loop that
//! stops at the short read never sees the EOF.
//!
//! Draining everything at once has its own trap: a client that sends as
//! fast as we echo would keep the loop inside its read loop, and every other
//! client would starve. So a connection gets a budget of reads per turn, and
//! one that spends it before EAGAIN goes on a ready list: we remember the
//! edge ourselves, since the kernel will not repeat it. While that list is
//! not empty, epoll_wait() only collects news (timeout 0) and never sleeps.
//!
//! `--pitfall no-drain` and `--pitfall short-read` make two classic mistakes
//! on purpose, so that the conformance suite can show what each breaks.

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

/// At most this many read() calls per connection per turn, so that a client
/// that sends without pause cannot hold the loop. Edge-triggered epoll does
/// not remind us of what we leave behind: a connection that spends its
/// budget before EAGAIN goes on the ready list and gets another turn after
/// everybody else has had one.
const READS_PER_TURN: usize = 4;

/// At most this many events per epoll_wait(); more simply wait for the next turn.
const MAX_EVENTS: usize = 256;

/// The token of the listening socket. Connections use their slab index,
/// which never comes near this value.
const LISTENER: u64 = u64::MAX;

fn main() {
    let args = plumbing::Cli::new(
        "ch07-epoll-edge",
        7007,
        "echo server on edge-triggered epoll, draining every socket to EAGAIN",
    )
    .option(
        "--pitfall",
        "NAME",
        "make a classic edge-triggered mistake on purpose: no-drain, short-read or no-budget",
    )
    .parse();
    let pitfall = parse_pitfall(args.option("--pitfall"));
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
    // The listener is registered once, for reading, edge-triggered:
    // "readable" on a listening socket means a connection is waiting, and the
    // edge comes when the backlog goes from empty to not empty.
    if let Err(e) = epoll.add(fd(&listener), LISTENER, IN | ET) {
        plumbing::fail(format!("epoll_ctl ADD listener: {e}"));
    }
    // One descriptor kept in reserve for the day accept() runs out of them.
    let mut spare = open_spare();
    plumbing::announce(local);
    // ANCHOR_END: register_listener

    // ANCHOR: event_loop
    let mut conns = Slab::new();
    // Tokens of the connections with work left over: bytes still unread
    // when their read budget ran out. Each is on it at most once.
    let mut ready = VecDeque::new();
    let mut events = Vec::with_capacity(MAX_EVENTS);
    // One read buffer for everybody: a read is echoed (or queued) before the
    // next read, so no connection needs a buffer of its own while idle.
    let mut buf = vec![0u8; READ_SIZE];
    while !plumbing::stop_requested() {
        // Sleep until at least one registered socket is ready (-1: no
        // timeout), unless work is left over: then only collect what is new
        // (0: do not wait). A signal ends the wait with EINTR.
        let timeout = if ready.is_empty() { -1 } else { 0 };
        if let Err(e) = epoll.wait(&mut events, timeout) {
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
                note_event(&mut conns, &mut ready, token as usize, flags);
            }
        }
        // Connections are closed only in here, after the batch of events:
        // a token in the batch never names a connection already closed.
        run_ready_list(&epoll, &mut conns, &mut ready, &mut buf, pitfall);
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
/// Accept every client waiting in the backlog, until EAGAIN, and register
/// each with epoll. Edge-triggered, stopping earlier would leave the rest in
/// the backlog until yet another client arrives and makes a new edge.
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
            // ECONNABORTED: that client left before we got to it.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => {
                // ENOBUFS, ENOMEM: the kernel is short of memory. Leave the
                // client in the backlog; the next arrival's edge tries again.
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
        // Registered once, for everything, edge-triggered; never modified.
        // EPOLLOUT costs nothing here: an edge comes only when room appears
        // in a send buffer that was full, not on every turn. EPOLLRDHUP
        // flags the client's shutdown(WR). Bytes that arrived before this
        // call are not lost: EPOLL_CTL_ADD reports a socket already ready.
        if let Err(e) = epoll.add(conn_fd, token as u64, IN | OUT | RDHUP | ET) {
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
/// system's). The client stays in the backlog. Level-triggered (stage 6),
/// the listener stays readable and the loop would spin. Edge-triggered, it
/// does not spin, but no new edge comes for that client: it hangs, and every
/// client behind it, until yet another one arrives.
///
/// Production servers do one of two things. nginx stops accepting for half
/// a second. libuv keeps one descriptor in reserve: it closes the reserve,
/// accepts the waiting client with the freed slot, closes that connection at
/// once, and opens the reserve again. We do libuv's: the client learns at
/// once that we are full (its connection closes) instead of hanging, and the
/// backlog empties until EAGAIN, as the edge-triggered contract wants.
///
/// Returns whether a client was shed (so the caller may try once more).
fn shed_connection(listener: &Socket, spare: &mut Option<File>) -> bool {
    let Some(reserve) = spare.take() else {
        // The reserve could not be reopened last time (another process took
        // the slot, ENFILE). Try again; until then the backlog waits.
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
        // backlog is empty.
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

// ANCHOR: note_event
/// Remember what an edge said about connection `token`, and put it on the
/// ready list. The work is done in `run_ready_list`, within a budget.
fn note_event(conns: &mut Slab, ready: &mut VecDeque<usize>, token: usize, flags: u32) {
    let Some(conn) = conns.get_mut(token) else {
        trace!("event for token {token}, which has no connection: ignored");
        return;
    };
    trace!("event fd {}: {}", fd(&conn.socket), event_names(flags));
    // EPOLLERR and EPOLLHUP come whether asked for or not; the next read
    // then returns the error (ECONNRESET) or EOF. EPOLLRDHUP: the client's
    // FIN has arrived, maybe with data before it. All mean "read".
    if flags & (IN | RDHUP | HUP | ERR) != 0 {
        conn.readable = true;
    }
    // EPOLLOUT needs no flag: whenever the queue holds something we write
    // until EAGAIN, so no write edge is ever left unused.
    conn.schedule(token, ready);
}
// ANCHOR_END: note_event

// ANCHOR: run_ready_list
/// Give one turn to each connection on the ready list, as the list was when
/// this pass began. Those with input left go back to the end of the list,
/// behind the others: round robin, so a flooding client cannot starve anyone.
fn run_ready_list(
    epoll: &Epoll,
    conns: &mut Slab,
    ready: &mut VecDeque<usize>,
    buf: &mut [u8],
    pitfall: Pitfall,
) {
    for _ in 0..ready.len() {
        let Some(token) = ready.pop_front() else {
            break;
        };
        let Some(conn) = conns.get_mut(token) else {
            continue;
        };
        conn.on_ready_list = false;
        let why = match conn.make_progress(buf, pitfall) {
            Err(e) => plumbing::errno_name(&e),
            Ok(()) if conn.is_finished() => "client closed, all echoed".to_string(),
            Ok(()) => {
                if conn.has_unread_input() {
                    trace!(
                        "fd {}: read budget spent, back on the ready list",
                        fd(&conn.socket)
                    );
                    conn.schedule(token, ready);
                }
                continue;
            }
        };
        close_connection(epoll, conns, token, &why);
    }
}
// ANCHOR_END: run_ready_list

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
    /// An edge said there is input, and we have not read to EAGAIN (or EOF)
    /// since. The kernel will not say it again: this flag is our memory.
    readable: bool,
    /// The token is on the ready list (at most once).
    on_ready_list: bool,
}
// ANCHOR_END: connection

impl Connection {
    fn new(socket: Socket) -> Connection {
        Connection {
            socket,
            queue: VecDeque::new(),
            peer_closed: false,
            readable: false,
            on_ready_list: false,
        }
    }

    /// Put this connection (`token`) on the ready list, unless it is there.
    fn schedule(&mut self, token: usize, ready: &mut VecDeque<usize>) {
        if !self.on_ready_list {
            self.on_ready_list = true;
            ready.push_back(token);
        }
    }

    // ANCHOR: make_progress
    /// Do what can be done for this client now, within this turn's budget.
    fn make_progress(&mut self, buf: &mut [u8], pitfall: Pitfall) -> io::Result<()> {
        // Write first: it makes room in the queue, and room is what lets us
        // read again.
        if !self.queue.is_empty() {
            self.flush_queue()?;
        }
        // When a full queue has drained, reading resumes here. Nothing else
        // would restart it: the bytes that waited meanwhile made their edge
        // long ago, and no new edge comes for them. `readable` remembers.
        if self.has_unread_input() {
            self.drain_reads(buf, pitfall)?;
        }
        Ok(())
    }
    // ANCHOR_END: make_progress

    // ANCHOR: drain_reads
    /// Read and echo until EAGAIN (drained) or EOF. Stop earlier only when
    /// the queue is full (backpressure) or the budget is spent, and then
    /// leave `readable` set.
    fn drain_reads(&mut self, buf: &mut [u8], pitfall: Pitfall) -> io::Result<()> {
        let budget = if pitfall == Pitfall::NoBudget {
            usize::MAX
        } else {
            READS_PER_TURN
        };
        for _ in 0..budget {
            // Backpressure: never read more than the queue can still hold.
            let room = QUEUE_LIMIT - self.queue.len();
            if room == 0 {
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
                Ok(0) => {
                    self.peer_closed = true;
                    self.readable = false;
                    break;
                }
                Ok(n) => {
                    self.send_or_queue(&buf[..n])?;
                    // A short read (n < want) proves nothing: the FIN may be
                    // right behind the data, with no edge of its own. Only
                    // EAGAIN (or EOF) says we are done. The pitfalls skip
                    // that rule on purpose.
                    let gave_up = match pitfall {
                        Pitfall::None | Pitfall::NoBudget => false,
                        Pitfall::NoDrain => true,
                        Pitfall::ShortRead => n < want,
                    };
                    if gave_up {
                        trace!("fd {}: pitfall: not reading to EAGAIN", fd(&self.socket));
                        self.readable = false;
                        break;
                    }
                }
                // Drained: the next bytes will come with a new edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
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
                return Ok(()); // full: an EPOLLOUT edge comes with room
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

    /// Is there input we have not read, and room to take it? Not after EOF,
    /// and not while the queue is full (backpressure: the client's bytes wait
    /// in the kernel, and then in its own send buffer).
    fn has_unread_input(&self) -> bool {
        self.readable && !self.peer_closed && self.queue.len() < QUEUE_LIMIT
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
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Edge-triggered: report a change of readiness once, not the state on
/// every call. /proc/PID/fdinfo of the epoll fd shows it as 0x80000000.
const ET: u32 = libc::EPOLLET as u32;

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
        (RDHUP, "RDHUP"),
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

// ANCHOR: pitfall
/// The mistakes `--pitfall` makes on purpose.
#[derive(Clone, Copy, PartialEq)]
enum Pitfall {
    /// None: read until EAGAIN or EOF.
    None,
    /// One read per edge. Whatever a read leaves waits for the next edge,
    /// which never comes once the client has sent everything.
    NoDrain,
    /// Take a short read for "drained". Misses an EOF that arrived with the
    /// last data: a half-closed client waits for its EOF forever.
    ShortRead,
    /// Read until EAGAIN with no budget: a client that sends as fast as we
    /// echo keeps the loop in its read loop, and everybody else waits.
    NoBudget,
}

fn parse_pitfall(name: Option<&str>) -> Pitfall {
    match name {
        None => Pitfall::None,
        Some("no-drain") => Pitfall::NoDrain,
        Some("short-read") => Pitfall::ShortRead,
        Some("no-budget") => Pitfall::NoBudget,
        Some(other) => {
            eprintln!(
                "ch07-epoll-edge: error: unknown pitfall {other:?}: expected no-drain, short-read or no-budget"
            );
            std::process::exit(2);
        }
    }
}
// ANCHOR_END: pitfall

fn fd(socket: &Socket) -> RawFd {
    socket.as_raw_fd()
}

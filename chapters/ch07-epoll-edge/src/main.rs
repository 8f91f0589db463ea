//! Stage 7: epoll, edge-triggered.
//!
//! Stage 6 used epoll level-triggered: a socket is reported on every
//! epoll_wait() for as long as it is ready. With EPOLLET it is reported once
//! per change instead: when new bytes arrive, when room appears in a full
//! send buffer, when the client shuts down its side. Nothing reminds us of
//! bytes we left behind. This is how mio (under tokio) and nginx use epoll:
//! each socket is registered once, for everything, and never modified (no
//! epoll_ctl(MOD) in this stage, and no EPOLLOUT bookkeeping).
//!
//! The price is a contract. On each event, keep going until the kernel says
//! EAGAIN: accept until EAGAIN, read until EAGAIN, write until EAGAIN or
//! until nothing is left. Stop earlier and the leftover bytes wait for an
//! edge that may never come. And a short read is not EAGAIN: when the last
//! data and the client's FIN arrive together they make one event, and a loop
//! that stops at the short read never sees the EOF.
//!
//! Draining everything at once has its own trap: a client that sends as
//! fast as we echo would keep the loop in its read loop, and every other
//! client would starve. So a connection gets a budget of reads per turn, and
//! one that spends it before EAGAIN goes on a ready list: we remember the
//! edge ourselves, since the kernel will not repeat it. While that list is
//! not empty, epoll_wait() only collects news (timeout 0) and never sleeps.
//!
//! `--pitfall no-drain`, `short-read` and `no-budget` make the classic
//! mistakes on purpose, so that the conformance suite can show what each
//! one breaks.

use std::collections::VecDeque;
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

/// At most this many read() calls per connection per turn (256 KiB), so that
/// a client that sends without pause cannot hold the loop. A connection that
/// spends its budget before EAGAIN goes on the ready list and gets its next
/// turn after every other ready connection has had one.
const READS_PER_TURN: usize = 16;

/// At most this many events per epoll_wait(); the rest wait for the next turn.
const MAX_EVENTS: usize = 256;

/// The token of the listening socket. Connections use their slab index,
/// which never comes near this value.
const LISTENER: u64 = u64::MAX;

fn main() {
    let args = plumbing::Cli::new(
        "ch07-epoll-edge",
        7007,
        "echo server on edge-triggered epoll that drains every socket to EAGAIN",
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
    // "readable" on a listening socket means a client is waiting, and the
    // edge comes when a new client joins the backlog.
    if let Err(e) = epoll.add(fd(&listener), LISTENER, IN | ET) {
        plumbing::fail(format!("epoll_ctl(ADD) of the listener: {e}"));
    }
    // One descriptor kept in reserve for the day accept() runs out of them.
    let mut spare = open_spare();
    plumbing::announce(local);
    // ANCHOR_END: register_listener

    // ANCHOR: epoll_loop
    let mut conns = Slab::new();
    // Tokens of the connections that have work to do this turn: an edge
    // came, or input was left over when their budget ran out. A token is on
    // it at most once.
    let mut ready: VecDeque<usize> = VecDeque::new();
    let mut events: Vec<libc::epoll_event> = Vec::with_capacity(MAX_EVENTS);
    // One read buffer for everybody: what a read brings goes to the queue
    // at once, so no connection owns a buffer while it is idle.
    let mut buf = [0u8; READ_SIZE];
    while !plumbing::stop_requested() {
        // Sleep until something is ready (-1: no timeout), unless input is
        // left over from the last turn: then only collect what is new (0:
        // do not wait). The kernel will not remind us of that input.
        let timeout = if ready.is_empty() { -1 } else { 0 };
        match epoll.wait(&mut events, timeout) {
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
            // The token leads straight to the connection. No connection is
            // closed while we go through the batch: that happens in
            // run_ready_list, so every token here names a live connection.
            let token = token as usize;
            let Some(conn) = conns.get_mut(token) else {
                continue;
            };
            trace!("fd {} {}", fd(&conn.socket), epoll_bits(flags));
            // Remember what the edge said; the work is done below, in
            // turns. EPOLLRDHUP: the client's FIN came (maybe behind data).
            // EPOLLERR and EPOLLHUP come whether asked for or not: read()
            // then returns the error or EOF, which closes the connection.
            if flags & (IN | RDHUP | ERR | HUP) != 0 {
                conn.readable = true;
            }
            // EPOLLOUT needs no flag: whenever the queue holds bytes we
            // write until EAGAIN, so no write edge is ever left unused.
            conn.schedule(token, &mut ready);
        }
        run_ready_list(&epoll, &mut conns, &mut ready, &mut buf, pitfall);
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
/// and register each one with epoll. Edge-triggered, this is a must:
/// clients left in the backlog would wait until yet another client arrives
/// and makes a new edge.
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
            // ECONNABORTED: that client already left. Go on: edge-triggered,
            // the clients behind it get no other chance.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => {
                // ENOBUFS/ENOMEM: the kernel is short of memory. Those still
                // in the backlog wait for the next client's edge.
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
        // Registered once, for everything, edge-triggered, never modified.
        // EPOLLOUT costs nothing here: its edge comes only when room appears
        // in a send buffer that was full, not on every turn. EPOLLRDHUP
        // reports the client's shutdown(WR). Bytes that arrived before this
        // call are not lost: EPOLL_CTL_ADD reports a socket already ready.
        if let Err(e) = epoll.add(conn_fd, token as u64, IN | OUT | RDHUP | ET) {
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
/// system's). The client stays in the backlog. Level-triggered (stage 6)
/// the listener would stay readable and the loop would spin. Edge-triggered
/// it does not spin, but no new edge comes for that client: it hangs, and
/// every client behind it, until yet another client arrives.
///
/// Production servers do one of two things. nginx stops accepting for half
/// a second. libuv keeps one descriptor in reserve: it closes the reserve,
/// accepts the waiting client with the freed slot, closes that connection at
/// once, and opens the reserve again. We do libuv's: the client learns at
/// once that we are full (its connection closes) instead of hanging, and the
/// backlog empties down to EAGAIN, as the edge-triggered contract wants.
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
            trace!("accept -> fd {}: over the limit, closing", fd(&socket));
            true // dropping the socket closes it
        }
        // accept() reports EMFILE even when nobody waits: it takes a
        // descriptor before it looks at the backlog. EAGAIN here means the
        // backlog is empty.
        Err(e) => {
            trace!("accept -> {}", plumbing::errno_name(&e));
            false
        }
    };
    *spare = open_spare();
    shed
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

// ANCHOR: run_ready_list
/// Give one turn to each connection on the ready list, as the list was when
/// this pass began. Those with input left over go back to the end of the
/// list, behind the others: round robin, so that a client that floods us
/// cannot starve anyone.
fn run_ready_list(
    epoll: &Epoll,
    conns: &mut Slab,
    ready: &mut VecDeque<usize>,
    buf: &mut [u8],
    pitfall: Pitfall,
) {
    // ANCHOR: exercise-run-ready-list Give each connection on the ready list (as it was when this pass began) one make_progress() turn: pop it, clear on_ready_list, close it on Next::Close, and schedule() it again at the back if has_unread_input(): round robin, so nobody starves.
    for _ in 0..ready.len() {
        let Some(token) = ready.pop_front() else {
            break;
        };
        let Some(conn) = conns.get_mut(token) else {
            continue;
        };
        conn.on_ready_list = false;
        match conn.make_progress(buf, pitfall) {
            Next::Close => close_connection(epoll, conns, token),
            Next::Keep => {
                if conn.has_unread_input() {
                    trace!(
                        "fd {}: read budget spent, back on the ready list",
                        fd(&conn.socket)
                    );
                    conn.schedule(token, ready);
                }
            }
        }
    }
    // ANCHOR_END: exercise-run-ready-list
}
// ANCHOR_END: run_ready_list

// ANCHOR: close_connection
/// Deregister a connection, then close it.
fn close_connection(epoll: &Epoll, conns: &mut Slab, token: usize) {
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
    /// An edge said there is input, and we have not read to EAGAIN (or EOF)
    /// since. The kernel will not say it again: this flag is our memory.
    readable: bool,
    /// The token is on the ready list (at most once).
    on_ready_list: bool,
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

    // ANCHOR: wants_to_read
    /// Should we read from this client? Not after its EOF, and not while its
    /// queue is full: that is the backpressure.
    fn wants_to_read(&self) -> bool {
        !self.eof && self.queue.len() < QUEUE_LIMIT
    }

    /// Is input waiting that we want to read now?
    fn has_unread_input(&self) -> bool {
        self.readable && self.wants_to_read()
    }
    // ANCHOR_END: wants_to_read

    // ANCHOR: make_progress
    /// Do what can be done for this client now, within this turn's budget.
    fn make_progress(&mut self, buf: &mut [u8], pitfall: Pitfall) -> Next {
        // Write first: it makes room in the queue, and room is what lets us
        // read again.
        if !self.queue.is_empty() {
            if let Err(e) = self.flush_queue() {
                return self.close_on_error(&e);
            }
        }
        // When a full queue has drained, reading resumes here. Nothing else
        // would restart it: the bytes that waited meanwhile made their edge
        // long ago, and no new edge comes for them. `readable` remembers.
        if self.has_unread_input() {
            if let Err(e) = self.drain_reads(buf, pitfall) {
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
    // ANCHOR_END: make_progress

    // ANCHOR: drain_reads
    /// Read and echo until EAGAIN (drained) or EOF. Stop earlier only when
    /// the queue is full (backpressure) or the turn's budget is spent, and
    /// then leave `readable` set.
    fn drain_reads(&mut self, buf: &mut [u8], pitfall: Pitfall) -> io::Result<()> {
        // ANCHOR: exercise-drain-reads Edge-triggered: read until EAGAIN (then readable = false) or EOF (eof = true, readable = false), at most READS_PER_TURN reads and only while wants_to_read(); queue what you read and flush_queue() as you go. A short read proves nothing. (The --pitfall variants may be ignored.)
        let budget = match pitfall {
            Pitfall::NoBudget => usize::MAX,
            _ => READS_PER_TURN,
        };
        for _ in 0..budget {
            if !self.wants_to_read() {
                break;
            }
            let result = (&self.socket).read(buf);
            trace!(
                "read fd {} -> {}",
                fd(&self.socket),
                plumbing::describe(&result)
            );
            match result {
                Ok(0) => {
                    self.eof = true;
                    self.readable = false;
                }
                Ok(n) => {
                    self.queue.extend_from_slice(&buf[..n]);
                    // Echo as we go, so the queue only fills up when the
                    // client does not read.
                    self.flush_queue()?;
                    // A short read (n < buf.len()) proves nothing: the FIN
                    // may sit right behind the data, with no edge of its own.
                    // Only EAGAIN or EOF says we are done. The pitfalls
                    // break that rule on purpose.
                    let gave_up = match pitfall {
                        Pitfall::NoDrain => true,
                        Pitfall::ShortRead => n < buf.len(),
                        Pitfall::None | Pitfall::NoBudget => false,
                    };
                    if gave_up {
                        trace!(
                            "fd {}: pitfall: stop reading before EAGAIN",
                            fd(&self.socket)
                        );
                        self.readable = false;
                        break;
                    }
                }
                // Drained: the next bytes will come with a new edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ECONNRESET and friends.
                Err(e) => return Err(e),
            }
        }
        Ok(())
        // ANCHOR_END: exercise-drain-reads
    }
    // ANCHOR_END: drain_reads

    // ANCHOR: flush_queue
    /// send() from the front of the queue until it is empty, or until the
    /// socket is full (EAGAIN): then an EPOLLOUT edge comes when there is
    /// room again.
    fn flush_queue(&mut self) -> io::Result<()> {
        // ANCHOR: exercise-flush-queue send_with_flags(&self.queue, MSG_NOSIGNAL) until the queue is empty or EAGAIN (then return Ok and wait for the EPOLLOUT edge); retry on EINTR; drain what was sent; once empty, replace the queue with Vec::new() to give the memory back.
        while !self.queue.is_empty() {
            // MSG_NOSIGNAL: if the client has gone, return EPIPE instead of
            // raising SIGPIPE, whose default action would kill the server.
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
                // The socket's buffer is full: wait for the EPOLLOUT edge.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE, ECONNRESET: the client has gone.
                Err(e) => return Err(e),
            }
        }
        // Drained: give the memory back. Ten thousand idle clients should
        // not each keep the peak of their last burst.
        self.queue = Vec::new();
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
const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Edge-triggered: report each change of readiness once, rather than the
/// state on every call. /proc/PID/fdinfo of the epoll fd shows it on each
/// registration as the bit 0x80000000 of `events:`.
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
// ANCHOR_END: epoll

/// Event bits as the trace shows them: `EPOLLIN|EPOLLHUP`.
fn epoll_bits(flags: u32) -> String {
    let names = [
        (IN, "EPOLLIN"),
        (OUT, "EPOLLOUT"),
        (RDHUP, "EPOLLRDHUP"),
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

// ANCHOR: pitfall
/// The mistakes `--pitfall` makes on purpose.
#[derive(Clone, Copy, PartialEq)]
enum Pitfall {
    /// No mistake: read until EAGAIN or EOF, within the budget.
    None,
    /// One read per edge. What that read leaves waits for the next edge,
    /// which never comes once the client has sent everything.
    NoDrain,
    /// Take a short read for "drained". Misses an EOF that came with the
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
            // The same shape and status (2) as plumbing's other usage errors.
            eprintln!(
                "ch07-epoll-edge: error: --pitfall {other:?}: expected no-drain, short-read \
                 or no-budget (try `ch07-epoll-edge --help`)"
            );
            std::process::exit(2);
        }
    }
}
// ANCHOR_END: pitfall

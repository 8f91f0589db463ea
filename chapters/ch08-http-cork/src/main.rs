//! Stage 8: HTTP/1.1 on the edge-triggered loop, and TCP_CORK.
//!
//! The loop is stage 7's, unchanged: edge-triggered epoll, every socket
//! drained to EAGAIN, a read budget per turn and a ready list. What changes
//! is what a connection does with its bytes. Instead of echoing them, it
//! collects a request head (at most 8 KiB: past that, 414 or 431 and close),
//! answers it with a file or a built-in page, and goes on to the next
//! request on the same connection: HTTP/1.1 keeps connections open, and a
//! client may send several requests before reading the first answer
//! (pipelining). One response is in flight at a time, so answers leave in
//! the order the requests came.
//!
//! A response goes out in two calls: the header with send(), the body with
//! a second send(), or with sendfile(), which copies from the file to the
//! socket inside the kernel. Two calls make two TCP segments, and a small
//! response then costs the client two packets instead of one. TCP_CORK is
//! the fix: while the cork is in, the kernel sends only full segments; when
//! we pull it out after the body, the rest leaves at once, header and body
//! together. nginx does the same (`tcp_nopush on`). `--no-cork` sends the
//! same way without the cork, so that the difference can be measured.
//!
//! The HTTP itself (parsing a head, checking a path, writing a head) is in
//! http.rs: plain functions over bytes, without a system call.
//!
//! What it leaves out: request bodies (a request that announces one is
//! answered, then the connection closed), and time. No clock runs in this
//! loop, so an idle keep-alive client, or one that sends its head a byte a
//! minute, keeps its connection (and a descriptor) for as long as it likes.
//! A production server closes them after a timeout.

mod http;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, Parsed, Status};
use plumbing::trace;
use socket2::{Domain, Protocol, Socket, Type};

/// How many connections the kernel may hold for us before we accept them.
const BACKLOG: i32 = 1024;

/// The most one read() takes.
const READ_SIZE: usize = 16 * 1024;

/// Stop reading from a client whose unanswered input holds this much, until
/// we have answered some of it. Whole requests wait there while the answer
/// to an earlier one goes out; a head that does not fit is too long (414 or
/// 431). Either way, a client costs us at most this much input.
const INPUT_LIMIT: usize = http::MAX_HEAD;

/// At most this many read() calls per connection per turn, so that a client
/// that sends without pause cannot hold the loop. A connection that spends
/// its budget before EAGAIN goes on the ready list and gets its next turn
/// after every other ready connection has had one.
const READS_PER_TURN: usize = 16;

/// At most this many events per epoll_wait(); the rest wait for the next turn.
const MAX_EVENTS: usize = 256;

/// The token of the listening socket. Connections use their slab index,
/// which never comes near this value.
const LISTENER: u64 = u64::MAX;

/// The files served when no --root is given: the chapter's www/ directory.
const DEFAULT_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www");

// ANCHOR: site
/// What we serve and how we send it, fixed at start.
struct Site {
    /// The directory whose files we serve. No path may climb out of it.
    root: PathBuf,
    /// Cork each response (the default), or not (`--no-cork`).
    cork: bool,
}
// ANCHOR_END: site

fn main() {
    let args = plumbing::Cli::new(
        "ch08-http-cork",
        7008,
        "HTTP/1.1 file server on edge-triggered epoll, each response corked",
    )
    .flag(
        "--no-cork",
        "send header and body without TCP_CORK (TCP_NODELAY only), to compare",
    )
    .option(
        "--root",
        "DIR",
        "serve the files under DIR (default: the chapter's www/ directory)",
    )
    .parse();
    let site = Site {
        root: open_root(args.option("--root").unwrap_or(DEFAULT_ROOT)),
        cork: !args.flag("--no-cork"),
    };
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
    // One read buffer for everybody: what a read brings goes to the
    // connection's input at once, and is answered as soon as it holds a
    // whole request.
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
            // EPOLLOUT needs no flag: whenever a response is in flight we
            // send until EAGAIN, so no write edge is ever left unused.
            conn.schedule(token, &mut ready);
        }
        run_ready_list(&epoll, &mut conns, &mut ready, &mut buf, &site);
    }
    // ANCHOR_END: epoll_loop
}

/// The root directory, made absolute, or a one-line error.
fn open_root(dir: &str) -> PathBuf {
    match std::fs::canonicalize(dir) {
        Ok(path) if path.is_dir() => path,
        Ok(_) => plumbing::fail(format!("--root {dir}: not a directory")),
        Err(e) => plumbing::fail(format!("--root {dir}: {e}")),
    }
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
        // TCP_NODELAY: no Nagle. Nagle holds a small segment back while an
        // earlier one is unacknowledged, and the client delays its ACKs:
        // the last bit of a response would wait up to 40 ms. Corked or not,
        // we decide ourselves when bytes leave.
        if let Err(e) = socket.set_tcp_nodelay(true) {
            trace!("fd {}: TCP_NODELAY -> {}, closing", fd(&socket), e);
            continue;
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
    site: &Site,
) {
    for _ in 0..ready.len() {
        let Some(token) = ready.pop_front() else {
            break;
        };
        let Some(conn) = conns.get_mut(token) else {
            continue;
        };
        conn.on_ready_list = false;
        match conn.make_progress(buf, site) {
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
    /// Bytes read from the client and not answered yet: the start of a
    /// request, or whole requests pipelined behind the one being answered.
    /// At most INPUT_LIMIT bytes. It owns memory only while it holds bytes:
    /// an idle keep-alive client costs a few dozen bytes here, not a buffer.
    input: Vec<u8>,
    /// The response going out, if any. One at a time: the next request is
    /// answered only when this one has gone, so answers keep their order.
    response: Option<Response>,
    /// The client has shut down its sending side: read() returned 0.
    eof: bool,
    /// The response in flight is the last one (`Connection: close`, an
    /// HTTP/1.0 client, an error): read nothing more, close once it is out.
    closing: bool,
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
            input: Vec::new(),
            response: None,
            eof: false,
            closing: false,
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
    /// Should we read from this client? Not after its EOF or once we have
    /// decided to close, and not while its input is full: until we have
    /// answered what it holds, the rest waits in the kernel. That is the
    /// backpressure, and the bound on memory.
    fn wants_to_read(&self) -> bool {
        !self.eof && !self.closing && self.input.len() < INPUT_LIMIT
    }

    /// Is input waiting that we want to read now?
    fn has_unread_input(&self) -> bool {
        self.readable && self.wants_to_read()
    }
    // ANCHOR_END: wants_to_read

    // ANCHOR: make_progress
    /// Do what can be done for this client now, within this turn's budget.
    fn make_progress(&mut self, buf: &mut [u8], site: &Site) -> Next {
        // Write first: finishing the response in flight is what lets us
        // answer the requests waiting behind it, and make room to read.
        if let Err(e) = self.answer_requests(site) {
            return self.close_on_error(&e);
        }
        // When a full input has been answered, reading resumes here. Nothing
        // else would restart it: the bytes that waited meanwhile made their
        // edge long ago, and no new edge comes for them. `readable` remembers.
        if self.has_unread_input() {
            if let Err(e) = self.drain_reads(buf, site) {
                return self.close_on_error(&e);
            }
        }
        // Close when the last response is out: the one that said
        // `Connection: close`, or the answer to the last request before the
        // client's EOF (a partial request left behind is dropped).
        if self.response.is_none() && (self.closing || self.eof) {
            trace!("fd {}: all answered, closing", fd(&self.socket));
            return Next::Close;
        }
        Next::Keep
    }
    // ANCHOR_END: make_progress

    // ANCHOR: drain_reads
    /// Read until EAGAIN (drained) or EOF, answering as we go. Stop earlier
    /// only when the input is full (backpressure) or the turn's budget is
    /// spent, and then leave `readable` set.
    fn drain_reads(&mut self, buf: &mut [u8], site: &Site) -> io::Result<()> {
        for _ in 0..READS_PER_TURN {
            if !self.wants_to_read() {
                break;
            }
            // Never read more than the input can still hold.
            let room = (INPUT_LIMIT - self.input.len()).min(buf.len());
            let result = (&self.socket).read(&mut buf[..room]);
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
                    self.input.extend_from_slice(&buf[..n]);
                    self.answer_requests(site)?;
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
    }
    // ANCHOR_END: drain_reads

    // ANCHOR: answer_requests
    /// Send what is left of the response in flight; then answer the whole
    /// requests waiting in the input, in order, one at a time, until the
    /// socket is full (an EPOLLOUT edge comes when there is room) or no
    /// whole request is left.
    fn answer_requests(&mut self, site: &Site) -> io::Result<()> {
        loop {
            if let Some(response) = &mut self.response {
                if !response.send(&self.socket, site.cork)? {
                    return Ok(()); // the socket is full
                }
                self.response = None;
            }
            if self.closing {
                return Ok(());
            }
            let (used, response) = match http::parse_request(&self.input) {
                Parsed::Incomplete => break,
                Parsed::Request(request, len) => (len, respond(site, &request)),
                // Malformed or too long: answer, then close. We cannot tell
                // where a next request would start.
                Parsed::Invalid(status) => (self.input.len(), error_response(status, false)),
            };
            trace!(
                "fd {}: {} -> {} {}",
                fd(&self.socket),
                request_line(&self.input[..used]),
                response.status.code(),
                response.status.reason()
            );
            self.input.drain(..used);
            self.closing = !response.keep_alive;
            // ANCHOR: cork_in
            // The cork goes in before the header: from now on the kernel
            // sends only full segments, and holds back the rest until
            // `send` pulls the cork out after the body.
            // ANCHOR: exercise-cork-in With site.cork, put the cork in (set_cork(.., true)) before the response is sent, so the kernel holds back partial segments until the cork comes out.
            if site.cork {
                set_cork(&self.socket, true)?;
            }
            // ANCHOR_END: exercise-cork-in
            // ANCHOR_END: cork_in
            self.response = Some(response);
        }
        // Nothing waiting: give the memory back.
        if self.input.is_empty() {
            self.input = Vec::new();
        }
        Ok(())
    }
    // ANCHOR_END: answer_requests

    fn close_on_error(&self, e: &io::Error) -> Next {
        trace!(
            "fd {}: {}, closing",
            fd(&self.socket),
            plumbing::errno_name(e)
        );
        Next::Close
    }
}

// ANCHOR: response
/// A response on its way out: the head (status line and headers) from
/// memory, then the body from memory or from a file.
struct Response {
    status: Status,
    head: Vec<u8>,
    body: Body,
    /// How many bytes have gone, head first, then body.
    sent: usize,
    /// The connection may carry another request after this one.
    keep_alive: bool,
}

enum Body {
    /// HEAD, or an empty file: the head is the whole response.
    Empty,
    /// The built-in page and the error messages.
    Static(&'static [u8]),
    /// A file: `len` bytes, sent with sendfile().
    File { file: File, len: usize },
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Static(bytes) => bytes.len(),
            Body::File { len, .. } => *len,
        }
    }
}
// ANCHOR_END: response

impl Response {
    // ANCHOR: send_response
    /// Send what is left: the head with one send(), then the body with a
    /// second call (send() from memory, or sendfile() from the file), each
    /// until it is done or the socket is full. Ok(true) once all has gone.
    fn send(&mut self, socket: &Socket, cork: bool) -> io::Result<bool> {
        // ANCHOR: exercise-send-response Send what is left: the head with send_bytes(), then the body (send_bytes() for Static, send_file() for File), advancing self.sent; Ok(0) is an error (UnexpectedEof), EAGAIN returns Ok(false), EINTR retries. When all is sent, with cork, pull the cork out and return Ok(true).
        let head_len = self.head.len();
        while self.sent < head_len + self.body.len() {
            let result = if self.sent < head_len {
                send_bytes(socket, &self.head[self.sent..], "head")
            } else {
                let at = self.sent - head_len;
                match &self.body {
                    // Never reached: an empty body has no bytes left to send.
                    Body::Empty => Ok(0),
                    Body::Static(bytes) => send_bytes(socket, &bytes[at..], "body"),
                    Body::File { file, len } => send_file(socket, file, at, *len - at),
                }
            };
            match result {
                // sendfile() returns 0 when the file ends early: it shrank
                // since we took its length. The Content-Length we sent can
                // no longer be honoured; all we can do is close.
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.sent += n,
                // The socket's buffer is full: wait for the EPOLLOUT edge.
                // The cork stays in; full segments leave meanwhile anyway.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE, ECONNRESET: the client has gone.
                Err(e) => return Err(e),
            }
        }
        // ANCHOR: cork_out
        // All of it is in the kernel's hands. Pulling the cork out sends
        // what it held back at once: for a small response, head and body
        // in a single segment.
        if cork {
            set_cork(socket, false)?;
        }
        // ANCHOR_END: cork_out
        Ok(true)
        // ANCHOR_END: exercise-send-response
    }
    // ANCHOR_END: send_response
}

// ANCHOR: respond
/// The response to one well-formed request: the built-in page for `/`, a
/// file under the root, or an error status.
fn respond(site: &Site, request: &http::Request) -> Response {
    // We never read a request body, so after a request that has one we
    // must close: its bytes would be taken for the next request.
    let keep_alive = request.keep_alive && !request.has_body;
    let head_only = match request.method {
        Method::Get => false,
        Method::Head => true,
        Method::Other => return error_response(Status::MethodNotAllowed, keep_alive),
    };
    let relative = match http::file_path(&request.target) {
        Ok(relative) => relative,
        Err(status) => return error_response(status, keep_alive),
    };
    let (content_type, body) = if relative.as_os_str().is_empty() {
        (
            "text/html; charset=utf-8",
            Body::Static(http::HOME_PAGE.as_bytes()),
        )
    } else {
        let path = site.root.join(&relative);
        match open_file(&path) {
            Ok((file, len)) => (http::content_type(&path), Body::File { file, len }),
            Err(status) => return error_response(status, keep_alive),
        }
    };
    response(Status::Ok, content_type, body, head_only, keep_alive)
}
// ANCHOR_END: respond

/// open() and fstat(): a regular file and its length, or the status that
/// says why not.
fn open_file(path: &Path) -> Result<(File, usize), Status> {
    // O_NONBLOCK changes nothing for a regular file, but a named pipe under
    // the root would otherwise make open() wait for a writer, and the whole
    // loop with it. Opened, a pipe is refused below like a directory.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let file = file.map_err(|e| {
        trace!("open {} -> {}", path.display(), plumbing::errno_name(&e));
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Status::NotFound,
            io::ErrorKind::PermissionDenied => Status::Forbidden,
            // EMFILE and the like: our trouble, not the client's.
            _ => Status::InternalError,
        }
    })?;
    match file.metadata() {
        // Directories and devices are not served.
        Ok(meta) if meta.is_file() => match usize::try_from(meta.len()) {
            Ok(len) => Ok((file, len)),
            Err(_) => Err(Status::InternalError),
        },
        Ok(_) => Err(Status::NotFound),
        Err(_) => Err(Status::InternalError),
    }
}

/// An error status with its one-line message as the body.
fn error_response(status: Status, keep_alive: bool) -> Response {
    let keep_alive = keep_alive && !status.ends_connection();
    let body = Body::Static(status.message().as_bytes());
    response(status, "text/plain; charset=utf-8", body, false, keep_alive)
}

/// Put the head in front of a body. For HEAD the body is dropped, but the
/// head still gives the length a GET would get.
fn response(
    status: Status,
    content_type: &str,
    body: Body,
    head_only: bool,
    keep_alive: bool,
) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let head = http::response_head(status, content_type, body.len() as u64, keep_alive, now);
    Response {
        status,
        head,
        body: if head_only { Body::Empty } else { body },
        sent: 0,
        keep_alive,
    }
}

// ANCHOR: send_calls
/// One send() from memory. MSG_NOSIGNAL: if the client has gone, return
/// EPIPE instead of raising SIGPIPE, whose default action would kill us.
fn send_bytes(socket: &Socket, bytes: &[u8], what: &str) -> io::Result<usize> {
    let result = socket.send_with_flags(bytes, libc::MSG_NOSIGNAL);
    trace!(
        "write fd {} ({what}) -> {}",
        fd(socket),
        plumbing::describe(&result)
    );
    result
}

/// One sendfile(): up to `len` bytes of `file` from `offset`, copied to the
/// socket inside the kernel, without passing through our memory. It stops
/// at EAGAIN like send() does. The file side is another matter: pages not
/// in the page cache are read from the disk while we wait, and the whole
/// loop waits with us (nginx can hand that to a thread pool). A dead peer
/// gives EPIPE: SIGPIPE is ignored (plumbing::install_signal_handlers).
fn send_file(socket: &Socket, file: &File, offset: usize, len: usize) -> io::Result<usize> {
    let result = socket.sendfile(file, offset, NonZeroUsize::new(len));
    trace!(
        "sendfile fd {} -> {}",
        fd(socket),
        plumbing::describe(&result)
    );
    result
}

/// setsockopt(TCP_CORK).
fn set_cork(socket: &Socket, on: bool) -> io::Result<()> {
    // ANCHOR: exercise-set-cork setsockopt(TCP_CORK) through socket.set_tcp_cork(on); trace the result and return it.
    let result = socket.set_tcp_cork(on);
    trace!(
        "setsockopt fd {} TCP_CORK {} -> {}",
        fd(socket),
        u8::from(on),
        result
            .as_ref()
            .map_or_else(plumbing::errno_name, |_| "ok".into())
    );
    result
    // ANCHOR_END: exercise-set-cork
}
// ANCHOR_END: send_calls

/// The first line of a request head, for the trace.
fn request_line(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let line = text.trim_start().lines().next().unwrap_or("");
    line.chars().take(80).collect()
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

//! Plumbing shared by every netbook stage: the parts of a server that are not
//! the lesson.
//!
//! - [`Cli`] parses `--listen ADDR`, `--trace` and a stage's own flags, and
//!   turns bad input into one clear line and exit status 2.
//! - [`announce`] prints the ready line `listening on HOST:PORT` the suite waits for.
//! - [`install_signal_handlers`] and [`stop_requested`] turn SIGINT/SIGTERM
//!   into a flag the event loop checks, so the server exits 0.
//! - [`trace!`] writes one line to stderr per syscall when `--trace` is on.
//! - [`fail`] and [`explain_bind_error`] end the process with a one-line error.
//!
//! Every socket call a chapter teaches lives in that chapter's `main.rs`,
//! never here.

use std::fmt::Display;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

static TRACE: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

/// Command-line parser for a stage binary.
///
/// Every stage accepts `--listen ADDR` (default `127.0.0.1:<default_port>`),
/// `--trace` and `--help`; a stage may add flags (`--no-cork`) and options
/// with a value (`--root DIR`).
pub struct Cli {
    name: &'static str,
    about: &'static str,
    default_port: u16,
    flags: Vec<(&'static str, &'static str)>,
    options: Vec<(&'static str, &'static str, &'static str)>,
}

/// What [`Cli::parse`] found.
#[derive(Debug, Clone)]
pub struct Args {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// `--trace` was given.
    pub trace: bool,
    flags: Vec<&'static str>,
    options: Vec<(&'static str, String)>,
}

impl Cli {
    /// A parser for the binary `name`, listening on `127.0.0.1:default_port`
    /// unless `--listen` says otherwise.
    pub fn new(name: &'static str, default_port: u16, about: &'static str) -> Cli {
        Cli {
            name,
            about,
            default_port,
            flags: Vec::new(),
            options: Vec::new(),
        }
    }

    /// Accept a flag without a value, such as `--no-cork`.
    pub fn flag(mut self, name: &'static str, help: &'static str) -> Cli {
        self.flags.push((name, help));
        self
    }

    /// Accept an option with a value, such as `--root DIR`.
    pub fn option(mut self, name: &'static str, value: &'static str, help: &'static str) -> Cli {
        self.options.push((name, value, help));
        self
    }

    /// Parse the process arguments. Prints help and exits 0 for `--help`;
    /// prints one error line and exits 2 for anything it does not understand.
    pub fn parse(self) -> Args {
        let words: Vec<String> = std::env::args().skip(1).collect();
        match self.parse_from(&words) {
            Ok(Some(args)) => {
                TRACE.store(args.trace, Ordering::Relaxed);
                args
            }
            Ok(None) => {
                print!("{}", self.help());
                std::process::exit(0);
            }
            Err(message) => {
                eprintln!(
                    "{}: error: {message} (try `{} --help`)",
                    self.name, self.name
                );
                std::process::exit(2);
            }
        }
    }

    /// The parser itself, separated from the process so it can be tested.
    /// `Ok(None)` means help was asked for.
    pub fn parse_from(&self, words: &[String]) -> Result<Option<Args>, String> {
        let mut args = Args {
            listen: SocketAddr::from(([127, 0, 0, 1], self.default_port)),
            trace: false,
            flags: Vec::new(),
            options: Vec::new(),
        };
        let mut words = words.iter();
        while let Some(word) = words.next() {
            // Accept both `--listen ADDR` and `--listen=ADDR`.
            let (key, inline) = match word.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
                _ => (word.as_str(), None),
            };
            let mut value = |what: &str| -> Result<String, String> {
                match inline.clone().or_else(|| words.next().cloned()) {
                    Some(v) => Ok(v),
                    None => Err(format!("{key} needs a value ({what})")),
                }
            };
            match key {
                "-h" | "--help" => return Ok(None),
                "--listen" => args.listen = parse_listen(&value("HOST:PORT")?)?,
                "--trace" => args.trace = true,
                _ => {
                    if let Some(&(name, _)) = self.flags.iter().find(|(n, _)| *n == key) {
                        args.flags.push(name);
                    } else if let Some(&(name, what, _)) =
                        self.options.iter().find(|(n, _, _)| *n == key)
                    {
                        args.options.push((name, value(what)?));
                    } else if key.starts_with('-') {
                        return Err(format!("unknown option {key}"));
                    } else {
                        return Err(format!("unexpected argument {key:?}"));
                    }
                }
            }
        }
        Ok(Some(args))
    }

    fn help(&self) -> String {
        let mut out = format!(
            "{} - {}\n\nUsage: {} [OPTIONS]\n\nOptions:\n",
            self.name, self.about, self.name
        );
        let mut line = |left: String, help: &str| {
            out.push_str(&format!("  {left:<22} {help}\n"));
        };
        line(
            "--listen HOST:PORT".into(),
            &format!(
                "address to listen on (default 127.0.0.1:{}; port 0 picks a free one)",
                self.default_port
            ),
        );
        line(
            "--trace".into(),
            "log every readiness event and syscall result to stderr",
        );
        for (name, help) in &self.flags {
            line(name.to_string(), help);
        }
        for (name, value, help) in &self.options {
            line(format!("{name} {value}"), help);
        }
        line("-h, --help".into(), "print this help");
        out
    }
}

impl Args {
    /// Was the stage-specific flag `name` given?
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// The value of the stage-specific option `name`, if given (the last one wins).
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse `HOST:PORT`, `[V6]:PORT`, or `localhost:PORT`.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    match text.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_err() => Err(format!(
            "--listen {text:?}: the port must be a number from 0 to 65535"
        )),
        Some(_) => Err(format!(
            "--listen {text:?}: the host must be an IP address such as 127.0.0.1 or [::1]"
        )),
        None => Err(format!(
            "--listen {text:?}: expected HOST:PORT, such as 127.0.0.1:7001"
        )),
    }
}

/// Print the ready line `listening on HOST:PORT` and flush it, so that
/// whoever started us (the suite, a script) knows the port is open.
pub fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    // If stdout is gone there is nobody to tell; serving can still go on.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Is `--trace` on?
pub fn tracing() -> bool {
    TRACE.load(Ordering::Relaxed)
}

/// Write one line to stderr when `--trace` is on. The arguments are only
/// formatted when tracing, so an untraced server pays one atomic load.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::tracing() {
            $crate::trace_line(format_args!($($arg)*));
        }
    };
}

#[doc(hidden)]
pub fn trace_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "trace: {line}");
}

/// Describe the result of a read or write the way `--trace` shows it:
/// `6 bytes`, `EOF`, `EAGAIN`, or the error's name.
pub fn describe(result: &io::Result<usize>) -> String {
    match result {
        Ok(0) => "EOF".to_string(),
        Ok(n) => format!("{n} bytes"),
        Err(e) => errno_name(e),
    }
}

/// The symbolic name of an OS error (`ECONNRESET`), or its text.
pub fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::EINTR) => "EINTR",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::EMFILE) => "EMFILE",
        Some(libc::ENFILE) => "ENFILE",
        Some(libc::ECONNABORTED) => "ECONNABORTED",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::ENOBUFS) => "ENOBUFS",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOTCONN) => "ENOTCONN",
        _ => return e.to_string(),
    };
    name.to_string()
}

/// Install handlers so that SIGINT and SIGTERM set the flag behind
/// [`stop_requested`], and ignore SIGPIPE.
///
/// The handlers are installed *without* `SA_RESTART`: a blocking call such
/// as `accept`, `read`, `select`, `poll` or `epoll_wait` then returns
/// `EINTR`, and the loop gets a chance to look at the flag. As a backstop
/// against the one window where the signal lands just before the loop blocks,
/// the handler also arms a two-second alarm that ends the process with
/// status 0 if the loop has not returned by then.
pub fn install_signal_handlers() {
    extern "C" fn on_stop(_signal: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
        // SAFETY: alarm() is async-signal-safe (signal-safety(7)).
        unsafe { libc::alarm(2) };
    }
    extern "C" fn on_alarm(_signal: libc::c_int) {
        // SAFETY: _exit() is async-signal-safe and ends the process at once.
        unsafe { libc::_exit(0) };
    }
    set_handler(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    set_handler(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    set_handler(libc::SIGALRM, on_alarm as *const () as libc::sighandler_t);
    // Rust's runtime already ignores SIGPIPE; say so explicitly, because a
    // write to a connection the peer has closed must come back as EPIPE
    // rather than kill the server.
    set_handler(libc::SIGPIPE, libc::SIG_IGN);
}

fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = 0; // no SA_RESTART: blocking calls return EINTR.
    // SAFETY: `action` is initialised, and the handlers only touch an atomic
    // and async-signal-safe functions.
    let rc = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
    if rc != 0 {
        fail(format!(
            "cannot install a signal handler: {}",
            io::Error::last_os_error()
        ));
    }
}

/// Has SIGINT or SIGTERM arrived?
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Print `NAME: error: MESSAGE` on one line and exit with status 1.
pub fn fail(message: impl Display) -> ! {
    let name = std::env::args()
        .next()
        .and_then(|p| p.rsplit('/').next().map(str::to_string))
        .unwrap_or_else(|| "server".into());
    eprintln!("{name}: error: {message}");
    std::process::exit(1);
}

/// Turn a failed `bind`/`listen` into a sentence that says what to do.
pub fn explain_bind_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "cannot listen on {addr}: address already in use; another server holds the port \
             (see which with `ss -ltnp 'sport = :{}'`), or pick another with --listen",
            addr.port()
        ),
        Some(libc::EACCES) => format!(
            "cannot listen on {addr}: permission denied; ports below 1024 need root \
             (CAP_NET_BIND_SERVICE), so pick a port from 1024 up"
        ),
        Some(libc::EADDRNOTAVAIL) => format!(
            "cannot listen on {addr}: that address does not belong to this machine \
             (use 127.0.0.1, [::1] or 0.0.0.0)"
        ),
        _ => format!("cannot listen on {addr}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Cli {
        Cli::new("chXX-test", 7099, "test")
            .flag("--no-cork", "no cork")
            .option("--root", "DIR", "root")
    }

    fn parse(words: &[&str]) -> Result<Option<Args>, String> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        cli().parse_from(&words)
    }

    #[test]
    fn defaults_to_the_stage_port_on_loopback() {
        let args = parse(&[]).unwrap().unwrap();
        assert_eq!(args.listen, "127.0.0.1:7099".parse().unwrap());
        assert!(!args.trace);
    }

    #[test]
    fn reads_listen_trace_flags_and_options() {
        let args = parse(&["--listen", "[::1]:0", "--trace", "--no-cork", "--root=/srv"])
            .unwrap()
            .unwrap();
        assert_eq!(args.listen, "[::1]:0".parse().unwrap());
        assert!(args.trace);
        assert!(args.flag("--no-cork"));
        assert_eq!(args.option("--root"), Some("/srv"));
        assert_eq!(
            parse(&["--listen", "localhost:80"])
                .unwrap()
                .unwrap()
                .listen
                .port(),
            80
        );
    }

    #[test]
    fn explains_bad_input() {
        assert!(
            parse(&["--listen", "127.0.0.1:99999"])
                .unwrap_err()
                .contains("port")
        );
        assert!(
            parse(&["--listen", "nowhere:80"])
                .unwrap_err()
                .contains("host")
        );
        assert!(
            parse(&["--listen", "7001"])
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(parse(&["--listen"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown option"));
        assert!(parse(&["stray"]).unwrap_err().contains("unexpected"));
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn describes_results_like_the_trace_does() {
        assert_eq!(describe(&Ok(0)), "EOF");
        assert_eq!(describe(&Ok(6)), "6 bytes");
        let again = io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(describe(&Err(again)), "EAGAIN");
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(errno_name(&reset), "ECONNRESET");
    }

    #[test]
    fn bind_errors_say_what_to_do() {
        let addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let in_use = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert!(explain_bind_error(addr, &in_use).contains("already in use"));
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        assert!(explain_bind_error(addr, &denied).contains("below 1024"));
    }
}

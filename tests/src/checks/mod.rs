//! The checks, and what every check gets to work with.
//!
//! A check starts its own server (or several), talks to it over loopback,
//! and returns either a one-line figure (passed) or a [`Failure`].

use std::net::TcpStream;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::net::{self, EchoExchange, Exchange};
use crate::profile::{Profile, Protocol};
use crate::report::Failure;
use crate::server::{Launch, Server, ServerCommand};

mod contract;
mod echo;
pub mod http;
mod mechanism;

/// One check of the suite.
pub struct Check {
    /// Stable id: profiles, reports and `--only` use it.
    pub id: &'static str,
    /// One line saying what it checks.
    pub title: &'static str,
    /// `contract`, `echo`, `load`, `mechanism` or `http`.
    pub group: &'static str,
    /// The protocols it applies to.
    pub protocols: &'static [Protocol],
    /// Descriptors the suite's own process needs for it.
    pub fds: u64,
    /// Run it: a short figure when it passes.
    pub run: fn(&mut Ctx) -> Result<String, Failure>,
}

const ANY: &[Protocol] = &[Protocol::Echo, Protocol::Http];
const ECHO: &[Protocol] = &[Protocol::Echo];

/// Every check, in the order they run.
pub fn all() -> Vec<Check> {
    let mut checks = vec![
        Check {
            id: "ready-line",
            title: "prints exactly `listening on HOST:PORT` and nothing more",
            group: "contract",
            protocols: ANY,
            fds: 64,
            run: contract::ready_line,
        },
        Check {
            id: "bad-args",
            title: "malformed arguments: one clear error line, non-zero exit",
            group: "contract",
            protocols: ANY,
            fds: 64,
            run: contract::bad_args,
        },
        Check {
            id: "addr-in-use",
            title: "a second server on a busy port fails clearly",
            group: "contract",
            protocols: ANY,
            fds: 64,
            run: contract::addr_in_use,
        },
        Check {
            id: "restart",
            title: "restarts at once on the same port after SIGKILL",
            group: "contract",
            protocols: ANY,
            fds: 64,
            run: contract::restart,
        },
        Check {
            id: "sigterm",
            title: "SIGTERM: exits 0 within 3 s",
            group: "contract",
            protocols: ANY,
            fds: 64,
            run: contract::sigterm,
        },
        Check {
            id: "sigint",
            title: "SIGINT: exits 0 within 3 s",
            group: "contract",
            protocols: ANY,
            fds: 64,
            run: contract::sigint,
        },
        Check {
            id: "echo-line",
            title: "echoes a line, then EOF after ours",
            group: "echo",
            protocols: ECHO,
            fds: 64,
            run: echo::echo_line,
        },
        Check {
            id: "duplex-8mib",
            title: "8 MiB of random bytes, written and read at once",
            group: "echo",
            protocols: ECHO,
            fds: 64,
            run: echo::duplex,
        },
        Check {
            id: "half-close",
            title: "half-close: every byte back, then EOF",
            group: "echo",
            protocols: ECHO,
            fds: 64,
            run: echo::half_close,
        },
        Check {
            id: "half-close-burst",
            title: "a few bytes and the FIN in one segment",
            group: "echo",
            protocols: ECHO,
            fds: 64,
            run: echo::half_close_burst,
        },
        Check {
            id: "reset-storm",
            title: "30 clients reset mid-stream; the server keeps serving",
            group: "echo",
            protocols: ANY,
            fds: 128,
            run: echo::reset_storm,
        },
        Check {
            id: "concurrent-reverse",
            title: "two clients, served in reverse order of connecting",
            group: "echo",
            protocols: ECHO,
            fds: 64,
            run: echo::concurrent_reverse,
        },
        Check {
            id: "clients-500",
            title: "500 clients at once",
            group: "load",
            protocols: ANY,
            fds: 600,
            run: echo::clients_500,
        },
        Check {
            id: "clients-2000",
            title: "2 000 clients at once",
            group: "load",
            protocols: ANY,
            fds: 2_100,
            run: echo::clients_2000,
        },
        Check {
            id: "clients-10000",
            title: "10 000 clients at once",
            group: "load",
            protocols: ANY,
            fds: 10_100,
            run: echo::clients_10000,
        },
        Check {
            id: "past-fd-setsize",
            title: "1 100 clients: refuse or serve, never crash or hang",
            group: "load",
            protocols: ANY,
            fds: 1_200,
            run: echo::past_fd_setsize,
        },
        Check {
            id: "idle-cpu",
            title: "10 idle clients: it sleeps (busy < 5 % of the time)",
            group: "load",
            protocols: ANY,
            fds: 64,
            run: echo::idle_cpu,
        },
        Check {
            id: "backpressure",
            title: "a client that never reads: bounded RSS, others still served",
            group: "load",
            protocols: ECHO,
            fds: 64,
            run: echo::backpressure,
        },
        Check {
            id: "fairness",
            title: "a greedy client cannot starve a polite one (p99 < 200 ms)",
            group: "load",
            protocols: ECHO,
            fds: 64,
            run: echo::fairness,
        },
        Check {
            id: "fd-exhaustion",
            title: "RLIMIT_NOFILE 48, 80 clients: no spin (< 50 %), recovers",
            group: "load",
            protocols: ANY,
            fds: 256,
            run: echo::fd_exhaustion,
        },
        Check {
            id: "threads",
            title: "one thread (the mechanism, not threads, does the work)",
            group: "mechanism",
            protocols: ANY,
            fds: 64,
            run: mechanism::threads,
        },
        Check {
            id: "blocking-call",
            title: "idle, it blocks in the call its chapter teaches",
            group: "mechanism",
            protocols: ANY,
            fds: 64,
            run: mechanism::blocking_call,
        },
        Check {
            id: "epoll-registrations",
            title: "the epoll instance watches the sockets, in the declared mode",
            group: "mechanism",
            protocols: ANY,
            fds: 64,
            run: mechanism::epoll_registrations,
        },
    ];
    checks.extend(http::checks());
    checks
}

/// What a check works with.
pub struct Ctx<'a> {
    pub command: &'a ServerCommand,
    pub profile: &'a Profile,
    pub check_id: &'static str,
    pub seed: u64,
    /// Seeded for this check: the same seed gives the same bytes.
    pub rng: StdRng,
    /// How to run just this check again, e.g. `cargo xtask run ch01`.
    pub rerun_base: String,
}

impl<'a> Ctx<'a> {
    pub fn new(
        command: &'a ServerCommand,
        profile: &'a Profile,
        check_id: &'static str,
        seed: u64,
        rerun_base: &str,
    ) -> Ctx<'a> {
        // FNV-1a of the id, so each check draws its own stream from one seed.
        let id_hash = check_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Ctx {
            command,
            profile,
            check_id,
            seed,
            rng: StdRng::seed_from_u64(seed ^ id_hash),
            rerun_base: rerun_base.to_string(),
        }
    }

    /// Start a server on a fresh ephemeral port.
    pub fn start(&self) -> Result<Server, Failure> {
        self.start_with(&Launch::default())
    }

    pub fn start_with(&self, launch: &Launch) -> Result<Server, Failure> {
        Server::start(self.command, launch)
    }

    /// The command that runs this check again with the same seed.
    pub fn rerun(&self) -> String {
        format!(
            "{} --only {} --seed {}",
            self.rerun_base, self.check_id, self.seed
        )
    }

    /// `SERVER &  printf '...' | nc HOST PORT`: a reproduction by hand.
    pub fn by_hand(&self, server: &Server, input: &str) -> String {
        let (host, port) = (server.addr.ip(), server.addr.port());
        format!(
            "{} &  then  printf '{}' | nc {host} {port}",
            server.command_line,
            input
                .replace('\r', "\\r")
                .replace('\n', "\\n")
                .replace('\'', "'\\''")
        )
    }

    /// The request/response pair for this stage's protocol.
    pub fn exchange(&self) -> Box<dyn Exchange> {
        match self.profile.protocol {
            Protocol::Echo => Box::new(EchoExchange { label: "client" }),
            Protocol::Http => Box::new(http::GetExchange),
        }
    }

    /// One request on a fresh connection, answered within `timeout`.
    pub fn probe(&self, server: &mut Server, timeout: Duration) -> Result<Duration, Failure> {
        let start = Instant::now();
        let mut stream = net::connect(server.addr, timeout)?;
        self.probe_on(&mut stream, 0, start + timeout)
            .map_err(|f| {
                f.reproduce(self.by_hand(
                    server,
                    &String::from_utf8_lossy(&self.exchange().request(0)),
                ))
            })?;
        Ok(start.elapsed())
    }

    /// One request/response on an open connection.
    pub fn probe_on(
        &self,
        stream: &mut TcpStream,
        i: usize,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let exchange = self.exchange();
        let request = exchange.request(i);
        net::write_all(stream, &request, deadline)?;
        let mut got = Vec::new();
        loop {
            let (chunk, end) = net::read_up_to(stream, 1, deadline);
            got.extend_from_slice(&chunk);
            match exchange.judge(i, &got) {
                net::Judgement::Right => return Ok(()),
                net::Judgement::Wrong(why) => {
                    return Err(Failure::new(format!("wrong answer: {why}")).sent(&request));
                }
                net::Judgement::Incomplete if end == net::End::Complete => {}
                net::Judgement::Incomplete => {
                    return Err(Failure::new(format!(
                        "no complete answer: {} after {} bytes",
                        end.describe(),
                        got.len()
                    ))
                    .sent(&request)
                    .detail(format!("received: {}", crate::report::escape(&got, 80))));
                }
            }
        }
    }

    /// Seeded random bytes.
    pub fn random_bytes(&mut self, len: usize) -> Vec<u8> {
        use rand::RngCore;
        let mut data = vec![0u8; len];
        self.rng.fill_bytes(&mut data);
        data
    }
}

//! The I/O loop: one thread per core, each with its own epoll set of nonblocking sockets, driving
//! [`Client`] engines.
//!
//! Why epoll and not tokio-uring: a load generator must cost less than the server it measures, and
//! its cost per message is a handful of syscalls either way (one `recv` per reply burst, one `send`
//! per command group). Level-triggered epoll with one `recv` per readiness, `send` straight from
//! the engine's output, and `EPOLLOUT` armed only when a send comes up short, needs no runtime,
//! no allocation per operation and no buffer ownership dance, and it works against any server
//! on any kernel. Nothing is shared between threads but the message budget (one atomic) and the
//! stop flag; statistics are per thread and merged at the end.
//!
//! With TLS a [`Tls`] sits between the socket and the engine: received ciphertext is fed to it
//! and the plaintext it yields to the engine; the engine's output is written into it and the
//! records it produces are what `send` sends. Each thread has its own rustls `ClientConfig`, so
//! its connections share one client session cache.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::client::{Client, Event, Script};
use crate::histogram::Histogram;
use crate::message::Corpus;
use crate::now;
use crate::tls::{Mode, Tls};

/// Receive buffer per thread.
const RECV_BUF: usize = 64 * 1024;
/// Idle mode: connections being set up at once per thread, so the server's accept backlog
/// does not overflow into SYN retransmits.
const IDLE_RAMP: usize = 256;
/// After the deadline, how long sessions in flight may take before they are cut.
pub const GRACE: Duration = Duration::from_secs(30);

/// What every thread shares.
#[derive(Debug)]
pub struct Shared {
    /// Messages not yet reserved; a session reserves its share when it opens, so no session is
    /// opened that would send nothing.
    pub budget: AtomicI64,
    /// No message is started after this.
    pub deadline: Instant,
    /// Stop at once (idle mode: the hold is over).
    pub stop: AtomicBool,
    /// Idle mode: sessions established and held.
    pub held: AtomicUsize,
    /// Messages started, to pick the next message of the corpus.
    pub started: AtomicU64,
}

impl Shared {
    /// Reserves up to `n` messages of the budget for one session; returns how many.
    fn reserve(&self, n: u64) -> u64 {
        let mut left = self.budget.load(Ordering::Relaxed);
        loop {
            let take = (left.max(0) as u64).min(n);
            if take == 0 {
                return 0;
            }
            match self.budget.compare_exchange_weak(
                left,
                left - take as i64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }
}

/// What one thread measured.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Final reply latency (end of content to reply), accepted messages.
    pub data_latency: Histogram,
    /// Whole sessions, connect to close.
    pub session_latency: Histogram,
    /// Messages with a 2xx final reply.
    pub accepted: u64,
    /// Messages refused or not sent because their session failed.
    pub failed: u64,
    /// Content octets of accepted messages.
    pub bytes: u64,
    /// Sessions closed.
    pub sessions: u64,
    /// Errors by reply code and command (`451 end-of-data`), or by I/O failure.
    pub errors: BTreeMap<String, u64>,
    /// TLS handshakes completed in full.
    pub tls_full: u64,
    /// TLS handshakes that resumed a session.
    pub tls_resumed: u64,
    /// Handshake time, ClientHello to completion (both kinds).
    pub tls_handshake: Histogram,
    /// Handshakes by key exchange group and protocol version (`X25519MLKEM768 TLSv1_3`).
    pub tls_groups: BTreeMap<String, u64>,
    /// `AUTH` exchanges that got 235.
    pub auth_ok: u64,
    /// `AUTH` command to 235.
    pub auth_latency: Histogram,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.data_latency.merge(&other.data_latency);
        self.session_latency.merge(&other.session_latency);
        self.accepted += other.accepted;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.sessions += other.sessions;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.tls_full += other.tls_full;
        self.tls_resumed += other.tls_resumed;
        self.tls_handshake.merge(&other.tls_handshake);
        for (k, v) in &other.tls_groups {
            *self.tls_groups.entry(k.clone()).or_default() += v;
        }
        self.auth_ok += other.auth_ok;
        self.auth_latency.merge(&other.auth_latency);
    }

    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ConnectFailed,
    /// QUIT answered by 221.
    Clean,
    Broken,
}

/// One connection and its engine.
struct Slot<'m> {
    fd: RawFd,
    client: Client<'m>,
    out: Vec<u8>,
    out_pos: usize,
    connecting: bool,
    want_out: bool,
    opened: Instant,
    /// Messages reserved for this session and not yet started.
    left: u64,
    /// Messages started in this session.
    took: u64,
    held: bool,
    /// TLS, once started (at connect with implicit TLS, after STARTTLS's 220 otherwise).
    tls: Option<Box<Tls>>,
}

/// TLS settings for one thread.
pub struct TlsJob {
    /// When TLS starts.
    pub mode: Mode,
    /// This thread's config (and so its session cache).
    pub config: Arc<ClientConfig>,
    /// SNI and the name the certificate must match.
    pub server_name: ServerName<'static>,
}

/// What a thread runs.
pub struct Job<'a> {
    /// The server.
    pub server: SocketAddr,
    /// Local addresses to connect from, in turn (each thread starting at its own); empty:
    /// the kernel's choice.
    pub sources: &'a [std::net::Ipv4Addr],
    /// This thread's index, to spread the threads over `sources`.
    pub thread: usize,
    /// Concurrent sessions on this thread (idle mode: sessions to hold).
    pub sessions: usize,
    /// Messages per session: `--per-session`, capped at a fair share of `--messages` so that every
    /// concurrent session gets work. 0: sessions carry no message (`--messages` counts sessions).
    pub per_session: u64,
    /// Idle mode.
    pub idle: bool,
    /// The session script.
    pub script: &'a Script,
    /// The messages.
    pub corpus: &'a Corpus,
    /// Shared state.
    pub shared: &'a Shared,
    /// TLS, if any.
    pub tls: Option<TlsJob>,
}

/// Runs one thread's sessions to the end; returns what it measured.
pub fn run(job: &Job<'_>) -> io::Result<Stats> {
    // SAFETY: plain syscall; the descriptor is closed below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut lp = Loop {
        ep,
        job,
        slots: Vec::new(),
        stats: Stats::default(),
        buf: vec![0; RECV_BUF],
        plain: Vec::with_capacity(RECV_BUF),
        opened: 0,
        connects: 0,
    };
    let res = lp.run();
    for slot in lp.slots.iter_mut().flatten() {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(slot.fd) };
    }
    // SAFETY: as above.
    unsafe { libc::close(ep) };
    res.map(|()| lp.stats)
}

struct Loop<'a, 'j> {
    ep: RawFd,
    job: &'j Job<'a>,
    slots: Vec<Option<Slot<'a>>>,
    stats: Stats,
    buf: Vec<u8>,
    /// Plaintext between TLS and the engine, both ways.
    plain: Vec<u8>,
    /// Idle mode: sessions opened so far.
    opened: usize,
    /// Connections attempted so far, to take the sources in turn.
    connects: usize,
}

impl<'a> Loop<'a, '_> {
    fn run(&mut self) -> io::Result<()> {
        let job = self.job;
        let first = if job.idle {
            job.sessions.min(IDLE_RAMP)
        } else {
            job.sessions
        };
        self.slots = (0..job.sessions).map(|_| None).collect();
        for i in 0..first {
            self.open(i, now());
        }
        let hard_deadline = job.shared.deadline + GRACE;
        let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let t = now();
            if job.shared.stop.load(Ordering::Relaxed) || t > hard_deadline {
                let open = self.slots.iter().flatten().count();
                if open > 0 && !job.idle {
                    *self
                        .stats
                        .errors
                        .entry("cut at deadline".into())
                        .or_default() += open as u64;
                }
                return Ok(());
            }
            if !job.idle && self.slots.iter().all(Option::is_none) {
                return Ok(());
            }
            // SAFETY: `events` outlives the call and its length is passed.
            let n =
                unsafe { libc::epoll_wait(self.ep, events.as_mut_ptr(), events.len() as i32, 100) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let t = now();
            for ev in events.iter().take(n as usize) {
                let (idx, bits) = (ev.u64 as usize, ev.events);
                self.ready(idx, bits, t);
            }
        }
    }

    /// Opens session `i` (if the budget allows).
    fn open(&mut self, i: usize, t: Instant) {
        let job = self.job;
        let reserved = if job.idle {
            0
        } else {
            if t >= job.shared.deadline {
                return;
            }
            // A session without messages still takes one unit of the budget.
            let n = job.shared.reserve(job.per_session.max(1));
            if n == 0 {
                return;
            }
            if job.per_session == 0 {
                0
            } else {
                n
            }
        };
        if job.idle {
            if self.opened >= job.sessions {
                return;
            }
            self.opened += 1;
        }
        let tls = match &job.tls {
            Some(tj) if tj.mode == Mode::Implicit => match Tls::new(&tj.config, &tj.server_name) {
                Ok(tls) => Some(Box::new(tls)),
                Err(e) => {
                    self.stats.error(e);
                    self.stats.failed += reserved;
                    return;
                }
            },
            _ => None,
        };
        let source = match job.sources.len() {
            0 => None,
            n => job.sources.get((self.connects + job.thread) % n).copied(),
        };
        self.connects += 1;
        match connect(job.server, source) {
            Ok(fd) => {
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLOUT) as u32,
                    u64: i as u64,
                };
                // SAFETY: valid descriptors and event.
                unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
                self.slots[i] = Some(Slot {
                    fd,
                    client: Client::new(job.script),
                    out: Vec::with_capacity(256),
                    out_pos: 0,
                    connecting: true,
                    want_out: true,
                    opened: t,
                    left: reserved,
                    took: 0,
                    held: false,
                    tls,
                });
            }
            Err(e) => {
                // The reserved messages count as failed, so a dead server ends the run.
                self.stats.error(format!("connect: {e}"));
                self.stats.failed += reserved;
            }
        }
    }

    fn ready(&mut self, i: usize, bits: u32, t: Instant) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let fd = slot.fd;
        if slot.connecting {
            let err = so_error(fd);
            if err != 0 {
                let e = io::Error::from_raw_os_error(err);
                self.stats.error(format!("connect: {e}"));
                return self.close(i, t, End::ConnectFailed);
            }
            slot.connecting = false;
            if let Some(tls) = slot.tls.as_mut() {
                tls.start_clock(t);
            }
        }
        if bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe {
                libc::recv(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                let data = &self.buf[..n as usize];
                match slot.tls.as_mut() {
                    None => slot.client.handle_input(t, data),
                    Some(tls) => match tls.feed(t, data, &mut self.plain) {
                        Ok(done) => {
                            if let Some(h) = done {
                                let s = &mut self.stats;
                                if h.resumed {
                                    s.tls_resumed += 1;
                                } else {
                                    s.tls_full += 1;
                                }
                                s.tls_handshake.record(h.took);
                                *s.tls_groups
                                    .entry(format!("{} {}", h.group, h.version))
                                    .or_default() += 1;
                            }
                            slot.client.handle_input(t, &self.plain);
                            self.plain.clear();
                        }
                        Err(e) => {
                            self.plain.clear();
                            self.stats.error(e);
                            slot.client.handle_close();
                        }
                    },
                }
            } else if n == 0 {
                if !slot.client.is_finished() {
                    self.stats
                        .error("closed by server before QUIT reply".into());
                }
                slot.client.handle_close();
            } else {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    self.stats.error(format!("recv: {e}"));
                    slot.client.handle_close();
                }
            }
        }
        self.progress(i, t);
    }

    /// Acts on the engine's events, then sends what it produced.
    fn progress(&mut self, i: usize, t: Instant) {
        let job = self.job;
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut finished = None;
        let mut open_next = false;
        while let Some(ev) = slot.client.poll_event() {
            match ev {
                Event::Ready if job.idle => {
                    if !slot.held {
                        slot.held = true;
                        open_next = true;
                        job.shared.held.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Event::Ready => {
                    if slot.left > 0 && t < job.shared.deadline {
                        slot.left -= 1;
                        slot.took += 1;
                        let n = job.shared.started.fetch_add(1, Ordering::Relaxed);
                        slot.client.start_message(job.corpus.get(n));
                    } else {
                        slot.client.quit();
                    }
                }
                Event::StartTls => match &job.tls {
                    Some(tj) if tj.mode == Mode::StartTls => {
                        match Tls::new(&tj.config, &tj.server_name) {
                            Ok(mut tls) => {
                                tls.start_clock(t);
                                slot.tls = Some(Box::new(tls));
                                slot.client.tls_started();
                            }
                            Err(e) => {
                                self.stats.error(e);
                                finished = Some(End::Broken);
                            }
                        }
                    }
                    _ => {
                        self.stats.error("STARTTLS without a TLS config".into());
                        finished = Some(End::Broken);
                    }
                },
                Event::Authenticated { latency } => {
                    self.stats.auth_ok += 1;
                    self.stats.auth_latency.record(latency);
                }
                Event::Refused { stage, code: 0 } => {
                    self.stats
                        .error(format!("malformed reply ({})", stage.name()));
                }
                Event::Refused { stage, code } => {
                    self.stats.error(format!("{code} {}", stage.name()));
                }
                Event::Delivered {
                    accepted,
                    latency,
                    size,
                } => {
                    if accepted {
                        self.stats.accepted += 1;
                        self.stats.bytes += size as u64;
                        self.stats.data_latency.record(latency);
                    } else {
                        self.stats.failed += 1;
                    }
                }
                Event::Finished { clean } => {
                    finished = Some(if clean { End::Clean } else { End::Broken })
                }
            }
        }
        if let Some(end) = finished {
            return self.close(i, t, end);
        }
        match slot.tls.as_mut() {
            None => {
                slot.client.poll_transmit(&mut slot.out);
            }
            Some(tls) => {
                if slot.client.poll_transmit(&mut self.plain) {
                    tls.write_plain(&self.plain);
                    self.plain.clear();
                }
                tls.write_tls(&mut slot.out);
            }
        }
        if slot.out_pos < slot.out.len() && !slot.connecting {
            let pending = &slot.out[slot.out_pos..];
            // SAFETY: `pending` is valid for its length.
            let n = unsafe {
                libc::send(
                    slot.fd,
                    pending.as_ptr().cast(),
                    pending.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                slot.out_pos += n as usize;
            } else {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    self.stats.error(format!("send: {e}"));
                    slot.client.handle_close();
                    return self.close(i, t, End::Broken);
                }
            }
            if slot.out_pos == slot.out.len() {
                slot.out.clear();
                slot.out_pos = 0;
            }
        }
        let want_out = slot.out_pos < slot.out.len() || slot.connecting;
        if want_out != slot.want_out {
            slot.want_out = want_out;
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | if want_out { libc::EPOLLOUT } else { 0 }) as u32,
                u64: i as u64,
            };
            // SAFETY: valid descriptors and event.
            unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_MOD, slot.fd, &mut ev) };
        }
        if open_next {
            self.open(self.opened, t);
        }
    }

    /// Closes session `i` and, budget and time permitting, opens the next in its place.
    fn close(&mut self, i: usize, t: Instant, end: End) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::take) else {
            return;
        };
        // SAFETY: the descriptor is ours; closing also removes it from the epoll set.
        unsafe { libc::close(slot.fd) };
        if slot.held {
            self.job.shared.held.fetch_sub(1, Ordering::Relaxed);
        }
        if end != End::ConnectFailed {
            self.stats.sessions += 1;
            self.stats.session_latency.record(t - slot.opened);
        }
        if end != End::Clean {
            // Messages started but not answered, and those reserved but never started.
            self.stats.failed += slot.took.saturating_sub(slot.client.answered()) + slot.left;
        }
        if self.job.idle {
            if !self.job.shared.stop.load(Ordering::Relaxed) {
                self.open(i, t);
            }
        } else {
            self.open(i, t);
        }
    }
}

fn connect(addr: SocketAddr, source: Option<std::net::Ipv4Addr>) -> io::Result<RawFd> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::other("IPv4 only"));
    };
    // SAFETY: plain syscalls on a descriptor we own; closed on every error path.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        if let Some(source) = source {
            // The port is chosen at connect, per destination, not at bind: otherwise every
            // connection from `source` would need a port of its own among all destinations.
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
            let local = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(source.octets()),
                },
                sin_zero: [0; 8],
            };
            if libc::bind(
                fd,
                (&local as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ) < 0
            {
                let e = io::Error::last_os_error();
                libc::close(fd);
                return Err(e);
            }
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                libc::close(fd);
                return Err(e);
            }
        }
        Ok(fd)
    }
}

fn so_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
    }
    err
}

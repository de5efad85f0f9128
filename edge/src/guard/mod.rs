//! The server's judgement of clients, and the enforcement of its bans.
//!
//! A source is banned for `shield.ban_secs` when it talks before the banner (pregreet, with a
//! listener's `greet_delay_ms`), exhausts `limits.max_bad_commands`, or fails AUTH too often
//! (the [`crate::auth::AbuseTracker`] decides; its bans come here too). A source over
//! `limits.max_connections_per_ip` is not banned: only its extra connection is refused, so its
//! transfers already under way go on.
//!
//! Sources in `guard.trusted` ([`GuardConfig`]; loopback by default) are this host's own
//! software, as Postfix's `permit_mynetworks` treats them: never banned, never held to the
//! greeting delay, not counted against the per-source limit.
//!
//! With the XDP [`Shield`] attached, a ban drops the source's packets in the kernel, before a
//! SYN becomes a socket. Without it (not root, no BPF, `shield.enabled = false`) the same bans
//! are kept in the [`BanTable`] only and answered with 421 at connect. Either way the log says which.
//!
//! Shared by every worker, touched once per connection (admission and release) and once per
//! ban, never per command. The ban check at admission is lock-free ([`BanTable`]: readers load
//! a published snapshot); the per-source connection counts are a mutex held for one map
//! update. What costs O(bans) (folding changes, dropping expired bans, sweeping the kernel
//! map) runs on the guard's own thread ([`pruner`]), never on an io_uring worker.
//!
//! With the shield, the kernel map and the table hold the same bans: the table is what
//! admission reads (on every port, protected or not), the map is what XDP drops by. A ban
//! written or lifted by `smtp-edge shield` in the pinned map reaches the table at the next
//! sweep; `smtp-edge ban` goes through the server and changes both at once.

mod bans;
pub mod capacity;
mod counts;
mod dnsbl;
mod pruner;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::shield::maps::Source;
use crate::shield::{Shield, ShieldConfig, ShieldCounters, ShieldError, MAX_BAN_SECS};
pub use bans::BanTable;
use bans::KernelBans;
pub use counts::PerSource;
pub use dnsbl::{
    query_name, DnsblChecker, DnsblConfig, DnsblHits, DnsblZone, DEFAULT_THRESHOLD,
    LOOKUP_DEADLINE, MAX_WEIGHT, MAX_ZONES,
};

use crate::protocol::CloseReason;

/// Most sources banned at once, as many as the shield's map holds; past it, the bans that end
/// soonest are forgotten first.
const MAX_BANS: usize = crate::shield::maps::MAX_BANS as usize;

/// The network a ban on `ip` covers: its IPv4 address (an IPv4-mapped IPv6 address as IPv4),
/// or its IPv6 /64.
pub fn ban_key(ip: IpAddr) -> IpNet {
    Source::from_ip(ip).prefix()
}

/// Default `guard.trusted`: loopback, `127.0.0.0/8` and `::1/128`.
pub const DEFAULT_TRUSTED: [IpNet; 2] = [
    IpNet::V4(ipnet::Ipv4Net::new_assert(
        std::net::Ipv4Addr::new(127, 0, 0, 0),
        8,
    )),
    IpNet::V6(ipnet::Ipv6Net::new_assert(
        std::net::Ipv6Addr::LOCALHOST,
        128,
    )),
];

/// The validated `[guard]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// `guard.trusted`: networks never banned, never pregreet-tested and not subject to
    /// `limits.max_connections_per_ip`. An IPv4-mapped IPv6 peer is matched as its IPv4
    /// address.
    pub trusted: Vec<IpNet>,
    /// `proxy.trusted`: the PROXY protocol balancers. Never banned: every client behind one
    /// arrives from its address, so a ban on it would refuse them all. Their clients are
    /// judged, counted and banned by the address the PROXY header names.
    pub balancers: Vec<IpNet>,
}

impl Default for GuardConfig {
    /// Loopback trusted: `127.0.0.0/8` and `::1/128`; no balancers.
    fn default() -> Self {
        GuardConfig {
            trusted: DEFAULT_TRUSTED.to_vec(),
            balancers: Vec::new(),
        }
    }
}

impl GuardConfig {
    /// Whether `ip` is in `guard.trusted`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Whether a ban on `ip` (its IPv4 address or IPv6 /64, [`ban_key`]) would cover any
    /// address of a balancer in `proxy.trusted`.
    pub fn covers_balancer(&self, ip: IpAddr) -> bool {
        let key = ban_key(ip);
        self.balancers
            .iter()
            .any(|b| b.contains(&key.network()) || key.contains(&b.network()))
    }
}

/// Why a source was banned, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// It sent before the greeting (RFC 5321 §4.3.1 has the client wait for the 220).
    Pregreet,
    /// It reached `limits.max_bad_commands`.
    BadCommands,
    /// It failed AUTH `auth.max_failures` times within the window.
    AuthFailures,
    /// The operator banned it (`smtp-edge ban add`).
    Operator,
    /// DNS block lists list it at or over `checks.dnsbl_threshold`.
    Listed,
}

impl BanReason {
    fn as_str(self) -> &'static str {
        match self {
            BanReason::Pregreet => "pregreet",
            BanReason::BadCommands => "too many bad commands",
            BanReason::AuthFailures => "too many failed logins",
            BanReason::Operator => "by the operator",
            BanReason::Listed => "on DNS block lists",
        }
    }
}

/// The verdict on a new connection.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; the slot counts it until dropped.
    Admit(Slot),
    /// Its source is banned (only seen without the shield, or before the kernel caught up).
    Banned,
    /// Its source already holds `limits.max_connections_per_ip` connections: this connection
    /// is refused, the others go on.
    TooMany,
    /// The server already holds `limits.max_connections` connections.
    Full,
}

/// The key connections are counted under, as bans are keyed: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 /64, so that hopping across one /64 does not escape the limit.
fn source_of(ip: IpAddr) -> IpAddr {
    ban_key(ip).addr()
}

/// One admitted connection, counted against its source (unless trusted) until dropped.
#[derive(Debug)]
pub struct Slot {
    guard: Arc<Guard>,
    /// The source it counts against; `None` for a trusted source.
    ip: Option<IpAddr>,
    trusted: bool,
}

impl Slot {
    /// Whether the connection comes from `guard.trusted`: no greeting delay, no bans.
    pub fn is_trusted(&self) -> bool {
        self.trusted
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = &self.ip {
            self.guard.connections.release(ip);
        }
    }
}

/// What the guard judges by: `guard.trusted` and the limits, read at each connection and
/// each ban. A reload replaces it whole ([`Guard::reconfigure`]); sessions already admitted
/// keep their slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GuardSettings {
    trusted: GuardConfig,
    /// `limits.max_connections_per_ip`; 0 is no limit.
    max_per_ip: u32,
    /// `limits.max_connections` (or the cap derived from the open-file limit).
    max_connections: u32,
    /// `shield.ban_secs`: how long the server's own bans last.
    ban_for: Duration,
}

/// The judgement and its enforcement; see the module docs.
#[derive(Debug)]
pub struct Guard {
    shield: Option<Shield>,
    /// What the judgement goes by; a reload replaces it whole.
    settings: ArcSwap<GuardSettings>,
    /// Every ban in force, the shield's included: what admission reads, without a lock.
    bans: BanTable,
    connections: PerSource<IpAddr>,
    /// The connections admitted now, against `limits.max_connections`.
    active: AtomicU32,
    /// The pruner thread, woken when bans wait to be folded.
    pruner: OnceLock<std::thread::Thread>,
}

impl Guard {
    /// Loads the shield if `shield.enabled`; a failure is an error only if `shield.required`,
    /// else it is logged and bans are enforced in userspace. Starts the pruner thread.
    pub fn start(
        cfg: &ShieldConfig,
        config: &GuardConfig,
        max_per_ip: u32,
        max_connections: u32,
    ) -> Result<Arc<Guard>, ShieldError> {
        let shield = if cfg.enabled {
            match Shield::load(cfg) {
                Ok(shield) => {
                    for (interface, mode) in shield.attachments() {
                        tracing::info!(%interface, mode = ?mode, "shield attached: bans and SYN limits enforced in XDP");
                    }
                    Some(shield)
                }
                Err(e) if cfg.required => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "shield unavailable; bans enforced in userspace with 421 at connect");
                    None
                }
            }
        } else {
            tracing::info!("shield disabled; bans enforced in userspace with 421 at connect");
            None
        };
        let sweeper = shield.as_ref().map(Shield::sweeper).transpose()?;
        let guard = Arc::new(Guard {
            shield,
            settings: ArcSwap::from_pointee(GuardSettings {
                trusted: config.clone(),
                max_per_ip,
                max_connections,
                ban_for: Duration::from_secs(cfg.ban_secs),
            }),
            bans: BanTable::new(MAX_BANS),
            connections: PerSource::default(),
            active: AtomicU32::new(0),
            pruner: OnceLock::new(),
        });
        match pruner::spawn(Arc::downgrade(&guard), sweeper) {
            Ok(thread) => {
                let _ = guard.pruner.set(thread);
            }
            // Bans still work; they are folded by the writers' own wake-ups never, so expired
            // ones linger until restart. Worth a loud line, not a refusal to start.
            Err(e) => tracing::error!(error = %e, "guard: cannot start the pruner thread"),
        }
        Ok(guard)
    }

    /// Puts new settings in place (a reload): `guard.trusted`, the connection limits and the
    /// length of the server's own bans, for the next connection and the next ban. Bans in
    /// force and connections already admitted are kept.
    pub fn reconfigure(
        &self,
        config: &GuardConfig,
        max_per_ip: u32,
        max_connections: u32,
        ban_for: Duration,
    ) {
        self.settings.store(Arc::new(GuardSettings {
            trusted: config.clone(),
            max_per_ip,
            max_connections,
            ban_for,
        }));
    }

    /// How long the server's own bans last (`shield.ban_secs`), as now configured.
    pub fn default_ban(&self) -> Duration {
        self.settings.load().ban_for
    }

    /// Decides on a new connection from `ip`. Takes no lock that a ban, an unban or pruning
    /// holds: the ban check reads a published snapshot.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Admission {
        // Descriptors are finite for everyone, trusted sources included: past the cap, refuse
        // rather than let accept, or a spool file in DATA, fail for want of one.
        let settings = self.settings.load();
        if self.active.fetch_add(1, Ordering::AcqRel) >= settings.max_connections {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Admission::Full;
        }
        // From here, every refusal gives the count back with the dropped slot.
        let admission = self.admit_source(&settings, ip, now);
        if !matches!(admission, Admission::Admit(_)) {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
        admission
    }

    fn admit_source(
        self: &Arc<Self>,
        settings: &GuardSettings,
        ip: IpAddr,
        now: Instant,
    ) -> Admission {
        if settings.trusted.is_trusted(ip) {
            return Admission::Admit(Slot {
                guard: self.clone(),
                ip: None,
                trusted: true,
            });
        }
        // The shield drops a banned source's SYNs only on `shield.ports`; a ban earned on
        // another port (failed AUTH on submission, say) is enforced here.
        if self.is_banned(ip, now) {
            return Admission::Banned;
        }
        let source = source_of(ip);
        let cap = (settings.max_per_ip != 0).then_some(settings.max_per_ip);
        if !self.connections.take(source, cap) {
            return Admission::TooMany;
        }
        Admission::Admit(Slot {
            guard: self.clone(),
            ip: Some(source),
            trusted: false,
        })
    }

    /// Whether `ip` is in `guard.trusted`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.settings.load().trusted.is_trusted(ip)
    }

    /// Whether a ban on `ip` would cover a PROXY balancer ([`GuardConfig::covers_balancer`]).
    pub fn covers_balancer(&self, ip: IpAddr) -> bool {
        self.settings.load().trusted.covers_balancer(ip)
    }

    /// The engine ended a session from `ip` for `reason`: a client that talked before the
    /// greeting, or that kept sending bad commands, is banned (unless trusted).
    pub fn session_closed(&self, ip: IpAddr, now: Instant, reason: CloseReason) {
        let ban = match reason {
            CloseReason::Pregreet => BanReason::Pregreet,
            CloseReason::TooManyErrors => BanReason::BadCommands,
            CloseReason::Listed => BanReason::Listed,
            CloseReason::Quit | CloseReason::Timeout | CloseReason::Shutdown => return,
        };
        self.ban(ip, now, ban);
    }

    /// Whether `ip` is banned: also for sessions that were already open when their source was
    /// banned. Lock-free.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.bans.remaining(ip, now).is_some()
    }

    /// Bans `ip` for `shield.ban_secs`: in the kernel if the shield is attached (its packets
    /// never reach us again), and in userspace (421 at connect on every port).
    pub fn ban(&self, ip: IpAddr, now: Instant, reason: BanReason) {
        self.ban_for(ip, now, reason, self.default_ban());
    }

    /// Bans `ip` for `duration` (AUTH bans last `auth.ban_secs`); otherwise as [`Guard::ban`].
    /// A source in `guard.trusted` is never banned, nor one whose ban would cover a PROXY
    /// balancer (with its address, every client behind it would be refused); the attempt is
    /// logged, and `false` returned.
    ///
    /// Costs one map update with the shield and a copy of the few changes not yet folded,
    /// whatever the number of bans in force: it runs on the rings.
    pub fn ban_for(&self, ip: IpAddr, now: Instant, reason: BanReason, duration: Duration) -> bool {
        if self.is_trusted(ip) {
            tracing::info!(%ip, reason = reason.as_str(), "not banned: in guard.trusted");
            return false;
        }
        if self.settings.load().trusted.covers_balancer(ip) {
            tracing::warn!(%ip, reason = reason.as_str(), "not banned: the ban would cover a balancer in proxy.trusted");
            return false;
        }
        tracing::warn!(%ip, reason = reason.as_str(), secs = duration.as_secs(), "banned");
        let in_kernel = match &self.shield {
            Some(shield) => match shield.ban(ip, duration) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(%ip, error = %e, "shield: cannot write the ban; enforcing it in userspace");
                    false
                }
            },
            None => false,
        };
        let until = now
            .checked_add(duration)
            .unwrap_or(now + Duration::from_secs(MAX_BAN_SECS));
        if self.bans.ban(ip, now, until, in_kernel) >= bans::FOLD_AT {
            self.wake_pruner();
        }
        true
    }

    /// Lifts the ban on `ip`'s source, in the kernel and in userspace; whether there was one.
    pub fn unban(&self, ip: IpAddr, now: Instant) -> Result<bool, ShieldError> {
        let in_kernel = match &self.shield {
            Some(shield) => shield.unban(ip)?,
            None => false,
        };
        let in_table = self.bans.lift(ip, now);
        if self.bans.pending() >= bans::FOLD_AT {
            self.wake_pruner();
        }
        Ok(in_kernel || in_table)
    }

    /// Bans in force (IPv4 address or IPv6 /64), with what remains of each, soonest to end
    /// first. Bans written to the kernel map by `smtp-edge shield ban` appear after the
    /// pruner's next sweep.
    pub fn list(&self, now: Instant) -> Vec<(IpNet, Duration)> {
        self.bans
            .list(now)
            .into_iter()
            .map(|(src, left)| (src.prefix(), left))
            .collect()
    }

    /// Ban changes the pruner thread has not folded yet: each accept scans them, so they are
    /// kept few (benchmarks wait for zero before timing).
    pub fn pending_bans(&self) -> usize {
        self.bans.pending()
    }

    /// Whether the shield (XDP) is attached: bans then drop packets in the kernel too.
    pub fn has_shield(&self) -> bool {
        self.shield.is_some()
    }

    /// The kernel's counters and the number of active bans, for metrics.
    pub fn stats(&self, now: Instant) -> (ShieldCounters, u64) {
        let counters = self
            .shield
            .as_ref()
            .and_then(|s| s.counters().ok())
            .unwrap_or_default();
        (counters, self.bans.list(now).len() as u64)
    }

    /// Folds pending ban changes, forgets expired bans, and with `kernel` (a sweep of the
    /// shield's map) agrees with the kernel. The pruner thread's work, O(bans).
    fn prune(&self, now: Instant, kernel: Option<KernelBans>) {
        self.bans.fold(now, kernel);
    }

    fn wake_pruner(&self) {
        if let Some(thread) = self.pruner.get() {
            thread.unpark();
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take "now" once and move it by hand
mod tests {
    use super::*;

    fn guard(max_per_ip: u32) -> Arc<Guard> {
        let cfg = ShieldConfig {
            enabled: false,
            ban_secs: 60,
            ..ShieldConfig::default()
        };
        Guard::start(&cfg, &GuardConfig::default(), max_per_ip, 1_000_000)
            .expect("disabled shield always starts")
    }

    #[test]
    fn past_the_global_cap_everyone_is_refused_until_a_slot_frees() {
        let cfg = ShieldConfig {
            enabled: false,
            ..ShieldConfig::default()
        };
        let g = Guard::start(&cfg, &GuardConfig::default(), 0, 2).unwrap();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let s1 = g.admit(a, now);
        let _s2 = g.admit(local, now);
        assert!(matches!(g.admit(a, now), Admission::Full));
        assert!(
            matches!(g.admit(local, now), Admission::Full),
            "trusted too"
        );
        drop(s1);
        assert!(matches!(g.admit(a, now), Admission::Admit(_)));
        // A refusal for another reason does not hold a place.
        let g = Guard::start(&cfg, &GuardConfig::default(), 1, 2).unwrap();
        let _one = g.admit(a, now);
        for _ in 0..5 {
            assert!(matches!(g.admit(a, now), Admission::TooMany));
        }
        assert!(matches!(g.admit(local, now), Admission::Admit(_)));
    }

    #[test]
    fn a_ban_that_would_cover_a_balancer_is_refused() {
        let cfg = ShieldConfig {
            enabled: false,
            ban_secs: 60,
            ..ShieldConfig::default()
        };
        let config = GuardConfig {
            trusted: Vec::new(),
            balancers: vec![
                "198.51.100.7/32".parse().unwrap(),
                "2001:db8::7/128".parse().unwrap(),
            ],
        };
        let g = Guard::start(&cfg, &config, 0, 1_000).unwrap();
        let now = Instant::now();
        for balancer in ["198.51.100.7", "2001:db8::99"] {
            let ip: IpAddr = balancer.parse().unwrap();
            assert!(!g.ban_for(ip, now, BanReason::Pregreet, Duration::from_secs(60)));
            assert!(
                matches!(g.admit(ip, now), Admission::Admit(_)),
                "{balancer}"
            );
        }
        // A client behind it is banned as anyone else.
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(g.ban_for(client, now, BanReason::Pregreet, Duration::from_secs(60)));
        assert!(matches!(g.admit(client, now), Admission::Banned));
    }

    #[test]
    fn trusted_sources_are_never_banned_nor_limited() {
        let g = guard(1);
        let now = Instant::now();
        let local: IpAddr = "127.0.0.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        for ip in [local, mapped, v6] {
            g.ban(ip, now, BanReason::AuthFailures);
            assert!(!g.is_banned(ip, now), "{ip}");
            let slots: Vec<_> = (0..3).map(|_| g.admit(ip, now)).collect();
            assert!(
                slots
                    .iter()
                    .all(|s| matches!(s, Admission::Admit(slot) if slot.is_trusted())),
                "{ip}"
            );
        }
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(g.admit(other, now), Admission::Admit(ref s) if !s.is_trusted()));
    }

    #[test]
    fn connections_per_source_are_counted_and_released() {
        let g = guard(2);
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let locals: Vec<_> = (0..5).map(|_| g.admit(local, now)).collect();
        assert!(locals.iter().all(|s| matches!(s, Admission::Admit(_))));
        let s1 = g.admit(a, now);
        let s2 = g.admit(a, now);
        assert!(matches!(g.admit(a, now), Admission::TooMany));
        assert!(matches!(g.admit(b, now), Admission::Admit(_)));
        drop(s1);
        assert!(matches!(g.admit(a, now), Admission::Admit(_)));
        drop(s2);
    }

    /// Admission reads a published snapshot: a ban, an unban or a fold in progress (all of
    /// which hold the table's write lock) cannot hold up an accept.
    #[test]
    fn admission_takes_no_lock_that_bans_hold() {
        let g = guard(10);
        let now = Instant::now();
        let banned: IpAddr = "192.0.2.66".parse().unwrap();
        let other: IpAddr = "192.0.2.67".parse().unwrap();
        g.ban(banned, now, BanReason::Pregreet);
        let held = g.bans.hold_write_lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = Arc::clone(&g);
        std::thread::spawn(move || {
            let verdicts = [worker.admit(banned, now), worker.admit(other, now)];
            let _ = tx.send(verdicts.map(|a| matches!(a, Admission::Admit(_))));
        });
        let verdicts = rx.recv_timeout(Duration::from_secs(30));
        drop(held);
        assert_eq!(
            verdicts,
            Ok([false, true]),
            "admission waited for the ban writer"
        );
    }

    /// Bans only append to the table (`bans::tests::a_ban_does_not_copy_the_table`); folding
    /// them in and forgetting expired ones is the pruner thread's work: nothing else here
    /// folds, yet the table is folded and pruned.
    #[test]
    fn the_pruner_thread_folds_bans_and_forgets_expired_ones() {
        let g = guard(0);
        let now = Instant::now();
        for i in 0..bans::FOLD_AT as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0xc633_6400 + i));
            g.ban_for(ip, now, BanReason::BadCommands, Duration::from_millis(1));
        }
        let long: IpAddr = "192.0.2.1".parse().unwrap();
        g.ban(long, now, BanReason::BadCommands);
        let deadline = Instant::now() + Duration::from_secs(30);
        while g.bans.held() != 1 {
            assert!(Instant::now() < deadline, "the pruner never folded");
            std::thread::park_timeout(Duration::from_millis(20));
        }
        assert_eq!(g.bans.pending(), 0);
        assert!(g.is_banned(long, now));
    }

    #[test]
    fn bans_expire_and_cover_a_v6_64() {
        let g = guard(0);
        let now = Instant::now();
        let v6: IpAddr = "fd00:1::2".parse().unwrap();
        let neighbour: IpAddr = "fd00:1::99".parse().unwrap();
        assert!(!g.is_banned(v6, now));
        g.ban(v6, now, BanReason::Pregreet);
        assert!(g.is_banned(neighbour, now));
        assert!(matches!(g.admit(v6, now), Admission::Banned));
        assert!(!g.is_banned(v6, now + Duration::from_secs(61)));
        assert_eq!(g.stats(now + Duration::from_secs(61)).1, 0);
    }

    #[test]
    fn sessions_closed_for_misbehaviour_ban_their_source() {
        let g = guard(0);
        let now = Instant::now();
        let polite: IpAddr = "192.0.2.1".parse().unwrap();
        for reason in [
            CloseReason::Quit,
            CloseReason::Timeout,
            CloseReason::Shutdown,
        ] {
            g.session_closed(polite, now, reason);
        }
        assert!(!g.is_banned(polite, now));
        let bot: IpAddr = "192.0.2.2".parse().unwrap();
        g.session_closed(bot, now, CloseReason::Pregreet);
        assert!(matches!(g.admit(bot, now), Admission::Banned));
        let noisy: IpAddr = "192.0.2.3".parse().unwrap();
        g.session_closed(noisy, now, CloseReason::TooManyErrors);
        assert!(g.is_banned(noisy, now));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        g.session_closed(local, now, CloseReason::Pregreet);
        assert!(!g.is_banned(local, now), "trusted");
    }

    #[test]
    fn v6_connections_count_per_64() {
        let g = guard(2);
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _s1 = g.admit(a, now);
        let _s2 = g.admit(b, now);
        assert!(matches!(g.admit(a, now), Admission::TooMany));
        assert!(matches!(g.admit(other, now), Admission::Admit(_)));
    }

    #[test]
    fn unlimited_when_zero() {
        let g = guard(0);
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| g.admit(a, now)).collect();
        assert!(slots.iter().all(|s| matches!(s, Admission::Admit(_))));
    }
}

//! The server's judgement of clients, and the enforcement of its bans.
//!
//! A source is banned for `shield.ban_secs` when it talks before the banner (pregreet, with a
//! listener's `greet_delay_ms`), exhausts `limits.max_bad_commands`, holds more than
//! `limits.max_connections_per_ip` connections at once, or fails AUTH too often (the
//! [`crate::auth::AbuseTracker`] decides; its bans come here too). The guard judges from what
//! it is told: the driver hands it each connection ([`Guard::admit`]) and the reason the engine
//! gave for ending each session ([`Guard::session_closed`]), and only reports back.
//!
//! With the XDP [`Shield`] attached, a ban drops the source's packets in the kernel, before a
//! SYN becomes a socket. Without it (not root, no BPF, `shield.enabled = false`) the same bans
//! are kept in a [`BanList`] and answered with 421 at connect. Either way the log says which.
//!
//! Shared by every worker, touched once per connection (admission and release) and once per
//! ban, never per command: a mutex is cheap at that rate, and the fast path (nothing banned)
//! is one atomic load.

mod counts;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use counts::PerSource;

use crate::protocol::CloseReason;
use crate::shield::{BanList, Shield, ShieldConfig, ShieldCounters, ShieldError};

/// Most sources remembered in the userspace ban list; the oldest go first.
const MAX_USERSPACE_BANS: usize = 65_536;

/// Why a source was banned, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// It sent before the greeting (RFC 5321 §4.3.1 has the client wait for the 220).
    Pregreet,
    /// It reached `limits.max_bad_commands`.
    BadCommands,
    /// It opened more than `limits.max_connections_per_ip` connections at once.
    TooManyConnections,
    /// It failed AUTH `auth.max_failures` times within the window.
    AuthFailures,
}

impl BanReason {
    fn as_str(self) -> &'static str {
        match self {
            BanReason::Pregreet => "pregreet",
            BanReason::BadCommands => "too many bad commands",
            BanReason::TooManyConnections => "too many connections",
            BanReason::AuthFailures => "too many failed logins",
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
    /// Its source already holds `limits.max_connections_per_ip` connections (and is banned
    /// for it).
    TooMany,
}

/// The key connections are counted under, as bans are keyed: an IPv4 address (IPv4-mapped
/// IPv6 included), or an IPv6 /64, so that hopping across one /64 does not escape the limit.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One admitted connection, counted against its source until dropped.
#[derive(Debug)]
pub struct Slot {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guard.connections.release(&self.ip);
    }
}

/// The judgement and its enforcement; see the module docs.
#[derive(Debug)]
pub struct Guard {
    shield: Option<Shield>,
    bans: Mutex<BanList>,
    /// Entries in `bans`, for the lock-free fast path.
    banned: AtomicUsize,
    connections: PerSource<IpAddr>,
    max_per_ip: u32,
    ban_for: Duration,
}

impl Guard {
    /// Loads the shield if `shield.enabled`; a failure is an error only if `shield.required`,
    /// else it is logged and bans are enforced in userspace.
    pub fn start(cfg: &ShieldConfig, max_per_ip: u32) -> Result<Arc<Guard>, ShieldError> {
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
        Ok(Arc::new(Guard {
            shield,
            bans: Mutex::new(BanList::new(MAX_USERSPACE_BANS)),
            banned: AtomicUsize::new(0),
            connections: PerSource::default(),
            max_per_ip,
            ban_for: Duration::from_secs(cfg.ban_secs),
        }))
    }

    /// Decides on a new connection from `ip`; a source over its connection limit is banned.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Admission {
        // The shield drops a banned source's SYNs only on `shield.ports`; a ban earned on
        // another port (failed AUTH on submission, say) is enforced here, from the same map.
        if self.is_banned(ip, now) {
            return Admission::Banned;
        }
        let source = source_of(ip);
        // Loopback is this host's own software (a content filter, a local relay, a load test):
        // exempt from the per-source limit, as Postfix exempts $mynetworks.
        let cap =
            (self.max_per_ip != 0 && !ip.to_canonical().is_loopback()).then_some(self.max_per_ip);
        if !self.connections.take(source, cap) {
            self.ban(ip, now, BanReason::TooManyConnections);
            return Admission::TooMany;
        }
        Admission::Admit(Slot {
            guard: self.clone(),
            ip: source,
        })
    }

    /// The engine ended a session from `ip` for `reason`: a client that talked before the
    /// greeting, or that kept sending bad commands, is banned.
    pub fn session_closed(&self, ip: IpAddr, now: Instant, reason: CloseReason) {
        let ban = match reason {
            CloseReason::Pregreet => BanReason::Pregreet,
            CloseReason::TooManyErrors => BanReason::BadCommands,
            CloseReason::Quit | CloseReason::Timeout | CloseReason::Shutdown => return,
        };
        self.ban(ip, now, ban);
    }

    /// Whether `ip` is banned, in the kernel or in userspace: for sessions that were already
    /// open when their source was banned.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        let in_kernel = self
            .shield
            .as_ref()
            .is_some_and(|s| s.is_banned(ip).unwrap_or(false));
        in_kernel || self.banned_in_userspace(ip, now)
    }

    fn banned_in_userspace(&self, ip: IpAddr, now: Instant) -> bool {
        if self.banned.load(Relaxed) == 0 {
            return false;
        }
        self.lock_bans().is_banned(ip, now)
    }

    /// Bans `ip` for `shield.ban_secs`: in the kernel if the shield is attached (its packets
    /// never reach us again), else in userspace (421 at connect).
    pub fn ban(&self, ip: IpAddr, now: Instant, reason: BanReason) {
        self.ban_for(ip, now, reason, self.ban_for);
    }

    /// Bans `ip` for `duration` (AUTH bans last `auth.ban_secs`); otherwise as [`Guard::ban`].
    pub fn ban_for(&self, ip: IpAddr, now: Instant, reason: BanReason, duration: Duration) {
        tracing::warn!(%ip, reason = reason.as_str(), secs = duration.as_secs(), "banned");
        if let Some(shield) = &self.shield {
            // Bans are rare; clearing out the expired ones now keeps the kernel map from
            // filling with sources that never came back.
            if let Err(e) = shield.prune() {
                tracing::warn!(error = %e, "shield: cannot prune expired bans");
            }
            match shield.ban(ip, duration) {
                // The kernel map is then the one record, so `smtp-edge shield unban` lifts
                // the ban completely.
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(%ip, error = %e, "shield: cannot write the ban; enforcing it in userspace")
                }
            }
        }
        let mut bans = self.lock_bans();
        bans.prune(now);
        bans.ban(ip, now, duration);
        self.banned.store(bans.len(), Relaxed);
    }

    /// The kernel's counters and the number of active bans, for metrics.
    pub fn stats(&self, now: Instant) -> (ShieldCounters, u64) {
        let counters = self
            .shield
            .as_ref()
            .and_then(|s| s.counters().ok())
            .unwrap_or_default();
        let active = match &self.shield {
            Some(shield) => shield.bans_active().unwrap_or(0),
            None => {
                let mut bans = self.lock_bans();
                bans.prune(now);
                self.banned.store(bans.len(), Relaxed);
                bans.len()
            }
        };
        (counters, active as u64)
    }

    fn lock_bans(&self) -> std::sync::MutexGuard<'_, BanList> {
        // A panic elsewhere must not take the ban list down with it: the data is still valid.
        self.bans.lock().unwrap_or_else(PoisonError::into_inner)
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
        Guard::start(&cfg, max_per_ip).expect("disabled shield always starts")
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
        let s3 = g.admit(b, now);
        assert!(matches!(s3, Admission::Admit(_)));
        drop(s1);
        assert!(
            matches!(g.admit(a, now), Admission::Admit(_)),
            "a slot came free"
        );
        assert!(matches!(g.admit(a, now), Admission::Admit(_)));
        let s4 = g.admit(a, now);
        assert!(matches!(g.admit(a, now), Admission::TooMany));
        // Over the limit is a ban: a freed slot does not let the source back in.
        drop((s2, s4));
        assert!(matches!(g.admit(a, now), Admission::Banned));
        assert!(!g.is_banned(b, now));
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

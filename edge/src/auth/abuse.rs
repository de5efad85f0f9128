//! Failed-AUTH accounting per source, bans, and the tarpit delay.
//!
//! A source is an IPv4 address, or an IPv6 /64: one customer network usually gets a whole /64,
//! so counting single IPv6 addresses would let one host rotate through 2^64 of them.
//!
//! A source's failures are counted in a fixed window opened by its first failure
//! (`auth.failure_window_secs`); the `auth.max_failures`-th failure inside it bans the source
//! for `auth.ban_secs`. A success does not reset the count: one good account must not clear the
//! guesses made against others from the same source. Time is passed in (`now`), never read.
//!
//! Memory is bounded: at most [`MAX_TRACKED_SOURCES`] sources are held. When the table is full,
//! entries whose window or ban is over are dropped first; then the non-banned source whose last
//! failure is oldest is forgotten. Bans are never dropped early, so if the table is full of live
//! bans a new source is not tracked (its failures still get the tarpit) until one expires.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::{AuthConfig, MAX_BAN_SECS};

/// Most sources tracked at once: each entry is ~64 octets, so the table stays under ~8 MiB.
pub const MAX_TRACKED_SOURCES: usize = 65_536;

/// The first tarpit delay; each further failure doubles it, up to `auth.tarpit_max_ms`.
const TARPIT_BASE: Duration = Duration::from_secs(1);

/// The source `ip` is counted under: an IPv4 address as a /32 (IPv4-mapped IPv6 included), an
/// IPv6 address as its /64.
pub fn source_of(ip: IpAddr) -> IpNet {
    // The guard's ban key, so that failures are counted under what a ban would cover.
    crate::guard::ban_key(ip)
}

/// A new ban, as returned by [`AbuseTracker::record_failure`]: what to refuse and until when.
/// A shield (XDP) can mirror it to drop the source's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    /// The banned source ([`source_of`]).
    pub source: IpNet,
    /// The ban ends at this instant.
    pub until: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures in the current window.
    failures: u32,
    /// When the current window opened.
    window_start: Instant,
    /// The latest failure; eviction forgets the oldest first.
    last: Instant,
    /// Set while the source is banned (or until the expired ban is noticed).
    banned_until: Option<Instant>,
}

/// Failed-AUTH counts and bans, shared by all workers (`Arc<AbuseTracker>`). It is touched on
/// failed AUTHs only, never on the mail data path; the bans it decides on are enforced by the
/// guard, and [`is_banned`](Self::is_banned) answers for its own record.
#[derive(Debug)]
pub struct AbuseTracker {
    /// The limits of `[auth]`; a reload replaces them ([`AbuseTracker::set_limits`]).
    limits: ArcSwap<Limits>,
    capacity: usize,
    /// Entries with `banned_until` set, expired ones included until noticed: zero means no
    /// source is banned, which `is_banned` answers without the lock.
    banned: AtomicUsize,
    sources: Mutex<HashMap<IpNet, Entry>>,
}

/// What the tracker counts and bans by.
#[derive(Debug)]
struct Limits {
    max_failures: u32,
    window: Duration,
    ban: Duration,
    tarpit_max: Duration,
}

impl Limits {
    fn of(config: &AuthConfig) -> Limits {
        Limits {
            max_failures: config.max_failures.max(1),
            window: config.failure_window,
            // Clamped so that `now + ban` cannot overflow, whatever the caller built.
            ban: config.ban.min(Duration::from_secs(MAX_BAN_SECS)),
            tarpit_max: config.tarpit_max,
        }
    }
}

impl AbuseTracker {
    /// Takes the limits of `config` (a reload) for the next failure; counts and bans in
    /// force are kept.
    pub fn set_limits(&self, config: &AuthConfig) {
        self.limits.store(Arc::new(Limits::of(config)));
    }

    /// A tracker with the limits of `config` and room for [`MAX_TRACKED_SOURCES`].
    pub fn new(config: &AuthConfig) -> AbuseTracker {
        AbuseTracker::with_capacity(config, MAX_TRACKED_SOURCES)
    }

    /// A tracker holding at most `capacity` sources (at least 1).
    pub fn with_capacity(config: &AuthConfig, capacity: usize) -> AbuseTracker {
        AbuseTracker {
            limits: ArcSwap::from_pointee(Limits::of(config)),
            capacity: capacity.max(1),
            banned: AtomicUsize::new(0),
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failed AUTH from `ip`. Returns the ban when this failure is the one that bans
    /// the source; `None` otherwise, also when the source is already banned (the ban is not
    /// extended) or cannot be tracked because the table is full of bans.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> Option<Ban> {
        let source = source_of(ip);
        let limits = self.limits.load();
        let mut sources = self.lock();
        if let Some(entry) = sources.get_mut(&source) {
            if let Some(until) = entry.banned_until {
                if until > now {
                    return None;
                }
                entry.banned_until = None;
                entry.failures = 0;
                self.banned.fetch_sub(1, Ordering::Release);
            }
            if now.saturating_duration_since(entry.window_start) >= limits.window {
                entry.failures = 0;
            }
        } else if !self.make_room(&mut sources, now) {
            return None;
        }
        let entry = sources.entry(source).or_insert(Entry {
            failures: 0,
            window_start: now,
            last: now,
            banned_until: None,
        });
        if entry.failures == 0 {
            entry.window_start = now;
        }
        entry.failures += 1;
        entry.last = now;
        if entry.failures < limits.max_failures {
            return None;
        }
        let until = now + limits.ban;
        entry.failures = 0;
        entry.banned_until = Some(until);
        self.banned.fetch_add(1, Ordering::Release);
        Some(Ban { source, until })
    }

    /// Whether `ip`'s source is banned at `now`. Without any ban in force this is one atomic
    /// load.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        if self.banned.load(Ordering::Acquire) == 0 {
            return false;
        }
        let source = source_of(ip);
        let mut sources = self.lock();
        let Some(entry) = sources.get_mut(&source) else {
            return false;
        };
        match entry.banned_until {
            Some(until) if until > now => true,
            Some(_) => {
                self.banned.fetch_sub(1, Ordering::Release);
                sources.remove(&source);
                false
            }
            None => false,
        }
    }

    /// How long to wait before answering the `failures_so_far`-th failed AUTH of a session:
    /// none before the first, then 1 s doubling with each failure, at most `auth.tarpit_max_ms`.
    /// The driver sleeps on its own timer; nothing blocks.
    pub fn tarpit(&self, failures_so_far: u32) -> Duration {
        if failures_so_far == 0 {
            return Duration::ZERO;
        }
        // 2^31 s is far past any cap, so the shift is bounded there.
        let factor = 1u32 << (failures_so_far - 1).min(31);
        TARPIT_BASE
            .saturating_mul(factor)
            .min(self.limits.load().tarpit_max)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpNet, Entry>> {
        // The map holds plain counters; a panic elsewhere cannot leave it inconsistent.
        self.sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes room for one more source; false if every entry is a live ban.
    fn make_room(&self, sources: &mut HashMap<IpNet, Entry>, now: Instant) -> bool {
        if sources.len() < self.capacity {
            return true;
        }
        let window = self.limits.load().window;
        let mut expired_bans = 0;
        sources.retain(|_, e| match e.banned_until {
            Some(until) if until > now => true,
            Some(_) => {
                expired_bans += 1;
                false
            }
            None => now.saturating_duration_since(e.window_start) < window,
        });
        self.banned.fetch_sub(expired_bans, Ordering::Release);
        if sources.len() < self.capacity {
            return true;
        }
        let oldest = sources
            .iter()
            .filter(|(_, e)| e.banned_until.is_none())
            .min_by_key(|(_, e)| e.last)
            .map(|(&source, _)| source);
        match oldest {
            Some(source) => {
                sources.remove(&source);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            max_failures: 3,
            failure_window: Duration::from_secs(60),
            ban: Duration::from_secs(600),
            tarpit_max: Duration::from_millis(5000),
            ..AuthConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Any instant works as the start: time only moves when a test passes a later one.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn bans_after_max_failures_and_expires() {
        let t = AbuseTracker::new(&config());
        let t0 = start() + Duration::from_secs(1);
        let a = ip("192.0.2.1");
        assert!(!t.is_banned(a, t0));
        assert_eq!(t.record_failure(a, t0), None);
        assert_eq!(t.record_failure(a, t0 + Duration::from_secs(1)), None);
        let ban = t.record_failure(a, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(ban.source, "192.0.2.1/32".parse::<IpNet>().unwrap());
        assert_eq!(ban.until, t0 + Duration::from_secs(602));
        assert!(t.is_banned(a, t0 + Duration::from_secs(3)));
        assert!(!t.is_banned(ip("192.0.2.2"), t0 + Duration::from_secs(3)));
        // Failures during the ban neither extend it nor ban again.
        assert_eq!(t.record_failure(a, t0 + Duration::from_secs(10)), None);
        assert!(t.is_banned(a, ban.until - Duration::from_millis(1)));
        assert!(!t.is_banned(a, ban.until));
        assert_eq!(t.banned.load(Ordering::Relaxed), 0, "fast path restored");
    }

    #[test]
    fn window_expiry_resets_the_count() {
        let t = AbuseTracker::new(&config());
        let t0 = start();
        let a = ip("198.51.100.7");
        t.record_failure(a, t0);
        t.record_failure(a, t0);
        // The window opened at t0 is over: this is failure 1 of a new window.
        assert_eq!(t.record_failure(a, t0 + Duration::from_secs(60)), None);
        assert!(t.record_failure(a, t0 + Duration::from_secs(61)).is_none());
        assert!(t.record_failure(a, t0 + Duration::from_secs(62)).is_some());
        assert!(t.is_banned(a, t0 + Duration::from_secs(63)));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let t = AbuseTracker::new(&config());
        let now = start();
        t.record_failure(ip("2001:db8:1:2::1"), now);
        t.record_failure(ip("2001:db8:1:2:ffff::9"), now);
        let ban = t.record_failure(ip("2001:db8:1:2:abcd::"), now).unwrap();
        assert_eq!(ban.source, "2001:db8:1:2::/64".parse::<IpNet>().unwrap());
        assert!(t.is_banned(ip("2001:db8:1:2::42"), now));
        assert!(!t.is_banned(ip("2001:db8:1:3::1"), now));
        assert_eq!(
            source_of(ip("::ffff:192.0.2.9")),
            "192.0.2.9/32".parse::<IpNet>().unwrap()
        );
    }

    #[test]
    fn memory_is_bounded_and_bans_are_kept() {
        let t = AbuseTracker::with_capacity(&config(), 2);
        let now = start();
        t.record_failure(ip("192.0.2.1"), now);
        t.record_failure(ip("192.0.2.2"), now + Duration::from_secs(1));
        // Full: the oldest non-banned source (.1) is forgotten.
        t.record_failure(ip("192.0.2.3"), now + Duration::from_secs(2));
        assert_eq!(t.lock().len(), 2);
        assert!(!t.lock().contains_key(&source_of(ip("192.0.2.1"))));
        // Fill with bans: new sources are then not tracked.
        let later = now + Duration::from_secs(3);
        for _ in 0..3 {
            t.record_failure(ip("192.0.2.2"), later);
            t.record_failure(ip("192.0.2.3"), later);
        }
        assert!(t.is_banned(ip("192.0.2.2"), later) && t.is_banned(ip("192.0.2.3"), later));
        assert_eq!(t.record_failure(ip("192.0.2.4"), later), None);
        assert!(!t.lock().contains_key(&source_of(ip("192.0.2.4"))));
        // Once the bans are over they make room.
        let after = later + Duration::from_secs(600);
        t.record_failure(ip("192.0.2.4"), after);
        assert!(t.lock().contains_key(&source_of(ip("192.0.2.4"))));
        assert_eq!(t.banned.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn tarpit_doubles_up_to_the_cap() {
        let t = AbuseTracker::new(&config());
        let secs: Vec<u64> = (0..6).map(|n| t.tarpit(n).as_millis() as u64).collect();
        assert_eq!(secs, [0, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(t.tarpit(u32::MAX), Duration::from_millis(5000));
        let quick = AbuseTracker::new(&AuthConfig {
            tarpit_max: Duration::from_millis(10),
            ..config()
        });
        assert_eq!(quick.tarpit(3), Duration::from_millis(10));
    }
}

//! [`BanList`]: the shield's ban judgement in userspace, for when the XDP program is not loaded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::maps::{Source, MAX_BANS};
use super::prefix::IpPrefix;

/// Banned sources with their expiry, judged as the XDP program judges them: IPv4 by address,
/// IPv6 by /64, an IPv4-mapped IPv6 peer as its IPv4 address. The server asks
/// [`BanList::is_banned`] at accept and answers a banned peer `421` (RFC 5321 §3.8).
///
/// Sans-IO: every call takes `now`; nothing reads a clock. Holds at most `cap` sources: when
/// full, expired bans are dropped first, then the ban that would end soonest.
#[derive(Debug, Clone)]
pub struct BanList {
    until: HashMap<Source, Instant>,
    cap: usize,
}

impl Default for BanList {
    fn default() -> Self {
        BanList::new(MAX_BANS as usize)
    }
}

impl BanList {
    /// An empty list holding at most `cap` sources (at least one).
    pub fn new(cap: usize) -> BanList {
        BanList {
            until: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Bans `ip`'s source (IPv6: its /64) for `dur` from `now`. A longer ban already in place
    /// is kept.
    pub fn ban(&mut self, ip: IpAddr, now: Instant, dur: Duration) {
        let key = Source::from_ip(ip);
        let until = now
            .checked_add(dur)
            .unwrap_or(now + Duration::from_secs(1 << 32));
        if !self.until.contains_key(&key) && self.until.len() >= self.cap {
            self.prune(now);
            if self.until.len() >= self.cap {
                if let Some(soonest) = self.until.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    self.until.remove(&soonest);
                }
            }
        }
        let slot = self.until.entry(key).or_insert(until);
        if *slot < until {
            *slot = until;
        }
    }

    /// Lifts the ban on `ip`'s source; whether there was one.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        self.until.remove(&Source::from_ip(ip)).is_some()
    }

    /// Whether `ip`'s source is banned at `now`.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.remaining(ip, now).is_some()
    }

    /// How long `ip`'s source stays banned after `now`, if it is.
    pub fn remaining(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = *self.until.get(&Source::from_ip(ip))?;
        (until > now).then(|| until - now)
    }

    /// Forgets expired bans; how many.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.until.len();
        self.until.retain(|_, until| *until > now);
        before - self.until.len()
    }

    /// Bans in force at `now`, with what remains of each, soonest to end first.
    pub fn list(&self, now: Instant) -> Vec<(IpPrefix, Duration)> {
        let mut out: Vec<_> = self
            .until
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(src, until)| (src.prefix(), *until - now))
            .collect();
        out.sort_by_key(|(p, d)| (*d, *p));
        out
    }

    /// Sources held, expired or not.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether no source is held.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

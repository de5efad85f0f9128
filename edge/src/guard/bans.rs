//! [`BanTable`]: the bans every accept consults, read without a lock.
//!
//! ```text
//!  accept (every worker) ──► load() ──► Snapshot { base, recent } ──► banned?   no lock, no syscall
//!  ban / lift (rare)     ──► write lock ──► publish base + (recent ++ change)   O(recent), not O(bans)
//!  pruner thread         ──► fold: base ∪ recent − expired (± kernel sweep)     O(bans), off the rings
//! ```
//!
//! A snapshot is immutable: readers [`ArcSwap::load`] it and look the source up, first in the
//! short `recent` list of changes (newest last), then in `base`. A writer never copies `base`;
//! it publishes a snapshot sharing the same `base` with one more change in `recent`, so a ban
//! costs the same with 60,000 bans in force as with none, and is visible to the next accept on
//! any worker. Only the pruner thread rebuilds `base`, off the rings.
//!
//! Sans-IO: every call takes `now`; nothing here reads a clock or starts a thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::shield::maps::Source;

/// Changes in `recent` past which the writer asks the pruner to fold them into `base`: each
/// accept scans `recent`, so it is kept short.
pub(super) const FOLD_AT: usize = 64;

/// One ban in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The ban ends then.
    until: Instant,
    /// When the ban was written: a kernel sweep that started later must have seen it.
    at: Instant,
    /// The shield holds it too: it lasts only as long as the kernel's entry.
    in_kernel: bool,
}

/// A change not yet folded into `base`.
#[derive(Debug, Clone, Copy)]
enum Change {
    Ban(Entry),
    Lift,
}

/// What readers see: immutable once published.
#[derive(Debug, Default)]
struct Snapshot {
    base: Arc<HashMap<Source, Entry>>,
    /// Oldest first; for one source, the last change wins over earlier ones and over `base`.
    recent: Vec<(Source, Change)>,
}

impl Snapshot {
    fn entry(&self, key: &Source) -> Option<Entry> {
        match self.recent.iter().rev().find(|(k, _)| k == key) {
            Some((_, Change::Ban(e))) => Some(*e),
            Some((_, Change::Lift)) => None,
            None => self.base.get(key).copied(),
        }
    }
}

/// What the kernel's ban map held during a sweep, for [`BanTable::fold`].
#[derive(Debug)]
pub(super) struct KernelBans {
    /// When the sweep started: table entries written before it must be in `live`, or the
    /// kernel no longer bans them (expired, or lifted by `smtp-edge shield unban`).
    pub(super) started: Instant,
    /// Every ban in force, with when it ends.
    pub(super) live: Vec<(Source, Instant)>,
}

/// The bans, keyed as the shield keys them (IPv4 address, IPv6 /64); see the module docs.
#[derive(Debug)]
pub struct BanTable {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers with each other; readers never take it.
    write: Mutex<()>,
    /// Serialises folds, so that `recent` only ever loses the prefix one fold took.
    fold: Mutex<()>,
    /// Most sources held after a fold; past it, the bans that end soonest go first.
    cap: usize,
}

impl BanTable {
    /// An empty table holding at most `cap` sources (at least one) after each fold.
    pub fn new(cap: usize) -> BanTable {
        BanTable {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            write: Mutex::new(()),
            fold: Mutex::new(()),
            cap: cap.max(1),
        }
    }

    /// How long `ip`'s source stays banned after `now`, if it is. Lock-free: one atomic load
    /// and two lookups.
    pub fn remaining(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let entry = self.snapshot.load().entry(&Source::from_ip(ip))?;
        (entry.until > now).then(|| entry.until - now)
    }

    /// Bans `ip`'s source until `until` (a longer ban in force is kept); `in_kernel` when the
    /// shield holds it too. Returns how many changes wait to be folded.
    pub fn ban(&self, ip: IpAddr, now: Instant, until: Instant, in_kernel: bool) -> usize {
        let key = Source::from_ip(ip);
        let _w = lock(&self.write);
        let current = self.snapshot.load();
        let until = match current.entry(&key) {
            Some(e) if e.until > until => e.until,
            _ => until,
        };
        let entry = Entry {
            until,
            at: now,
            in_kernel,
        };
        self.publish(&current, key, Change::Ban(entry))
    }

    /// Lifts the ban on `ip`'s source; whether one was in force at `now`.
    pub fn lift(&self, ip: IpAddr, now: Instant) -> bool {
        let key = Source::from_ip(ip);
        let _w = lock(&self.write);
        let current = self.snapshot.load();
        let was = current.entry(&key).is_some_and(|e| e.until > now);
        if current.entry(&key).is_some() {
            self.publish(&current, key, Change::Lift);
        }
        was
    }

    /// Bans in force at `now`, with what remains of each, soonest to end first.
    pub fn list(&self, now: Instant) -> Vec<(Source, Duration)> {
        let snap = self.snapshot.load();
        let mut keys: Vec<Source> = snap.base.keys().copied().collect();
        keys.extend(snap.recent.iter().map(|(k, _)| *k));
        keys.sort_unstable();
        keys.dedup();
        let mut out: Vec<(Source, Duration)> = keys
            .into_iter()
            .filter_map(|k| {
                let e = snap.entry(&k)?;
                (e.until > now).then(|| (k, e.until - now))
            })
            .collect();
        out.sort_by_key(|(k, d)| (*d, *k));
        out
    }

    /// Changes waiting to be folded.
    pub fn pending(&self) -> usize {
        self.snapshot.load().recent.len()
    }

    /// Rebuilds `base` from the changes so far, without what has expired at `now`, and (with
    /// the shield) in agreement with the kernel's map. Costs O(bans); called by the pruner
    /// thread, never on a ring. Writers are held only for the final swap.
    pub(super) fn fold(&self, now: Instant, kernel: Option<KernelBans>) {
        let _f = lock(&self.fold);
        let taken = self.snapshot.load_full();
        let mut base: HashMap<Source, Entry> = (*taken.base).clone();
        if let Some(kernel) = kernel {
            let live: HashMap<Source, Instant> = kernel.live.into_iter().collect();
            base.retain(|k, e| !e.in_kernel || e.at >= kernel.started || live.contains_key(k));
            for (k, until) in live {
                let e = base.entry(k).or_insert(Entry {
                    until,
                    at: kernel.started,
                    in_kernel: true,
                });
                e.in_kernel = true;
            }
        }
        for (k, change) in &taken.recent {
            match change {
                Change::Ban(e) => {
                    base.insert(*k, *e);
                }
                Change::Lift => {
                    base.remove(k);
                }
            }
        }
        base.retain(|_, e| e.until > now);
        if base.len() > self.cap {
            let mut by_end: Vec<(Instant, Source)> =
                base.iter().map(|(k, e)| (e.until, *k)).collect();
            by_end.sort_unstable();
            for (_, k) in by_end.iter().take(base.len() - self.cap) {
                base.remove(k);
            }
        }
        let base = Arc::new(base);
        let _w = lock(&self.write);
        let current = self.snapshot.load();
        // Only this fold removes changes, so what was taken is still a prefix of `recent`.
        let rest = current
            .recent
            .get(taken.recent.len()..)
            .unwrap_or_default()
            .to_vec();
        self.snapshot
            .store(Arc::new(Snapshot { base, recent: rest }));
    }

    /// Publishes `current` plus `change`; the caller holds the write lock.
    fn publish(&self, current: &Snapshot, key: Source, change: Change) -> usize {
        let mut recent = Vec::with_capacity(current.recent.len() + 1);
        recent.extend_from_slice(&current.recent);
        recent.push((key, change));
        let pending = recent.len();
        self.snapshot.store(Arc::new(Snapshot {
            base: Arc::clone(&current.base),
            recent,
        }));
        pending
    }

    /// Whether a writer could take the write lock now (tests: admission must not need it).
    #[cfg(test)]
    pub(super) fn hold_write_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.write)
    }

    /// Sources held, expired or not, folded or not (tests: what pruning removed).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        let snap = self.snapshot.load();
        snap.base.len() + snap.recent.len()
    }

    /// Whether `base` is still the one `other` was taken from (tests: a ban must not copy it).
    #[cfg(test)]
    pub(super) fn base_ptr(&self) -> *const () {
        Arc::as_ptr(&self.snapshot.load().base).cast()
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The table's data lives in the snapshot, never under these locks: a panic while one was
    // held leaves nothing inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take "now" once and move it by hand
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn bans_lifts_and_expiry_are_seen_before_and_after_a_fold() {
        let t = BanTable::new(100);
        let now = Instant::now();
        let min = Duration::from_secs(60);
        t.ban(ip(1), now, now + min, false);
        t.ban(ip(2), now, now + min, false);
        t.ban(ip(3), now, now + Duration::from_secs(1), false);
        assert!(t.lift(ip(2), now));
        assert!(!t.lift(ip(2), now), "already lifted");
        for folded in [false, true] {
            if folded {
                t.fold(now + Duration::from_secs(2), None);
                assert_eq!(t.pending(), 0);
            }
            assert_eq!(t.remaining(ip(1), now), Some(min), "folded: {folded}");
            assert_eq!(t.remaining(ip(2), now), None, "folded: {folded}");
        }
        assert_eq!(t.remaining(ip(3), now + Duration::from_secs(2)), None);
        assert_eq!(t.list(now).len(), 1);
        // A shorter ban does not cut a longer one.
        t.ban(ip(1), now, now + Duration::from_secs(1), false);
        assert_eq!(t.remaining(ip(1), now), Some(min));
    }

    #[test]
    fn a_ban_does_not_copy_the_table() {
        let t = BanTable::new(100_000);
        let now = Instant::now();
        let hour = now + Duration::from_secs(3600);
        for i in 0..60_000 {
            t.ban(ip(i), now, hour, false);
            if t.pending() >= FOLD_AT {
                t.fold(now, None);
            }
        }
        t.fold(now, None);
        let base = t.base_ptr();
        t.ban(ip(70_000), now, hour, true);
        assert_eq!(t.base_ptr(), base, "a ban shares the folded table");
        assert_eq!(t.pending(), 1);
        assert!(t.remaining(ip(70_000), now).is_some());
        assert!(t.remaining(ip(59_999), now).is_some());
    }

    #[test]
    fn lookups_do_not_wait_for_writers() {
        let t = Arc::new(BanTable::new(100));
        let now = Instant::now();
        t.ban(ip(1), now, now + Duration::from_secs(60), false);
        let held = t.hold_write_lock();
        let reader = Arc::clone(&t);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(reader.remaining(ip(1), now).is_some());
        });
        let answered = rx.recv_timeout(Duration::from_secs(30));
        drop(held);
        assert_eq!(answered, Ok(true), "a lookup waited for the write lock");
    }

    #[test]
    fn a_kernel_sweep_drops_what_the_kernel_lifted_and_adds_what_it_holds() {
        let t = BanTable::new(100);
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        t.ban(ip(1), now, later, true); // lifted in the kernel by the CLI
        t.ban(ip(2), now, later, true); // still there
        t.ban(ip(3), now, later, false); // userspace only: the kernel never had it
        t.fold(now, None);
        let started = now + Duration::from_millis(1);
        // Written after the sweep started: the sweep may have missed it.
        t.ban(ip(4), started + Duration::from_millis(1), later, true);
        let kernel = KernelBans {
            started,
            live: vec![
                (Source::from_ip(ip(2)), later),
                (Source::from_ip(ip(5)), later), // banned by the CLI
            ],
        };
        t.fold(started, Some(kernel));
        let banned: Vec<bool> = (1..=5)
            .map(|i| t.remaining(ip(i), started).is_some())
            .collect();
        assert_eq!(banned, [false, true, true, true, true]);
    }

    #[test]
    fn sources_are_keyed_like_the_xdp_program() {
        let t = BanTable::new(100);
        let now = Instant::now();
        let p = |s: &str| s.parse::<IpAddr>().unwrap();
        t.ban(p("192.0.2.1"), now, now + Duration::from_secs(60), false);
        t.ban(
            p("2001:db8:0:1::5"),
            now,
            now + Duration::from_secs(30),
            false,
        );
        assert!(
            t.remaining(p("::ffff:192.0.2.1"), now).is_some(),
            "dual-stack peer"
        );
        assert!(t.remaining(p("192.0.2.2"), now).is_none());
        assert!(
            t.remaining(p("2001:db8:0:1:dead:beef::9"), now).is_some(),
            "same /64"
        );
        assert!(t.remaining(p("2001:db8:0:2::5"), now).is_none(), "next /64");
        let later = now + Duration::from_secs(45);
        assert_eq!(
            t.list(later),
            vec![(Source::from_ip(p("192.0.2.1")), Duration::from_secs(15))]
        );
    }

    #[test]
    fn the_cap_keeps_the_longest_bans() {
        let t = BanTable::new(2);
        let now = Instant::now();
        for i in 1..=3 {
            t.ban(
                ip(i),
                now,
                now + Duration::from_secs(u64::from(i) * 10),
                false,
            );
        }
        t.fold(now, None);
        let left: Vec<_> = (1..=3).map(|i| t.remaining(ip(i), now).is_some()).collect();
        assert_eq!(left, [false, true, true]);
    }
}

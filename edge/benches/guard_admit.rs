//! Admission with 60,000 bans in force: [`smtp_edge::guard::Guard::admit`] (a lock-free
//! snapshot lookup) and [`Guard::ban_for`] (one more change published beside the folded
//! table), beside the design they replace: one mutex over a `HashMap` of bans, taken by every
//! accept, with expired bans pruned (a walk of the whole map) on each new ban.
//!
//! The corpus is deterministic: sources 10.0.0.0 + i for i < 60,000, banned for an hour.
//! Before timing, both sides must agree: a banned source is refused, another is admitted.
//! Not measured: the shield's kernel map (that needs root and an interface); with it, the old
//! design walked the kernel map instead, about 1.5 µs a syscall per entry.

// Bans are given their time; any instant will do here.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use smtp_edge::guard::{Admission, BanReason, Guard, GuardConfig};
use smtp_edge::shield::ShieldConfig;

const BANS: u32 = 60_000;
const HOUR: Duration = Duration::from_secs(3600);

fn source(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// The design replaced: every accept locks the map; every ban prunes it whole, then inserts.
#[derive(Default)]
struct Naive {
    bans: Mutex<HashMap<IpAddr, Instant>>,
}

impl Naive {
    fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let bans = self.bans.lock().unwrap();
        bans.get(&ip).is_none_or(|until| *until <= now)
    }

    fn ban(&self, ip: IpAddr, now: Instant, dur: Duration) {
        let mut bans = self.bans.lock().unwrap();
        bans.retain(|_, until| *until > now);
        bans.insert(ip, now + dur);
    }
}

fn guard_with_bans(now: Instant) -> Arc<Guard> {
    let shield = ShieldConfig {
        enabled: false,
        ..ShieldConfig::default()
    };
    let trusted = GuardConfig {
        trusted: vec![],
        balancers: vec![],
    };
    let g = Guard::start(&shield, &trusted, 0, u32::MAX).expect("no shield to load");
    for i in 0..BANS {
        g.ban_for(source(i), now, BanReason::Operator, HOUR);
    }
    // Time the folded table, as it is between bursts of bans.
    let deadline = Instant::now() + Duration::from_secs(60);
    while g.pending_bans() > 0 {
        assert!(Instant::now() < deadline, "the pruner did not fold");
        std::thread::sleep(Duration::from_millis(10));
    }
    g
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let guard = guard_with_bans(now);
    let naive = Naive::default();
    for i in 0..BANS {
        naive.ban(source(i), now, HOUR);
    }
    let (banned, free) = (source(BANS / 2), source(BANS + 1));
    assert!(matches!(guard.admit(banned, now), Admission::Banned));
    assert!(matches!(guard.admit(free, now), Admission::Admit(_)));
    assert!(!naive.admit(banned, now) && naive.admit(free, now));

    // The ban check alone, then the whole admission (global and per-source counts, the slot
    // and its release).
    let mut g = c.benchmark_group("admit_60k_bans");
    g.bench_function("naive_mutex", |b| {
        b.iter(|| naive.admit(black_box(free), now))
    });
    g.bench_function("guard_ban_check", |b| {
        b.iter(|| guard.is_banned(black_box(free), now))
    });
    g.bench_function("guard_admit_and_release", |b| {
        b.iter(|| guard.admit(black_box(free), now))
    });
    g.finish();

    // The same checks while another thread keeps banning new sources, as a worker does when
    // a botnet pregreets: the naive check waits behind each ban's prune.
    let mut g = c.benchmark_group("admit_while_banning_60k");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let naive = Arc::new(naive);
    let banning = {
        let (stop, naive, guard) = (stop.clone(), naive.clone(), guard.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i = (i + 1) % 4_000;
                naive.ban(source(BANS + 100 + i), now, HOUR);
                guard.ban_for(source(BANS + 100 + i), now, BanReason::Operator, HOUR);
            }
        })
    };
    g.bench_function("naive_mutex", |b| {
        b.iter(|| naive.admit(black_box(free), now))
    });
    g.bench_function("guard_ban_check", |b| {
        b.iter(|| guard.is_banned(black_box(free), now))
    });
    g.finish();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    banning.join().expect("banning thread");

    let mut g = c.benchmark_group("ban_60k_bans");
    let mut next = BANS + 10;
    g.bench_function("naive_prune_on_ban", |b| {
        b.iter(|| {
            next += 1;
            naive.ban(black_box(source(next % 65_000)), now, HOUR)
        })
    });
    g.bench_function("guard", |b| {
        b.iter(|| {
            next += 1;
            guard.ban_for(
                black_box(source(next % 65_000)),
                now,
                BanReason::Operator,
                HOUR,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The guard's own thread: folds ban changes into the table, forgets expired bans, and sweeps
//! the shield's kernel map, all off the io_uring workers.
//!
//! It wakes when writers have left [`super::bans::FOLD_AT`] changes to fold, and at least
//! every [`FOLD_INTERVAL`]; it sweeps the kernel map every [`SWEEP_INTERVAL`], in steps of
//! [`SWEEP_STEP`] entries with a pause between them, through its own handle on the map, so no
//! lock that a ban or an accept takes is held meanwhile. It ends once the guard is dropped.

use std::sync::Weak;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use super::{Guard, KernelBans};
use crate::clock;
use crate::shield::BanSweeper;

/// Longest time between folds: expired bans leave the table (and the `bans_active` gauge)
/// within this.
const FOLD_INTERVAL: Duration = Duration::from_secs(1);
/// Time between sweeps of the kernel map: how long a ban lifted with `smtp-edge shield unban`
/// may still be answered with 421 on ports the shield does not protect.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Kernel map entries visited (or deleted) between two pauses of a sweep.
pub(super) const SWEEP_STEP: usize = 1024;
/// The pause: a full map (65,536 entries) is swept in 64 steps.
const SWEEP_PAUSE: Duration = Duration::from_millis(1);

/// Starts the thread; it holds `guard` weakly, so dropping the guard ends it.
pub(super) fn spawn(guard: Weak<Guard>, sweeper: Option<BanSweeper>) -> std::io::Result<Thread> {
    let handle = thread::Builder::new()
        .name("smtp-edge-guard".into())
        .spawn(move || run(&guard, sweeper))?;
    Ok(handle.thread().clone())
}

fn run(guard: &Weak<Guard>, mut sweeper: Option<BanSweeper>) {
    let mut last_sweep: Option<Instant> = None;
    loop {
        thread::park_timeout(FOLD_INTERVAL);
        let Some(guard) = guard.upgrade() else {
            return;
        };
        let now = clock::now();
        let due = last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_INTERVAL);
        let kernel = match &mut sweeper {
            Some(sweeper) if due => {
                last_sweep = Some(now);
                sweep(sweeper, now)
            }
            _ => None,
        };
        guard.prune(clock::now(), kernel);
    }
}

/// One pass over the kernel map; `None` (and a log line) if it fails, so the table keeps what
/// it has rather than forgetting bans it could not check.
fn sweep(sweeper: &mut BanSweeper, started: Instant) -> Option<KernelBans> {
    match sweeper.sweep(SWEEP_STEP, || thread::sleep(SWEEP_PAUSE)) {
        Ok(sweep) => Some(KernelBans {
            started,
            live: sweep
                .live
                .into_iter()
                .map(|(src, left)| (src, started + left))
                .collect(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "shield: cannot sweep the ban map");
            None
        }
    }
}

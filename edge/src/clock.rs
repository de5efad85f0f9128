//! The one place the clock is read: the driver, the delivery stage, the spool's fsync stopwatch
//! and the metrics endpoint take the time from here, and hand it to everything below them.
//!
//! `clippy.toml` disallows `Instant::now` and `SystemTime::now` everywhere else, so that the
//! sans-IO layers (`protocol/`, `tls/`, `auth/`'s accounting, `guard/`) only ever see the time
//! they are given, and their tests move it by hand.

use std::time::{Instant, SystemTime};

/// The monotonic time, for deadlines and durations.
#[allow(clippy::disallowed_methods)] // The clock is read here and only here (see clippy.toml).
pub fn now() -> Instant {
    Instant::now()
}

/// The wall-clock time, for trace headers, queue ids, certificate dates and the HTTP `Date`
/// header.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads it (`MONOTONIC_USEC=` in sd_notify
/// messages); `Instant` does not expose its value.
pub fn monotonic_usec() -> u64 {
    // SAFETY: timespec is plain data that clock_gettime fills in; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

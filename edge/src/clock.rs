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

//! The one place that reads the clock; everything below the driver is handed the time.

use std::time::{Instant, SystemTime};

/// The monotonic time, for engine deadlines.
#[allow(clippy::disallowed_methods)] // The driver is where the clock is read (see clippy.toml).
pub fn now() -> Instant {
    Instant::now()
}

/// The wall-clock time, for trace headers and queue ids.
#[allow(clippy::disallowed_methods)]
pub fn wall() -> SystemTime {
    SystemTime::now()
}

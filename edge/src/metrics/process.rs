//! The process's own figures, read from `/proc/self` at scrape time, under the names every
//! Prometheus client library uses (`process_*`), so existing dashboards and alerts apply.
//!
//! Read by hand rather than with the `procfs` crate: four numbers from three small files, where
//! that crate would bring a parser for every file under `/proc` and its dependencies.

use std::fs;

/// What the process uses now; a field is `None` when its file could not be read or parsed
/// (the series is then left out rather than exported as a false zero).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Open file descriptors (`/proc/self/fd`).
    pub open_fds: Option<u64>,
    /// The soft limit on open files (`RLIMIT_NOFILE`).
    pub max_fds: Option<u64>,
    /// Resident memory in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads the figures of this process.
pub fn read() -> ProcessStats {
    let stat = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| Stat::parse(&text));
    let boot_time = fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| boot_time(&text));
    // SAFETY: sysconf reads a constant of the running system; it touches no memory of ours.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&t| t > 0);
    // SAFETY: as above.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok();
    ProcessStats {
        open_fds: fs::read_dir("/proc/self/fd")
            .ok()
            // The directory handle being read is itself listed; it is gone after the count.
            .map(|dir| (dir.count() as u64).saturating_sub(1)),
        max_fds: max_fds(),
        resident_memory_bytes: stat.zip(page).map(|(s, page)| s.rss_pages * page),
        virtual_memory_bytes: stat.map(|s| s.vsize),
        cpu_seconds: stat
            .zip(ticks)
            .map(|(s, t)| (s.utime + s.stime) as f64 / t as f64),
        start_time_seconds: stat
            .zip(ticks)
            .zip(boot_time)
            .map(|((s, t), boot)| boot as f64 + s.starttime as f64 / t as f64),
    }
}

/// The fields of `/proc/self/stat` we export (proc(5)), in clock ticks and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl Stat {
    /// Parses the one line of `/proc/<pid>/stat`. The second field, the command name in
    /// parentheses, may itself hold spaces and parentheses, so fields are counted from after
    /// the last `)`: there, field 3 (`state`) comes first.
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // proc(5) numbers fields from 1; field n is at n - 3 here.
        let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

/// The boot time, in seconds since the epoch: the `btime` line of `/proc/stat`.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct it is handed, which lives here.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let line = "4242 (smtp (edge) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 150,
                stime: 25,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(Stat::parse("4242 (cut short) S 1 2"), None);
    }

    #[test]
    fn boot_time_is_the_btime_line() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(boot_time(text), Some(1_700_000_000));
        assert_eq!(boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_as_running() {
        let stats = read();
        // stdin, stdout and stderr at least; the directory handle itself is not counted.
        assert!(stats.open_fds.expect("/proc/self/fd") >= 3, "{stats:?}");
        assert!(stats.max_fds.expect("RLIMIT_NOFILE") >= stats.open_fds.unwrap_or(0));
        assert!(stats.resident_memory_bytes.expect("rss") > 1 << 20);
        assert!(
            stats.virtual_memory_bytes.expect("vsize") >= stats.resident_memory_bytes.unwrap_or(0)
        );
        let started = stats.start_time_seconds.expect("start time");
        let now = crate::clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        // Boot time is whole seconds and ticks are 1/100 s: allow for both.
        assert!(
            started <= now + 1.0 && started > now - 24.0 * 3600.0,
            "{started} vs {now}"
        );
        assert!(stats.cpu_seconds.is_some(), "{stats:?}");
    }
}

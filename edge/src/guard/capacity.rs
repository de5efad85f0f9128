//! How many connections the process can hold: `limits.max_connections`, or what the
//! file-descriptor limit leaves once the server's own needs are put aside.
//!
//! A connection holds one descriptor (its socket), and one more while a message is being
//! received (its spool file). The cap is set so that every admitted connection can be in DATA
//! at once and still have its spool file: a message accepted into DATA never fails because
//! descriptors ran out, and accept never fails with EMFILE, because the connection past the cap
//! is answered 421 and closed instead.

/// Descriptors kept for the server itself whatever the load: standard streams, the rings and
/// their eventfds, listeners, the spool lock and directories, the delivery thread's files,
/// the metrics and control sockets and their clients, certificate reloads.
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// More kept per worker: its ring, its listeners, its spool directory handle.
pub const RESERVED_PER_WORKER: u64 = 8;
/// Descriptors one connection may hold: its socket, and its spool file while in DATA.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 2;
/// The cap never derives below this, however low the limit: a server that cannot take a few
/// connections is useless, and the log says why it may run short.
pub const MIN_DERIVED_CONNECTIONS: u32 = 16;
/// Largest `limits.max_connections`.
pub const MAX_CONNECTIONS: u32 = 10_000_000;

/// Raises the soft limit on open files to the hard limit (an MX holds one descriptor per
/// connection, and the usual soft limit of 1024 would refuse connections long before memory or
/// CPU run out). Returns the soft limit in force afterwards, `None` if it cannot be read.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one is
        // always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            tracing::warn!(
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "cannot raise the open-file limit"
            );
        }
    }
    Some(lim.rlim_cur)
}

/// The connection cap `nofile` descriptors allow with `workers` workers: what is left after
/// the reserve, [`DESCRIPTORS_PER_CONNECTION`] each; at least [`MIN_DERIVED_CONNECTIONS`].
pub fn derived_max_connections(nofile: u64, workers: usize) -> u32 {
    let reserve = RESERVED_DESCRIPTORS + RESERVED_PER_WORKER * workers as u64;
    let n = nofile.saturating_sub(reserve) / DESCRIPTORS_PER_CONNECTION;
    u32::try_from(n)
        .unwrap_or(u32::MAX)
        .clamp(MIN_DERIVED_CONNECTIONS, MAX_CONNECTIONS)
}

/// The cap to run with: `configured` (`limits.max_connections`) if set, else derived from the
/// file-descriptor limit, raised first. Logs the choice, and warns when a configured cap is
/// more than the descriptors allow.
pub fn max_connections(configured: Option<u32>, workers: usize) -> u32 {
    let nofile = raise_nofile_limit();
    let derived = nofile.map(|n| derived_max_connections(n, workers));
    let cap = match (configured, derived) {
        (Some(cap), Some(derived)) if cap > derived => {
            tracing::warn!(
                max_connections = cap,
                allowed = derived,
                nofile = nofile.unwrap_or_default(),
                "limits.max_connections is more than the open-file limit allows; messages may \
                 fail with 451 when descriptors run out"
            );
            cap
        }
        (Some(cap), _) => cap,
        (None, Some(derived)) => derived,
        (None, None) => MAX_CONNECTIONS,
    };
    tracing::info!(
        max_connections = cap,
        nofile = nofile.unwrap_or_default(),
        "connection cap"
    );
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_two_descriptors_per_connection() {
        assert_eq!(derived_max_connections(1024, 2), (1024 - 256 - 16) / 2);
        assert_eq!(
            derived_max_connections(1 << 20, 4),
            ((1 << 20) - 256 - 32) / 2
        );
        assert_eq!(derived_max_connections(100, 2), MIN_DERIVED_CONNECTIONS);
        assert_eq!(derived_max_connections(u64::MAX, 1), MAX_CONNECTIONS);
    }
}

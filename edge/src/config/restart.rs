//! What a reload can change in a running server, and what only a restart can.
//!
//! A reload (SIGHUP, `smtp-edge reload`) takes a whole new [`Config`]. Most of it applies to
//! new sessions and next attempts. The keys below are bound to what the server set up once at
//! start: sockets, threads, directories it locked or opened, the XDP program. Those keep
//! their running values, and the reload names them in one warning line.

use super::Config;

/// The keys a running server cannot change without a restart, in the order a warning names
/// them: each with how it differs between two configurations, and how to keep the running
/// value.
const RESTART_KEYS: &[RestartKey] = &[
    RestartKey {
        key: "workers",
        differs: |a, b| a.workers != b.workers,
        keep: |fresh, running| fresh.workers = running.workers,
    },
    // The process switched users once, at start; it cannot switch again.
    RestartKey {
        key: "user",
        differs: |a, b| a.run_as != b.run_as,
        keep: |fresh, running| fresh.run_as.clone_from(&running.run_as),
    },
    RestartKey {
        key: "listener",
        differs: |a, b| a.listeners != b.listeners,
        keep: |fresh, running| fresh.listeners.clone_from(&running.listeners),
    },
    // After `listener`: a listener that keeps taking PROXY headers until the restart keeps
    // its balancers too. A file that turns PROXY off and empties `proxy.trusted` in one edit
    // is valid alone, but with the running listeners it would refuse every connection.
    RestartKey {
        key: "proxy.trusted",
        differs: |fresh, _| {
            fresh.listeners.iter().any(|l| l.proxy_protocol) && fresh.proxy.trusted.is_empty()
        },
        keep: |fresh, running| {
            fresh.proxy.trusted.clone_from(&running.proxy.trusted);
            fresh.guard.balancers.clone_from(&running.guard.balancers);
        },
    },
    RestartKey {
        key: "spool.dir",
        differs: |a, b| a.spool_dir != b.spool_dir,
        keep: |fresh, running| fresh.spool_dir.clone_from(&running.spool_dir),
    },
    RestartKey {
        key: "delivery.maildir",
        differs: |a, b| a.maildir != b.maildir,
        keep: |fresh, running| fresh.maildir.clone_from(&running.maildir),
    },
    RestartKey {
        key: "delivery.mode",
        differs: |a, b| a.maildir_mode != b.maildir_mode,
        keep: |fresh, running| fresh.maildir_mode = running.maildir_mode,
    },
    RestartKey {
        key: "control.socket",
        differs: |a, b| a.control != b.control,
        keep: |fresh, running| fresh.control.clone_from(&running.control),
    },
    RestartKey {
        key: "metrics.addr",
        differs: |a, b| a.metrics_addr != b.metrics_addr,
        keep: |fresh, running| fresh.metrics_addr = running.metrics_addr,
    },
    // The shield is loaded and attached once; only the length of the server's own bans is
    // a guard setting, read at each ban.
    RestartKey {
        key: "shield",
        differs: |a, b| {
            let mut a = a.shield.clone();
            a.ban_secs = b.shield.ban_secs;
            a != b.shield
        },
        keep: |fresh, running| {
            let ban_secs = fresh.shield.ban_secs;
            fresh.shield.clone_from(&running.shield);
            fresh.shield.ban_secs = ban_secs;
        },
    },
    RestartKey {
        key: "auth.verify_threads",
        differs: |a, b| a.auth.verify_threads != b.auth.verify_threads,
        keep: |fresh, running| fresh.auth.verify_threads = running.auth.verify_threads,
    },
    RestartKey {
        key: "tls.session_cache",
        differs: |a, b| a.tls.session_cache != b.tls.session_cache,
        keep: |fresh, running| fresh.tls.session_cache = running.tls.session_cache,
    },
    // Each worker builds its checks (a resolver and its cache) once, on its own runtime.
    RestartKey {
        key: "checks",
        differs: |a, b| a.checks != b.checks,
        keep: |fresh, running| fresh.checks.clone_from(&running.checks),
    },
    RestartKey {
        key: "dns.nameservers",
        differs: |a, b| a.relay.nameservers != b.relay.nameservers,
        keep: |fresh, running| {
            fresh
                .relay
                .nameservers
                .clone_from(&running.relay.nameservers);
        },
    },
    // The log's subscriber is installed once, at start.
    RestartKey {
        key: "log.format",
        differs: |a, b| a.log != b.log,
        keep: |fresh, running| fresh.log = running.log,
    },
    RestartKey {
        key: "shutdown.grace_secs",
        differs: |a, b| a.shutdown_grace != b.shutdown_grace,
        keep: |fresh, running| fresh.shutdown_grace = running.shutdown_grace,
    },
];

/// One key that needs a restart.
struct RestartKey {
    key: &'static str,
    differs: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

impl Config {
    /// Takes on the running values of the keys a reload cannot change, and returns the
    /// names of those that `self` (the file just read) wanted changed; empty when the reload
    /// applies whole. `self` is then what the server runs on from now.
    pub fn keep_restart_keys(&mut self, running: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        for k in RESTART_KEYS {
            if (k.differs)(self, running) {
                changed.push(k.key);
                (k.keep)(self, running);
            }
        }
        debug_assert!(RESTART_KEYS.iter().all(|k| !(k.differs)(self, running)));
        changed
    }
}

//! The sd_notify protocol (systemd's `Type=notify`): one datagram per state change, sent to the
//! Unix socket named by `$NOTIFY_SOCKET` (sd_notify(3)). Without the variable (not started by
//! systemd) every call does nothing.
//!
//! Written here rather than taken from a crate: it is one `sendto` of a few `KEY=VALUE` lines,
//! and the server needs exactly four messages: `READY=1` once every listener accepts,
//! `RELOADING=1` with `MONOTONIC_USEC=` (systemd 253 and later wait for both) then `READY=1`
//! around a reload, `STOPPING=1` on shutdown, and `WATCHDOG=1` every half of
//! `$WATCHDOG_USEC` while the server runs.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where systemd listens, if it started us with `Type=notify`.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and
    /// `$WATCHDOG_USEC` (honoured only when `$WATCHDOG_PID` is unset or ours), then removes
    /// them from the environment so that no child inherits them.
    pub fn from_env() -> io::Result<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&usec| usec > 0)
            .filter(|_| {
                std::env::var("WATCHDOG_PID")
                    .map_or(true, |pid| pid.parse() == Ok(std::process::id()))
            })
            .map(Duration::from_micros);
        // SAFETY (of the environment): called at start, before any thread reads it.
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let target = match socket {
            None => None,
            Some(name) => {
                let name = name.to_string_lossy().into_owned();
                let addr = match name.strip_prefix('@') {
                    Some(abstract_name) => {
                        use std::os::linux::net::SocketAddrExt;
                        SocketAddr::from_abstract_name(abstract_name.as_bytes())?
                    }
                    None => SocketAddr::from_pathname(&name)?,
                };
                Some((UnixDatagram::unbound()?, addr))
            }
        };
        Ok(Notifier { target, watchdog })
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
    /// advises; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// `READY=1`: every listener accepts (or a reload is done).
    pub fn ready(&self) {
        self.send("READY=1\n");
    }

    /// `RELOADING=1` with the monotonic time, before a reload starts; [`Notifier::ready`]
    /// ends it.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\n",
            crate::clock::monotonic_usec()
        ));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1\n");
    }

    /// A notification that cannot be sent is logged and otherwise ignored: systemd may be
    /// restarting, and the server's work does not depend on it.
    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::warn!(error = %e, message = message.trim_end(), "sd_notify failed");
        }
    }
}

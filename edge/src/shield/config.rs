//! [`ShieldConfig`]: the `[shield]` section, and [`ShieldConfig::validate`], which names the key
//! of every problem.

use std::ffi::CString;

use serde::{Deserialize, Serialize};

use super::maps::{MAX_ALLOW, MAX_PORTS};
use ipnet::IpNet;

use crate::cidr;

/// Largest `shield.syn_rate` and `shield.syn_burst`: a million SYNs per second per source is
/// already no limit; past it the nanosecond interval loses its precision.
pub const MAX_SYN_RATE: u32 = 1_000_000;
/// Bounds of `shield.max_sources`, the per-source bucket map's capacity (an LRU: a full map
/// forgets its least recently seen source). 16 Mi entries is about 1.5 GiB of kernel memory.
pub const MAX_SOURCES: std::ops::RangeInclusive<u32> = 16..=16_777_216;
/// Longest `shield.ban_secs`: 30 days.
pub const MAX_BAN_SECS: u64 = 30 * 24 * 3600;
/// `IFNAMSIZ - 1`: longest interface name.
const MAX_IFNAME: usize = 15;

/// The `[shield]` section: XDP rate limiting and bans on the SMTP ports.
///
/// ```toml
/// [shield]
/// enabled = true
/// required = false            # true: refuse to start when the shield cannot be loaded
/// interfaces = ["eth0"]       # attached in driver mode, else generic (SKB) mode
/// ports = [25, 465, 587]      # protected TCP ports
/// allow = ["192.0.2.0/24"]    # never limited nor banned
/// syn_rate = 10               # new connections per second per source (IPv6: per /64)
/// syn_burst = 20
/// pressure_syn_rate = 1000    # per-source limits apply only above this many SYNs/s in all
/// max_sources = 65536         # sources tracked at once (LRU)
/// ban_secs = 600              # default ban length for the server's bans
/// pin = false                 # true: stay attached after exit, pinned in /sys/fs/bpf/smtp-edge
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShieldConfig {
    /// Load the shield at all.
    pub enabled: bool,
    /// Refuse to start if it cannot be loaded; otherwise log and go on with bans enforced in userspace.
    pub required: bool,
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// Protected TCP destination ports (at most [`MAX_PORTS`]).
    pub ports: Vec<u16>,
    /// Source prefixes that always pass (at most [`MAX_ALLOW`]), as CIDR strings.
    pub allow: Vec<String>,
    /// SYNs per second per source.
    pub syn_rate: u32,
    /// SYNs a source may send at once.
    pub syn_burst: u32,
    /// SYNs per second to the protected ports, all sources together, above which the
    /// per-source limits apply (and for two seconds after); 0: they always apply. Below it a
    /// SYN charges no budget, so SYNs forged with a victim's address cannot spend the
    /// victim's budget while the listener copes anyway.
    pub pressure_syn_rate: u32,
    /// Capacity of the per-source bucket map.
    pub max_sources: u32,
    /// Default ban length in seconds, for the server's own bans.
    pub ban_secs: u64,
    /// Leave the program attached and the maps pinned after exit.
    pub pin: bool,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        ShieldConfig {
            enabled: false,
            required: false,
            interfaces: Vec::new(),
            ports: vec![25, 465, 587],
            allow: Vec::new(),
            syn_rate: 10,
            syn_burst: 20,
            pressure_syn_rate: 1000,
            max_sources: 65_536,
            ban_secs: 600,
            pin: false,
        }
    }
}

impl ShieldConfig {
    /// Every problem, as `(key, problem)` with keys like `shield.allow[2]`; empty if none.
    ///
    /// Interfaces are looked up on this machine only when `enabled` is true.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut problem = |key: String, text: String| out.push((key, text));

        if self.required && !self.enabled {
            problem(
                "shield.required".into(),
                "is true but shield.enabled is false".into(),
            );
        }
        if self.enabled && self.interfaces.is_empty() {
            problem(
                "shield.interfaces".into(),
                "must name at least one interface when shield.enabled is true".into(),
            );
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            let key = format!("shield.interfaces[{i}]");
            if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ', '\0']) {
                problem(key, format!("{name:?} is not an interface name"));
            } else if self.interfaces[..i].contains(name) {
                problem(key, format!("{name:?} is listed twice"));
            } else if self.enabled && if_index(name).is_none() {
                problem(key, format!("no such interface {name:?}"));
            }
        }

        if self.ports.is_empty() {
            problem("shield.ports".into(), "must list at least one port".into());
        }
        if self.ports.len() > MAX_PORTS {
            problem(
                "shield.ports".into(),
                format!("at most {MAX_PORTS} ports, got {}", self.ports.len()),
            );
        }
        for (i, port) in self.ports.iter().enumerate() {
            if *port == 0 {
                problem(format!("shield.ports[{i}]"), "must be 1..=65535".into());
            } else if self.ports[..i].contains(port) {
                problem(
                    format!("shield.ports[{i}]"),
                    format!("{port} is listed twice"),
                );
            }
        }

        if self.allow.len() > MAX_ALLOW {
            problem(
                "shield.allow".into(),
                format!("at most {MAX_ALLOW} prefixes, got {}", self.allow.len()),
            );
        }
        for (i, text) in self.allow.iter().enumerate() {
            if let Err(e) = cidr::parse(text) {
                problem(format!("shield.allow[{i}]"), e.to_string());
            }
        }

        for (key, value) in [
            ("shield.syn_rate", self.syn_rate),
            ("shield.syn_burst", self.syn_burst),
        ] {
            if value == 0 {
                problem(key.into(), "must be at least 1".into());
            } else if value > MAX_SYN_RATE {
                problem(
                    key.into(),
                    format!("must be at most {MAX_SYN_RATE}, got {value}"),
                );
            }
        }
        if self.pressure_syn_rate > MAX_SYN_RATE {
            problem(
                "shield.pressure_syn_rate".into(),
                format!(
                    "must be at most {MAX_SYN_RATE} (0: limits always apply), got {}",
                    self.pressure_syn_rate
                ),
            );
        }
        if !MAX_SOURCES.contains(&self.max_sources) {
            problem(
                "shield.max_sources".into(),
                format!(
                    "must be {}..={}, got {}",
                    MAX_SOURCES.start(),
                    MAX_SOURCES.end(),
                    self.max_sources
                ),
            );
        }
        if self.ban_secs == 0 || self.ban_secs > MAX_BAN_SECS {
            problem(
                "shield.ban_secs".into(),
                format!(
                    "must be 1..={MAX_BAN_SECS} (30 days), got {}",
                    self.ban_secs
                ),
            );
        }
        out
    }

    /// The allowlist, parsed; `Err` carries the problems as [`ShieldConfig::validate`] does.
    pub fn allow_prefixes(&self) -> Result<Vec<IpNet>, Vec<(String, String)>> {
        let mut prefixes = Vec::with_capacity(self.allow.len());
        let mut problems = Vec::new();
        for (i, text) in self.allow.iter().enumerate() {
            match cidr::parse(text) {
                Ok(p) => prefixes.push(p),
                Err(e) => problems.push((format!("shield.allow[{i}]"), e.to_string())),
            }
        }
        if problems.is_empty() {
            Ok(prefixes)
        } else {
            Err(problems)
        }
    }

    /// The default ban length for the server's bans.
    pub fn ban_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ban_secs)
    }
}

/// `if_nametoindex(3)` in the calling thread's network namespace.
pub(crate) fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

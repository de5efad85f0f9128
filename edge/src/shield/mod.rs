//! The shield: XDP rate limiting and bans on the SMTP ports, fed by the server.
//!
//! ```text
//!  NIC ──► XDP shield_xdp (ebpf/shield.c) ──► kernel TCP ──► listener ──► driver
//!            │ allowlist trie ─► pass             ▲
//!            │ banned source  ─► drop             │ ban(ip, dur) / unban / list / counters
//!            │ TCP unreadable ─► drop             │
//!            │ SYN over rate  ─► drop             │
//!            └ everything else ─► pass       Shield (this module, via aya)
//! ```
//!
//! For TCP to `shield.ports` only (Ethernet with up to two 802.1Q/802.1ad tags, IPv4, IPv6 keyed
//! by /64): an allowlisted source always passes; a banned source is dropped until its ban
//! expires; TCP whose port cannot be read (fragments of TCP, a first fragment too short for the
//! header, an IPv6 header chain past the walk limit) is dropped as malformed; a SYN without ACK
//! takes a token from its source's bucket (`shield.syn_rate` per second, `shield.syn_burst` at
//! once) or is dropped, but only under SYN pressure (all sources together over
//! `shield.pressure_syn_rate`): a SYN's source is unverified, and forged SYNs must not spend a
//! victim's budget. The ban is judged before the TCP header: a banned source's fragments
//! and long chains are dropped as banned. Other traffic is not looked at.
//!
//! The program is C, compiled by `cargo xtask build-ebpf` (clang-19) into the checked-in
//! `ebpf/shield.o`, embedded here, so building smtp-edge needs no clang. `ebpf/shield.h` defines
//! the map layouts once; [`maps`] mirrors them.
//!
//! Without privilege (CAP_BPF + CAP_NET_ADMIN) or BPF support [`Shield::load`] fails with a
//! [`ShieldError`] the server logs before going on without it (unless `shield.required`): the
//! guard's own ban table ([`crate::guard::BanTable`]) gives the same judgement at accept,
//! answered with 421.
//!
//! Clocks: ban expiries in the kernel are `bpf_ktime_get_ns()`, which is CLOCK_MONOTONIC
//! (without suspend time); [`Shield`] converts with `clock_gettime(CLOCK_MONOTONIC)`.

pub mod cli;
mod config;
mod loader;
pub mod maps;
#[cfg(test)]
mod tests;

pub use config::{ShieldConfig, MAX_BAN_SECS, MAX_SOURCES, MAX_SYN_RATE};
pub use loader::{AttachMode, BanSweeper, Shield, Sweep, PIN_DIR};

use std::path::PathBuf;

/// The shield's counters, summed over CPUs, for segments to protected ports since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShieldCounters {
    /// Let through: allowlisted, or neither banned nor over the SYN rate.
    pub passed: u64,
    /// SYNs dropped because their source was over `shield.syn_rate`/`shield.syn_burst`.
    pub dropped_rate: u64,
    /// Segments dropped because their source was banned.
    pub dropped_banned: u64,
    /// Packets dropped because the TCP header they may carry could not be judged: fragments
    /// of TCP (a first one too short for the header, or any later one), an IPv6 header chain
    /// past the walk limit, a truncated header.
    pub dropped_malformed: u64,
}

/// Loading, attaching or using the shield failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShieldError {
    /// The configuration has problems, each as `(key, problem)`.
    #[error("{}", render_problems(.0))]
    Config(Vec<(String, String)>),
    /// `shield.enabled` is false.
    #[error("shield.enabled: is false")]
    Disabled,
    /// The object could not be loaded: no privilege (CAP_BPF, CAP_NET_ADMIN), no BPF in the
    /// kernel, or the kernel refused a map.
    #[error("loading the XDP shield (needs root or CAP_BPF + CAP_NET_ADMIN): {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// The program was refused (the verifier log is in the source error).
    #[error("loading program {PROGRAM}: {0}", PROGRAM = maps::PROGRAM)]
    Program(#[source] Box<aya::programs::ProgramError>),
    /// Neither driver nor generic (SKB) mode could attach to an interface.
    #[error("shield.interfaces: cannot attach to {interface:?}: driver mode: {driver}; generic mode: {source}")]
    Attach {
        /// The interface.
        interface: String,
        /// Why driver mode failed.
        driver: String,
        /// Why generic mode failed.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing from the object or has another layout than [`maps`] expects.
    #[error("map {map}: {source}")]
    MapLayout {
        /// The map.
        map: &'static str,
        /// What aya said.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A map operation failed (for `insert` into `shield_bans`: the map may be full).
    #[error("map {map}: {op}: {source}")]
    Map {
        /// The map.
        map: &'static str,
        /// The operation.
        op: &'static str,
        /// What aya said.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Pinning in, or opening from, bpffs failed.
    #[error("{op} {}: {source}", path.display())]
    Pin {
        /// What was being done.
        op: &'static str,
        /// The path in bpffs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn render_problems(problems: &[(String, String)]) -> String {
    let lines: Vec<String> = problems.iter().map(|(k, p)| format!("{k}: {p}")).collect();
    lines.join("; ")
}

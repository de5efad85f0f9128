//! `#[repr(C)]` mirrors of the map layouts in `ebpf/shield.h`, the single definition.
//!
//! Every struct here has a compile-time size assert against the C layout, and the unit tests
//! also read the key and value sizes of each map out of the embedded object's BTF, so a change
//! on one side only fails the build or the tests, never the kernel at run time.

use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// `SHIELD_MAX_PORTS`: most protected TCP ports (`shield.ports`).
pub const MAX_PORTS: usize = 16;
/// `SHIELD_MAX_BANS`: capacity of `shield_bans`; a ban past it is refused.
pub const MAX_BANS: u32 = 65_536;
/// `SHIELD_MAX_ALLOW`: capacity of `shield_allow` (`shield.allow`).
pub const MAX_ALLOW: usize = 1024;

/// Map names, as the ELF symbols in `ebpf/shield.c` (and the pin file names).
pub const MAP_CFG: &str = "shield_cfg";
/// The allowlist trie.
pub const MAP_ALLOW: &str = "shield_allow";
/// Source → ban expiry.
pub const MAP_BANS: &str = "shield_bans";
/// Source → SYN bucket (LRU, `shield.max_sources` entries).
pub const MAP_RATE: &str = "shield_rate";
/// Per-CPU counters.
pub const MAP_STATS: &str = "shield_stats";
/// The global SYN bucket that says whether the listener is under SYN pressure.
pub const MAP_PRESSURE: &str = "shield_pressure";
/// How long SYN pressure lasts after the global bucket was last found empty: per-source
/// budgets stay on through the short lulls of a pulsed flood.
pub const PRESSURE_HOLD: std::time::Duration = std::time::Duration::from_secs(2);
/// The XDP program's function name.
pub const PROGRAM: &str = "shield_xdp";

/// `struct shield_source`: the key of `shield_bans` and `shield_rate`.
///
/// IPv4 `a.b.c.d` is `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2); IPv6 is keyed by its /64 (the low
/// eight bytes are zero). An IPv4-mapped IPv6 address, as a dual-stack socket reports an IPv4
/// peer, is the same source as the IPv4 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// The address bytes, network order.
    pub addr: [u8; 16],
}

impl Source {
    /// The source that `ip` belongs to.
    pub fn from_ip(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source {
                addr: v4.to_ipv6_mapped().octets(),
            },
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::from_ip(IpAddr::V4(v4)),
                None => {
                    let mut addr = v6.octets();
                    addr[8..].fill(0);
                    Source { addr }
                }
            },
        }
    }

    /// What this key covers: an IPv4 /32 or an IPv6 /64.
    pub fn prefix(&self) -> IpNet {
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpNet::from(IpAddr::V4(v4)),
            None => IpNet::new(IpAddr::V6(v6), 64)
                .map_or_else(|_| IpNet::from(IpAddr::V6(v6)), |net| net.trunc()),
        }
    }
}

/// `struct shield_bucket`: GCRA theoretical arrival time, `bpf_ktime_get_ns()` nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When the next SYN is due; a SYN earlier than `tat_ns - tolerance` is dropped.
    pub tat_ns: u64,
}

/// `struct shield_config`: `shield_cfg[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// 1e9 / syn_rate.
    pub syn_interval_ns: u64,
    /// (syn_burst - 1) * syn_interval_ns.
    pub syn_tolerance_ns: u64,
    /// As configured.
    pub syn_rate: u32,
    /// As configured.
    pub syn_burst: u32,
    /// Valid entries in `ports`.
    pub nports: u32,
    /// Padding, zero.
    pub _pad: u32,
    /// Protected destination ports, host order.
    pub ports: [u16; MAX_PORTS],
    /// 1e9 / pressure_syn_rate; 0: always under pressure.
    pub pressure_interval_ns: u64,
    /// A tenth of a second of pressure_syn_rate: (burst - 1) * interval.
    pub pressure_tolerance_ns: u64,
    /// [`PRESSURE_HOLD`] in nanoseconds.
    pub pressure_hold_ns: u64,
    /// As configured.
    pub pressure_syn_rate: u32,
    /// Padding, zero.
    pub _pad2: u32,
}

impl Config {
    /// The map value for a SYN rate, burst and port list (at most [`MAX_PORTS`] are used),
    /// with per-source limits applied at all times (no pressure threshold).
    pub fn new(syn_rate: u32, syn_burst: u32, ports: &[u16]) -> Config {
        Config::with_pressure(syn_rate, syn_burst, ports, 0)
    }

    /// [`Config::new`], with per-source limits applied only while all SYNs together exceed
    /// `pressure_syn_rate` per second (0: always). The global bucket's burst is a tenth of a
    /// second of that rate, so a flood is seen within about 100 ms of its start.
    pub fn with_pressure(
        syn_rate: u32,
        syn_burst: u32,
        ports: &[u16],
        pressure_syn_rate: u32,
    ) -> Config {
        let rate = u64::from(syn_rate.max(1));
        let interval = 1_000_000_000 / rate;
        let (pressure_interval, pressure_burst) = match u64::from(pressure_syn_rate) {
            0 => (0, 1),
            r => (1_000_000_000 / r, (r / 10).max(1)),
        };
        let mut cfg = Config {
            syn_interval_ns: interval,
            syn_tolerance_ns: interval.saturating_mul(u64::from(syn_burst.max(1) - 1)),
            syn_rate,
            syn_burst,
            pressure_interval_ns: pressure_interval,
            pressure_tolerance_ns: pressure_interval.saturating_mul(pressure_burst - 1),
            pressure_hold_ns: PRESSURE_HOLD.as_nanos() as u64,
            pressure_syn_rate,
            ..Config::default()
        };
        for (slot, port) in cfg.ports.iter_mut().zip(ports) {
            *slot = *port;
            cfg.nports += 1;
        }
        cfg
    }
}

/// `struct shield_pressure`: `shield_pressure[0]`, the global SYN bucket (written by XDP only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    /// When the next SYN (all sources together) is due.
    pub tat_ns: u64,
    /// Under pressure until then, `bpf_ktime_get_ns()` nanoseconds.
    pub until_ns: u64,
}

/// `struct shield_stats`: `shield_stats[0]`, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segments to protected ports let through.
    pub passed: u64,
    /// SYNs dropped over the rate.
    pub dropped_rate: u64,
    /// Segments dropped from banned sources.
    pub dropped_banned: u64,
    /// Packets dropped because their TCP header could not be judged (fragments, overlong
    /// IPv6 header chains, truncation).
    pub dropped_malformed: u64,
}

/// `struct shield_lpm_key` is aya's `Key<[u8; 16]>`: `prefixlen` then the address.
pub type LpmKey = aya::maps::lpm_trie::Key<[u8; 16]>;

/// The trie key for an allowlist prefix: IPv4 `a.b.c.d/n` is `::ffff:a.b.c.d/(96 + n)`.
pub fn lpm_key(prefix: &IpNet) -> LpmKey {
    let len = u32::from(prefix.prefix_len());
    match prefix.network() {
        IpAddr::V4(v4) => LpmKey::new(96 + len, v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => LpmKey::new(len, v6.octets()),
    }
}

/// The prefix an allowlist trie key stands for.
pub fn lpm_prefix(key: &LpmKey) -> Option<IpNet> {
    let v6 = Ipv6Addr::from(key.data());
    let len = u8::try_from(key.prefix_len()).ok()?;
    match v6.to_ipv4_mapped() {
        Some(v4) if len >= 96 => IpNet::new(IpAddr::V4(v4), len - 96).ok(),
        _ => IpNet::new(IpAddr::V6(v6), len).ok(),
    }
}

// Sizes from ebpf/shield.h (x86_64 and every other 64-bit target: no implicit padding).
const _: () = assert!(size_of::<Source>() == 16);
const _: () = assert!(size_of::<Bucket>() == 8);
const _: () = assert!(size_of::<Config>() == 8 + 8 + 4 * 4 + 2 * MAX_PORTS + 3 * 8 + 2 * 4);
const _: () = assert!(size_of::<Config>() == 96);
const _: () = assert!(size_of::<Pressure>() == 16);
const _: () = assert!(size_of::<Stats>() == 32);
const _: () = assert!(size_of::<LpmKey>() == 20);

// SAFETY: each type is #[repr(C)], Copy, made only of integers, and has no padding (the size
// asserts above), so every bit pattern is valid and none leaks uninitialised bytes.
unsafe impl aya::Pod for Source {}
// SAFETY: as above.
unsafe impl aya::Pod for Bucket {}
// SAFETY: as above; `_pad` is an explicit field.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for Stats {}
// SAFETY: as above.
unsafe impl aya::Pod for Pressure {}

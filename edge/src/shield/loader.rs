//! [`Shield`]: loads the embedded `ebpf/shield.o` with aya, attaches it, and reads and writes its
//! maps.

use std::net::IpAddr;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aya::maps::{
    Array, HashMap as BpfHashMap, IterableMap as _, LpmTrie, Map, MapData, PerCpuArray,
};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use super::config::ShieldConfig;
use super::maps::{
    self, lpm_key, Config, Source, Stats, MAP_ALLOW, MAP_BANS, MAP_CFG, MAP_PRESSURE, MAP_RATE,
    MAP_STATS,
};
use super::{ShieldCounters, ShieldError};
use ipnet::IpNet;

/// Where `shield.pin = true` leaves the maps and links, and where [`Shield::open_pinned`] looks.
pub const PIN_DIR: &str = "/sys/fs/bpf/smtp-edge";

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The compiled program, aligned for aya's ELF parser (`include_bytes!` alone is 1-aligned).
#[repr(C, align(8))]
struct Aligned<B: ?Sized> {
    bytes: B,
}

static OBJECT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!("../../../ebpf/shield.o"),
};

/// The embedded `ebpf/shield.o`, 8-byte aligned.
pub(crate) fn object() -> &'static [u8] {
    &OBJECT.bytes
}

/// How the program sits on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, in the driver.
    Driver,
    /// Generic XDP (SKB mode): the driver refused native mode.
    Generic,
    /// Replaced the program of a link left pinned by an earlier run (its mode is kept).
    ReplacedPinned,
}

/// The loaded and attached XDP shield, or its pinned maps ([`Shield::open_pinned`]).
///
/// Dropping it detaches the program (unless `shield.pin`, which leaves it attached and its maps
/// pinned under [`PIN_DIR`]). Every method takes `&self`; map access is serialised by a mutex,
/// and nothing here is on the per-connection path.
pub struct Shield {
    maps: Mutex<Maps>,
    attached: Mutex<Option<Attached>>,
    attachments: Vec<(String, AttachMode)>,
}

impl std::fmt::Debug for Shield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shield")
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

struct Maps {
    cfg: Array<MapData, Config>,
    allow: LpmTrie<MapData, [u8; 16], u8>,
    bans: BpfHashMap<MapData, Source, u64>,
    stats: PerCpuArray<MapData, Stats>,
}

struct Attached {
    /// Owns the program and (unless pinned) its links: dropping it detaches them.
    bpf: Ebpf,
}

impl Shield {
    /// Loads the shield per `cfg` and attaches it to every `cfg.interfaces` (driver mode, else
    /// generic mode; each logged). Pins under [`PIN_DIR`] if `cfg.pin`.
    pub fn load(cfg: &ShieldConfig) -> Result<Shield, ShieldError> {
        Shield::load_at(cfg, Path::new(PIN_DIR))
    }

    /// [`Shield::load`] with another pin directory (inside a bpffs mount).
    pub fn load_at(cfg: &ShieldConfig, pin_dir: &Path) -> Result<Shield, ShieldError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(ShieldError::Config(problems));
        }
        if !cfg.enabled {
            return Err(ShieldError::Disabled);
        }
        let allow = cfg.allow_prefixes().map_err(ShieldError::Config)?;

        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_RATE, cfg.max_sources);
        if cfg.pin {
            ensure_bpffs(pin_dir)?;
            // A map already pinned there (an earlier run) is reused as is: bans survive.
            for name in [
                MAP_CFG,
                MAP_ALLOW,
                MAP_BANS,
                MAP_RATE,
                MAP_STATS,
                MAP_PRESSURE,
            ] {
                loader.map_pin_path(name, pin_dir.join(name));
            }
        }
        let mut bpf = loader
            .load(object())
            .map_err(|e| ShieldError::Load(Box::new(e)))?;
        let maps = Maps::take(&mut bpf)?;
        let maps = Mutex::new(maps);
        configure(&mut lock(&maps), cfg, &allow)?;

        let program: &mut Xdp = bpf
            .program_mut(maps::PROGRAM)
            .ok_or_else(|| {
                ShieldError::Program(Box::new(aya::programs::ProgramError::UnexpectedProgramType))
            })?
            .try_into()
            .map_err(|e| ShieldError::Program(Box::new(e)))?;
        program
            .load()
            .map_err(|e| ShieldError::Program(Box::new(e)))?;

        let mut attachments = Vec::new();
        let mut links = Vec::new();
        for iface in &cfg.interfaces {
            let link_pin = link_pin_path(pin_dir, iface);
            let (id, mode) = attach(program, iface, cfg.pin.then_some(link_pin.as_path()))?;
            links.push((iface.clone(), id, link_pin));
            attachments.push((iface.clone(), mode));
        }
        if cfg.pin {
            for (iface, id, path) in links {
                let link = program
                    .take_link(id)
                    .map_err(|e| ShieldError::Program(Box::new(e)))?;
                let fd_link =
                    FdLink::try_from(link).map_err(|e| pin_error("pin link", &path, e))?;
                fd_link
                    .pin(&path)
                    .map_err(|e| pin_error("pin link", &path, e))?;
                tracing::info!(interface = %iface, path = %path.display(), "shield link pinned");
            }
        }
        Ok(Shield {
            maps,
            attached: Mutex::new(Some(Attached { bpf })),
            attachments,
        })
    }

    /// The maps of a shield left pinned by a running (or exited, `shield.pin`) server, for a
    /// CLI: ban, unban, list, counters. Attaches nothing; dropping it changes nothing.
    pub fn open_pinned() -> Result<Shield, ShieldError> {
        Shield::open_pinned_at(Path::new(PIN_DIR))
    }

    /// [`Shield::open_pinned`] from another pin directory.
    pub fn open_pinned_at(pin_dir: &Path) -> Result<Shield, ShieldError> {
        let open = |name: &'static str| -> Result<Map, ShieldError> {
            let path = pin_dir.join(name);
            let data =
                MapData::from_pin(&path).map_err(|e| pin_error("open pinned map", &path, e))?;
            Map::from_map_data(data).map_err(|e| layout_error(name, e))
        };
        let maps = Maps {
            cfg: Array::try_from(open(MAP_CFG)?).map_err(|e| layout_error(MAP_CFG, e))?,
            allow: LpmTrie::try_from(open(MAP_ALLOW)?).map_err(|e| layout_error(MAP_ALLOW, e))?,
            bans: BpfHashMap::try_from(open(MAP_BANS)?).map_err(|e| layout_error(MAP_BANS, e))?,
            stats: PerCpuArray::try_from(open(MAP_STATS)?)
                .map_err(|e| layout_error(MAP_STATS, e))?,
        };
        Ok(Shield {
            maps: Mutex::new(maps),
            attached: Mutex::new(None),
            attachments: Vec::new(),
        })
    }

    /// Removes everything pinned under `pin_dir` by `shield.pin`: the links (which detaches the
    /// program once no process holds it) and the maps (bans are forgotten). A missing directory
    /// is not an error.
    pub fn remove_pinned_at(pin_dir: &Path) -> Result<(), ShieldError> {
        let entries = match std::fs::read_dir(pin_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(pin_error("read", pin_dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("shield_") || name.starts_with("link-") {
                std::fs::remove_file(entry.path())
                    .map_err(|e| pin_error("remove", &entry.path(), e))?;
            }
        }
        std::fs::remove_dir(pin_dir).map_err(|e| pin_error("remove", pin_dir, e))
    }

    /// Where the program was attached, and how.
    pub fn attachments(&self) -> &[(String, AttachMode)] {
        &self.attachments
    }

    /// Bans `ip`'s source (IPv6: its /64) for `dur`: every segment to a protected port is
    /// dropped until then. A second ban replaces the first.
    pub fn ban(&self, ip: IpAddr, dur: Duration) -> Result<(), ShieldError> {
        let until =
            monotonic_ns().saturating_add(u64::try_from(dur.as_nanos()).unwrap_or(u64::MAX));
        lock(&self.maps)
            .bans
            .insert(Source::from_ip(ip), until, 0)
            .map_err(|e| map_error(MAP_BANS, "insert", e))
    }

    /// Lifts the ban on `ip`'s source; whether there was one.
    pub fn unban(&self, ip: IpAddr) -> Result<bool, ShieldError> {
        let key = Source::from_ip(ip);
        let mut maps = lock(&self.maps);
        if maps.bans.get(&key, 0).is_err() {
            return Ok(false);
        }
        maps.bans
            .remove(&key)
            .map_err(|e| map_error(MAP_BANS, "remove", e))?;
        Ok(true)
    }

    /// Whether `ip`'s source is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> Result<bool, ShieldError> {
        let key = Source::from_ip(ip);
        let maps = lock(&self.maps);
        match maps.bans.get(&key, 0) {
            Ok(until) => Ok(until > monotonic_ns()),
            Err(_) => Ok(false),
        }
    }

    /// A second handle on the ban map, for walking it on another thread without this shield's
    /// mutex: a walk of a full map takes tens of milliseconds, and bans written meanwhile must
    /// not wait for it.
    pub fn sweeper(&self) -> Result<BanSweeper, ShieldError> {
        let fd = {
            let maps = lock(&self.maps);
            maps.bans
                .map()
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| pin_error("duplicate the ban map", Path::new(MAP_BANS), e))?
        };
        let data = MapData::from_fd(fd).map_err(|e| layout_error(MAP_BANS, e))?;
        let map = Map::from_map_data(data).map_err(|e| layout_error(MAP_BANS, e))?;
        Ok(BanSweeper {
            bans: BpfHashMap::try_from(map).map_err(|e| layout_error(MAP_BANS, e))?,
        })
    }

    /// Bans in force, with what remains of each, soonest to end first.
    pub fn list(&self) -> Result<Vec<(IpNet, Duration)>, ShieldError> {
        let maps = lock(&self.maps);
        let now = monotonic_ns();
        let mut out = Vec::new();
        for entry in maps.bans.iter() {
            let (src, until) = entry.map_err(|e| map_error(MAP_BANS, "iterate", e))?;
            if until > now {
                out.push((src.prefix(), Duration::from_nanos(until - now)));
            }
        }
        out.sort_by_key(|(p, d)| (*d, *p));
        Ok(out)
    }

    /// What the program runs with: `shield_cfg[0]` (SYN rate, burst, protected ports).
    pub fn settings(&self) -> Result<Config, ShieldError> {
        lock(&self.maps)
            .cfg
            .get(&0, 0)
            .map_err(|e| map_error(MAP_CFG, "lookup", e))
    }

    /// The interfaces with a link pinned under `pin_dir` by `shield.pin` (`link-<interface>`),
    /// sorted: where a pinned shield is attached.
    pub fn pinned_links_at(pin_dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(pin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("link-"))
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        out
    }

    /// How many bans are in force.
    pub fn bans_active(&self) -> Result<usize, ShieldError> {
        Ok(self.list()?.len())
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<ShieldCounters, ShieldError> {
        let maps = lock(&self.maps);
        let per_cpu = maps
            .stats
            .get(&0, 0)
            .map_err(|e| map_error(MAP_STATS, "lookup", e))?;
        Ok(per_cpu
            .iter()
            .fold(ShieldCounters::default(), |sum, s| ShieldCounters {
                passed: sum.passed.wrapping_add(s.passed),
                dropped_rate: sum.dropped_rate.wrapping_add(s.dropped_rate),
                dropped_banned: sum.dropped_banned.wrapping_add(s.dropped_banned),
                dropped_malformed: sum.dropped_malformed.wrapping_add(s.dropped_malformed),
            }))
    }

    /// Runs the loaded program once on `frame` (an Ethernet frame) with `BPF_PROG_TEST_RUN`
    /// and returns its verdict (`XDP_DROP` = 1, `XDP_PASS` = 2), counting it as real traffic.
    /// For tests and diagnostics: judges VLAN, QinQ and IPv6 extension-header frames that a
    /// test machine cannot easily put on a wire. `None` for a shield from
    /// [`Shield::open_pinned`], which has no program.
    pub fn test_run(&self, frame: &[u8]) -> Option<Result<u32, ShieldError>> {
        let attached = lock(&self.attached);
        let bpf = &attached.as_ref()?.bpf;
        let program: &Xdp = bpf.program(maps::PROGRAM)?.try_into().ok()?;
        let fd = match program.fd() {
            Ok(fd) => fd.as_fd().as_raw_fd(),
            Err(e) => return Some(Err(ShieldError::Program(Box::new(e)))),
        };
        Some(
            prog_test_run(fd, frame)
                .map_err(|e| pin_error("BPF_PROG_TEST_RUN", Path::new(maps::PROGRAM), e)),
        )
    }

    /// Detaches the program now (unless pinned) and logs; dropping does the same silently.
    pub fn shutdown(self) {
        if let Some(attached) = lock(&self.attached).take() {
            drop(attached.bpf);
            for (iface, _) in &self.attachments {
                tracing::info!(interface = %iface, "shield detached (or left pinned)");
            }
        }
    }
}

/// Walks the kernel's ban map off the rings ([`Shield::sweeper`]): deletes what has expired and
/// reports what is in force.
pub struct BanSweeper {
    bans: BpfHashMap<MapData, Source, u64>,
}

impl std::fmt::Debug for BanSweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanSweeper").finish_non_exhaustive()
    }
}

impl BanSweeper {
    /// One pass over the map: every entry in force with what remains of it; expired entries
    /// are deleted (the program drops an expired entry only when its source sends again, so
    /// sources that never return would otherwise fill the map, and new bans would fail).
    /// `pause` is called after every `step` entries (visited, then deleted), so that a pass
    /// over a full map is spread out rather than one burst of syscalls.
    ///
    /// The kernel gives no snapshot: an entry added or deleted during the pass may or may not
    /// be seen, and a deletion under the cursor restarts the walk, so a pass visits at most
    /// twice the map's capacity.
    pub fn sweep(&mut self, step: usize, mut pause: impl FnMut()) -> Result<Sweep, ShieldError> {
        let step = step.max(1);
        let now = monotonic_ns();
        let mut live = Vec::new();
        let mut expired = Vec::new();
        let bound = 2 * maps::MAX_BANS as usize;
        for (visited, entry) in self.bans.iter().take(bound).enumerate() {
            let (src, until) = entry.map_err(|e| map_error(MAP_BANS, "iterate", e))?;
            if until > now {
                live.push((src, Duration::from_nanos(until - now)));
            } else {
                expired.push(src);
            }
            if (visited + 1) % step == 0 {
                pause();
            }
        }
        expired.sort_unstable();
        expired.dedup();
        let mut removed = 0;
        for (i, src) in expired.iter().enumerate() {
            // Gone already (the program saw the source again): nothing to do.
            if self.bans.remove(src).is_ok() {
                removed += 1;
            }
            if (i + 1) % step == 0 {
                pause();
            }
        }
        live.sort_unstable();
        live.dedup_by_key(|(src, _)| *src);
        Ok(Sweep { live, removed })
    }
}

/// What one [`BanSweeper::sweep`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Bans in force, with what remains of each, by source.
    pub live: Vec<(Source, Duration)>,
    /// Expired entries deleted.
    pub removed: usize,
}

impl Maps {
    fn take(bpf: &mut Ebpf) -> Result<Maps, ShieldError> {
        let mut take = |name: &'static str| {
            bpf.take_map(name).ok_or_else(|| {
                layout_error(name, aya::maps::MapError::InvalidName { name: name.into() })
            })
        };
        Ok(Maps {
            cfg: Array::try_from(take(MAP_CFG)?).map_err(|e| layout_error(MAP_CFG, e))?,
            allow: LpmTrie::try_from(take(MAP_ALLOW)?).map_err(|e| layout_error(MAP_ALLOW, e))?,
            bans: BpfHashMap::try_from(take(MAP_BANS)?).map_err(|e| layout_error(MAP_BANS, e))?,
            stats: PerCpuArray::try_from(take(MAP_STATS)?)
                .map_err(|e| layout_error(MAP_STATS, e))?,
        })
    }
}

/// Writes the config entry and makes the allowlist trie hold exactly `allow`.
fn configure(maps: &mut Maps, cfg: &ShieldConfig, allow: &[IpNet]) -> Result<(), ShieldError> {
    maps.cfg
        .set(
            0,
            Config::with_pressure(
                cfg.syn_rate,
                cfg.syn_burst,
                &cfg.ports,
                cfg.pressure_syn_rate,
            ),
            0,
        )
        .map_err(|e| map_error(MAP_CFG, "update", e))?;
    let keys: Vec<_> = allow.iter().map(lpm_key).collect();
    // Stale entries (a pinned trie from an earlier configuration) go first.
    let present: Vec<_> = maps.allow.keys().filter_map(Result::ok).collect();
    for old in present {
        let keep = keys
            .iter()
            .any(|k| k.prefix_len() == old.prefix_len() && k.data() == old.data());
        if !keep {
            maps.allow
                .remove(&old)
                .map_err(|e| map_error(MAP_ALLOW, "remove", e))?;
        }
    }
    for key in &keys {
        maps.allow
            .insert(key, 1, 0)
            .map_err(|e| map_error(MAP_ALLOW, "insert", e))?;
    }
    Ok(())
}

/// Attaches in driver mode, else generic mode; or replaces the program of a pinned link.
fn attach(
    program: &mut Xdp,
    iface: &str,
    pinned: Option<&Path>,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode), ShieldError> {
    if let Some(path) = pinned.filter(|p| p.exists()) {
        let link =
            PinnedLink::from_pin(path).map_err(|e| pin_error("open pinned link", path, e))?;
        let fd_link = link.unpin().map_err(|e| pin_error("unpin link", path, e))?;
        let xdp_link =
            XdpLink::try_from(fd_link).map_err(|e| pin_error("open pinned link", path, e))?;
        let id = program
            .attach_to_link(xdp_link)
            .map_err(|e| ShieldError::Program(Box::new(e)))?;
        tracing::info!(interface = %iface, "shield replaced the program on its pinned link");
        return Ok((id, AttachMode::ReplacedPinned));
    }
    match program.attach(iface, XdpMode::Driver) {
        Ok(id) => {
            tracing::info!(interface = %iface, mode = "driver", "shield attached");
            Ok((id, AttachMode::Driver))
        }
        Err(driver) => match program.attach(iface, XdpMode::Skb) {
            Ok(id) => {
                tracing::warn!(
                    interface = %iface,
                    mode = "generic",
                    driver_error = %driver,
                    "shield attached in generic (SKB) mode: driver mode refused"
                );
                Ok((id, AttachMode::Generic))
            }
            Err(e) => Err(ShieldError::Attach {
                interface: iface.to_owned(),
                driver: driver.to_string(),
                source: Box::new(e),
            }),
        },
    }
}

fn link_pin_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link-{iface}"))
}

/// Mounts bpffs on `pin_dir`'s parent if it is not one, and creates `pin_dir`.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), ShieldError> {
    let parent = pin_dir.parent().unwrap_or(Path::new("/sys/fs/bpf"));
    if !is_bpffs(parent) {
        std::fs::create_dir_all(parent).map_err(|e| pin_error("create", parent, e))?;
        let target = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes())
            .map_err(|e| pin_error("mount bpffs on", parent, e))?;
        // SAFETY: every pointer is a valid NUL-terminated string for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(pin_error(
                "mount bpffs on",
                parent,
                std::io::Error::last_os_error(),
            ));
        }
        tracing::info!(path = %parent.display(), "mounted bpffs");
    }
    std::fs::create_dir_all(pin_dir).map_err(|e| pin_error("create", pin_dir, e))
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zeroed is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// `BPF_PROG_TEST_RUN` (`<linux/bpf.h>`, `union bpf_attr` member `test`): runs `prog_fd` once.
fn prog_test_run(prog_fd: i32, frame: &[u8]) -> std::io::Result<u32> {
    /// The `test` member of `union bpf_attr`, padded as the kernel accepts (unused tail zero).
    #[repr(C, align(8))]
    #[derive(Default)]
    struct TestRunAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: u32::try_from(frame.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.test` prefix of the size passed; `data_in` points to
    // `frame`, which outlives the call and which the kernel only reads; no output buffer is
    // given (data_out = 0), so the kernel writes only into `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.retval)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the maps as consistent as the kernel keeps them.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn map_error(map: &'static str, op: &'static str, e: aya::maps::MapError) -> ShieldError {
    ShieldError::Map {
        map,
        op,
        source: Box::new(e),
    }
}

fn layout_error(map: &'static str, e: aya::maps::MapError) -> ShieldError {
    ShieldError::MapLayout {
        map,
        source: Box::new(e),
    }
}

fn pin_error(
    op: &'static str,
    path: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> ShieldError {
    ShieldError::Pin {
        op,
        path: path.to_owned(),
        source: Box::new(e),
    }
}

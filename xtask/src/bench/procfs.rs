//! What `/proc` says about a server: CPU seconds (utime + stime) and memory.

use std::path::Path;

/// Clock ticks per second for `/proc/PID/stat` (USER_HZ; 100 on every Linux we run on).
const TICKS: f64 = 100.0;

/// Fields of `/proc/PID/stat` after the command name: (state, ppid, utime, stime, cutime, cstime).
fn stat(pid: u32) -> Option<(char, u32, u64, u64, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((
        f.first()?.chars().next()?,
        n(1)? as u32,
        n(11)?,
        n(12)?,
        n(13)?,
        n(14)?,
    ))
}

/// CPU seconds (user + system, all threads) of one process.
pub fn cpu(pid: u32) -> f64 {
    stat(pid).map_or(0.0, |(_, _, u, s, _, _)| (u + s) as f64 / TICKS)
}

/// CPU seconds of a process tree: the root, its live descendants, and every reaped child (the
/// root's cutime + cstime). A Postfix instance is one such tree under its `master`.
pub fn tree_cpu(root: u32) -> f64 {
    let Some((_, _, u, s, cu, cs)) = stat(root) else {
        return 0.0;
    };
    let mut total = (u + s + cu + cs) as f64 / TICKS;
    for pid in descendants(root) {
        if let Some((_, _, u, s, cu, cs)) = stat(pid) {
            total += (u + s + cu + cs) as f64 / TICKS;
        }
    }
    total
}

/// Every descendant of `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((_, ppid, ..)) = stat(pid) {
                    parent.push((pid, ppid));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent {
            if pp == p && !out.contains(&c) && out.len() < 100_000 {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size of one process in KiB (`Pss` of `/proc/PID/smaps_rollup`): shared pages
/// are split between the processes sharing them, so a tree's sum is not inflated.
pub fn pss_kib(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Memory of a process tree in KiB: the sum of its processes' PSS.
pub fn tree_pss_kib(root: u32) -> u64 {
    pss_kib(root) + descendants(root).into_iter().map(pss_kib).sum::<u64>()
}

/// Whether `pid` has exited but not been reaped (its times are final).
pub fn is_zombie(pid: u32) -> bool {
    stat(pid).is_none_or(|(state, ..)| state == 'Z' || state == 'X')
}

/// Messages delivered in the Maildir tree under `dir`: files in `new/` and `cur/` folders.
/// Files in `tmp/` are deliveries in progress, about to be renamed into `new/`; a walk that
/// counted them could see one file twice, before and after its rename.
pub fn count_maildir(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let delivered = d.ends_with("new") || d.ends_with("cur");
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) if delivered => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Files (not directories) under `dir`, recursively; bounded.
pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
            if n > 10_000_000 {
                return n;
            }
        }
    }
    n
}

/// Free space (for an unprivileged writer) on the file system holding `path`, in MiB; 0 when
/// it cannot be read. A run whose disk filled up refuses mail with 451 and defers deliveries,
/// which is the server keeping its promise, not a figure.
pub fn free_mib(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: `c` is a NUL-terminated path and `st` a statvfs the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maildir_counts_new_and_cur_not_tmp() {
        let root = std::env::temp_dir().join(format!("xtask-maildir-{}", std::process::id()));
        for (dir, files) in [
            ("example.test/user/new", 3),
            ("example.test/user/cur", 1),
            ("example.test/user/tmp", 2),
            ("example.test/user/.Junk/new", 1),
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            for i in 0..files {
                std::fs::write(root.join(dir).join(format!("m{i}")), "x").unwrap();
            }
        }
        assert_eq!(count_maildir(&root), 5);
        assert_eq!(count_files(&root), 7);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

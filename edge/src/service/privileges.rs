//! Running as an unprivileged user: `user` and `group` are looked up when the configuration is
//! loaded, and [`drop_to`] switches the whole process to them once everything that needs root
//! is open (listeners below 1024, the shield attached, the spool locked, TLS keys read).
//!
//! The switch is `initgroups`, `setgid`, `setuid` through glibc, which applies each call to
//! every thread of the process (POSIX requires credentials to be per process; glibc carries a
//! call to each thread), so threads started before the switch (the metrics endpoint, the
//! guard's pruner) end up with the same ids as those started after it. Nothing is kept: after
//! `setuid` from root to another user the kernel clears every capability (capabilities(7),
//! "Effect of user ID changes on capabilities"). The shield needs none of them once attached:
//! since Linux 5.19, map lookups, updates, deletes and walks on a map descriptor that is
//! already open are allowed without CAP_BPF even with `kernel.unprivileged_bpf_disabled` set
//! (only creating maps and loading programs are not), and the XDP program is attached
//! through a BPF link, released by closing its descriptor when the server exits.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who the server runs as after start: `user` and `group`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name, as configured.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group's name: `group`, or the user's primary group.
    pub group: String,
    /// Its gid.
    pub gid: u32,
}

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Not root, and not already the configured user.
    #[error("user: cannot switch to {user} (uid {uid}): running as uid {current}, not root")]
    NotRoot {
        /// The configured user.
        user: String,
        /// Its uid.
        uid: u32,
        /// Our uid.
        current: u32,
    },
    /// A system call failed.
    #[error("user: cannot switch to {user}: {call}: {source}")]
    Call {
        /// The configured user.
        user: String,
        /// Which call.
        call: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A file the server uses could not be given to the user.
    #[error("user: cannot give {path} to {user}: {source}")]
    Chown {
        /// The configured user.
        user: String,
        /// The path.
        path: String,
        /// Why.
        source: io::Error,
    },
}

impl RunAs {
    /// Looks up `user` (and `group`, by default the user's primary group) in the system
    /// databases (NSS), or says what is missing.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, (&'static str, String)> {
        let (uid, primary) =
            lookup_user(user).ok_or(("user", format!("no such user: {user:?}")))?;
        let (group_name, gid) = match group {
            Some(name) => (
                name.to_owned(),
                lookup_group(name).ok_or(("group", format!("no such group: {name:?}")))?,
            ),
            None => (
                group_name(primary).unwrap_or_else(|| primary.to_string()),
                primary,
            ),
        };
        Ok(RunAs {
            user: user.to_owned(),
            uid,
            group: group_name,
            gid,
        })
    }

    /// Gives `path` to this user and group if it is not theirs yet; with `recursive`, every
    /// entry under it too (symbolic links themselves, never what they point to).
    pub fn chown(&self, path: &Path, recursive: bool) -> Result<(), PrivilegeError> {
        self.chown_one(path)?;
        if recursive && path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| self.chown_error(path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| self.chown_error(path, e))?;
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                self.chown(&entry.path(), is_dir)?;
            }
        }
        Ok(())
    }

    fn chown_one(&self, path: &Path) -> Result<(), PrivilegeError> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| self.chown_error(path, e))?;
        if (meta.uid(), meta.gid()) == (self.uid, self.gid) {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| self.chown_error(path, e))
    }

    fn chown_error(&self, path: &Path, source: io::Error) -> PrivilegeError {
        PrivilegeError::Chown {
            user: self.user.clone(),
            path: path.display().to_string(),
            source,
        }
    }
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Switches every thread of the process to `run_as`: its supplementary groups (those of the
/// user in the group database, plus `gid`), then the group, then the user, real, effective and
/// saved alike, so that root cannot be regained. Already running as that user: nothing to do.
pub fn drop_to(run_as: &RunAs) -> Result<(), PrivilegeError> {
    // SAFETY: these getters cannot fail and touch no memory.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if uid == run_as.uid && euid == run_as.uid {
        return Ok(());
    }
    if euid != 0 {
        return Err(PrivilegeError::NotRoot {
            user: run_as.user.clone(),
            uid: run_as.uid,
            current: euid,
        });
    }
    let call = |call: &'static str, result: libc::c_int| {
        if result == 0 {
            Ok(())
        } else {
            Err(PrivilegeError::Call {
                user: run_as.user.clone(),
                call,
                source: io::Error::last_os_error(),
            })
        }
    };
    let name = CString::new(run_as.user.as_str()).map_err(|_| PrivilegeError::Call {
        user: run_as.user.clone(),
        call: "initgroups",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // Groups first: once the uid is not 0, they can no longer be changed.
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    call("initgroups", unsafe {
        libc::initgroups(name.as_ptr(), run_as.gid)
    })?;
    // SAFETY: plain system calls on integers; glibc applies each to every thread.
    call("setgid", unsafe { libc::setgid(run_as.gid) })?;
    // SAFETY: as above.
    call("setuid", unsafe { libc::setuid(run_as.uid) })?;
    // setuid from root sets all three uids; check that root is really gone.
    // SAFETY: as above; expected to fail.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(PrivilegeError::Call {
            user: run_as.user.clone(),
            call: "setuid (root could be regained)",
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
    }
    Ok(())
}

/// Raises RLIMIT_MEMLOCK (soft and, as root, hard) to at least `bytes`; a limit already that
/// high is left alone. Failure only costs registered buffers (a worker then reads into heap
/// buffers, and says so), so it is logged, not fatal.
pub fn raise_memlock(bytes: u64) {
    // SAFETY: rlimit is plain data that getrlimit fills in.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is valid and writable.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return;
    }
    let infinite = libc::RLIM_INFINITY;
    if lim.rlim_cur == infinite || lim.rlim_cur >= bytes {
        return;
    }
    let wanted = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: if lim.rlim_max == infinite {
            infinite
        } else {
            lim.rlim_max.max(bytes)
        },
    };
    // SAFETY: `wanted` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) } != 0 {
        tracing::warn!(
            bytes,
            error = %io::Error::last_os_error(),
            "cannot raise RLIMIT_MEMLOCK for registered buffers"
        );
    }
}

/// Buffer for the `get*_r` lookups; entries are a few hundred bytes, large group lists more.
const LOOKUP_BUFFER: usize = 64 * 1024;

/// `user`'s uid and primary gid.
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let name = CString::new(user).ok()?;
    let mut buf = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: passwd is plain data, filled in by getpwnam_r.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` is as long as we say.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some((entry.pw_uid, entry.pw_gid))
}

/// `group`'s gid.
fn lookup_group(group: &str) -> Option<u32> {
    let name = CString::new(group).ok()?;
    let mut buf = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: group is plain data, filled in by getgrnam_r.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` is as long as we say.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(entry.gr_gid)
}

/// The name of group `gid`, if it has one.
fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; LOOKUP_BUFFER];
    // SAFETY: group is plain data, filled in by getgrgid_r.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` is as long as we say.
    let rc = unsafe { libc::getgrgid_r(gid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { CStr::from_ptr(entry.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_its_group_resolve_and_unknown_names_are_named() {
        let root = RunAs::resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid, root.group.as_str()), (0, 0, "root"));
        assert_eq!(RunAs::resolve("root", Some("root")).unwrap(), root);
        assert_eq!(
            RunAs::resolve("no-such-user-here", None).unwrap_err().0,
            "user"
        );
        assert_eq!(
            RunAs::resolve("root", Some("no-such-group-here"))
                .unwrap_err()
                .0,
            "group"
        );
    }
}

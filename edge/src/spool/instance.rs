//! What one running server owns in its spool: an exclusive lock on the directory, and the
//! generation that keeps queue ids unique across runs.
//!
//! Two servers on one spool would each run recovery, and recovery empties `tmp/`: the second
//! would delete the messages the first is receiving (their clients get 451), and the two would
//! then deliver from one `queue/`. So [`SpoolLock::acquire`] takes `flock(LOCK_EX | LOCK_NB)` on
//! the spool directory itself before anything else is done with it; the kernel drops the lock
//! when the process ends, however it ends, so a crash never leaves a stale lock behind.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{SpoolError, DIR_MODE, FILE_MODE};

/// The file holding the last generation, in the spool directory.
pub const GENERATION_FILE: &str = "generation";

/// Why the spool could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: a second server on the same spool.
    #[error("{} is in use by another running smtp-edge (one server per spool)", .0.display())]
    InUse(PathBuf),
    /// The directory could not be created, opened or locked.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// The exclusive claim of one server on its spool directory, held until dropped (or the
/// process ends).
#[derive(Debug)]
pub struct SpoolLock {
    // Never read: the open descriptor is the lock.
    _dir: File,
}

impl SpoolLock {
    /// Creates `dir` if needed (mode 0700) and locks it, without waiting: if another process
    /// holds the lock, [`LockError::InUse`].
    pub fn acquire(dir: &Path) -> Result<SpoolLock, LockError> {
        create_private_dir(dir)?;
        let file = File::open(dir).map_err(|e| SpoolError::new("open dir", dir, e))?;
        // SAFETY: `file` owns an open descriptor for the whole call; flock only reads it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LockError::InUse(dir.to_owned())
            } else {
                SpoolError::new("lock", dir, e).into()
            });
        }
        Ok(SpoolLock { _dir: file })
    }
}

/// Creates `dir` (and missing parents) if needed, then sets its mode to exactly 0700 whatever
/// the umask: the spool holds other people's mail.
pub(super) fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| SpoolError::new("create dir", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| SpoolError::new("chmod", dir, e))
}

/// Starts a new generation (blocking; at startup, under the [`SpoolLock`]): reads the last one
/// from `dir/generation`, picks `max(now_micros, last + 1)`, and makes it durable (written to a
/// temporary file, synced, renamed, directory synced) before returning it.
///
/// Queue ids carry the generation in their top 64 bits, so ids stay unique across restarts even
/// when the clock steps backwards (an NTP correction, a VM restored from a snapshot); while the
/// clock is sane the generation is simply the start time in µs, and ids sort by it.
pub fn next_generation(dir: &Path, now_micros: u64) -> Result<u64, SpoolError> {
    let path = dir.join(GENERATION_FILE);
    let last = match File::open(&path) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(|e| SpoolError::new("read", &path, e))?;
            let bad = || {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a generation number: {:?}", text.trim()),
                );
                SpoolError::new("read", &path, e)
            };
            Some(text.trim().parse::<u64>().map_err(|_| bad())?)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(SpoolError::new("open", &path, e)),
    };
    let generation = match last {
        Some(last) => now_micros.max(last.saturating_add(1)),
        None => now_micros,
    };
    let tmp = dir.join(format!("{GENERATION_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        writeln!(f, "{generation}")?;
        f.sync_all()
    };
    write().map_err(|e| SpoolError::new("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| SpoolError::new("rename", &tmp, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::new("fsync dir", dir, e))?;
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_second_lock_on_the_same_spool_is_refused_until_the_first_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        let first = SpoolLock::acquire(&dir).unwrap();
        let err = SpoolLock::acquire(&dir).unwrap_err();
        assert!(matches!(&err, LockError::InUse(p) if p == &dir), "{err:?}");
        assert!(err.to_string().contains("in use by another"), "{err}");
        drop(first);
        SpoolLock::acquire(&dir).unwrap();
    }

    #[test]
    fn the_spool_directory_is_private_whatever_its_mode_was() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spool");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let _lock = SpoolLock::acquire(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn generations_increase_even_when_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_800_000_000_000_000;
        assert_eq!(next_generation(dir.path(), t).unwrap(), t);
        // The clock stepped back an hour: the generation still moves forward.
        let back = t - 3_600_000_000;
        assert_eq!(next_generation(dir.path(), back).unwrap(), t + 1);
        assert_eq!(next_generation(dir.path(), back).unwrap(), t + 2);
        // A sane clock ahead of the record wins again.
        assert_eq!(next_generation(dir.path(), t + 50).unwrap(), t + 50);
        let meta = fs::metadata(dir.path().join(GENERATION_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    #[test]
    fn a_corrupt_generation_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(GENERATION_FILE), "garbage\n").unwrap();
        let err = next_generation(dir.path(), 5).unwrap_err();
        assert_eq!(err.op, "read");
        assert!(err.to_string().contains("garbage"), "{err}");
    }
}

//! Maildir delivery: puts queued messages into Maildirs, exactly once per mailbox, with
//! blocking `std::fs` on the queue's thread (off the io_uring data path).
//!
//! The queue's scheduler hands [`Maildir::deliver`] every due message with its local
//! recipients, and one call delivers the batch in four steps:
//!
//! 1. for each message and distinct mailbox, write `tmp/<name>` (headers, then the spooled
//!    bytes);
//! 2. `syncfs`: all those entries' data is on disk;
//! 3. rename each `tmp/<name>` to `new/<name>`;
//! 4. `syncfs` again: the renames (and any new directories) are on disk; only then does the
//!    queue record the recipients as delivered.
//!
//! **Why `syncfs`, twice.** An entry is renamed only after its data is durable (step 2), so an
//! entry that exists under `new/` or `cur/` is always complete; that is what lets a restart
//! treat "the entry exists" as "delivered" and skip it, never delivering twice and never leaving
//! a truncated copy that would hide a lost one. Per-file `fsync` would give the same guarantee
//! at one journal commit per entry; `syncfs` gives it at one per batch. It reports writeback
//! errors since Linux 5.8 (older kernels than the ring needs anyway) through an `errseq`
//! sampled when the descriptor was opened, so each filesystem's descriptor is opened **before**
//! the entries on it are written. A mailbox on another filesystem than the Maildir root gets its
//! own descriptor and `syncfs`. An error from `syncfs` may belong to another file on the same
//! filesystem; the batch then fails as a whole (every recipient in it is deferred and retried).
//!
//! Nothing half-written stays behind: an entry whose write fails (a full disk) is removed at
//! once, so a failure does not also eat the space that is already short.
//!
//! A message our DMARC check quarantined goes into the mailbox's `.Junk` folder instead of the
//! mailbox itself ([`Folder::of`] reads our `Authentication-Results:`); the folder's
//! `{tmp,new,cur}` are created when first needed, like the mailbox's.
//!
//! Entries are created with the configured file mode (0600 unless `delivery.mode` says
//! otherwise) and the directories delivery creates with the matching [`dir_mode`], both set
//! explicitly so that the umask cannot widen or narrow them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::protocol::Mailbox;
use crate::spool::Queued;

mod maildir;

pub use maildir::{
    dir_mode, path_component, target, Folder, Target, TargetError, DEFAULT_FILE_MODE,
};

/// Most messages delivered in one batch (one pair of `syncfs` calls).
pub const MAX_BATCH: usize = 256;

/// Why the Maildir root cannot be used at all.
#[derive(Debug, thiserror::Error)]
#[error("maildir {op} {}: {source}", path.display())]
pub struct MaildirError {
    /// What was being done.
    pub op: &'static str,
    /// To which path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// One message of a batch and the local recipients to deliver it to.
#[derive(Debug)]
pub struct MaildirJob<'a> {
    /// The message.
    pub queued: &'a Queued,
    /// Its recipients in our domains (after rewriting).
    pub rcpts: Vec<Mailbox>,
    /// Whether an earlier attempt (before a crash, or one that failed) may have published some
    /// entries: then `cur/` is scanned for entries a reader has moved and flagged.
    pub resumed: bool,
}

/// What became of one recipient of a [`MaildirJob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The mailbox holds the message (perhaps from an earlier, interrupted attempt).
    Delivered {
        /// The directory the entry is in: the mailbox, or its `.Junk` folder.
        mailbox: PathBuf,
    },
    /// Try again later (a full disk, a quota, a permission): what went wrong, naming the
    /// operation and path.
    Deferred(String),
    /// This address can never have a mailbox here (an address literal, an empty local part).
    Failed(TargetError),
}

/// The Maildir root and the `syncfs` descriptors of the filesystems it spans.
pub struct Maildir {
    root: PathBuf,
    file_mode: u32,
    fs: Filesystems,
}

impl std::fmt::Debug for Maildir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maildir").field("root", &self.root).finish()
    }
}

impl Maildir {
    /// Creates `root` if missing (with [`dir_mode`] of `file_mode`) and opens it.
    pub fn open(root: &Path, file_mode: u32) -> Result<Maildir, MaildirError> {
        let err = |op, source| MaildirError {
            op,
            path: root.to_owned(),
            source,
        };
        create_dirs(root, dir_mode(file_mode)).map_err(|e| err("create dir", e))?;
        let fs = Filesystems::open(root).map_err(|e| err("open", e))?;
        Ok(Maildir {
            root: root.to_owned(),
            file_mode,
            fs,
        })
    }

    /// The Maildir root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Delivers a batch (at most [`MAX_BATCH`] jobs, or the `syncfs` pair covers more): one
    /// result per recipient of each job, in order.
    pub fn deliver(&mut self, jobs: &[MaildirJob<'_>]) -> Vec<Vec<RcptResult>> {
        // Step 1: entries into tmp/.
        let mut work: Vec<Work> = jobs.iter().map(|job| self.write_entries(job)).collect();
        // Step 2: their data is durable before any of them becomes visible.
        if let Err(e) = self.fs.sync() {
            let error = format!("syncfs {}: {e}", self.root.display());
            work.iter_mut().for_each(|w| w.fail_all(&error));
        }
        // Step 3: publish.
        for w in &mut work {
            for m in w.mailboxes.iter_mut().filter(|m| m.state == Step::Written) {
                let (from, to) = (
                    m.target.dir.join("tmp").join(&m.target.name),
                    m.target.dir.join("new").join(&m.target.name),
                );
                m.state = match fs::rename(&from, &to) {
                    Ok(()) => Step::Done,
                    Err(e) => Step::Error(format!("rename {}: {e}", from.display())),
                };
            }
        }
        // Step 4: the renames are durable before anyone is told.
        if let Err(e) = self.fs.sync() {
            let error = format!("syncfs {}: {e}", self.root.display());
            work.iter_mut().for_each(|w| w.fail_all(&error));
        }
        work.into_iter().map(Work::results).collect()
    }

    /// Step 1 for one job: maps its recipients to mailboxes, writes each missing entry to
    /// `tmp/`.
    fn write_entries(&mut self, job: &MaildirJob<'_>) -> Work {
        let mut work = Work {
            mailboxes: Vec::new(),
            of_rcpt: Vec::with_capacity(job.rcpts.len()),
        };
        // One folder for the whole message: the mark is in the message, not per recipient.
        let folder = Folder::of(job.queued.message());
        for rcpt in &job.rcpts {
            let target = match maildir::target(&self.root, &job.queued.id, rcpt, folder) {
                Ok(t) => t,
                Err(e) => {
                    work.of_rcpt.push(Err(e));
                    continue;
                }
            };
            // Two spellings of one mailbox share a directory: one entry for both.
            if let Some(i) = work
                .mailboxes
                .iter()
                .position(|m| m.target.dir == target.dir)
            {
                work.of_rcpt.push(Ok(i));
                continue;
            }
            let state = match write_entry(&mut self.fs, job, &target, self.file_mode) {
                Ok(true) => Step::Written,
                Ok(false) => {
                    tracing::debug!(id = %job.queued.id, mailbox = %target.dir.display(), "already delivered; skipped");
                    Step::Done
                }
                Err(e) => Step::Error(e),
            };
            work.of_rcpt.push(Ok(work.mailboxes.len()));
            work.mailboxes.push(Entry { target, state });
        }
        work
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// In `tmp/`, waiting for its rename.
    Written,
    /// In `new/` (or already there from an earlier attempt).
    Done,
    Error(String),
}

/// One distinct mailbox of a job.
struct Entry {
    target: Target,
    state: Step,
}

/// One job's progress through a batch.
struct Work {
    mailboxes: Vec<Entry>,
    /// For each recipient, its mailbox's index, or why it has none.
    of_rcpt: Vec<Result<usize, TargetError>>,
}

impl Work {
    /// A `syncfs` failed: nothing of this batch is known to be durable.
    fn fail_all(&mut self, error: &str) {
        for m in &mut self.mailboxes {
            if !matches!(m.state, Step::Error(_)) {
                m.state = Step::Error(error.to_owned());
            }
        }
    }

    fn results(self) -> Vec<RcptResult> {
        // An entry left in tmp/ by a failure is removed: it would only hold space.
        for m in &self.mailboxes {
            if matches!(m.state, Step::Error(_)) {
                let _ = fs::remove_file(m.target.dir.join("tmp").join(&m.target.name));
            }
        }
        self.of_rcpt
            .into_iter()
            .map(|r| match r {
                Err(e) => RcptResult::Failed(e),
                Ok(i) => match self.mailboxes.get(i) {
                    Some(Entry {
                        target,
                        state: Step::Done,
                    }) => RcptResult::Delivered {
                        mailbox: target.dir.clone(),
                    },
                    Some(Entry {
                        state: Step::Error(e),
                        ..
                    }) => RcptResult::Deferred(e.clone()),
                    _ => RcptResult::Deferred("entry not published".into()),
                },
            })
            .collect()
    }
}

/// The `syncfs` descriptors: the Maildir root's, opened at start, plus one per other
/// filesystem a mailbox turned out to live on, each opened before anything is written there.
struct Filesystems {
    by_dev: HashMap<u64, File>,
}

impl Filesystems {
    fn open(root: &Path) -> io::Result<Self> {
        let file = File::open(root)?;
        let dev = file.metadata()?.dev();
        Ok(Filesystems {
            by_dev: HashMap::from([(dev, file)]),
        })
    }

    /// Makes sure the filesystem of `dir` has a descriptor; call before writing under `dir`.
    fn track(&mut self, dir: &Path) -> io::Result<()> {
        let dev = fs::metadata(dir)?.dev();
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_dev.entry(dev) {
            slot.insert(File::open(dir)?);
        }
        Ok(())
    }

    /// `syncfs` on every tracked filesystem.
    fn sync(&self) -> io::Result<()> {
        for file in self.by_dev.values() {
            // SAFETY: `file` owns an open descriptor for the whole call; syncfs only reads it.
            if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Writes one entry to `<mailbox>/tmp/`; `Ok(false)` if the mailbox already has it.
fn write_entry(
    fs: &mut Filesystems,
    job: &MaildirJob<'_>,
    t: &Target,
    file_mode: u32,
) -> Result<bool, String> {
    let queued = job.queued;
    let err = |op: &str, path: &Path, e: io::Error| format!("{op} {}: {e}", path.display());
    // A folder's mailbox is made a Maildir too, so a mail reader finds a whole one even when
    // its first message went to the folder.
    let dirs = [&t.mailbox, &t.dir];
    for sub in dirs
        .iter()
        .flat_map(|d| ["tmp", "new", "cur"].map(|s| d.join(s)))
    {
        create_dirs(&sub, dir_mode(file_mode)).map_err(|e| err("create dir", &sub, e))?;
    }
    fs.track(&t.dir).map_err(|e| err("open", &t.dir, e))?;
    if already_delivered(t, job.resumed).map_err(|e| err("check", &t.dir, e))? {
        return Ok(false);
    }
    let path = t.dir.join("tmp").join(&t.name);
    let from = match &queued.envelope.mail_from {
        Some(m) => m.to_string(),
        None => String::new(),
    };
    let head = format!("Return-Path: <{from}>\r\nDelivered-To: {}\r\n", t.rcpt);
    write_file(&path, file_mode, &[head.as_bytes(), queued.message()])
        .map_err(|e| err("write", &path, e))?;
    Ok(true)
}

/// Writes `parts` to `path` with permission bits exactly `mode`. A file left by an interrupted
/// attempt is rewritten from the start (and its mode corrected). If anything fails the file is
/// removed: a partial copy is never kept, and never holds on to space a full disk needs.
fn write_file(path: &Path, mode: u32, parts: &[&[u8]]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // Set explicitly: the umask (022 by default) would drop a group's bits from 0660, and a
    // leftover file keeps whatever mode it had.
    let written = file
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| parts.iter().try_for_each(|p| file.write_all(p)));
    if let Err(e) = written {
        drop(file);
        if let Err(rm) = fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %rm, "could not remove a partial file");
        }
        return Err(e);
    }
    Ok(())
}

/// Creates `dir` and whichever of its parents are missing, each with mode exactly `mode`
/// (whatever the umask); directories that exist are left as they are.
fn create_dirs(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        // Created meanwhile by someone else: theirs to keep as it is.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `new/<name>`, `cur/<name>` or `cur/<name>:2,<flags>` exists. The directory scan of
/// `cur/` (a reader may have moved and flagged the entry) is done only for messages resumed
/// after a restart; a message committed in this run cannot have been delivered before.
fn already_delivered(t: &Target, resumed: bool) -> io::Result<bool> {
    for sub in ["new", "cur"] {
        if fs::symlink_metadata(t.dir.join(sub).join(&t.name)).is_ok() {
            return Ok(true);
        }
    }
    if resumed {
        let prefix = format!("{}:", t.name);
        for entry in fs::read_dir(t.dir.join("cur"))? {
            if entry?
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests;

//! Local delivery: moves committed messages from the spool's `queue/` into Maildirs, on a thread
//! of its own with blocking `std::fs`, off the io_uring data path.
//!
//! A worker calls [`DeliveryHandle::enqueue`] after its commit succeeded. The thread takes every
//! id waiting (up to [`MAX_BATCH`]) and delivers the batch in four steps:
//!
//! 1. for each message and distinct local mailbox, write `tmp/<name>` (headers, then the spooled
//!    bytes); if it has recipients outside our domains (authenticated submission), write one
//!    outbound copy with only those recipients to `<spool>/outbound/.<id>.tmp`;
//! 2. `syncfs`: all those entries' data is on disk;
//! 3. rename each `tmp/<name>` to `new/<name>`, and each outbound copy to `outbound/<id>`, where
//!    the relay picks it up;
//! 4. `syncfs` again: the renames (and any new directories) are on disk; only then unlink the
//!    spool files.
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
//! filesystem; the batch then fails as a whole (conservative, retried at the next start).
//!
//! Nothing half-written stays behind: an entry or outbound copy whose write fails (a full disk)
//! is removed at once, so a failure does not also eat the space that is already short.
//!
//! Entries are created with [`DeliveryConfig::file_mode`] (0600 unless `delivery.mode` says
//! otherwise) and the directories delivery creates with the matching [`dir_mode`], both set
//! explicitly so that the umask cannot widen or narrow them; outbound copies are spool files
//! (0600).
//!
//! A message that cannot be delivered stays in `queue/`, is logged and reported as
//! [`DeliveryOutcome::Failed`], and is retried after 30 s, then at doubling intervals up to an
//! hour (and at the next start).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock;
use crate::protocol::{Domain, Mailbox};
use crate::spool::{self, queue_path, QueueId, Queued, SpoolError};

mod maildir;

pub use maildir::{dir_mode, path_component, target, Target, TargetError, DEFAULT_FILE_MODE};

/// Most messages delivered in one batch (one pair of `syncfs` calls).
pub const MAX_BATCH: usize = 256;

/// Where delivery reads from and writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// The spool directory (`spool.dir`), holding `queue/`.
    pub spool_dir: PathBuf,
    /// The root of the Maildirs: `<maildir>/<domain>/<local part>/`.
    pub maildir: PathBuf,
    /// Our host name, for log lines. Deliberately not part of entry names: a renamed host must
    /// still recognise the entries it wrote before a crash.
    pub hostname: String,
    /// Our domains (lower-cased): their recipients get Maildir entries; every other recipient
    /// (authenticated submission only) goes to the outbound queue, `<spool>/outbound/`.
    pub local_domains: HashSet<String>,
    /// Delay before the first retry of a failed delivery; it doubles up to an hour.
    pub first_retry: Duration,
    /// Permission bits of Maildir entries (`delivery.mode`, [`DEFAULT_FILE_MODE`] by default);
    /// the directories delivery creates get [`dir_mode`] of it.
    pub file_mode: u32,
}

/// The default [`DeliveryConfig::first_retry`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);

/// What became of one queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Every distinct recipient mailbox holds the message (some perhaps from an earlier,
    /// interrupted attempt) and the spool file is gone.
    Delivered {
        /// The message.
        id: QueueId,
        /// Distinct mailboxes delivered to.
        recipients: usize,
    },
    /// The message stays in `queue/` until the next start.
    Failed {
        /// The message.
        id: QueueId,
        /// What went wrong, naming the operation and path.
        error: String,
    },
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Preparing or recovering the spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The Maildir root could not be created or opened.
    #[error("maildir {op} {}: {source}", path.display())]
    Maildir {
        /// What was being done.
        op: &'static str,
        /// To which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The thread could not be spawned.
    #[error("spawning the delivery thread: {0}")]
    Spawn(#[source] io::Error),
}

enum Command {
    Deliver(QueueId),
    Shutdown,
}

/// Hands committed messages to the delivery thread. Cheap to clone (one per worker); `Send`.
///
/// Dropping the last handle lets the thread finish what is queued and then joins it; so does
/// [`DeliveryHandle::shutdown`].
#[derive(Clone)]
pub struct DeliveryHandle {
    // Field order matters: `tx` drops before `thread`, so when the last handle goes the thread
    // sees the channel close before `Joiner::drop` waits for it.
    tx: mpsc::Sender<Command>,
    thread: Arc<Joiner>,
}

impl std::fmt::Debug for DeliveryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryHandle").finish_non_exhaustive()
    }
}

struct Joiner(Mutex<Option<JoinHandle<()>>>);

impl Joiner {
    fn join(&self) {
        let handle = self.0.lock().map(|mut h| h.take()).unwrap_or(None);
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("delivery thread panicked");
            }
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.join();
    }
}

impl DeliveryHandle {
    /// Queues a committed message for delivery. Never blocks. If the thread is gone the id is
    /// logged; the message stays in `queue/` and is delivered at the next start.
    pub fn enqueue(&self, id: QueueId) {
        if self.tx.send(Command::Deliver(id)).is_err() {
            tracing::error!(%id, "delivery thread gone; message stays queued until restart");
        }
    }

    /// Delivers everything enqueued so far (by any handle), then stops the thread and joins it.
    pub fn shutdown(self) {
        let _ = self.tx.send(Command::Shutdown);
        self.thread.join();
    }
}

/// Starts the delivery thread. It first recovers the spool ([`spool::recover`]: empties `tmp/`)
/// and delivers what `queue/` holds (the resume after a crash), then waits for
/// [`DeliveryHandle::enqueue`]. Call it **before** any worker opens a `SpoolWriter`.
///
/// `on_delivered` is called on the delivery thread once per message attempt.
pub fn start(
    cfg: DeliveryConfig,
    on_delivered: Box<dyn Fn(DeliveryOutcome) + Send>,
) -> Result<DeliveryHandle, DeliveryError> {
    let backlog = spool::recover(&cfg.spool_dir)?;
    create_dirs(&cfg.maildir, dir_mode(cfg.file_mode)).map_err(|source| {
        DeliveryError::Maildir {
            op: "create dir",
            path: cfg.maildir.clone(),
            source,
        }
    })?;
    let fs = Filesystems::open(&cfg.maildir).map_err(|source| DeliveryError::Maildir {
        op: "open",
        path: cfg.maildir.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("smtp-edge-delivery".into())
        .spawn(move || run(&cfg, fs, &rx, backlog, &*on_delivered))
        .map_err(DeliveryError::Spawn)?;
    Ok(DeliveryHandle {
        tx,
        thread: Arc::new(Joiner(Mutex::new(Some(handle)))),
    })
}

/// The thread: the backlog first, then batches from the channel until shutdown or until every
/// handle is gone.
fn run(
    cfg: &DeliveryConfig,
    mut fs: Filesystems,
    rx: &mpsc::Receiver<Command>,
    backlog: Vec<QueueId>,
    report: &dyn Fn(DeliveryOutcome),
) {
    if !backlog.is_empty() {
        tracing::info!(messages = backlog.len(), host = %cfg.hostname, "delivery: resuming queue");
    }
    for chunk in backlog.chunks(MAX_BATCH) {
        deliver_batch(cfg, &mut fs, chunk, true)
            .into_iter()
            .for_each(report);
    }
    // Messages whose delivery failed (a full disk, a quota, too many open files), retried with
    // a growing delay: each attempt's count, and when the next round is due.
    let mut retries: Vec<(QueueId, u32)> = Vec::new();
    let mut due: Option<Instant> = None;
    loop {
        let mut batch = Vec::new();
        let first = match due {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_timeout(at.saturating_duration_since(clock::now())),
        };
        let mut stop = match first {
            Ok(Command::Deliver(id)) => {
                batch.push(id);
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Ok(Command::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Command::Deliver(id)) => batch.push(id),
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => stop = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        let mut failed = Vec::new();
        if !batch.is_empty() {
            for outcome in deliver_batch(cfg, &mut fs, &batch, false) {
                if let DeliveryOutcome::Failed { id, .. } = &outcome {
                    failed.push((*id, 0));
                }
                report(outcome);
            }
        }
        if !stop && due.is_some_and(|at| clock::now() >= at) {
            // Resumed: an earlier attempt may have published some entries already.
            let ids: Vec<QueueId> = retries.iter().map(|(id, _)| *id).collect();
            let attempts: HashMap<QueueId, u32> = retries.drain(..).collect();
            for chunk in ids.chunks(MAX_BATCH) {
                for outcome in deliver_batch(cfg, &mut fs, chunk, true) {
                    if let DeliveryOutcome::Failed { id, .. } = &outcome {
                        failed.push((*id, attempts.get(id).copied().unwrap_or(0) + 1));
                    }
                    report(outcome);
                }
            }
        }
        retries.extend(failed);
        due = retries
            .iter()
            .map(|(_, n)| retry_delay(cfg.first_retry, *n))
            .min()
            .map(|d| clock::now() + d);
        if stop {
            return;
        }
    }
}

/// How long before the next attempt at a message that failed `attempts` retries already:
/// `first`, doubling, at most an hour. Failures are rare and usually wait on an operator
/// (space, permissions), so there is no hurry, but mail must not wait for a restart either.
fn retry_delay(first: Duration, attempts: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(3600);
    first.saturating_mul(1 << attempts.min(7)).min(MAX)
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

/// One message's progress through a batch.
struct Job {
    id: QueueId,
    /// Entries written to `tmp/` this time, waiting for their rename.
    pending: Vec<Target>,
    /// Distinct mailboxes, including those already delivered earlier, plus remote recipients.
    recipients: usize,
    /// The outbound copy written to `outbound/.<id>.tmp` this time, waiting for its rename.
    outbound: Option<PathBuf>,
    error: Option<String>,
}

impl Job {
    fn fail(&mut self, error: String) {
        if self.error.is_none() {
            tracing::warn!(id = %self.id, %error, "delivery failed; message stays queued");
            self.error = Some(error);
        }
    }
}

fn deliver_batch(
    cfg: &DeliveryConfig,
    fs: &mut Filesystems,
    ids: &[QueueId],
    resumed: bool,
) -> Vec<DeliveryOutcome> {
    // Step 1: entries into tmp/.
    let mut jobs: Vec<Job> = ids
        .iter()
        .map(|&id| write_entries(cfg, fs, id, resumed))
        .collect();
    // Step 2: their data is durable before any of them becomes visible.
    if let Err(e) = fs.sync() {
        let error = format!("syncfs {}: {e}", cfg.maildir.display());
        for job in jobs.iter_mut().filter(|j| j.error.is_none()) {
            job.fail(error.clone());
        }
    }
    // Step 3: publish. A failed job's entries stay in tmp/ (removed below).
    for job in &mut jobs {
        if job.error.is_some() {
            continue;
        }
        for t in std::mem::take(&mut job.pending) {
            let (from, to) = (
                t.dir.join("tmp").join(&t.name),
                t.dir.join("new").join(&t.name),
            );
            if let Err(e) = fs::rename(&from, &to) {
                job.fail(format!("rename {}: {e}", from.display()));
                job.pending.push(t);
            }
        }
        if let Some(tmp) = job.outbound.take() {
            let to = outbound_path(cfg, &job.id);
            if let Err(e) = fs::rename(&tmp, &to) {
                job.fail(format!("rename {}: {e}", tmp.display()));
                job.outbound = Some(tmp);
            }
        }
    }
    // Step 4: the renames are durable, then the spool copies can go.
    if let Err(e) = fs.sync() {
        let error = format!("syncfs {}: {e}", cfg.maildir.display());
        for job in jobs.iter_mut().filter(|j| j.error.is_none()) {
            job.fail(error.clone());
        }
    }
    jobs.into_iter()
        .map(|job| match job.error {
            Some(error) => {
                for t in &job.pending {
                    let _ = fs::remove_file(t.dir.join("tmp").join(&t.name));
                }
                if let Some(tmp) = &job.outbound {
                    let _ = fs::remove_file(tmp);
                }
                DeliveryOutcome::Failed { id: job.id, error }
            }
            None => {
                let path = queue_path(&cfg.spool_dir, &job.id);
                // Not synced: if this unlink is lost in a crash, the restart finds every entry
                // present and only unlinks again.
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(id = %job.id, error = %e, "delivered, but could not remove spool file");
                }
                tracing::debug!(id = %job.id, recipients = job.recipients, "delivered");
                DeliveryOutcome::Delivered {
                    id: job.id,
                    recipients: job.recipients,
                }
            }
        })
        .collect()
}

/// Step 1 for one message: reads it, maps its recipients, writes each missing entry to `tmp/`.
fn write_entries(cfg: &DeliveryConfig, fs: &mut Filesystems, id: QueueId, resumed: bool) -> Job {
    let mut job = Job {
        id,
        pending: Vec::new(),
        recipients: 0,
        outbound: None,
        error: None,
    };
    let queued = match spool::read_queued(&queue_path(&cfg.spool_dir, &id)) {
        Ok(q) => q,
        Err(e) => {
            job.fail(e.to_string());
            return job;
        }
    };
    // Map every recipient before writing anything: one refused address fails the message
    // without a partial delivery.
    let mut targets = Vec::new();
    let mut seen = HashSet::new();
    let (local, remote): (Vec<&Mailbox>, Vec<&Mailbox>) = queued
        .envelope
        .rcpt_to
        .iter()
        .partition(|m| matches!(&m.domain, Domain::Name(d) if cfg.local_domains.contains(d)));
    for rcpt in local {
        match maildir::target(&cfg.maildir, &id, rcpt) {
            Ok(t) if seen.insert(t.dir.clone()) => targets.push(t),
            Ok(_) => {} // another spelling of a mailbox already in the list
            Err(e) => {
                job.fail(e.to_string());
                return job;
            }
        }
    }
    job.recipients = targets.len() + remote.len();
    if !remote.is_empty() {
        match write_outbound(cfg, fs, &queued, remote) {
            Ok(tmp) => job.outbound = tmp,
            Err(e) => {
                job.fail(e);
                return job;
            }
        }
    }
    for t in targets {
        match write_entry(fs, &queued, &t, resumed, cfg.file_mode) {
            Ok(true) => job.pending.push(t),
            Ok(false) => {
                tracing::info!(%id, mailbox = %t.dir.display(), "already delivered; skipped")
            }
            Err(e) => {
                job.fail(e);
                break;
            }
        }
    }
    job
}

/// Where the outbound copy of `id` lives once published.
fn outbound_path(cfg: &DeliveryConfig, id: &QueueId) -> PathBuf {
    cfg.spool_dir.join(spool::OUTBOUND_DIR).join(id.as_str())
}

/// Writes the outbound copy of `queued` (its envelope cut down to the `remote` recipients) to
/// `outbound/.<id>.tmp`, published by the rename of step 3. `Ok(None)` if it is already there
/// (a resumed delivery).
fn write_outbound(
    cfg: &DeliveryConfig,
    fs: &mut Filesystems,
    queued: &Queued,
    remote: Vec<&Mailbox>,
) -> Result<Option<PathBuf>, String> {
    let err = |op: &str, path: &Path, e: io::Error| format!("{op} {}: {e}", path.display());
    let dir = cfg.spool_dir.join(spool::OUTBOUND_DIR);
    create_dirs(&dir, spool::DIR_MODE).map_err(|e| err("create dir", &dir, e))?;
    fs.track(&dir).map_err(|e| err("open", &dir, e))?;
    if outbound_path(cfg, &queued.id).exists() {
        return Ok(None);
    }
    let mut envelope = queued.envelope.clone();
    envelope.rcpt_to = remote.into_iter().cloned().collect();
    let bytes = spool::encode_file(&envelope, &queued.id, queued.message());
    let tmp = dir.join(format!(".{}.tmp", queued.id));
    write_file(&tmp, spool::FILE_MODE, &[&bytes]).map_err(|e| err("write", &tmp, e))?;
    Ok(Some(tmp))
}

/// Writes one entry to `<mailbox>/tmp/`; `Ok(false)` if the mailbox already has it.
fn write_entry(
    fs: &mut Filesystems,
    queued: &Queued,
    t: &Target,
    resumed: bool,
    file_mode: u32,
) -> Result<bool, String> {
    let err = |op: &str, path: &Path, e: io::Error| format!("{op} {}: {e}", path.display());
    for sub in ["tmp", "new", "cur"] {
        let dir = t.dir.join(sub);
        create_dirs(&dir, dir_mode(file_mode)).map_err(|e| err("create dir", &dir, e))?;
    }
    fs.track(&t.dir).map_err(|e| err("open", &t.dir, e))?;
    if already_delivered(t, resumed).map_err(|e| err("check", &t.dir, e))? {
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

//! [`Store`]: the queue's storage, and the only code that knows its layout.
//!
//! ```text
//!  <spool.dir>/queue/<qid>    the message as the spool committed it (envelope + content)
//!  <spool.dir>/state/<qid>    its per-recipient Record (JSON), once an attempt left work to do
//! ```
//!
//! A message file without a state file has never been attempted: every recipient is pending.
//! State files are replaced whole (written to `state/.<qid>.tmp`, `fdatasync`, renamed, the
//! directory synced once per batch), so a crash leaves the old record or the new one, never a
//! mix. A message is removed file first, record second: a crash in between leaves a record
//! without a message, which [`Store::open`] deletes.
//!
//! Everything else goes through this type, so that the layout (one file per message today) can
//! change without the scheduler noticing.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::record::Record;
use crate::protocol::Envelope;
use crate::relay::Content;
use crate::spool::{self, queue_path, QueueId, QueueIdGen, Queued, SpoolError};

/// Subdirectory of per-recipient records.
const STATE_DIR: &str = "state";
/// Where earlier versions left the remote recipients of submitted mail (same file format as
/// `queue/`); [`Store::open`] takes them into the queue.
const LEGACY_OUTBOUND_DIR: &str = "outbound";
/// The worker index of the ids the queue itself gives (delivery status notifications): above
/// any worker's.
const QUEUE_ID_WORKER: u16 = u16::MAX;

/// The queue's storage.
#[derive(Debug)]
pub struct Store {
    spool: PathBuf,
    ids: QueueIdGen,
}

fn err(op: &'static str, path: &Path, source: io::Error) -> SpoolError {
    SpoolError {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens the store in `spool` (prepared and recovered by [`spool::recover`]), takes in what
    /// an earlier version left in `outbound/`, drops records whose message is gone, and returns
    /// the ids queued, oldest first. `generation` is this run's (ids of new messages).
    pub fn open(spool: &Path, generation: u64) -> Result<(Store, Vec<QueueId>), SpoolError> {
        let state = spool.join(STATE_DIR);
        fs::create_dir_all(&state).map_err(|e| err("create dir", &state, e))?;
        set_private(&state)?;
        migrate_outbound(spool)?;
        let ids = spool::recover(spool)?;
        for entry in fs::read_dir(&state).map_err(|e| err("read dir", &state, e))? {
            let entry = entry.map_err(|e| err("read dir", &state, e))?;
            let name = entry.file_name();
            let stale = match name.to_str().and_then(|n| n.parse::<QueueId>().ok()) {
                Some(id) => !queue_path(spool, &id).exists(),
                // `.<id>.tmp`: a record being replaced when the server stopped.
                None => name.to_str().is_some_and(|n| n.ends_with(".tmp")),
            };
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        let store = Store {
            spool: spool.to_owned(),
            ids: QueueIdGen::new(generation, QUEUE_ID_WORKER),
        };
        Ok((store, ids))
    }

    /// The message `id`.
    pub fn message(&self, id: &QueueId) -> Result<Queued, SpoolError> {
        spool::read_queued(&queue_path(&self.spool, id))
    }

    /// Whether message `id` is queued.
    pub fn contains(&self, id: &QueueId) -> bool {
        queue_path(&self.spool, id).exists()
    }

    /// The record of `id`; `None` if it was never attempted.
    pub fn record(&self, id: &QueueId) -> Result<Option<Record>, SpoolError> {
        let path = self.state_path(id);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                err(
                    "decode",
                    &path,
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err("read", &path, e)),
        }
    }

    /// Makes `records` durable, replacing each message's earlier one.
    pub fn save(&self, records: &[(QueueId, &Record)]) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let dir = self.spool.join(STATE_DIR);
        for (id, record) in records {
            let tmp = dir.join(format!(".{id}.tmp"));
            let bytes =
                serde_json::to_vec(record).map_err(|e| err("encode", &tmp, io::Error::other(e)))?;
            write_synced(&tmp, &bytes)?;
            let path = self.state_path(id);
            fs::rename(&tmp, &path).map_err(|e| err("rename", &tmp, e))?;
        }
        sync_dir(&dir)
    }

    /// Removes message `id` and its record.
    pub fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let path = queue_path(&self.spool, id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("remove", &path, e)),
        }
        // Not synced: if this unlink is lost in a crash, the restart finds every recipient
        // final, or the record without its message, and removes it again.
        let state = self.state_path(id);
        match fs::remove_file(&state) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("remove", &state, e)),
        }
    }

    /// Queues a new message made here (a delivery status notification): durable (file and
    /// directory synced) before this returns its id.
    pub fn insert(&mut self, envelope: &Envelope, message: &[u8]) -> Result<QueueId, SpoolError> {
        let id = self.ids.next();
        let tmp = spool::tmp_path(&self.spool, &id);
        write_synced(&tmp, &spool::encode_file(envelope, &id, message))?;
        let path = queue_path(&self.spool, &id);
        fs::rename(&tmp, &path).map_err(|e| err("rename", &tmp, e))?;
        sync_dir(&self.spool.join(spool::QUEUE_DIR))?;
        Ok(id)
    }

    /// Where the relay reads `queued`'s content from: its file, from the end of the envelope
    /// header. The file stays until the message is removed.
    pub fn content(&self, queued: &Queued) -> Content {
        Content {
            path: queue_path(&self.spool, &queued.id),
            offset: queued.message_offset(),
            len: queued.message().len() as u64,
        }
    }

    fn state_path(&self, id: &QueueId) -> PathBuf {
        self.spool.join(STATE_DIR).join(id.as_str())
    }
}

/// Moves each `outbound/<qid>` into `queue/` (where a copy with the same id is still queued,
/// that copy holds every recipient and the outbound one goes), then removes `outbound/`.
fn migrate_outbound(spool: &Path) -> Result<(), SpoolError> {
    let dir = spool.join(LEGACY_OUTBOUND_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err("read dir", &dir, e)),
    };
    let mut moved = 0usize;
    for entry in entries {
        let entry = entry.map_err(|e| err("read dir", &dir, e))?;
        let from = entry.path();
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<QueueId>().ok())
        else {
            // `.<id>.tmp`: an outbound copy never published; its message is still in queue/.
            let _ = fs::remove_file(&from);
            continue;
        };
        let to = queue_path(spool, &id);
        if to.exists() {
            fs::remove_file(&from).map_err(|e| err("remove", &from, e))?;
        } else {
            fs::rename(&from, &to).map_err(|e| err("rename", &from, e))?;
            moved += 1;
        }
    }
    sync_dir(&spool.join(spool::QUEUE_DIR))?;
    if moved > 0 {
        tracing::info!(
            messages = moved,
            "queue: took in remote recipients left in outbound/"
        );
    }
    let _ = fs::remove_dir(&dir);
    Ok(())
}

/// Writes `bytes` to a new private file at `path` and `fdatasync`s it; removes it on failure.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(spool::FILE_MODE)
        .open(path)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_data()
        });
    written.map_err(|e| {
        let _ = fs::remove_file(path);
        err("write", path, e)
    })
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("fsync dir", dir, e))
}

fn set_private(dir: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(spool::DIR_MODE))
        .map_err(|e| err("chmod", dir, e))
}

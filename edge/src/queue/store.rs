//! [`Store`]: the queue's storage, and the only code that knows its layout.
//!
//! ```text
//!  <spool.dir>/log/<segment>  messages committed by the workers (one record each), and the
//!                             queue's own segment: notices, and a done mark per message
//!  <spool.dir>/queue/<qid>    a message too large for the log, in a file of its own
//!  <spool.dir>/state/<qid>    its per-recipient Record (JSON), once an attempt left work to do
//! ```
//!
//! A message without a state file has never been attempted: every recipient is pending. State
//! files are replaced whole (written to `state/.<qid>.tmp`, `fdatasync`, renamed, the directory
//! synced once per batch), so a crash leaves the old record or the new one, never a mix.
//!
//! **The log.** A worker tells the queue where each message it committed is (segment and
//! offset), and when it has sealed a segment, with how many messages it holds. A message that
//! is done gets a done mark in the queue's own segment (written at once, synced with the others of the next 100 ms), and
//! a sealed segment is deleted once as many of its messages are done as it holds: no per-message
//! unlink. At startup, [`Store::open`] scans every segment (see [`crate::spool::log::scan`]:
//! a torn tail ends a segment, a header with one flipped bit is repaired, a
//! record that fails its checksum is skipped and logged, never
//! delivered), copies each message that is not done into a new segment of its own, syncs it,
//! and deletes the old segments: segments pinned by long-deferred messages are compacted at
//! every start. If the copy cannot be made (too little room), the old segments stay and are
//! delivered from. A message is removed from its file, or marked done, before its record goes: a
//! crash in between leaves a record without a message, which [`Store::open`] deletes.
//!
//! Everything else goes through this type, so that the layout can change without the scheduler
//! noticing.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::Record;
use crate::clock;
use crate::protocol::Envelope;
use crate::relay::Content;
use crate::spool::log::{self, Kind, Placed, Segment, SegmentName, HEADER_LEN};
use crate::spool::{self, queue_path, QueueId, QueueIdGen, Queued, SpoolError};

/// Subdirectory of per-recipient records.
const STATE_DIR: &str = "state";
/// Where earlier versions left the remote recipients of submitted mail (same file format as
/// `queue/`); [`Store::open`] takes them into the queue.
const LEGACY_OUTBOUND_DIR: &str = "outbound";
/// The worker index of the ids the queue itself gives (delivery status notifications), and the
/// owner of its log segments: above any worker's.
const QUEUE_ID_WORKER: u16 = u16::MAX;

/// The queue's storage.
#[derive(Debug)]
pub struct Store {
    spool: PathBuf,
    ids: QueueIdGen,
    generation: u64,
    /// Where each message of the log is; messages in `queue/` are not listed.
    places: HashMap<QueueId, Placed>,
    /// The queue's own segment (notices, done marks), created when first needed.
    journal: Option<Segment>,
    /// The sequence number of the next segment of the queue's own.
    next_journal: u32,
    /// When the oldest done mark not yet synced was written (or the last failed sync was
    /// tried, to pace the next); `None` when everything written is synced.
    unsynced_since: Option<Instant>,
    /// Workers' segments of this run: how many messages each holds once sealed, how many are done.
    segments: HashMap<SegmentName, Tally>,
    /// Segments open for reading, kept until they are deleted: opening one by path for every
    /// message read cost a path walk and a file setup per message.
    readers: HashMap<SegmentName, Arc<File>>,
    /// Messages that have a state file. Most messages never get one (delivered at the first
    /// attempt): knowing which do saves a failed open and a failed unlink per message.
    stateful: HashSet<QueueId>,
}

/// What the store knows of one worker segment of this run.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    /// Messages it holds, once its worker has sealed it.
    sealed: Option<u64>,
    /// Messages of it that are done.
    done: u64,
}

fn err(op: &'static str, path: &Path, source: io::Error) -> SpoolError {
    SpoolError {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens the store in `spool` (prepared by [`spool::prepare`]): recovers `tmp/` and
    /// `queue/` ([`spool::recover`]), takes in what an earlier version left in `outbound/`,
    /// recovers and compacts the log, drops records whose message is gone, and returns the ids
    /// queued, oldest first. `generation` is this run's (ids of new messages, segment names).
    pub fn open(spool: &Path, generation: u64) -> Result<(Store, Vec<QueueId>), SpoolError> {
        let state = spool.join(STATE_DIR);
        fs::create_dir_all(&state).map_err(|e| err("create dir", &state, e))?;
        set_private(&state)?;
        migrate_outbound(spool)?;
        let files = spool::recover(spool)?;
        let mut store = Store {
            spool: spool.to_owned(),
            ids: QueueIdGen::new(generation, QUEUE_ID_WORKER),
            generation,
            places: HashMap::new(),
            journal: None,
            next_journal: 0,
            unsynced_since: None,
            segments: HashMap::new(),
            readers: HashMap::new(),
            stateful: HashSet::new(),
        };
        let mut ids = store.recover_log()?;
        ids.extend(files);
        for entry in fs::read_dir(&state).map_err(|e| err("read dir", &state, e))? {
            let entry = entry.map_err(|e| err("read dir", &state, e))?;
            let name = entry.file_name();
            let stale = match name.to_str().and_then(|n| n.parse::<QueueId>().ok()) {
                Some(id) if store.contains(&id) => {
                    store.stateful.insert(id);
                    false
                }
                Some(_) => true,
                // `.<id>.tmp`: a record being replaced when the server stopped.
                None => name.to_str().is_some_and(|n| n.ends_with(".tmp")),
            };
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok((store, ids))
    }

    /// Scans every segment a past run left, copies the messages that are not done into this
    /// run's own segment, syncs it and deletes the old ones. Returns the messages, in log order.
    ///
    /// If the copy cannot be made (the disk has less room than the queued mail, a read or
    /// write error), the old segments are kept and the messages are delivered from where they
    /// are: a server that cannot compact still starts and drains its queue, which is what frees
    /// the space. The next start compacts again.
    fn recover_log(&mut self) -> Result<Vec<QueueId>, SpoolError> {
        let names = log::list(&self.spool)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut found: Vec<(QueueId, SegmentName, u64)> = Vec::new();
        let mut done: HashSet<QueueId> = HashSet::new();
        for name in &names {
            let scanned = log::recover(&log::segment_path(&self.spool, name))?;
            for r in scanned.records {
                match r.kind {
                    Kind::Message => found.push((r.id, *name, r.offset)),
                    Kind::Done => {
                        done.insert(r.id);
                    }
                    Kind::State => {}
                }
            }
        }
        let mut seen = HashSet::new();
        let mut originals = Vec::new();
        for (id, segment, offset) in found {
            // A copy made by an interrupted compaction, or a message done: once, or never.
            if done.contains(&id) || !seen.insert(id) {
                continue;
            }
            originals.push((id, Placed { segment, offset }));
        }
        let live: Vec<QueueId> = originals.iter().map(|(id, _)| *id).collect();
        match self.copy_forward(&originals) {
            Ok(copies) => {
                self.places.extend(copies);
                for name in &names {
                    self.readers.remove(name);
                    let path = log::segment_path(&self.spool, name);
                    if let Err(e) = fs::remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "spool: cannot remove a recovered segment");
                    }
                }
            }
            Err(e) => {
                // Nothing old is deleted. The partial copy holds only duplicates of what the
                // old segments still hold (a later start reads the originals first): removing it
                // gives back its space.
                if let Some(partial) = self.journal.take() {
                    let _ = fs::remove_file(partial.path());
                }
                tracing::warn!(error = %e, messages = live.len(), "spool: cannot compact the log; delivering from the old segments");
                self.places.extend(originals);
            }
        }
        if !live.is_empty() {
            tracing::info!(
                messages = live.len(),
                segments = names.len(),
                "spool: recovered the log"
            );
        }
        Ok(live)
    }

    /// Copies each message of `originals` into the queue's own segment and syncs it; returns
    /// where each copy is.
    fn copy_forward(
        &mut self,
        originals: &[(QueueId, Placed)],
    ) -> Result<Vec<(QueueId, Placed)>, SpoolError> {
        let mut copies = Vec::with_capacity(originals.len());
        for (id, from) in originals {
            let path = log::segment_path(&self.spool, &from.segment);
            let (_, payload) = log::read_record(&path, from.offset)?;
            let mut record = Vec::with_capacity(HEADER_LEN + payload.len());
            log::record::encode(&mut record, Kind::Message, id, &payload);
            copies.push((*id, self.append(&record)?));
        }
        if let Some(journal) = &self.journal {
            journal.sync()?;
        }
        Ok(copies)
    }

    /// Appends `record` to the queue's own segment (a new one when it is full); not synced.
    fn append(&mut self, record: &[u8]) -> Result<Placed, SpoolError> {
        let full = self.journal.as_ref().is_none_or(|j| !j.fits(record.len()));
        if full {
            let seq = self.next_journal;
            self.next_journal += 1;
            if let Some(old) = &self.journal {
                old.sync()?;
            }
            let name = SegmentName {
                generation: self.generation,
                owner: QUEUE_ID_WORKER,
                seq,
            };
            self.journal = Some(Segment::create(&self.spool, name)?);
        }
        let Some(journal) = self.journal.as_mut() else {
            return Err(err("write", &self.spool, io::Error::other("no segment")));
        };
        let offset = journal.append(record)?;
        Ok(Placed {
            segment: journal.name(),
            offset,
        })
    }

    /// A worker committed message `id` at `placed`.
    pub fn add(&mut self, id: QueueId, placed: Placed) {
        self.places.insert(id, placed);
        self.segments.entry(placed.segment).or_default();
    }

    /// A worker sealed `segment`, which holds `messages` messages: it goes once they are done.
    pub fn sealed(&mut self, segment: SegmentName, messages: u64) {
        self.segments.entry(segment).or_default().sealed = Some(messages);
        self.reclaim(segment);
    }

    /// Deletes `segment` if it is sealed and every message in it is done.
    fn reclaim(&mut self, segment: SegmentName) {
        let Some(tally) = self.segments.get(&segment) else {
            return;
        };
        if tally.sealed.is_none_or(|n| tally.done < n) {
            return;
        }
        self.segments.remove(&segment);
        self.readers.remove(&segment);
        let path = log::segment_path(&self.spool, &segment);
        match fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "spool: segment reclaimed"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "spool: cannot reclaim a segment")
            }
        }
    }

    /// The message `id`.
    pub fn message(&mut self, id: &QueueId) -> Result<Queued, SpoolError> {
        match self.places.get(id).copied() {
            None => spool::read_queued(&queue_path(&self.spool, id)),
            Some(p) => {
                let path = log::segment_path(&self.spool, &p.segment);
                let file = self.reader(p.segment, &path)?;
                let (header, payload) = log::read_record_at(&file, &path, p.offset)?;
                if header.kind != Kind::Message || header.id != *id {
                    let e = io::Error::new(io::ErrorKind::InvalidData, "record of another message");
                    return Err(err("decode", &path, e));
                }
                spool::decode_queued(payload, Some(*id), &path)
            }
        }
    }

    /// Segment `name` (at `path`), open for reading.
    fn reader(&mut self, name: SegmentName, path: &Path) -> Result<Arc<File>, SpoolError> {
        if let Some(file) = self.readers.get(&name) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(path).map_err(|e| err("open", path, e))?);
        self.readers.insert(name, Arc::clone(&file));
        Ok(file)
    }

    /// Whether message `id` is queued.
    pub fn contains(&self, id: &QueueId) -> bool {
        self.places.contains_key(id) || queue_path(&self.spool, id).exists()
    }

    /// The record of `id`; `None` if it was never attempted.
    pub fn record(&self, id: &QueueId) -> Result<Option<Record>, SpoolError> {
        if !self.stateful.contains(id) {
            return Ok(None);
        }
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
    pub fn save(&mut self, records: &[(QueueId, &Record)]) -> Result<(), SpoolError> {
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
            self.stateful.insert(*id);
        }
        sync_dir(&dir)
    }

    /// Removes message `id` and its record: its file, or (in the log) a done mark, made durable
    /// by the next [`Store::flush`].
    pub fn remove(&mut self, id: &QueueId) -> Result<(), SpoolError> {
        let logged = match self.places.get(id).copied() {
            None => {
                let path = queue_path(&self.spool, id);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err("remove", &path, e)),
                }
                false
            }
            Some(placed) => {
                // Written now, synced later (see `unsynced_for`): a process killed after this
                // returns, anywhere in the rest of the scheduler's pass (its Maildir syncs,
                // records, notices), does not send the message again. It is also written
                // before the record goes below, which would otherwise bring the message back
                // with every recipient pending.
                self.write_mark(id)?;
                self.places.remove(id);
                if let Some(tally) = self.segments.get_mut(&placed.segment) {
                    tally.done += 1;
                    self.reclaim(placed.segment);
                }
                true
            }
        };
        // Not synced: if this unlink (or done mark) is lost in a crash, the restart finds every
        // recipient final, or the record without its message, and removes it again.
        if !self.stateful.remove(id) {
            return Ok(());
        }
        if logged {
            // A power loss must not keep the unlink below and lose the mark: the message would
            // come back with every recipient pending, those delivered in earlier attempts too.
            // One sync, only for messages that had been deferred.
            self.flush()?;
        }
        let state = self.state_path(id);
        match fs::remove_file(&state) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("remove", &state, e)),
        }
    }

    /// Writes the done mark of `id`; not synced. If the write fails it is dropped: that
    /// message may be delivered again after a restart, as when a mark is written but not yet
    /// synced.
    fn write_mark(&mut self, id: &QueueId) -> Result<(), SpoolError> {
        let mut mark = Vec::with_capacity(HEADER_LEN);
        log::record::encode(&mut mark, Kind::Done, id, &[]);
        self.append(&mark)?;
        self.unsynced_since.get_or_insert_with(clock::now);
        Ok(())
    }

    /// How long done marks have been written and not synced (since the last failed sync, if
    /// one failed), if any are.
    pub fn unsynced_for(&self, now: Instant) -> Option<Duration> {
        self.unsynced_since
            .map(|t| now.saturating_duration_since(t))
    }

    /// Makes the done marks written since the last call durable: one `fdatasync` for all of
    /// them.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        if let Some(journal) = &self.journal {
            if let Err(e) = journal.sync() {
                // The next try waits as a new mark would: on a disk that fails every sync,
                // the scheduler would otherwise retry at once, in a loop.
                self.unsynced_since = Some(clock::now());
                return Err(e);
            }
        }
        self.unsynced_since = None;
        Ok(())
    }

    /// Queues a new message made here (a delivery status notification): durable before this
    /// returns its id.
    pub fn insert(&mut self, envelope: &Envelope, message: &[u8]) -> Result<QueueId, SpoolError> {
        let id = self.ids.next();
        let file = spool::encode_file(envelope, &id, message);
        let mut record = Vec::with_capacity(HEADER_LEN + file.len());
        log::record::encode(&mut record, Kind::Message, &id, &file);
        let placed = self.append(&record)?;
        if let Some(journal) = &self.journal {
            journal.sync()?;
        }
        self.unsynced_since = None;
        self.places.insert(id, placed);
        Ok(id)
    }

    /// Where the relay reads `queued`'s content from: its file or its log segment, from the end
    /// of the envelope header. It stays there until the message is removed.
    pub fn content(&self, queued: &Queued) -> Content {
        match self.places.get(&queued.id) {
            None => Content {
                path: queue_path(&self.spool, &queued.id),
                offset: queued.message_offset(),
                len: queued.message_len(),
            },
            Some(p) => Content {
                path: log::segment_path(&self.spool, &p.segment),
                offset: p.offset + HEADER_LEN as u64 + queued.message_offset(),
                len: queued.message_len(),
            },
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

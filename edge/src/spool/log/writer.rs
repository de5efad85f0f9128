//! Group commit on a worker's ring: the messages its sessions finish are gathered into one
//! write and one `fdatasync`, and each session gets its verdict only after that sync.
//!
//! ```text
//!  session ─ record ─┐                ┌──────────── flusher task ────────────┐
//!  session ─ record ─┼─► channel ───► │ take all waiting → one buffer         │
//!  session ─ record ─┘                │ write at the segment's end, fdatasync │
//!        ▲                            └──────────────┬───────────────────────┘
//!        └───────── Ok(where) or Err ─── one answer per record, after the sync
//! ```
//!
//! While one batch is being written and synced the next one gathers in the channel, so under
//! load a batch holds every message that finished during the previous sync, and an idle
//! worker's single message goes out at once. Batches are written strictly one after another
//! (the next write starts after the previous sync returned), which is what lets recovery stop
//! at the first torn record without losing an acknowledged one.
//!
//! Segments are created on the first batch that needs one, and grown with `fallocate` ahead of
//! the writes, in steps of [`PREALLOC_STEP`] up to [`SEGMENT_SIZE`] (or just what the batch
//! needs when a whole step does not fit): a full disk fails the allocation, so the batch gets
//! its error and nothing of it is written, rather than a write failing in the middle of a
//! record. A batch that
//! does not fit what is left of a segment goes to a new one; the full one is *sealed*, and the
//! `on_seal` callback learns how many messages it holds, so that the queue can delete it once
//! that many are done.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{segment_path, SegmentName, HEADER_LEN, SEGMENT_SIZE};
use crate::spool::SpoolError;
use crate::transport;

/// Segments grow by this much at a time: a preallocation per 4 MiB of mail, not per message.
pub const PREALLOC_STEP: u64 = 4 << 20;
/// Most octets gathered into one batch; the rest waits for the next.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Where a committed record is: its segment and the offset of its header there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Placed {
    /// The segment.
    pub segment: SegmentName,
    /// Where the record's header starts in it.
    pub offset: u64,
}

/// Told when a segment is sealed, with the number of messages committed in it.
pub type OnSeal = Rc<dyn Fn(SegmentName, u64)>;

struct Pending {
    record: Vec<u8>,
    answer: oneshot::Sender<Result<Placed, SpoolError>>,
}

/// One owner's group-committing log writer, on the current ring. Cheap to share (`Rc`).
pub struct LogWriter {
    tx: mpsc::UnboundedSender<Pending>,
    stats: Rc<std::cell::Cell<Stats>>,
}

/// What a [`LogWriter`] has done so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Batches written (each one write and one `fdatasync`).
    pub batches: u64,
    /// Records committed.
    pub records: u64,
    /// Time spent in `fdatasync`.
    pub sync_time: Duration,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("stats", &self.stats.get())
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Starts the writer of `owner` (a worker index) for the run `generation` over `spool`
    /// (whose `log/` exists), spawning its flusher on the current ring. The flusher ends when
    /// the writer is dropped, sealing its last segment.
    pub fn start(spool: &Path, generation: u64, owner: u16, on_seal: OnSeal) -> LogWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Rc::new(std::cell::Cell::new(Stats::default()));
        let flusher = Flusher {
            spool: spool.to_owned(),
            generation,
            owner,
            next_seq: 0,
            active: None,
            on_seal,
            stats: stats.clone(),
            spare: Vec::new(),
        };
        transport::spawn(flusher.run(rx));
        LogWriter { tx, stats }
    }

    /// Commits one encoded record (or several, written together): returns once it is durable,
    /// with where it starts.
    pub async fn commit(&self, record: Vec<u8>) -> Result<Placed, SpoolError> {
        let (answer, verdict) = oneshot::channel();
        let gone = || {
            SpoolError::new(
                "commit",
                Path::new(super::LOG_DIR),
                io::Error::other("the log writer has stopped"),
            )
        };
        self.tx
            .send(Pending { record, answer })
            .map_err(|_| gone())?;
        verdict.await.unwrap_or_else(|_| Err(gone()))
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }
}

/// The segment being appended to.
struct Active {
    name: SegmentName,
    path: PathBuf,
    file: transport::File,
    /// Where the next batch goes.
    end: u64,
    /// How much is preallocated.
    allocated: u64,
    /// Messages committed in it.
    messages: u64,
}

struct Flusher {
    spool: PathBuf,
    generation: u64,
    owner: u16,
    next_seq: u32,
    active: Option<Active>,
    on_seal: OnSeal,
    stats: Rc<std::cell::Cell<Stats>>,
    /// The buffer of the last batch, kept for the next (empty).
    spare: Vec<u8>,
}

impl Flusher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let mut bytes = first.record.len();
            let mut batch = vec![first];
            while bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.record.len();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            // The last batch's buffer, grown to the largest batch so far: a fresh one per batch
            // came from new pages (a fault and a zeroed page each) at every batch.
            let mut buf = std::mem::take(&mut self.spare);
            buf.clear();
            buf.reserve(bytes);
            let mut starts = Vec::with_capacity(batch.len());
            for p in &batch {
                starts.push(buf.len() as u64);
                buf.extend_from_slice(&p.record);
            }
            match self.write(buf, batch.len() as u64).await {
                Ok((segment, base)) => {
                    for (p, start) in batch.into_iter().zip(starts) {
                        let _ = p.answer.send(Ok(Placed {
                            segment,
                            offset: base + start,
                        }));
                    }
                }
                Err(e) => {
                    for p in batch {
                        let copy = SpoolError::new(
                            e.op,
                            &e.path,
                            io::Error::new(e.source.kind(), e.source.to_string()),
                        );
                        let _ = p.answer.send(Err(copy));
                    }
                }
            }
        }
        self.seal().await;
    }

    /// Writes one batch of `count` messages at the end of the active segment (a new one if it
    /// does not fit) and syncs it; returns the segment and where the batch starts.
    async fn write(&mut self, buf: Vec<u8>, count: u64) -> Result<(SegmentName, u64), SpoolError> {
        let len = buf.len() as u64;
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.end.saturating_add(len) > SEGMENT_SIZE)
        {
            self.seal().await;
        }
        let mut active = match self.active.take() {
            Some(active) => active,
            None => self.create().await?,
        };
        let written = Self::append(&mut active, buf, &self.stats, &mut self.spare).await;
        match written {
            Ok(at) => {
                active.messages += count;
                let name = active.name;
                self.active = Some(active);
                let mut stats = self.stats.get();
                stats.batches += 1;
                stats.records += count;
                self.stats.set(stats);
                Ok((name, at))
            }
            Err((e, Some(at))) => {
                // What reached the file may or may not be on disk: blank the batch's first
                // header so that no recovery replays a message whose client was told 451, and
                // leave the segment for a new one (after a failed fsync Linux may have dropped
                // dirty pages, so later syncs of this file would prove nothing).
                let _ = active.file.write_all_at(vec![0u8; HEADER_LEN], at).await;
                let _ = active.file.sync_data().await;
                self.active = Some(active);
                self.seal().await;
                Err(e)
            }
            Err((e, None)) => {
                // Nothing was written (the preallocation failed): the segment stays in use.
                self.active = Some(active);
                Err(e)
            }
        }
    }

    /// Grows `active` if `buf` needs it, writes `buf` at its end and syncs. The error says
    /// where the batch began if anything of it may have been written.
    async fn append(
        active: &mut Active,
        buf: Vec<u8>,
        stats: &std::cell::Cell<Stats>,
        spare: &mut Vec<u8>,
    ) -> Result<u64, (SpoolError, Option<u64>)> {
        let at = active.end;
        let want = at.saturating_add(buf.len() as u64);
        if want > active.allocated {
            let step = want
                .div_ceil(PREALLOC_STEP)
                .saturating_mul(PREALLOC_STEP)
                .min(SEGMENT_SIZE.max(want));
            let from = active.allocated;
            let mut grown = active
                .file
                .fallocate(from, step - from)
                .await
                .map(|()| step);
            if grown.is_err() && step > want {
                // Not room for a whole step: enough for this batch will do.
                grown = active
                    .file
                    .fallocate(from, want - from)
                    .await
                    .map(|()| want);
            }
            active.allocated =
                grown.map_err(|e| (SpoolError::new("fallocate", &active.path, e), None))?;
        }
        let (res, buf) = active.file.write_all_at(buf, at).await;
        *spare = buf;
        res.map_err(|e| (SpoolError::new("write", &active.path, e), Some(at)))?;
        let started = crate::clock::now();
        let synced = active.file.sync_data().await;
        let mut s = stats.get();
        s.sync_time += started.elapsed();
        stats.set(s);
        synced.map_err(|e| (SpoolError::new("fdatasync", &active.path, e), Some(at)))?;
        active.end = want;
        Ok(at)
    }

    async fn create(&mut self) -> Result<Active, SpoolError> {
        let name = SegmentName {
            generation: self.generation,
            owner: self.owner,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let path = segment_path(&self.spool, &name);
        let file = transport::File::create_rw(&path, crate::spool::FILE_MODE)
            .await
            .map_err(|e| SpoolError::new("create", &path, e))?;
        // The new name must be durable before a record in it is acknowledged: fdatasync
        // covers the file, not its directory entry. Once per segment, not per message.
        let dir = self.spool.join(super::LOG_DIR);
        let synced = match transport::File::open_dir(&dir).await {
            Ok(d) => {
                let res = d.sync_all().await;
                let _ = d.close().await;
                res
            }
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            let _ = file.close().await;
            let _ = transport::remove_file(&path).await;
            return Err(SpoolError::new("fsync dir", &dir, e));
        }
        Ok(Active {
            name,
            path,
            file,
            end: 0,
            allocated: 0,
            messages: 0,
        })
    }

    /// Closes the active segment and reports it sealed; one that holds nothing is removed.
    async fn seal(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        let _ = active.file.close().await;
        if active.messages == 0 {
            let _ = transport::remove_file(&active.path).await;
        } else {
            (self.on_seal)(active.name, active.messages);
        }
    }
}

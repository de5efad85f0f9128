//! The per-worker spool writer: a message is gathered in memory while it is received, then
//! committed into the worker's log with others that finished meanwhile (one write, one
//! `fdatasync`); one too large to gather streams into a file of its own under `tmp/`, renamed
//! into `queue/` at commit.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::format::{encode_header, size_field, SIZE_OFFSET};
use super::group::GroupSync;
use super::log::{self, LogWriter, OnSeal, HEADER_LEN};
use super::{
    queue_path, received_header, tmp_path, Place, QueueId, QueueIdGen, Shape, SpoolError,
    TraceInfo, QUEUE_DIR,
};
use crate::protocol::Envelope;
use crate::transport;

/// Largest message (queue-file form: envelope header and content) gathered in memory and
/// committed into the log; a larger one streams into a file of its own. Most mail is far
/// smaller, and a large message pays for its file-system metadata over many octets.
pub const INLINE_MAX: usize = 1 << 20;

/// One worker's spool writer. Single-threaded: share it between the worker's connection tasks
/// through the `Rc` that [`SpoolWriter::open`] returns.
pub struct SpoolWriter {
    dir: PathBuf,
    ids: RefCell<QueueIdGen>,
    /// `queue/`, open so that it can be fsynced after renames into it (large messages).
    queue_dir: transport::File,
    group: GroupSync,
    log: LogWriter,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A message made durable: its id, where it is, and how long its commit waited for syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// For a message in the log, what the queue needs to hand it on without reading it back.
    pub shape: Option<Shape>,
    /// Its queue id.
    pub id: QueueId,
    /// Where it is.
    pub place: Place,
    /// Time spent waiting for `fdatasync`/`fsync` (the metric).
    pub fsync: Duration,
}

impl SpoolWriter {
    /// Opens the writer of one worker over a spool that [`super::prepare`] has set up, taking
    /// ids from `ids` (whose worker index must be this worker's alone; it also names the
    /// worker's log segments). `on_seal` hears of each log segment the worker is done with.
    pub async fn open(
        dir: &Path,
        ids: QueueIdGen,
        on_seal: OnSeal,
    ) -> Result<Rc<SpoolWriter>, SpoolError> {
        let queue = dir.join(QUEUE_DIR);
        let queue_dir = transport::File::open_dir(&queue)
            .await
            .map_err(|e| SpoolError::new("open dir", &queue, e))?;
        let log = LogWriter::start(dir, ids.generation(), ids.worker(), on_seal);
        Ok(Rc::new(SpoolWriter {
            dir: dir.to_owned(),
            ids: RefCell::new(ids),
            queue_dir,
            group: GroupSync::default(),
            log,
        }))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory fsyncs of `queue/` done so far (messages too large for the log).
    pub fn dir_syncs(&self) -> u64 {
        self.group.syncs()
    }

    /// What the log writer has done: with group commit its batches (one `fdatasync` each) stay
    /// below the messages committed under concurrency.
    pub fn log_stats(&self) -> log::Stats {
        self.log.stats()
    }

    /// Starts a message: the envelope header and the `Received:` header for `trace`, in memory.
    /// The body follows through [`Incoming::append`].
    ///
    /// An envelope without recipients is refused (`op` = `begin`): it could never be delivered.
    pub async fn begin(
        self: &Rc<Self>,
        envelope: &Envelope,
        trace: &TraceInfo,
    ) -> Result<Incoming, SpoolError> {
        let id = self.ids.borrow_mut().next();
        let tmp = tmp_path(&self.dir, &id);
        if envelope.rcpt_to.is_empty() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "envelope without recipients");
            return Err(SpoolError::new("begin", &tmp, e));
        }
        let head = encode_header(envelope, &id);
        let message_start = head.len() as u64;
        let received = received_header(trace, &id, &envelope.rcpt_to);
        let mut inline = Vec::with_capacity(HEADER_LEN + head.len() + received.len() + 16 * 1024);
        inline.resize(HEADER_LEN, 0);
        inline.extend_from_slice(&head);
        inline.extend_from_slice(received.as_bytes());
        Ok(Incoming {
            writer: self.clone(),
            id,
            inline: Some(inline),
            file: None,
            tmp,
            offset: 0,
            message_start,
            state: State::Writing,
        })
    }
}

/// Starts timing an fsync wait, for the `Duration` that [`Incoming::commit`] reports. It
/// measures how long an fsync took and never feeds a decision, so passing the time in from the
/// driver would only split one measurement across two modules.
fn stopwatch() -> Instant {
    crate::clock::now()
}

/// Where an [`Incoming`] stands; decides what `Drop` must clean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Takes appends (in memory, or into `tmp/<qid>` once it exists).
    Writing,
    /// A write failed: the message can only be aborted (errors are sticky).
    Poisoned,
    /// Renamed into `queue/`, but the directory is not yet synced: not accepted yet.
    Renamed,
    /// Committed, or cleaned up: nothing left to undo.
    Done,
}

/// A message being written. End it with [`Incoming::commit`] or [`Incoming::abort`]; if it is
/// dropped instead (the connection died mid-`DATA`), `Drop` removes its file if it has one.
pub struct Incoming {
    writer: Rc<SpoolWriter>,
    id: QueueId,
    /// The message in queue-file form after [`HEADER_LEN`] octets kept for the log record's
    /// header, while it is at most [`INLINE_MAX`]; `None` once it streams into `tmp`.
    inline: Option<Vec<u8>>,
    file: Option<transport::File>,
    tmp: PathBuf,
    /// Where the next append to the file goes: the file's length so far.
    offset: u64,
    /// Where the message (our `Received:` header) starts, after the envelope header.
    message_start: u64,
    state: State,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.id)
            .field("inline", &self.inline.as_ref().map(Vec::len))
            .field("offset", &self.offset)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The message's queue id (for the `250 2.0.0 queued as <id>` reply and logs).
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Appends `data` (message bytes, dot-unstuffed, CRLF line ends) and hands the buffer back
    /// emptied for reuse, whether the write succeeded or not. After an error every later
    /// append and the commit fail too.
    pub async fn append(&mut self, mut data: Vec<u8>) -> (Result<(), SpoolError>, Vec<u8>) {
        if self.state != State::Writing {
            data.clear();
            return (Err(self.poisoned()), data);
        }
        if let Some(inline) = &mut self.inline {
            if inline.len() - HEADER_LEN + data.len() <= INLINE_MAX {
                inline.extend_from_slice(&data);
                data.clear();
                return (Ok(()), data);
            }
            if let Err(e) = self.spill().await {
                self.state = State::Poisoned;
                data.clear();
                return (Err(e), data);
            }
        }
        let Some(file) = &self.file else {
            data.clear();
            return (Err(self.poisoned()), data);
        };
        let len = data.len() as u64;
        let (res, buf) = file.write_all_at(data, self.offset).await;
        match res {
            Ok(()) => {
                self.offset += len;
                (Ok(()), buf)
            }
            Err(e) => {
                self.state = State::Poisoned;
                (Err(SpoolError::new("write", &self.tmp, e)), buf)
            }
        }
    }

    /// The message outgrew [`INLINE_MAX`]: creates `tmp/<qid>` and writes what was gathered.
    async fn spill(&mut self) -> Result<(), SpoolError> {
        let Some(inline) = self.inline.take() else {
            return Ok(());
        };
        // 0600 less the umask: a umask can only narrow it.
        let file = transport::File::create_new(&self.tmp, super::FILE_MODE)
            .await
            .map_err(|e| SpoolError::new("create", &self.tmp, e))?;
        self.file = Some(file);
        let mut gathered = inline;
        gathered.drain(..HEADER_LEN);
        let len = gathered.len() as u64;
        let Some(file) = &self.file else {
            return Err(self.poisoned());
        };
        let (res, _) = file.write_all_at(gathered, 0).await;
        res.map_err(|e| SpoolError::new("write", &self.tmp, e))?;
        self.offset = len;
        Ok(())
    }

    /// Makes the message durable. One gathered in memory becomes a log record, committed with
    /// the others its worker finished meanwhile (one write, one `fdatasync`). One in its own
    /// file records its size, is `fdatasync`ed, renamed from `tmp/` into `queue/`, and waits
    /// for an fsync of `queue/` that started after the rename (shared with concurrent commits).
    /// Only then `Ok`; the caller may now send the 250 and hand the message to the queue.
    ///
    /// On error nothing of the message is left to deliver (best effort for a file: it is
    /// removed from wherever it is), so the message the client is told to retry (451) is not
    /// also delivered.
    pub async fn commit(mut self) -> Result<Committed, SpoolError> {
        if self.state != State::Writing {
            return Err(self.poisoned());
        }
        if let Some(mut inline) = self.inline.take() {
            self.state = State::Done;
            let size = (inline.len() - HEADER_LEN) as u64 - self.message_start;
            let at = HEADER_LEN + SIZE_OFFSET as usize;
            let digits = size_field(size);
            if let Some(slot) = inline.get_mut(at..at + digits.len()) {
                slot.copy_from_slice(&digits);
            }
            let shape = Shape {
                message_offset: self.message_start,
                len: size,
                eight_bit: inline
                    .get(HEADER_LEN + self.message_start as usize..)
                    .is_some_and(|m| !m.is_ascii()),
            };
            log::record::seal_in_place(&mut inline, log::Kind::Message, &self.id);
            let started = stopwatch();
            let placed = self.writer.log.commit(inline).await?;
            return Ok(Committed {
                id: self.id,
                place: Place::Log(placed),
                fsync: started.elapsed(),
                shape: Some(shape),
            });
        }
        let Some(file) = self.file.take() else {
            return Err(self.poisoned());
        };
        // From here on, an error leaves `self` in Writing or Renamed and Drop cleans up.
        let size = self.offset.saturating_sub(self.message_start);
        let (res, _) = file.write_all_at(size_field(size), SIZE_OFFSET).await;
        res.map_err(|e| SpoolError::new("write", &self.tmp, e))?;
        let started = stopwatch();
        file.sync_data()
            .await
            .map_err(|e| SpoolError::new("fsync", &self.tmp, e))?;
        let mut fsyncs = started.elapsed();
        file.close()
            .await
            .map_err(|e| SpoolError::new("close", &self.tmp, e))?;
        let queued = queue_path(&self.writer.dir, &self.id);
        transport::rename(&self.tmp, &queued)
            .await
            .map_err(|e| SpoolError::new("rename", &self.tmp, e))?;
        self.state = State::Renamed;
        let started = stopwatch();
        let writer = self.writer.clone();
        let synced = writer.group.sync(|| writer.queue_dir.sync_all()).await;
        fsyncs += started.elapsed();
        if let Err(e) = synced {
            let dir = self.writer.dir.join(QUEUE_DIR);
            if transport::remove_file(&queued).await.is_ok() {
                self.state = State::Done;
            }
            return Err(SpoolError::new("fsync dir", &dir, e));
        }
        self.state = State::Done;
        Ok(Committed {
            id: self.id,
            place: Place::File,
            fsync: fsyncs,
            shape: None,
        })
    }

    /// Abandons the message: drops what was gathered, or closes and removes its file (best
    /// effort; recover() removes what this cannot).
    pub async fn abort(mut self) {
        if self.inline.take().is_some() && self.file.is_none() {
            self.state = State::Done;
            return;
        }
        if let Some(file) = self.file.take() {
            let _ = file.close().await;
        }
        match transport::remove_file(&self.tmp).await {
            Ok(()) => self.state = State::Done,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.state = State::Done,
            // Leave the state as it is: Drop tries once more.
            Err(e) => {
                tracing::warn!(id = %self.id, error = %e, "spool: abort could not remove tmp file")
            }
        }
    }

    fn poisoned(&self) -> SpoolError {
        SpoolError::new(
            "write",
            &self.tmp,
            io::Error::other("an earlier write of this message failed"),
        )
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // Gathered in memory only: nothing on disk to undo.
        if self.inline.is_some() {
            return;
        }
        // A blocking unlink on the worker thread: acceptable because this path is rare (a
        // connection lost mid-DATA of a large message, or a cancelled commit) and an unlink is
        // short, and because the ring has no synchronous API and transport offers no spawn. If
        // it fails, recover() removes tmp/ files at the next start; a Renamed file was never
        // acknowledged.
        let path = match self.state {
            State::Writing | State::Poisoned => self.tmp.clone(),
            State::Renamed => queue_path(&self.writer.dir, &self.id),
            State::Done => return,
        };
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(id = %self.id, path = %path.display(), error = %e, "spool: could not remove abandoned message");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Greeting;
    use crate::spool::log::{read_record, segment_path};
    use crate::spool::tests::envelope;
    use crate::spool::{decode_queued, prepare, read_queued, recover, Queued, TMP_DIR};
    use std::time::UNIX_EPOCH;

    fn trace() -> TraceInfo {
        TraceInfo {
            peer: "192.0.2.1:5000".parse().unwrap(),
            helo: "client.test".into(),
            greeting: Greeting::Ehlo,
            smtputf8: false,
            hostname: "mx.test".into(),
            received_at: UNIX_EPOCH + Duration::from_secs(1_795_837_985),
            tls: None,
            authenticated: false,
            login: None,
        }
    }

    fn count(dir: &Path, sub: &str) -> usize {
        std::fs::read_dir(dir.join(sub)).unwrap().count()
    }

    fn no_seal() -> OnSeal {
        Rc::new(|_, _| {})
    }

    /// Reads a committed message back from wherever it is.
    fn read_back(dir: &Path, c: &Committed) -> Queued {
        match c.place {
            Place::File => read_queued(&queue_path(dir, &c.id)).unwrap(),
            Place::Log(p) => {
                let path = segment_path(dir, &p.segment);
                let (h, payload) = read_record(&path, p.offset).unwrap();
                assert_eq!((h.kind, h.id), (log::Kind::Message, c.id));
                decode_queued(payload, Some(c.id), &path).unwrap()
            }
        }
    }

    /// Writes `content` as one message to `a@example.test` and commits it.
    async fn commit_one(w: &Rc<SpoolWriter>, content: &[u8]) -> Committed {
        let mut m = w
            .begin(&envelope(&["a@example.test"]), &trace())
            .await
            .unwrap();
        let (res, _) = m.append(content.to_vec()).await;
        res.unwrap();
        m.commit().await.unwrap()
    }

    #[test]
    fn an_eight_bit_message_is_described_as_such() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0), no_seal())
                .await
                .unwrap();
            let seven = commit_one(&w, b"Subject: plain\r\n\r\nascii\r\n").await;
            let eight = commit_one(&w, "Subject: caf\u{e9}\r\n\r\nna\u{ef}ve\r\n".as_bytes()).await;
            for (c, want) in [(seven, false), (eight, true)] {
                let shape = c.shape.unwrap();
                let q = read_back(dir.path(), &c);
                assert_eq!(shape.eight_bit, want);
                assert_eq!(q.eight_bit(), want);
                assert_eq!(shape.len, q.message().len() as u64);
                assert_eq!(shape.message_offset, q.message_offset());
            }
        });
    }

    #[test]
    fn commit_puts_exact_bytes_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0), no_seal())
                .await
                .unwrap();
            let env = envelope(&["a@example.test"]);
            let mut m = w.begin(&env, &trace()).await.unwrap();
            let id = *m.id();
            for chunk in [&b"Subject: hi\r\n\r\n"[..], b"line 1\r\n", b"line 2\r\n"] {
                let (res, buf) = m.append(chunk.to_vec()).await;
                res.unwrap();
                assert!(buf.is_empty());
            }
            let committed = m.commit().await.unwrap();
            assert_eq!(committed.id, id);
            assert!(matches!(committed.place, Place::Log(_)));
            let q = read_back(dir.path(), &committed);
            assert_eq!(q.envelope, env);
            let want = received_header(&trace(), &id, &env.rcpt_to)
                + "Subject: hi\r\n\r\nline 1\r\nline 2\r\n";
            assert_eq!(q.message(), want.as_bytes());
            // What the worker tells the queue is what the queue would read back.
            let described = Queued::described(id, env.clone(), committed.shape.unwrap());
            assert_eq!(described.message_offset(), q.message_offset());
            assert_eq!(described.message_len(), q.message().len() as u64);
            assert!(!described.eight_bit() && !q.eight_bit());
            // No file per message anywhere.
            assert_eq!(count(dir.path(), TMP_DIR), 0);
            assert_eq!(count(dir.path(), QUEUE_DIR), 0);
        });
    }

    #[test]
    fn a_message_larger_than_inline_max_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0), no_seal())
                .await
                .unwrap();
            let env = envelope(&["a@example.test"]);
            let mut m = w.begin(&env, &trace()).await.unwrap();
            let line = vec![b'x'; 998];
            let mut body = Vec::new();
            while body.len() <= INLINE_MAX {
                let mut piece = line.clone();
                piece.extend_from_slice(b"\r\n");
                body.extend_from_slice(&piece);
                let (res, _) = m.append(piece).await;
                res.unwrap();
            }
            assert_eq!(
                count(dir.path(), TMP_DIR),
                1,
                "streams into tmp/ once past the limit"
            );
            let committed = m.commit().await.unwrap();
            assert_eq!(committed.place, Place::File);
            let q = read_back(dir.path(), &committed);
            assert!(q.message().ends_with(&body));
            assert_eq!(count(dir.path(), TMP_DIR), 0);
        });
    }

    #[test]
    fn concurrent_commits_share_one_write_and_fdatasync() {
        const N: usize = 32;
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0), no_seal())
                .await
                .unwrap();
            let tasks: Vec<_> = (0..N)
                .map(|i| {
                    let w = w.clone();
                    crate::transport::spawn(async move {
                        let mut m = w.begin(&envelope(&["a@example.test"]), &trace()).await?;
                        let (res, _) = m.append(format!("message {i}\r\n").into_bytes()).await;
                        res?;
                        m.commit().await
                    })
                })
                .collect();
            let mut committed = Vec::new();
            for t in tasks {
                committed.push(t.await.unwrap().unwrap());
            }
            let stats = w.log_stats();
            assert_eq!(stats.records, N as u64);
            assert!(
                stats.batches < N as u64 && stats.batches >= 1,
                "{} batches for {N} commits",
                stats.batches
            );
            for (i, c) in committed.iter().enumerate() {
                let q = read_back(dir.path(), c);
                assert!(q.message().ends_with(format!("message {i}\r\n").as_bytes()));
            }
        });
        assert_eq!(count(dir.path(), QUEUE_DIR), 0);
        assert_eq!(count(dir.path(), TMP_DIR), 0);
        assert_eq!(count(dir.path(), log::LOG_DIR), 1, "one segment for all");
    }

    #[test]
    fn a_full_segment_is_sealed_with_its_count_and_the_next_one_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        let sealed = Rc::new(RefCell::new(Vec::new()));
        crate::transport::run(256, async {
            let seen = sealed.clone();
            let on_seal: OnSeal = Rc::new(move |name, n| seen.borrow_mut().push((name, n)));
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 3), on_seal)
                .await
                .unwrap();
            // Messages just under INLINE_MAX: a 64 MiB segment holds 63 of them.
            let body = vec![b'y'; INLINE_MAX - 4096];
            let mut places = Vec::new();
            for _ in 0..70 {
                let mut m = w
                    .begin(&envelope(&["a@example.test"]), &trace())
                    .await
                    .unwrap();
                let (res, _) = m.append(body.clone()).await;
                res.unwrap();
                places.push(m.commit().await.unwrap());
            }
            let segments: std::collections::BTreeSet<_> = places
                .iter()
                .map(|c| match c.place {
                    Place::Log(p) => p.segment,
                    Place::File => panic!("not in the log"),
                })
                .collect();
            assert_eq!(segments.len(), 2);
            let first = *segments.iter().next().unwrap();
            assert_eq!((first.owner, first.seq), (3, 0));
            let n = places
                .iter()
                .filter(|c| matches!(c.place, Place::Log(p) if p.segment == first))
                .count() as u64;
            assert_eq!(*sealed.borrow(), vec![(first, n)]);
            for c in &places {
                read_back(dir.path(), c);
            }
        });
    }

    #[test]
    fn abort_and_drop_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0), no_seal())
                .await
                .unwrap();
            let m = w
                .begin(&envelope(&["a@example.test"]), &trace())
                .await
                .unwrap();
            m.abort().await;
            let mut m = w
                .begin(&envelope(&["a@example.test"]), &trace())
                .await
                .unwrap();
            let (res, _) = m.append(vec![b'z'; INLINE_MAX + 1]).await;
            res.unwrap();
            assert_eq!(count(dir.path(), TMP_DIR), 1);
            drop(m);
        });
        assert_eq!(count(dir.path(), TMP_DIR), 0);
        assert_eq!(count(dir.path(), QUEUE_DIR), 0);
        assert_eq!(
            count(dir.path(), log::LOG_DIR),
            0,
            "no segment without a message"
        );
        assert_eq!(recover(dir.path()).unwrap(), vec![]);
    }

    #[test]
    fn errors_name_op_and_path() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0), no_seal())
                .await
                .unwrap();
            std::fs::remove_dir(dir.path().join(log::LOG_DIR)).unwrap();
            let m = w
                .begin(&envelope(&["a@example.test"]), &trace())
                .await
                .unwrap();
            let err = m.commit().await.unwrap_err();
            assert_eq!(err.op, "create");
            let text = err.to_string();
            assert!(
                text.starts_with("spool create ") && text.contains("/log/"),
                "{text}"
            );
            let err = w.begin(&envelope(&[]), &trace()).await.unwrap_err();
            assert_eq!(err.op, "begin");
        });
        let missing = tempfile::tempdir().unwrap();
        crate::transport::run(256, async {
            let err = SpoolWriter::open(
                &missing.path().join("nope"),
                QueueIdGen::new(1, 0),
                no_seal(),
            )
            .await
            .unwrap_err();
            assert_eq!(err.op, "open dir");
        });
    }
}

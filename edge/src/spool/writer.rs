//! The per-worker spool writer: message bytes go to disk through the ring, and a commit returns
//! only once the message is durable under `queue/`.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::format::{encode_header, size_field, SIZE_OFFSET};
use super::group::GroupSync;
use super::{
    queue_path, received_header, tmp_path, QueueId, QueueIdGen, SpoolError, TraceInfo, QUEUE_DIR,
};
use crate::protocol::Envelope;
use crate::transport;

/// One worker's spool writer. Single-threaded: share it between the worker's connection tasks
/// through the `Rc` that [`SpoolWriter::open`] returns.
pub struct SpoolWriter {
    dir: PathBuf,
    ids: RefCell<QueueIdGen>,
    /// `queue/`, open so that it can be fsynced after renames into it.
    queue_dir: transport::File,
    group: GroupSync,
}

impl std::fmt::Debug for SpoolWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SpoolWriter {
    /// Opens the writer of one worker over a spool that [`super::prepare`] has set up, taking
    /// ids from `ids` (whose worker index must be this worker's alone).
    pub async fn open(dir: &Path, ids: QueueIdGen) -> Result<Rc<SpoolWriter>, SpoolError> {
        let queue = dir.join(QUEUE_DIR);
        let queue_dir = transport::File::open_dir(&queue)
            .await
            .map_err(|e| SpoolError::new("open dir", &queue, e))?;
        Ok(Rc::new(SpoolWriter {
            dir: dir.to_owned(),
            ids: RefCell::new(ids),
            queue_dir,
            group: GroupSync::default(),
        }))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory fsyncs of `queue/` done so far; with group commit this stays below the number of
    /// commits under concurrency (a metric, and the proof in tests).
    pub fn dir_syncs(&self) -> u64 {
        self.group.syncs()
    }

    /// Starts a message: creates `tmp/<qid>` (exclusively) and writes the envelope header and the
    /// `Received:` header for `trace`. The body follows through [`Incoming::append`].
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
        // 0600 less the umask: a umask can only narrow it.
        let file = transport::File::create_new(&tmp, super::FILE_MODE)
            .await
            .map_err(|e| SpoolError::new("create", &tmp, e))?;
        let mut head = encode_header(envelope, &id);
        let message_start = head.len() as u64;
        head.extend_from_slice(received_header(trace, &id, &envelope.rcpt_to).as_bytes());
        let mut incoming = Incoming {
            writer: self.clone(),
            id,
            file: Some(file),
            tmp,
            offset: 0,
            message_start,
            state: State::Writing,
        };
        let (res, _) = incoming.append(head).await;
        match res {
            Ok(()) => Ok(incoming),
            Err(e) => {
                incoming.abort().await;
                Err(e)
            }
        }
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
    /// `tmp/<qid>` exists and takes appends.
    Writing,
    /// A write failed: the message can only be aborted (errors are sticky).
    Poisoned,
    /// Renamed into `queue/`, but the directory is not yet synced: not accepted yet.
    Renamed,
    /// Committed, or cleaned up: nothing left to undo.
    Done,
}

/// A message being written. End it with [`Incoming::commit`] or [`Incoming::abort`]; if it is
/// dropped instead (the connection died mid-`DATA`), `Drop` removes its file.
pub struct Incoming {
    writer: Rc<SpoolWriter>,
    id: QueueId,
    file: Option<transport::File>,
    tmp: PathBuf,
    /// Where the next append goes: the file's length so far.
    offset: u64,
    /// Where the message (our `Received:` header) starts, after the envelope header.
    message_start: u64,
    state: State,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("id", &self.id)
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
    pub async fn append(&mut self, data: Vec<u8>) -> (Result<(), SpoolError>, Vec<u8>) {
        let file = match (&self.file, self.state) {
            (Some(file), State::Writing) => file,
            _ => {
                let mut data = data;
                data.clear();
                return (Err(self.poisoned()), data);
            }
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

    /// Makes the message durable in `queue/`: records its size, `fdatasync`s and closes the
    /// file, renames it from `tmp/` into `queue/`, then waits for an fsync of `queue/` that
    /// started after the rename (shared with concurrent commits). Only then `Ok`, with the time
    /// spent waiting for fsyncs; the caller may now send the 250 and hand the id to delivery.
    ///
    /// On error the file is removed from wherever it is (best effort), so the message the
    /// client is told to retry (451) is not also delivered.
    pub async fn commit(mut self) -> Result<(QueueId, Duration), SpoolError> {
        let (file, State::Writing) = (self.file.take(), self.state) else {
            return Err(self.poisoned());
        };
        let Some(file) = file else {
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
        Ok((self.id, fsyncs))
    }

    /// Abandons the message: closes and removes its file (best effort; recover() removes what
    /// this cannot).
    pub async fn abort(mut self) {
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
        // A blocking unlink on the worker thread: acceptable because this path is rare (a
        // connection lost mid-DATA, or a cancelled commit) and an unlink is short, and because
        // the ring has no synchronous API and transport offers no spawn. If it fails, recover()
        // removes tmp/ files at the next start; a Renamed file was never acknowledged.
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
    use crate::spool::tests::envelope;
    use crate::spool::{prepare, read_queued, recover, TMP_DIR};
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

    #[test]
    fn commit_publishes_exact_bytes_in_queue() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0))
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
            let (committed, _) = m.commit().await.unwrap();
            assert_eq!(committed, id);
            let q = read_queued(&queue_path(dir.path(), &id)).unwrap();
            assert_eq!(q.envelope, env);
            let want = received_header(&trace(), &id, &env.rcpt_to)
                + "Subject: hi\r\n\r\nline 1\r\nline 2\r\n";
            assert_eq!(q.message(), want.as_bytes());
            assert_eq!(count(dir.path(), TMP_DIR), 0);
        });
    }

    #[test]
    fn concurrent_commits_share_directory_fsyncs() {
        const N: usize = 32;
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0))
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
            let mut ids = Vec::new();
            for t in tasks {
                ids.push(t.await.unwrap().unwrap().0);
            }
            assert!(
                w.dir_syncs() < N as u64,
                "{} dir fsyncs for {N} commits",
                w.dir_syncs()
            );
            assert!(w.dir_syncs() >= 1);
            for id in &ids {
                read_queued(&queue_path(dir.path(), id)).unwrap();
            }
        });
        assert_eq!(count(dir.path(), QUEUE_DIR), N);
        assert_eq!(count(dir.path(), TMP_DIR), 0);
    }

    #[test]
    fn abort_and_drop_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0))
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
            let (res, _) = m.append(b"partial".to_vec()).await;
            res.unwrap();
            assert_eq!(count(dir.path(), TMP_DIR), 1);
            drop(m);
        });
        assert_eq!(count(dir.path(), TMP_DIR), 0);
        assert_eq!(count(dir.path(), QUEUE_DIR), 0);
        assert_eq!(recover(dir.path()).unwrap(), vec![]);
    }

    #[test]
    fn errors_name_op_and_path() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        crate::transport::run(256, async {
            let w = SpoolWriter::open(dir.path(), QueueIdGen::new(1, 0))
                .await
                .unwrap();
            std::fs::remove_dir(dir.path().join(TMP_DIR)).unwrap();
            let err = w
                .begin(&envelope(&["a@example.test"]), &trace())
                .await
                .unwrap_err();
            assert_eq!(err.op, "create");
            let text = err.to_string();
            assert!(
                text.starts_with("spool create ") && text.contains("/tmp/"),
                "{text}"
            );
            let err = w.begin(&envelope(&[]), &trace()).await.unwrap_err();
            assert_eq!(err.op, "begin");
        });
        let missing = tempfile::tempdir().unwrap();
        crate::transport::run(256, async {
            let err = SpoolWriter::open(&missing.path().join("nope"), QueueIdGen::new(1, 0))
                .await
                .unwrap_err();
            assert_eq!(err.op, "open dir");
        });
    }
}

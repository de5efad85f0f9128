//! The spool: where an accepted message becomes durable before the 250 that takes responsibility
//! for it ([RFC 5321 §6.1]).
//!
//! ```text
//!  <spool.dir>/log/<segment>  the log: committed messages of up to INLINE_MAX octets, many per
//!                             write and fdatasync, and the queue's own records (see log/)
//!  <spool.dir>/tmp/<qid>      a larger message being written; never delivered; deleted by recover()
//!  <spool.dir>/queue/<qid>    a larger message, complete and fsynced (file and directory)
//! ```
//!
//! A worker's [`SpoolWriter`] gathers the envelope header ([`format`](mod@format)), the
//! [`received_header`] and the body in memory; [`Incoming::commit`] hands the whole as one
//! checksummed record to the worker's [`log::LogWriter`], which writes every record its
//! sessions committed meanwhile with one write and one `fdatasync` (group commit) before any of
//! them is answered. A message that outgrows [`INLINE_MAX`] streams into `tmp/<qid>` instead,
//! which commit syncs, renames into `queue/` and publishes with a directory fsync shared between
//! concurrent commits. Nothing half-written is ever delivered: a record counts only whole and
//! with its checksums right, a file only once renamed after its data is on disk. Every failure
//! is a [`SpoolError`], which the driver answers with `451 4.3.0`.
//!
//! Startup takes the [`SpoolLock`] first (one server per spool), then calls [`prepare`],
//! [`next_generation`] and [`recover`] (through `delivery::start`) **before** any worker opens a
//! writer, since recover() empties `tmp/`.
//!
//! Everything in the spool is private to the server: directories are mode 0700 and files 0600,
//! set explicitly so that no umask can widen them.
//!
//! [RFC 5321 §6.1]: https://www.rfc-editor.org/rfc/rfc5321#section-6.1

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub mod format;
mod group;
mod id;
mod instance;
pub mod log;
mod trace;
mod writer;

pub use format::{encode_file, encode_header, FormatError};
pub use id::{ParseQueueIdError, QueueId, QueueIdGen, QUEUE_ID_LEN};
pub use instance::{next_generation, LockError, SpoolLock, GENERATION_FILE};
pub use trace::{
    push_date_time, received_header, TlsTrace, TraceInfo, WithProtocol, MAX_TRACE_HELO,
};
pub use writer::{Committed, Incoming, SpoolWriter, INLINE_MAX};

use crate::protocol::Envelope;

/// Subdirectory of files being written.
pub const TMP_DIR: &str = "tmp";
/// Subdirectory of committed files waiting for delivery.
pub const QUEUE_DIR: &str = "queue";

/// What the queue needs of a message committed to the log to hand it to the relay without
/// reading it back: the committing worker knows it, having just written the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Where the message starts in the record's payload (after the envelope header).
    pub message_offset: u64,
    /// The message's length in octets.
    pub len: u64,
    /// Whether it holds an octet above 127 (8BITMIME matters to the next hop).
    pub eight_bit: bool,
}

/// Where a committed message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Place {
    /// Its own file, `queue/<qid>`.
    File,
    /// A record in the log.
    Log(log::Placed),
}

/// Mode of every spool directory: the owner's alone.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every spool file: the owner's alone.
pub const FILE_MODE: u32 = 0o600;

/// A spool operation failed; the message was not accepted (`451 4.3.0`, [RFC 3463]) and nothing
/// of it will be delivered.
///
/// [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463
#[derive(Debug, thiserror::Error)]
#[error("spool {op} {}: {source}", path.display())]
pub struct SpoolError {
    /// What was being done: `create`, `write`, `fsync`, `rename`, `fsync dir`, `read`, ...
    pub op: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The OS error (or `InvalidData` wrapping a [`FormatError`]).
    #[source]
    pub source: io::Error,
}

impl SpoolError {
    pub(crate) fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        SpoolError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// `<dir>/tmp/<id>`.
pub fn tmp_path(dir: &Path, id: &QueueId) -> PathBuf {
    dir.join(TMP_DIR).join(id.as_str())
}

/// `<dir>/queue/<id>`.
pub fn queue_path(dir: &Path, id: &QueueId) -> PathBuf {
    dir.join(QUEUE_DIR).join(id.as_str())
}

/// Creates `dir` and its `tmp/`, `queue/` and `log/` if missing, and makes each of them
/// mode 0700, whatever they were (blocking; startup only).
pub fn prepare(dir: &Path) -> Result<(), SpoolError> {
    instance::create_private_dir(dir)?;
    for sub in [TMP_DIR, QUEUE_DIR, log::LOG_DIR] {
        instance::create_private_dir(&dir.join(sub))?;
    }
    Ok(())
}

/// Startup recovery (blocking; call before any [`SpoolWriter`] exists): deletes every file in
/// `tmp/` (a crash mid-write, whose client never got a 250) and returns the ids in `queue/`,
/// oldest first (by modification time, then id). Names in `queue/` that are not queue ids are
/// left alone and logged, never deleted.
pub fn recover(dir: &Path) -> Result<Vec<QueueId>, SpoolError> {
    prepare(dir)?;
    let tmp = dir.join(TMP_DIR);
    for entry in fs::read_dir(&tmp).map_err(|e| SpoolError::new("read dir", &tmp, e))? {
        let entry = entry.map_err(|e| SpoolError::new("read dir", &tmp, e))?;
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "spool: removed unfinished message"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::new("remove", &path, e)),
        }
    }
    let queue = dir.join(QUEUE_DIR);
    let mut found: Vec<(SystemTime, QueueId)> = Vec::new();
    for entry in fs::read_dir(&queue).map_err(|e| SpoolError::new("read dir", &queue, e))? {
        let entry = entry.map_err(|e| SpoolError::new("read dir", &queue, e))?;
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<QueueId>().ok())
        else {
            tracing::warn!(path = %entry.path().display(), "spool: ignoring foreign file in queue");
            continue;
        };
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((mtime, id));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

/// A committed message read back from `queue/` for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its id.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    data: Vec<u8>,
    message_offset: usize,
    /// The message's length: kept when the message itself is not held.
    len: u64,
    /// Whether the message has an octet above 127, once known.
    eight_bit: Option<bool>,
}

impl Queued {
    /// The message exactly as it is to be delivered, starting with our `Received:` header.
    pub fn message(&self) -> &[u8] {
        self.data.get(self.message_offset..).unwrap_or_default()
    }

    /// Where [`Queued::message`] starts in the file: after the envelope header.
    pub fn message_offset(&self) -> u64 {
        self.message_offset as u64
    }

    /// The message's length in octets, held or not.
    pub fn message_len(&self) -> u64 {
        self.len
    }

    /// Whether the message has an octet above 127.
    pub fn eight_bit(&self) -> bool {
        self.eight_bit.unwrap_or_else(|| !self.message().is_ascii())
    }

    /// A message committed to the log, known by its envelope and [`Shape`] without being read
    /// back: [`Queued::is_released`] (the message itself is not held).
    pub fn described(id: QueueId, envelope: Envelope, shape: Shape) -> Queued {
        Queued {
            id,
            envelope,
            data: Vec::new(),
            message_offset: usize::try_from(shape.message_offset).unwrap_or(usize::MAX),
            len: shape.len,
            eight_bit: Some(shape.eight_bit),
        }
    }

    /// Frees the message, keeping the envelope: while the relay carries it (reading it from
    /// the spool), the queue needs only the envelope, and a backlog of messages in flight
    /// should not hold every one of them in memory. [`Queued::message`] is empty after this.
    pub fn release_message(&mut self) {
        self.eight_bit = Some(self.eight_bit());
        self.data = Vec::new();
    }

    /// Whether the message itself is not held ([`Queued::release_message`], [`Queued::described`]).
    pub fn is_released(&self) -> bool {
        // A decoded queue file always has its envelope header.
        self.data.is_empty()
    }
}

/// Reads and checks a queue file (blocking; the delivery thread's side). A file that is not a
/// complete, committed queue file, or whose header names another id than its file name, is an
/// error (`op` = `decode`), never a panic and never a partial message.
pub fn read_queued(path: &Path) -> Result<Queued, SpoolError> {
    let data = fs::read(path).map_err(|e| SpoolError::new("read", path, e))?;
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok());
    decode_queued(data, named, path)
}

/// Checks a message in queue-file form (`data`, read from `path`) and that its header names
/// `expected`: an error (`op` = `decode`) for anything else, never a partial message.
pub fn decode_queued(
    data: Vec<u8>,
    expected: Option<QueueId>,
    path: &Path,
) -> Result<Queued, SpoolError> {
    let bad = |e: FormatError| {
        SpoolError::new(
            "decode",
            path,
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    };
    let decoded = format::decode(&data).map_err(bad)?;
    if expected != Some(decoded.id) {
        return Err(bad(FormatError::IdMismatch(decoded.id.to_string())));
    }
    let len = data.len().saturating_sub(decoded.message_offset) as u64;
    Ok(Queued {
        id: decoded.id,
        envelope: decoded.envelope,
        data,
        message_offset: decoded.message_offset,
        len,
        eight_bit: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{address::parse_mailbox, BodyType, Greeting};

    pub(crate) fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            helo: "client.test".into(),
            greeting: Greeting::Ehlo,
            mail_from: Some(parse_mailbox("sender@example.test").unwrap()),
            rcpt_to: rcpts.iter().map(|r| parse_mailbox(r).unwrap()).collect(),
            body: BodyType::SevenBit,
            smtputf8: false,
            login: None,
        }
    }

    #[test]
    fn recover_empties_tmp_and_lists_queue_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        let mut gen = QueueIdGen::new(7, 0);
        let ids: Vec<_> = (0..3).map(|_| gen.next()).collect();
        // Written newest id first, so mtime order differs from id order.
        for (i, id) in ids.iter().rev().enumerate() {
            let p = queue_path(dir.path(), id);
            fs::write(&p, b"x").unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        fs::write(tmp_path(dir.path(), &gen.next()), b"half").unwrap();
        fs::write(dir.path().join(QUEUE_DIR).join("README"), b"not ours").unwrap();
        let found = recover(dir.path()).unwrap();
        assert_eq!(found, ids.iter().rev().copied().collect::<Vec<_>>());
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
        assert!(dir.path().join(QUEUE_DIR).join("README").exists());
    }

    #[test]
    fn read_queued_checks_name_and_content() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        let mut gen = QueueIdGen::new(7, 0);
        let (a, b) = (gen.next(), gen.next());
        let env = envelope(&["rcpt@example.test"]);
        let file = format::committed_file(&env, &a, b"Received: x\r\n\r\nhi\r\n");
        fs::write(queue_path(dir.path(), &a), &file).unwrap();
        let q = read_queued(&queue_path(dir.path(), &a)).unwrap();
        assert_eq!(
            (q.id, &q.envelope, q.message()),
            (a, &env, &b"Received: x\r\n\r\nhi\r\n"[..])
        );
        // The same bytes under another name are refused: the header's id is authoritative.
        fs::write(queue_path(dir.path(), &b), &file).unwrap();
        let err = read_queued(&queue_path(dir.path(), &b)).unwrap_err();
        assert_eq!(err.op, "decode");
        assert!(err.to_string().contains(b.as_str()), "{err}");
    }
}

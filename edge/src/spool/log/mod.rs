//! The spool log: append-only segment files of checksummed records, the storage that lets many
//! messages share one write and one `fdatasync`.
//!
//! ```text
//!  <spool.dir>/log/<generation>-<owner>-<seq>.seg    16 + 4 + 8 hex digits
//!     record · record · record · … · zeros (preallocated, not written yet)
//! ```
//!
//! Each writer (a worker, or the queue) owns its segments: it creates one at a time, grows it
//! with `fallocate` ahead of the writes (in steps of [`PREALLOC_STEP`], up to [`SEGMENT_SIZE`])
//! so that appending a record never allocates, writes records at its end, and moves on to a new
//! segment when a write would not fit. A new segment's directory entry is synced before any
//! record in it is acknowledged. Names sort
//! in the order segments were created (the generation is the run's, see
//! [`crate::spool::next_generation`]), so a scan replays them in order.
//!
//! - [`record`]: the record format (a header with two CRC-32C checksums, then the payload).
//! - [`scan`](mod@scan): recovery, which stops at a torn tail, repairs a header with one
//!   flipped bit, and skips a record whose payload fails its checksum.
//!
//! - [`LogWriter`]: a worker's writer on its ring, with group commit.
//!
//! A [`Segment`] here is the blocking writer (startup, the queue's thread, tests).

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub mod record;
pub mod scan;
mod writer;

pub use record::{Kind, HEADER_LEN, MAX_PAYLOAD};
pub use scan::{Found, Scanned, Skipped, Tail};
pub use writer::{LogWriter, OnSeal, Placed, Stats, PREALLOC_STEP};

use super::SpoolError;

/// Subdirectory of segments.
pub const LOG_DIR: &str = "log";
/// Largest size of a segment. Large enough that creating one is rare (one file per 64 MiB of
/// mail, instead of one per message), small enough that a segment pinned by one long-deferred
/// message wastes little.
pub const SEGMENT_SIZE: u64 = 64 << 20;

/// A segment's name: who wrote it, in which run, in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// The run that wrote it.
    pub generation: u64,
    /// The writer: a worker index, or the queue's own.
    pub owner: u16,
    /// Its place among its writer's segments in that run, from 0.
    pub seq: u32,
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016X}-{:04X}-{:08X}.seg",
            self.generation, self.owner, self.seq
        )
    }
}

/// Why a file name is not a [`SegmentName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a segment name")]
pub struct ParseSegmentNameError;

impl FromStr for SegmentName {
    type Err = ParseSegmentNameError;

    /// Accepts exactly what `Display` writes (uppercase hex, fixed widths).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = |part: &str, width: usize| {
            (part.len() == width
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
            .then(|| u64::from_str_radix(part, 16).ok())
            .flatten()
        };
        let stem = s.strip_suffix(".seg").ok_or(ParseSegmentNameError)?;
        let mut parts = stem.split('-');
        let (Some(g), Some(o), Some(q), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseSegmentNameError);
        };
        Ok(SegmentName {
            generation: hex(g, 16).ok_or(ParseSegmentNameError)?,
            owner: hex(o, 4)
                .and_then(|v| u16::try_from(v).ok())
                .ok_or(ParseSegmentNameError)?,
            seq: hex(q, 8)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or(ParseSegmentNameError)?,
        })
    }
}

fn err(op: &'static str, path: &Path, source: io::Error) -> SpoolError {
    SpoolError::new(op, path, source)
}

/// `<spool>/log/<name>`.
pub fn segment_path(spool: &Path, name: &SegmentName) -> PathBuf {
    spool.join(LOG_DIR).join(name.to_string())
}

/// The segments in `<spool>/log/`, in the order they were written. Other names are logged and
/// left alone.
pub fn list(spool: &Path) -> Result<Vec<SegmentName>, SpoolError> {
    let dir = spool.join(LOG_DIR);
    let mut names = Vec::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(err("read dir", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| err("read dir", &dir, e))?;
        match entry.file_name().to_str().map(str::parse::<SegmentName>) {
            Some(Ok(name)) => names.push(name),
            _ => {
                tracing::warn!(path = %entry.path().display(), "spool: ignoring foreign file in log")
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Reads a segment back (blocking) and scans it, logging each record skipped for a bad
/// checksum, each damaged header repaired, and a torn tail.
pub fn recover(path: &Path) -> Result<Scanned, SpoolError> {
    let bytes = fs::read(path).map_err(|e| err("read", path, e))?;
    let scanned = scan::scan(&bytes);
    for s in &scanned.skipped {
        tracing::error!(
            path = %path.display(),
            offset = s.offset,
            id = %s.id,
            kind = ?s.kind,
            "spool: record checksum mismatch; record skipped"
        );
    }
    for d in &scanned.damaged {
        tracing::error!(
            path = %path.display(),
            offset = d.at,
            why = d.why,
            "spool: damaged record header repaired (one flipped bit); the scan goes on"
        );
    }
    if let Tail::Torn { at, why } = scanned.tail {
        tracing::warn!(path = %path.display(), offset = at, why, "spool: segment ends in a torn record; the rest is ignored");
    }
    Ok(scanned)
}

/// Reads one record's payload (blocking) and checks both checksums again (a header with one
/// flipped bit is repaired, as the scan does): what is delivered is what was written, or an
/// error (`op` = `decode`).
pub fn read_record(path: &Path, offset: u64) -> Result<(record::Header, Vec<u8>), SpoolError> {
    let file = File::open(path).map_err(|e| err("open", path, e))?;
    read_record_at(&file, path, offset)
}

/// [`read_record`] from a segment already open (`path` is for errors).
pub fn read_record_at(
    file: &File,
    path: &Path,
    offset: u64,
) -> Result<(record::Header, Vec<u8>), SpoolError> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, offset)
        .map_err(|e| err("read", path, e))?;
    let bad = |what: String| {
        err(
            "decode",
            path,
            io::Error::new(io::ErrorKind::InvalidData, what),
        )
    };
    // A header with one flipped bit is read as recovery read it (repaired), so that what the
    // scan found can be copied forward and delivered.
    let header = record::decode_header(&header)
        .or_else(|e| record::repair(&header).ok_or(e))
        .map_err(|e| bad(format!("record at {offset}: {e}")))?;
    let mut payload = vec![0u8; header.len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)
        .map_err(|e| err("read", path, e))?;
    if !record::payload_ok(&header, &payload) {
        return Err(bad(format!(
            "record at {offset}: payload checksum mismatch"
        )));
    }
    Ok((header, payload))
}

/// Creates a segment file (exclusively, mode 0600) and syncs the directory; [`Segment::append`]
/// allocates its space ahead of the writes.
pub fn create(path: &Path) -> Result<File, SpoolError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(super::FILE_MODE)
        .open(path)
        .map_err(|e| err("create", path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("fsync dir", dir, e))?;
    }
    Ok(file)
}

fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: the descriptor is open for writing and owned by `file` for the whole call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A segment being appended to with blocking writes: the queue's own records (notices, state,
/// done marks), written from its thread.
#[derive(Debug)]
pub struct Segment {
    name: SegmentName,
    path: PathBuf,
    file: File,
    /// Where the next record goes.
    end: u64,
    /// How much is preallocated.
    allocated: u64,
}

impl Segment {
    /// Creates segment `name` in `spool`'s log.
    pub fn create(spool: &Path, name: SegmentName) -> Result<Segment, SpoolError> {
        let path = segment_path(spool, &name);
        let file = create(&path)?;
        Ok(Segment {
            name,
            path,
            file,
            end: 0,
            allocated: 0,
        })
    }

    /// Its name.
    pub fn name(&self) -> SegmentName {
        self.name
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `len` more octets fit.
    pub fn fits(&self, len: usize) -> bool {
        self.end.saturating_add(len as u64) <= SEGMENT_SIZE
    }

    /// Writes `records` (whole encoded records) at the end; returns where they start. Not
    /// durable until [`Segment::sync`].
    pub fn append(&mut self, records: &[u8]) -> Result<u64, SpoolError> {
        if !self.fits(records.len()) {
            let e = io::Error::new(io::ErrorKind::StorageFull, "segment full");
            return Err(err("write", &self.path, e));
        }
        let at = self.end;
        let want = at + records.len() as u64;
        if want > self.allocated {
            let step = (want.div_ceil(PREALLOC_STEP) * PREALLOC_STEP).min(SEGMENT_SIZE);
            let from = self.allocated;
            let grown = preallocate(&self.file, from, step - from)
                .map(|()| step)
                // Not room for a whole step: enough for these records will do.
                .or_else(|_| preallocate(&self.file, from, want - from).map(|()| want));
            self.allocated = grown.map_err(|e| err("fallocate", &self.path, e))?;
        }
        self.file
            .write_all_at(records, at)
            .map_err(|e| err("write", &self.path, e))?;
        self.end += records.len() as u64;
        Ok(at)
    }

    /// `fdatasync`: every record appended so far is durable once this returns `Ok`.
    pub fn sync(&self) -> Result<(), SpoolError> {
        self.file
            .sync_data()
            .map_err(|e| err("fdatasync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::log::record::encode;
    use crate::spool::QueueId;

    #[test]
    fn names_round_trip_and_sort_in_write_order() {
        let a = SegmentName {
            generation: 0x1234,
            owner: 2,
            seq: 9,
        };
        assert_eq!(a.to_string(), "0000000000001234-0002-00000009.seg");
        assert_eq!(a.to_string().parse(), Ok(a));
        let later = SegmentName { seq: 10, ..a };
        assert!(a.to_string() < later.to_string() && a < later);
        for bad in [
            "0000000000001234-0002-00000009",
            "0000000000001234-0002-0000000a.seg",
            "000000000001234-0002-00000009.seg",
            "0000000000001234-0002-00000009-1.seg",
            ".0000000000001234-0002-00000009.seg",
        ] {
            assert!(bad.parse::<SegmentName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn appended_records_are_read_back_and_a_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(LOG_DIR)).unwrap();
        let name = SegmentName {
            generation: 1,
            owner: 0,
            seq: 0,
        };
        let mut seg = Segment::create(dir.path(), name).unwrap();
        assert_eq!(
            fs::metadata(seg.path()).unwrap().len(),
            0,
            "allocated as records need it"
        );
        let (a, b) = (QueueId::from_parts(1, 0, 1), QueueId::from_parts(1, 0, 2));
        let mut batch = Vec::new();
        encode(&mut batch, Kind::Message, &a, b"message a");
        let second_at = batch.len() as u64;
        encode(&mut batch, Kind::Message, &b, b"message b");
        assert_eq!(seg.append(&batch).unwrap(), 0);
        seg.sync().unwrap();
        let scanned = recover(seg.path()).unwrap();
        assert_eq!(scanned.records.len(), 2);
        assert_eq!(scanned.end, batch.len() as u64);
        let (h, payload) = read_record(seg.path(), second_at).unwrap();
        assert_eq!((h.id, &payload[..]), (b, &b"message b"[..]));
        // One flipped bit in the first header's length is repaired, as the scan repairs it;
        // two are an error.
        let f = fs::OpenOptions::new().write(true).open(seg.path()).unwrap();
        f.write_all_at(&[batch[8] ^ 0x01], 8).unwrap();
        let (h, payload) = read_record(seg.path(), 0).unwrap();
        assert_eq!((h.id, &payload[..]), (a, &b"message a"[..]));
        f.write_all_at(&[batch[8] ^ 0x03], 8).unwrap();
        assert_eq!(read_record(seg.path(), 0).unwrap_err().op, "decode");
        // Flip one payload octet on disk: reading it is an error, never the wrong bytes.
        f.write_all_at(b"M", second_at + HEADER_LEN as u64).unwrap();
        let e = read_record(seg.path(), second_at).unwrap_err();
        assert_eq!(e.op, "decode");
        assert_eq!(list(dir.path()).unwrap(), [name]);
    }

    #[test]
    fn a_full_segment_refuses_the_write() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(LOG_DIR)).unwrap();
        let name = SegmentName {
            generation: 1,
            owner: 0,
            seq: 0,
        };
        let mut seg = Segment::create(dir.path(), name).unwrap();
        // Grows past the first step as records need it.
        let big = vec![1u8; PREALLOC_STEP as usize + 10];
        assert_eq!(seg.append(&big).unwrap(), 0);
        seg.append(&[1]).unwrap();
        assert_eq!(fs::metadata(seg.path()).unwrap().len(), 2 * PREALLOC_STEP);
        seg.end = SEGMENT_SIZE - 10;
        seg.allocated = SEGMENT_SIZE;
        assert!(!seg.fits(11));
        assert_eq!(seg.append(&[1; 11]).unwrap_err().op, "write");
        assert!(seg.fits(10));
    }
}

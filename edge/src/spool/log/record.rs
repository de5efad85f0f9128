//! One record of the spool log: a fixed header with two checksums, then the payload.
//!
//! ```text
//!  offset  size  field
//!       0     4  magic "SEL1" (format version 1)
//!       4     1  kind: 1 message, 2 state, 3 done
//!       5     3  zero
//!       8     4  payload length, little-endian
//!      12    26  queue id (its text form)
//!      38     4  CRC-32C of the payload, little-endian
//!      42     4  CRC-32C of bytes 0..42, little-endian
//!      46     …  payload
//! ```
//!
//! The header has a checksum of its own so that a damaged length is never followed: a header
//! that fails its check is repaired if one flipped bit explains it, and is otherwise a torn
//! tail where the scan stops, while a payload that fails its check is skipped by its trusted
//! length and the scan goes on. A header of zeros is where nothing was
//! written yet (segments are preallocated, and unwritten space reads as zeros).
//!
//! CRC-32C (Castagnoli) because it detects every burst error up to 32 bits and the CPU has an
//! instruction for it (SSE 4.2, ARMv8), which the `crc32c` crate uses.

use crate::spool::{QueueId, QUEUE_ID_LEN};

/// First four octets of every record: "SEL1", the spool log's format version 1.
pub const MAGIC: [u8; 4] = *b"SEL1";
/// Length of a record header in octets.
pub const HEADER_LEN: usize = 46;
/// Largest payload a record may declare: a message larger than this streams into a file of its
/// own, so a damaged header can never claim more than this.
pub const MAX_PAYLOAD: u32 = 64 << 20;

const KIND_AT: usize = 4;
const LEN_AT: usize = 8;
const ID_AT: usize = 12;
const PAYLOAD_CRC_AT: usize = ID_AT + QUEUE_ID_LEN;
const HEADER_CRC_AT: usize = PAYLOAD_CRC_AT + 4;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A committed message: its envelope and content in the queue-file form
    /// ([`crate::spool::format`]). Writing it is what commits the message.
    Message,
    /// The per-recipient state of a message after an attempt that left work (JSON).
    State,
    /// Every recipient of the message is delivered or reported: it needs nothing more.
    Done,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Message => 1,
            Kind::State => 2,
            Kind::Done => 3,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Message),
            2 => Some(Kind::State),
            3 => Some(Kind::Done),
            _ => None,
        }
    }
}

/// A record header that passed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the record says.
    pub kind: Kind,
    /// Whose record it is.
    pub id: QueueId,
    /// Payload length in octets (at most [`MAX_PAYLOAD`]).
    pub len: u32,
    /// The payload's CRC-32C.
    pub payload_crc: u32,
}

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Only zeros: nothing was written here.
    #[error("no record (zeros)")]
    Empty,
    /// Not a whole, intact header: the end of what a crash left (or damage).
    #[error("torn or damaged header ({0})")]
    Torn(&'static str),
}

/// Appends one record to `out`: the header for `kind`, `id` and `payload`, then the payload.
///
/// # Panics
///
/// Never for payloads up to [`MAX_PAYLOAD`]; callers route larger messages to files of their
/// own, and a larger payload is a caller bug (`debug_assert`), stored with its length clipped
/// so that its checksum fails and the scan skips it.
pub fn encode(out: &mut Vec<u8>, kind: Kind, id: &QueueId, payload: &[u8]) {
    out.reserve(HEADER_LEN + payload.len());
    encode_header(out, kind, id, payload);
    out.extend_from_slice(payload);
}

/// Appends the header of a record of `kind` for `id` and `payload`.
fn encode_header(out: &mut Vec<u8>, kind: Kind, id: &QueueId, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD as usize, "record too large");
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[KIND_AT] = kind.code();
    header[LEN_AT..LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
    header[ID_AT..ID_AT + QUEUE_ID_LEN].copy_from_slice(id.as_str().as_bytes());
    header[PAYLOAD_CRC_AT..PAYLOAD_CRC_AT + 4]
        .copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
}

/// Turns `buf`, whose first [`HEADER_LEN`] octets are reserved for it, into a record of `kind`
/// for `id` whose payload is the rest of `buf`: the header is written in place, so a message
/// gathered in memory is never copied to become a record.
pub fn seal_in_place(buf: &mut [u8], kind: Kind, id: &QueueId) {
    let Some((head, payload)) = buf.split_first_chunk_mut::<HEADER_LEN>() else {
        debug_assert!(false, "buffer without room for a header");
        return;
    };
    let mut record = Vec::with_capacity(HEADER_LEN);
    encode_header(&mut record, kind, id, payload);
    head.copy_from_slice(&record);
}

/// The encoded length of a record with a payload of `payload_len` octets.
pub fn encoded_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// Reads a header; never panics, whatever `bytes` hold.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
    if bytes.iter().all(|&b| b == 0) {
        return Err(HeaderError::Empty);
    }
    if bytes[..4] != MAGIC {
        return Err(HeaderError::Torn("magic"));
    }
    if read_u32(bytes, HEADER_CRC_AT) != crc32c::crc32c(&bytes[..HEADER_CRC_AT]) {
        return Err(HeaderError::Torn("header checksum"));
    }
    let kind = Kind::from_code(bytes[KIND_AT]).ok_or(HeaderError::Torn("kind"))?;
    let len = read_u32(bytes, LEN_AT);
    if len > MAX_PAYLOAD {
        return Err(HeaderError::Torn("length"));
    }
    let id = std::str::from_utf8(&bytes[ID_AT..ID_AT + QUEUE_ID_LEN])
        .ok()
        .and_then(|s| s.parse::<QueueId>().ok())
        .ok_or(HeaderError::Torn("queue id"))?;
    Ok(Header {
        kind,
        id,
        len,
        payload_crc: read_u32(bytes, PAYLOAD_CRC_AT),
    })
}

/// The intact header one flipped bit away from `bytes`, if there is one: CRC-32C over these 46
/// octets has a Hamming distance of at least 6, so a single flipped bit is found and undone
/// without ambiguity, and a tear (whole sectors of zeros or old data) is never one bit away. A
/// header of zeros with a bit flipped has none (undoing the flip gives zeros, not a header): a
/// blanked batch stays blank.
pub fn repair(bytes: &[u8; HEADER_LEN]) -> Option<Header> {
    (0..HEADER_LEN * 8).find_map(|bit| {
        let mut fixed = *bytes;
        fixed[bit / 8] ^= 1 << (bit % 8);
        decode_header(&fixed).ok()
    })
}

/// Whether `payload` is what `header` describes.
pub fn payload_ok(header: &Header, payload: &[u8]) -> bool {
    payload.len() == header.len as usize && crc32c::crc32c(payload) == header.payload_crc
}

fn read_u32(bytes: &[u8; HEADER_LEN], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_of(record: &[u8]) -> [u8; HEADER_LEN] {
        record[..HEADER_LEN].try_into().unwrap()
    }

    #[test]
    fn round_trip() {
        let id = QueueId::from_parts(5, 1, 9);
        for kind in [Kind::Message, Kind::State, Kind::Done] {
            let mut out = vec![7u8]; // appended after what is there
            encode(&mut out, kind, &id, b"payload");
            assert_eq!(out.len(), 1 + encoded_len(7));
            let h = decode_header(&header_of(&out[1..])).unwrap();
            assert_eq!((h.kind, h.id, h.len), (kind, id, 7));
            assert!(payload_ok(&h, &out[1 + HEADER_LEN..]));
            assert!(!payload_ok(&h, b"paylaod"));
        }
    }

    #[test]
    fn sealing_in_place_equals_encoding() {
        let id = QueueId::from_parts(5, 1, 9);
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(b"the message");
        seal_in_place(&mut buf, Kind::Message, &id);
        let mut want = Vec::new();
        encode(&mut want, Kind::Message, &id, b"the message");
        assert_eq!(buf, want);
    }

    #[test]
    fn zeros_are_empty_and_every_flipped_header_bit_is_caught() {
        assert_eq!(decode_header(&[0; HEADER_LEN]), Err(HeaderError::Empty));
        let mut rec = Vec::new();
        encode(&mut rec, Kind::Message, &QueueId::from_parts(1, 2, 3), b"x");
        let good = header_of(&rec);
        for bit in 0..HEADER_LEN * 8 {
            let mut bad = good;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_header(&bad), Err(HeaderError::Torn(_))),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN)) {
            let _ = decode_header(&bytes[..].try_into().unwrap());
        }
    }
}

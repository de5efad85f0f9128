//! Recovery: reading a segment back, record by record, trusting nothing.
//!
//! The scan walks from the start of the segment. A record whose header and payload both pass
//! their checksums is returned. A record whose header passes but whose payload does not is
//! skipped, by its length, and reported: the rest of the segment is still good. The scan ends at
//! the first header of zeros (nothing written there yet: a clean end, and what a failed batch
//! is blanked to) or at a record that runs past the end.
//!
//! A header that is neither zeros nor intact is repaired when it is one flipped bit away from
//! an intact header (CRC-32C over these 46 octets has a Hamming distance of at least 6, so one
//! flipped bit is found and undone without ambiguity), and the scan goes on by the repaired
//! length, reporting the damage: a flipped bit in the middle of a segment costs nothing.
//! Anything else is a torn tail, and the scan stops there. It never searches further on for
//! something that looks like a record: past a torn header there may be the rest of a batch
//! whose clients were never answered (a crash tears the sector holding a header and keeps a
//! later one), the rest of a failed batch whose clients got 451 (its blank torn or flipped),
//! or the content of a message, which anyone can fill with bytes laid out as records. Stopping
//! there loses nothing that was acknowledged: batches are written one after another, each one
//! synced before the next is written, so a tear can only be in the last batch, whose senders
//! never got a 250. Damage beyond one bit in the middle of a segment (the medium's doing, never
//! a crash's) costs the records after it as well: the price of never reading one that was not
//! acknowledged.

use super::record::{self, HeaderError, Kind, HEADER_LEN};
use crate::spool::QueueId;

/// One intact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// What it says.
    pub kind: Kind,
    /// Whose it is.
    pub id: QueueId,
    /// Where its header starts in the segment.
    pub offset: u64,
    /// Where its payload starts in the segment.
    pub payload_offset: u64,
    /// Its payload length.
    pub len: u32,
}

/// A record whose header is intact but whose payload failed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// What it claimed to be.
    pub kind: Kind,
    /// Whose it claimed to be.
    pub id: QueueId,
    /// Where its header starts.
    pub offset: u64,
}

/// A header one flipped bit away from an intact one, repaired; the scan went on by its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damaged {
    /// Where the damaged header starts.
    pub at: u64,
    /// What gave the header away.
    pub why: &'static str,
}

/// How the scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// At zeros, or exactly at the end of the segment.
    Clean,
    /// At a header that is not intact, or a record running past the end: a torn write.
    Torn {
        /// Where the torn record starts.
        at: u64,
        /// What gave it away.
        why: &'static str,
    },
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Intact records, in order.
    pub records: Vec<Found>,
    /// Records skipped for a bad payload checksum, in order.
    pub skipped: Vec<Skipped>,
    /// Headers repaired (one flipped bit each), in order.
    pub damaged: Vec<Damaged>,
    /// Where the scan stopped: the end of the last record read or skipped.
    pub end: u64,
    /// Why it stopped.
    pub tail: Tail,
}

/// Scans a whole segment held in memory. Never panics, whatever `segment` holds.
pub fn scan(segment: &[u8]) -> Scanned {
    let mut out = Scanned {
        records: Vec::new(),
        skipped: Vec::new(),
        damaged: Vec::new(),
        end: 0,
        tail: Tail::Clean,
    };
    let mut pos = 0usize;
    loop {
        let rest = segment.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        let Some(header) = rest
            .get(..HEADER_LEN)
            .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
        else {
            if rest.iter().any(|&b| b != 0) {
                out.tail = Tail::Torn {
                    at: pos as u64,
                    why: "short header",
                };
            }
            break;
        };
        let header = match record::decode_header(header) {
            Ok(h) => h,
            Err(HeaderError::Empty) => break,
            Err(HeaderError::Torn(why)) => match record::repair(header) {
                Some(h) => {
                    out.damaged.push(Damaged {
                        at: pos as u64,
                        why,
                    });
                    h
                }
                None => {
                    out.tail = Tail::Torn {
                        at: pos as u64,
                        why,
                    };
                    break;
                }
            },
        };
        let payload_at = pos + HEADER_LEN;
        let Some(payload) = segment.get(payload_at..payload_at + header.len as usize) else {
            out.tail = Tail::Torn {
                at: pos as u64,
                why: "runs past the end",
            };
            break;
        };
        if record::payload_ok(&header, payload) {
            out.records.push(Found {
                kind: header.kind,
                id: header.id,
                offset: pos as u64,
                payload_offset: payload_at as u64,
                len: header.len,
            });
        } else {
            out.skipped.push(Skipped {
                kind: header.kind,
                id: header.id,
                offset: pos as u64,
            });
        }
        pos = payload_at + header.len as usize;
        out.end = pos as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::log::record::encode;
    use proptest::prelude::*;

    fn id(n: u64) -> QueueId {
        QueueId::from_parts(1, 0, n)
    }

    /// Three records, then preallocated zeros.
    fn segment() -> (Vec<u8>, Vec<usize>) {
        let mut seg = Vec::new();
        let mut starts = Vec::new();
        for (n, payload) in [&b"first message"[..], b"second", b"third one"]
            .iter()
            .enumerate()
        {
            starts.push(seg.len());
            encode(&mut seg, Kind::Message, &id(n as u64), payload);
        }
        starts.push(seg.len());
        seg.resize(seg.len() + 300, 0);
        (seg, starts)
    }

    fn ids(s: &Scanned) -> Vec<u64> {
        s.records
            .iter()
            .map(|f| (0..3).find(|&n| id(n) == f.id).unwrap())
            .collect()
    }

    #[test]
    fn reads_every_record_and_stops_at_zeros() {
        let (seg, starts) = segment();
        let s = scan(&seg);
        assert_eq!(ids(&s), [0, 1, 2]);
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.end, starts[3] as u64);
        let second = s.records[1];
        let at = second.payload_offset as usize;
        assert_eq!(&seg[at..at + second.len as usize], b"second");
        // Without the zeros: ends exactly at the end of the file.
        assert_eq!(scan(&seg[..starts[3]]).tail, Tail::Clean);
    }

    #[test]
    fn a_torn_tail_keeps_everything_before_it() {
        let (seg, starts) = segment();
        // Cut the third record at every point: the first two always survive, the third never
        // appears, and a cut anywhere but its first octet is reported as torn.
        for cut in starts[2]..starts[3] {
            let mut torn = seg[..cut].to_vec();
            torn.resize(seg.len(), 0); // the rest of the preallocated segment
            let s = scan(&torn);
            assert_eq!(ids(&s), [0, 1], "cut at {cut}");
            if cut - starts[2] >= HEADER_LEN {
                // Header whole, payload partly zeros: its checksum fails, it is skipped.
                assert_eq!(s.skipped.len(), 1, "cut at {cut}");
                assert_eq!(s.end, starts[3] as u64, "cut at {cut}");
            } else if cut > starts[2] {
                assert_eq!(s.end, starts[2] as u64, "cut at {cut}");
                assert!(
                    matches!(s.tail, Tail::Torn { at, .. } if at == starts[2] as u64),
                    "cut at {cut}: {:?}",
                    s.tail
                );
            }
        }
    }

    #[test]
    fn a_flipped_payload_byte_skips_that_record_only() {
        let (mut seg, starts) = segment();
        seg[starts[1] + HEADER_LEN + 2] ^= 0x20;
        let s = scan(&seg);
        assert_eq!(ids(&s), [0, 2]);
        assert_eq!(
            s.skipped,
            [Skipped {
                kind: Kind::Message,
                id: id(1),
                offset: starts[1] as u64
            }]
        );
        assert_eq!(s.tail, Tail::Clean);
    }

    #[test]
    fn a_flipped_header_bit_is_repaired_and_the_scan_goes_on() {
        // Every single bit of the middle record's header: all three records are still read,
        // by the repaired length.
        for bit in 0..HEADER_LEN * 8 {
            let (mut seg, starts) = segment();
            seg[starts[1] + bit / 8] ^= 1 << (bit % 8);
            let s = scan(&seg);
            assert_eq!(ids(&s), [0, 1, 2], "bit {bit}");
            assert_eq!(s.damaged.len(), 1, "bit {bit}");
            assert_eq!(s.damaged[0].at, starts[1] as u64, "bit {bit}");
            assert_eq!(s.tail, Tail::Clean, "bit {bit}");
            assert_eq!(s.end, starts[3] as u64, "bit {bit}");
        }
        // Damage beyond one bit cannot be told from a tear: the scan stops there.
        let (mut seg, starts) = segment();
        seg[starts[1] + 9] ^= 0x03;
        let s = scan(&seg);
        assert_eq!(ids(&s), [0]);
        assert!(s.damaged.is_empty());
        assert!(matches!(s.tail, Tail::Torn { at, .. } if at == starts[1] as u64));
    }

    #[test]
    fn a_blanked_batch_ends_the_scan_even_with_intact_records_behind_it() {
        // A batch whose write or sync failed has its first header zeroed: its clients got 451,
        // so what follows it must never be delivered.
        let (mut seg, starts) = segment();
        seg[starts[1]..starts[1] + HEADER_LEN].fill(0);
        let s = scan(&seg);
        assert_eq!(ids(&s), [0]);
        assert!(s.damaged.is_empty());
        assert_eq!(s.tail, Tail::Clean);
    }

    #[test]
    fn a_blank_that_is_itself_damaged_still_ends_the_scan() {
        // Records 1 and 2 are a batch whose sync failed: its clients got 451 and its first
        // header was blanked. A bit flipped in those zeros, or the blank torn at a sector
        // boundary by a crash (half zeros, half the old header), must not let the scan reach
        // record 2.
        let (mut seg, starts) = segment();
        seg[starts[1]..starts[1] + HEADER_LEN].fill(0);
        seg[starts[1] + 20] ^= 0x04;
        assert_eq!(ids(&scan(&seg)), [0], "a flipped bit in a blanked header");
        let (mut seg, starts) = segment();
        seg[starts[1]..starts[1] + HEADER_LEN / 2].fill(0);
        assert_eq!(ids(&scan(&seg)), [0], "a blank torn half way");
    }

    #[test]
    fn a_batch_torn_in_its_first_header_delivers_nothing_after_the_tear() {
        // A crash while records 1 and 2 (one batch, whose clients never got a 250) were being
        // written: the sector holding the end of record 1's header never reached the disk
        // (preallocated space reads as zeros), a later one holding record 2 did. Record 2 was
        // never acknowledged: reading it delivers a message its client will send again.
        let (mut seg, starts) = segment();
        seg[starts[1] + 12..starts[1] + HEADER_LEN].fill(0);
        let s = scan(&seg);
        assert_eq!(ids(&s), [0]);
        assert!(
            matches!(s.tail, Tail::Torn { at, .. } if at == starts[1] as u64),
            "{:?}",
            s.tail
        );
    }

    #[test]
    fn a_record_inside_a_payload_is_never_read_as_one() {
        // Anyone can send a message whose content holds bytes laid out as a record (a forged
        // envelope, or a done mark for another message's queue id, which a 250 reply shows).
        // Damage to that message's header must not turn its content into records.
        let mut inner = Vec::new();
        encode(&mut inner, Kind::Done, &id(0), b"");
        encode(
            &mut inner,
            Kind::Message,
            &id(9),
            b"forged envelope and content",
        );
        let mut seg = Vec::new();
        let mut starts = Vec::new();
        for (n, payload) in [&b"first message"[..], &inner, b"third one"]
            .iter()
            .enumerate()
        {
            starts.push(seg.len());
            encode(&mut seg, Kind::Message, &id(n as u64 + 1), payload);
        }
        seg.resize(seg.len() + 300, 0);
        seg[starts[1] + 4] = 0xff; // the kind: damaged beyond a single bit
        seg[starts[1] + 9] ^= 0x11; // and the length
        let s = scan(&seg);
        let found: Vec<(Kind, QueueId)> = s.records.iter().map(|f| (f.kind, f.id)).collect();
        assert!(
            !found.contains(&(Kind::Done, id(0))) && !found.contains(&(Kind::Message, id(9))),
            "read out of a message's content: {found:?}"
        );
    }

    #[test]
    fn a_torn_header_before_content_shaped_like_headers_ends_the_scan_at_once() {
        // A message whose content is a run of headers that pass their own checksum, each
        // claiming a payload of 4 MiB that is not there: were the scan to look past a torn
        // header for a record, it would check the checksum of 4 MiB for every one of them
        // (45,000 of them here, about 190 GB of CRC), and a restart would not finish.
        const CLAIMED: usize = 4 << 20;
        let mut claim = Vec::new();
        encode(&mut claim, Kind::Message, &id(1), &vec![0u8; CLAIMED]);
        claim.truncate(HEADER_LEN);
        let content: Vec<u8> = claim.iter().copied().cycle().take(2 << 20).collect();
        let mut seg = Vec::new();
        encode(&mut seg, Kind::Message, &id(0), &content);
        seg[9] ^= 0x11; // its length, beyond one bit: a torn header
        seg.resize(seg.len() + CLAIMED + HEADER_LEN, 0);
        let s = scan(&seg);
        assert!(s.records.is_empty(), "{:?}", s.records);
        assert!(matches!(s.tail, Tail::Torn { at: 0, .. }), "{:?}", s.tail);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = scan(&bytes);
        }

        #[test]
        fn any_single_corruption_never_yields_a_wrong_record(at in any::<prop::sample::Index>(), flip in 1u8..) {
            let (mut seg, _) = segment();
            let good = scan(&seg);
            let i = at.index(seg.len());
            seg[i] ^= flip;
            // Whatever survives is byte for byte a record of the intact segment.
            let (intact, _) = segment();
            for f in scan(&seg).records {
                prop_assert!(good.records.contains(&f));
                let (a, b) = (f.payload_offset as usize, f.len as usize);
                prop_assert_eq!(&seg[a..a + b], &intact[a..a + b]);
            }
        }
    }
}

//! Queue ids: unique across workers and restarts without any coordination.
//!
//! An id packs three numbers into 128 bits, most significant first:
//!
//! ```text
//!  generation (64 bits) | worker (16 bits) | per-worker counter (48 bits)
//! ```
//!
//! and writes them as 26 characters of Crockford's base32 (`0-9A-Z` without `I L O U`). The
//! generation is the run's start time in µs, raised past the last run's if the clock went back
//! (persisted in the spool, see `spool::next_generation`). Two workers never share a worker
//! index, and two runs never share a generation, so no two ids collide; the fixed width and the alphabet's ASCII order make ids of one run sort by worker
//! then creation. The text is only uppercase letters and digits: safe as a file name everywhere.

use std::fmt;
use std::str::FromStr;

/// Length of an id's text form, in characters.
pub const QUEUE_ID_LEN: usize = 26;

/// Crockford's base32, in ascending ASCII order so that text order equals numeric order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Bits of the per-worker counter.
const COUNTER_BITS: u32 = 48;
/// Largest counter value; see [`QueueIdGen::next`] for what happens after it.
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

/// A spooled message's id, e.g. `000SGMW79BH90000R00000001A`; also its file name in the spool.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    text: [u8; QUEUE_ID_LEN],
}

impl QueueId {
    /// Builds the id of `counter` on `worker` in the run of `generation`. Only the low 48 bits
    /// of `counter` are kept.
    pub fn from_parts(generation: u64, worker: u16, counter: u64) -> Self {
        let packed = (u128::from(generation) << 64)
            | (u128::from(worker) << COUNTER_BITS)
            | u128::from(counter & COUNTER_MAX);
        let mut text = [b'0'; QUEUE_ID_LEN];
        // 26 digits of 5 bits hold 130 bits, so the top digit only ever holds 3 bits.
        for (i, slot) in text.iter_mut().rev().enumerate() {
            let digit = (packed >> (5 * i)) & 0x1f;
            *slot = ALPHABET[digit as usize];
        }
        QueueId { text }
    }

    /// The id's text: 26 characters of `[0-9A-Z]`.
    pub fn as_str(&self) -> &str {
        // Every byte comes from ALPHABET (ASCII), either in from_parts or checked in from_str.
        std::str::from_utf8(&self.text).unwrap_or("")
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

/// Why a string is not a [`QueueId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id (want {QUEUE_ID_LEN} characters of [0-9A-HJKMNP-TV-Z])")]
pub struct ParseQueueIdError;

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    /// Accepts exactly the text that [`QueueId`]'s `Display` writes (uppercase, no aliases), so
    /// that one message never has two file names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text: [u8; QUEUE_ID_LEN] = s.as_bytes().try_into().map_err(|_| ParseQueueIdError)?;
        let mut packed: u128 = 0;
        for &b in &text {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == b)
                .ok_or(ParseQueueIdError)?;
            // 26 × 5 = 130 bits: reject a top digit that would overflow 128.
            packed = packed
                .checked_mul(32)
                .and_then(|p| p.checked_add(digit as u128))
                .ok_or(ParseQueueIdError)?;
        }
        Ok(QueueId { text })
    }
}

/// Hands out the ids of one worker. Not shared: each worker owns one, so no locking.
#[derive(Debug)]
pub struct QueueIdGen {
    generation: u64,
    worker: u16,
    next: u64,
}

impl QueueIdGen {
    /// A generator for `worker` in the run of `generation` (from `spool::next_generation`,
    /// once at startup, passed to every worker).
    pub fn new(generation: u64, worker: u16) -> Self {
        QueueIdGen {
            generation,
            worker,
            next: 0,
        }
    }

    /// The run these ids belong to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The worker these ids belong to.
    pub fn worker(&self) -> u16 {
        self.worker
    }

    /// The next id; never repeats one this generator or any other worker or run has given.
    // Not an Iterator: the sequence never ends, and an Option would only add an unwrap.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> QueueId {
        if self.next > COUNTER_MAX {
            // 2^48 ids on one worker (about nine years at a million messages a second): move
            // to the next generation. As a start time that microsecond lies at least 2^48
            // messages in the past, so no later run on a sane clock can have it.
            self.generation = self.generation.wrapping_add(1);
            self.next = 0;
        }
        let id = QueueId::from_parts(self.generation, self.worker, self.next);
        self.next += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn display_parse_round_trip() {
        for (t, w, c) in [
            (0, 0, 0),
            (u64::MAX, u16::MAX, COUNTER_MAX),
            (1_796_000_000_000_000, 7, 42),
        ] {
            let id = QueueId::from_parts(t, w, c);
            assert_eq!(id.as_str().len(), QUEUE_ID_LEN);
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
            assert_eq!(id.to_string().parse::<QueueId>(), Ok(id));
        }
    }

    #[test]
    fn rejects_other_text() {
        for bad in [
            "",
            "abc",
            "1KQ8Z3V0XH5WA00000000000I",
            "0000000000000000000000000a",
            "Z0000000000000000000000000",
            "../../../../../../../../etc",
        ] {
            assert_eq!(bad.parse::<QueueId>(), Err(ParseQueueIdError), "{bad}");
        }
    }

    #[test]
    fn unique_across_workers_and_runs_and_ordered_within_a_worker() {
        let mut seen = HashSet::new();
        for startup in [1_000_000, 1_000_001] {
            for worker in 0..4 {
                let mut gen = QueueIdGen::new(startup, worker);
                let mut prev = None;
                for _ in 0..1000 {
                    let id = gen.next();
                    assert!(seen.insert(id), "duplicate {id}");
                    assert!(prev < Some(id));
                    prev = Some(id);
                }
            }
        }
    }

    #[test]
    fn counter_exhaustion_moves_on_instead_of_wrapping() {
        let mut gen = QueueIdGen::new(5, 1);
        gen.next = COUNTER_MAX;
        let last = gen.next();
        let after = gen.next();
        assert_ne!(after, QueueId::from_parts(5, 1, 0));
        assert!(after > last);
    }
}

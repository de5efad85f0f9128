//! Messages built once, before the clock starts, and sent many times.

use crate::client::Message;

/// How many distinct messages are built for a size range; sizes are drawn from this pool in turn.
pub const POOL_FOR_RANGE: usize = 64;
/// Content line length before CRLF: within the 78 of RFC 5322 §2.1.1.
const LINE: usize = 76;

/// Message sizes: one fixed size, or a range drawn uniformly (deterministically) per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeSpec {
    /// Smallest content size, octets.
    pub min: usize,
    /// Largest content size, octets.
    pub max: usize,
}

impl SizeSpec {
    /// Parses `10240`, `10k`, `1m` or a range `1k..64k`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let one = |t: &str| -> Result<usize, String> {
            let t = t.trim();
            let (num, mult) = match t.as_bytes().last() {
                Some(b'k' | b'K') => (&t[..t.len() - 1], 1024),
                Some(b'm' | b'M') => (&t[..t.len() - 1], 1024 * 1024),
                _ => (t, 1),
            };
            num.parse::<usize>()
                .ok()
                .and_then(|n| n.checked_mul(mult))
                .ok_or_else(|| format!("--size: bad size {t:?}"))
        };
        let spec = match s.split_once("..") {
            Some((a, b)) => SizeSpec {
                min: one(a)?,
                max: one(b)?,
            },
            None => {
                let n = one(s)?;
                SizeSpec { min: n, max: n }
            }
        };
        if spec.min > spec.max || spec.max > 256 * 1024 * 1024 {
            return Err(format!("--size: {s:?} must be low..high, at most 256m"));
        }
        Ok(spec)
    }

    /// The sizes to build, in the order they are sent.
    pub fn sizes(&self) -> Vec<usize> {
        if self.min == self.max {
            return vec![self.min];
        }
        // A fixed-seed xorshift: the same corpus on every run.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let span = (self.max - self.min + 1) as u64;
        (0..POOL_FOR_RANGE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.min + (x % span) as usize
            })
            .collect()
    }
}

/// The wire forms of every message to send, built once.
#[derive(Debug)]
pub struct Corpus {
    wires: Vec<(Vec<u8>, usize)>,
}

impl Corpus {
    /// Builds one message per size: headers, then lines of printable text, `size` content octets
    /// in all (the headers alone if `size` is smaller), then `.` CRLF. No line starts with a dot,
    /// so the wire form is the content plus the terminator.
    pub fn build(spec: &SizeSpec, from: &str, to: &str) -> Self {
        let wires = spec
            .sizes()
            .into_iter()
            .enumerate()
            .map(|(i, size)| {
                let mut m = format!(
                    "From: <{from}>\r\nTo: <{to}>\r\nSubject: smtp-bench {i}\r\n\
                     Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
                     Message-ID: <bench-{i}@smtp-bench.invalid>\r\n\r\n"
                )
                .into_bytes();
                let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
                let mut k = i;
                while m.len() + 2 < size {
                    let n = (size - m.len() - 2).min(LINE);
                    for _ in 0..n {
                        m.push(alphabet[k % alphabet.len()]);
                        k = k.wrapping_mul(31).wrapping_add(7);
                    }
                    // Neither leading dot nor trailing space trouble: start lines with a letter.
                    let start = m.len() - n;
                    m[start] = b'X';
                    m.extend_from_slice(b"\r\n");
                }
                let content = m.len();
                m.extend_from_slice(b".\r\n");
                (m, content)
            })
            .collect();
        Corpus { wires }
    }

    /// The `n`th message to send (the pool is used round-robin).
    pub fn get(&self, n: u64) -> Message<'_> {
        let (wire, size) = &self.wires[(n % self.wires.len() as u64) as usize];
        Message { wire, size: *size }
    }

    /// How many distinct messages were built.
    pub fn len(&self) -> usize {
        self.wires.len()
    }

    /// Always false: at least one message is built.
    pub fn is_empty(&self) -> bool {
        self.wires.is_empty()
    }
}

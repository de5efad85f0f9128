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

    /// One message, `content` (an RFC 5322 message: header fields, blank line, body), sent as
    /// every message: see [`wire_form`].
    pub fn from_content(content: &[u8]) -> Self {
        Corpus {
            wires: vec![wire_form(content)],
        }
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

/// The DATA form of `content` and the content octets the server stores: lines end in CRLF (a
/// bare LF, as a file written on Unix has, becomes CRLF; a last line without an end gets one,
/// since only CRLF . CRLF ends the data), a line starting with `.` gets another in front
/// ([RFC 5321 §4.5.2]), then `.` CRLF.
///
/// [RFC 5321 §4.5.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.2
pub fn wire_form(content: &[u8]) -> (Vec<u8>, usize) {
    let mut wire = Vec::with_capacity(content.len() + content.len() / 64 + 8);
    let mut stored = 0;
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
        stored += line.len() + 2;
    }
    wire.extend_from_slice(b".\r\n");
    (wire, stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's view: what it stores is the wire form unstuffed, up to the terminator.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminated");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn a_message_file_is_sent_dot_stuffed_with_crlf_line_ends() {
        let content = b"From: <a@bench.test>\r\nSubject: x\r\n\r\n.leading dot\r\n..two\r\nend\r\n";
        let (wire, size) = wire_form(content);
        assert_eq!(
            wire,
            b"From: <a@bench.test>\r\nSubject: x\r\n\r\n..leading dot\r\n...two\r\nend\r\n.\r\n"
        );
        assert_eq!(size, content.len());
        assert_eq!(unstuff(&wire), content);
    }

    #[test]
    fn bare_line_feeds_become_crlf_and_the_last_line_is_ended() {
        let (wire, size) = wire_form(b"Subject: x\n\nbody\r\nlast");
        assert_eq!(wire, b"Subject: x\r\n\r\nbody\r\nlast\r\n.\r\n");
        assert_eq!(size, b"Subject: x\r\n\r\nbody\r\nlast\r\n".len());
        // A lone `.` line in the body is stuffed: it must not end the data early.
        let (wire, _) = wire_form(b"Subject: x\r\n\r\n.\r\nafter\r\n");
        assert_eq!(wire, b"Subject: x\r\n\r\n..\r\nafter\r\n.\r\n");
    }

    #[test]
    fn the_corpus_of_a_message_file_sends_it_every_time() {
        let corpus = Corpus::from_content(b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(corpus.len(), 1);
        for n in [0, 1, 99] {
            let m = corpus.get(n);
            assert_eq!(m.wire, b"Subject: x\r\n\r\nhi\r\n.\r\n");
            assert_eq!(m.size, b"Subject: x\r\n\r\nhi\r\n".len());
        }
    }
}

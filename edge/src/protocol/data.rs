//! The body of `DATA` ([RFC 5321 §4.1.1.4]): end-of-data detection and dot-unstuffing.
//!
//! [RFC 5321 §4.1.1.4]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.4

use super::policy::MAX_TEXT_LINE;

/// Why a body is refused. Once one is seen the rest of the body is discarded; if several are seen,
/// the gravest (the last variant) is reported, which keeps the answer independent of how the body
/// was split into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataFault {
    /// More content than the configured maximum message size.
    TooLarge,
    /// A line longer than [`MAX_TEXT_LINE`] octets, CRLF included.
    LineTooLong,
    /// A bare LF, or a CR not followed by LF ([RFC 5321 §2.3.8]). Accepting these is how SMTP
    /// smuggling (CVE-2023-51764 and kin) gets a second message past a filter, so the message is
    /// refused whole rather than normalized.
    ///
    /// [RFC 5321 §2.3.8]: https://www.rfc-editor.org/rfc/rfc5321#section-2.3.8
    BareNewline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line: after the CRLF that ended the previous one, or at the start.
    LineStart,
    /// Inside a line.
    Text,
    /// Inside a line, just after a CR.
    Cr,
    /// A `.` began the line; it is dropped either way.
    Dot,
    /// `.` then CR began the line; a LF now ends the data.
    DotCr,
}

/// Receives a `DATA` body in chunks of any size.
///
/// The body ends only at `CRLF . CRLF`; one leading dot is removed from every line that has one
/// (dot-stuffing, [RFC 5321 §4.5.2]). The output is the message content: everything up to and
/// including the CRLF before the terminating dot line.
///
/// [RFC 5321 §4.5.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.2
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    /// Content octets so far, after unstuffing.
    size: u64,
    /// Octets of the current line seen in earlier chunks.
    line_len: usize,
    limit: u64,
    fault: Option<DataFault>,
}

impl DataReceiver {
    /// A receiver that refuses content over `limit` octets.
    pub fn new(limit: u64) -> Self {
        DataReceiver {
            state: State::LineStart,
            size: 0,
            line_len: 0,
            limit,
            fault: None,
        }
    }

    /// The gravest fault seen, if any.
    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    /// Content octets received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Consumes a prefix of `input`, appending unstuffed content to `out` (nothing once a fault
    /// is seen). Returns the octets consumed and whether the terminating `CRLF . CRLF` was among
    /// them; if it was, the bytes after it belong to the next command.
    ///
    /// Equivalent to the byte-at-a-time loop in the tests' naive oracle, but copies whole runs
    /// between dot-stuffed lines and finds line ends with `memchr2`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        // Start of the run of input not yet copied to `out`.
        let mut span = 0;
        // Where the current line began in this chunk (earlier chunks' part is `line_len`).
        let mut line_from = 0;
        while let Some(&byte) = input.get(i) {
            match self.state {
                State::LineStart if byte == b'.' => {
                    self.emit(input.get(span..i).unwrap_or_default(), out);
                    i += 1;
                    span = i;
                    self.state = State::Dot;
                }
                State::LineStart => self.state = State::Text,
                State::Text => {
                    let rest = input.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'\r', b'\n', rest) {
                        None => i = input.len(),
                        Some(k) => {
                            i += k + 1;
                            if rest.get(k) == Some(&b'\n') {
                                // Bare LF; the next byte is not a line start (a line starts only
                                // after CRLF), so `\n.\r\n` cannot end the body.
                                self.set_fault(DataFault::BareNewline);
                            } else {
                                self.state = State::Cr;
                            }
                        }
                    }
                }
                State::Cr if byte == b'\n' => {
                    i += 1;
                    if self.line_len + (i - line_from) > MAX_TEXT_LINE {
                        self.set_fault(DataFault::LineTooLong);
                    }
                    self.line_len = 0;
                    line_from = i;
                    self.state = State::LineStart;
                }
                State::Cr => {
                    self.set_fault(DataFault::BareNewline);
                    self.state = State::Text;
                }
                State::Dot if byte == b'\r' => {
                    // Hold the CR back: if a LF follows, it belongs to the terminator.
                    i += 1;
                    span = i;
                    self.state = State::DotCr;
                }
                State::Dot => self.state = State::Text,
                State::DotCr if byte == b'\n' => {
                    // The held CR and this LF end the body; nothing of them is content.
                    self.state = State::LineStart;
                    self.line_len = 0;
                    return (i + 1, true);
                }
                State::DotCr => {
                    // `.` CR x: the held CR is content, and a bare one.
                    self.emit(b"\r", out);
                    self.set_fault(DataFault::BareNewline);
                    self.state = State::Text;
                }
            }
        }
        if self.state != State::DotCr {
            self.emit(input.get(span..).unwrap_or_default(), out);
        }
        // Checked at the CRLF only, so the verdict does not depend on where chunks split.
        self.line_len = self.line_len.saturating_add(input.len() - line_from);
        (input.len(), false)
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if bytes.is_empty() || self.fault.is_some() {
            return;
        }
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.limit {
            self.set_fault(DataFault::TooLarge);
            return;
        }
        out.extend_from_slice(bytes);
    }

    fn set_fault(&mut self, fault: DataFault) {
        self.fault = self.fault.max(Some(fault));
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
pub(crate) mod naive {
    //! A byte-at-a-time oracle for [`super::DataReceiver`]: obviously right, slow.

    use super::{DataFault, MAX_TEXT_LINE};

    /// Returns (content, consumed, fault) for a whole body, or `None` if it never ends.
    pub fn unstuff(input: &[u8], limit: u64) -> Option<(Vec<u8>, usize, Option<DataFault>)> {
        let mut out = Vec::new();
        let mut fault = None;
        let mut line: Vec<u8> = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            line.push(b);
            i += 1;
            let ends_crlf = line.ends_with(b"\r\n");
            if b == b'\n' && !ends_crlf {
                fault = fault.max(Some(DataFault::BareNewline));
            }
            if b == b'\r' && i < input.len() && input[i] != b'\n' {
                fault = fault.max(Some(DataFault::BareNewline));
            }
            if ends_crlf {
                if line.len() > MAX_TEXT_LINE {
                    fault = fault.max(Some(DataFault::LineTooLong));
                }
                if line == b".\r\n" {
                    if out.len() as u64 > limit {
                        fault = fault.max(Some(DataFault::TooLarge));
                    }
                    return Some((out, i, fault));
                }
                let content = if line.first() == Some(&b'.') {
                    &line[1..]
                } else {
                    &line[..]
                };
                out.extend_from_slice(content);
                line.clear();
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` in order; returns (content, consumed, done, fault). Content of a faulted
    /// body is partial by design (it is discarded whole), so it is not compared.
    fn run(chunks: &[&[u8]]) -> (Vec<u8>, usize, bool, Option<DataFault>) {
        let mut rx = DataReceiver::new(u64::MAX);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for chunk in chunks {
            let (n, end) = rx.feed(chunk, &mut out);
            consumed += n;
            if end {
                done = true;
                break;
            }
        }
        if rx.fault().is_some() {
            out.clear();
        }
        (out, consumed, done, rx.fault())
    }

    /// Every split of `input` must give the same result as feeding it whole.
    fn assert_split_invariant(input: &[u8]) -> (Vec<u8>, usize, bool, Option<DataFault>) {
        let whole = run(&[input]);
        for i in 0..=input.len() {
            assert_eq!(run(&[&input[..i], &input[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_leaves_the_rest() {
        let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
        let (out, n, done, fault) = assert_split_invariant(input);
        assert!(done);
        assert_eq!(fault, None);
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(&input[n..], b"QUIT\r\n");
    }

    #[test]
    fn empty_body() {
        let (out, n, done, _) = assert_split_invariant(b".\r\n");
        assert!(done);
        assert_eq!((out.len(), n), (0, 3));
    }

    #[test]
    fn dot_unstuffing_removes_exactly_one_dot() {
        // RFC 5321 §4.5.2: the receiver deletes the first character of a line that is a period.
        let (out, _, done, fault) = assert_split_invariant(b"..\r\n...x\r\n.y\r\nz.\r\n.\r\n");
        assert!(done && fault.is_none());
        assert_eq!(out, b".\r\n..x\r\ny\r\nz.\r\n");
    }

    #[test]
    fn smuggling_terminators_do_not_end_the_body() {
        // CVE-2023-51764/5/6: each of these is some other server's end of data, never ours.
        for fake in [
            &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
        ] {
            let (_, _, done, fault) = assert_split_invariant(fake);
            assert!(!done, "{fake:?} ended the body");
            assert_eq!(fault, Some(DataFault::BareNewline), "{fake:?}");
            let mut full = fake.to_vec();
            full.extend_from_slice(b".\r\n");
            let (_, n, done, fault) = assert_split_invariant(&full);
            assert!(
                done && n == full.len(),
                "{fake:?}: one message, ending at the real CRLF.CRLF"
            );
            assert_eq!(fault, Some(DataFault::BareNewline));
        }
    }

    #[test]
    fn smuggling_bare_lf_dot() {
        let (_, _, done, fault) = assert_split_invariant(b"x\r\n\n.\n\r\n.\r\n");
        assert!(done);
        assert_eq!(fault, Some(DataFault::BareNewline));
    }

    #[test]
    fn bare_cr_inside_a_line() {
        let (_, _, done, fault) = assert_split_invariant(b"a\rb\r\n.\r\n");
        assert!(done);
        assert_eq!(fault, Some(DataFault::BareNewline));
    }

    #[test]
    fn line_limit_counts_crlf() {
        let ok = [vec![b'a'; MAX_TEXT_LINE - 2], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(assert_split_invariant(&ok).3, None);
        let long = [vec![b'a'; MAX_TEXT_LINE - 1], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(
            assert_split_invariant(&long).3,
            Some(DataFault::LineTooLong)
        );
    }

    #[test]
    fn size_limit() {
        let mut rx = DataReceiver::new(4);
        let mut out = Vec::new();
        let (_, done) = rx.feed(b"abc\r\ndef\r\n.\r\n", &mut out);
        assert!(done);
        assert_eq!(rx.fault(), Some(DataFault::TooLarge));
        let mut rx = DataReceiver::new(5);
        let (_, done) = rx.feed(b"abc\r\n.\r\n", &mut Vec::new());
        assert!(done && rx.fault().is_none());
    }

    /// Bodies over an alphabet that makes terminators and stuffing likely.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(b' ')],
            0..200,
        )
    }

    proptest! {
        #[test]
        fn matches_naive_oracle(input in body(), split in any::<prop::sample::Index>()) {
            let at = split.index(input.len() + 1);
            let fast = run(&[&input[..at], &input[at..]]);
            match naive::unstuff(&input, u64::MAX) {
                Some((out, n, fault)) => {
                    prop_assert!(fast.2);
                    prop_assert_eq!(fast.1, n);
                    prop_assert_eq!(fast.3, fault);
                    if fault.is_none() {
                        prop_assert_eq!(fast.0, out);
                    }
                }
                None => prop_assert!(!fast.2),
            }
        }
    }
}

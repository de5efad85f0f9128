//! The body of `DATA` ([RFC 5321 §4.1.1.4]): end-of-data detection and dot-unstuffing.
//!
//! [`DataReceiver::feed`] runs an exact byte-level state machine, but hands every stretch that
//! needs no decision to the block scanner in [`scan`]: 64 octets at a time, it proves that a
//! block holds no dot at a line start, no bare CR or LF and no NUL, so the machine may skip it
//! whole.
//! Clean blocks are not copied one by one; they stay in the current run, which is appended to the
//! output with one `extend_from_slice` at the next stuffed dot or at the end of the chunk.
//!
//! [RFC 5321 §4.1.1.4]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.4

mod lines;
mod scan;

#[cfg(test)]
pub(crate) mod naive;

pub use lines::LineCheck;
#[cfg(test)]
mod tests;

use super::policy::MIN_TEXT_LINE;
use scan::{Kernel, Line, BLOCK};

/// Why a body is refused. Once one is seen the rest of the body is discarded; if several are seen,
/// the gravest (the last variant) is reported, which keeps the answer independent of how the body
/// was split into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DataFault {
    /// More content than the configured maximum message size.
    TooLarge,
    /// A line longer than the configured limit (`limits.max_line_length`), CRLF included.
    LineTooLong,
    /// A NUL octet: not text in any body type ([RFC 2045 §2.7, §2.8]), and a next hop that
    /// strips NULs could read what follows as another line, or another end of data.
    ///
    /// [RFC 2045 §2.7, §2.8]: https://www.rfc-editor.org/rfc/rfc2045#section-2.7
    Nul,
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
    /// Octets of the current line seen in earlier chunks (saturating).
    line_len: usize,
    limit: u64,
    /// Longest line, CRLF included.
    max_line: usize,
    fault: Option<DataFault>,
}

/// Where [`DataReceiver::feed`] is in its chunk.
struct Cursor {
    /// Next octet to look at.
    i: usize,
    /// Start of the run of input not yet copied to the output.
    span: usize,
    /// Where the current line began in this chunk (earlier chunks' part is `line_len`).
    line_from: usize,
}

impl DataReceiver {
    /// A receiver that refuses content over `limit` octets, or with a line over `max_line`
    /// octets (CRLF included; raised to [`MIN_TEXT_LINE`] if lower).
    pub fn new(limit: u64, max_line: usize) -> Self {
        DataReceiver {
            state: State::LineStart,
            size: 0,
            line_len: 0,
            limit,
            max_line: max_line.max(MIN_TEXT_LINE),
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
    /// Equivalent to the byte-at-a-time loop in the tests' naive oracle (`naive::unstuff`), and
    /// independent of how the body is split into chunks. It skips clean 64-octet blocks with SIMD
    /// compares (AVX2 when the CPU has it, else SSE2 or a portable SWAR loop), finds line ends
    /// with `memchr2` elsewhere, and copies whole runs between dot-stuffed lines.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        self.feed_with(Kernel::detect(), input, out)
    }

    /// [`Self::feed`], skipping clean blocks with `kernel`.
    fn feed_with(&mut self, kernel: Kernel, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut c = Cursor {
            i: 0,
            span: 0,
            line_from: 0,
        };
        while c.i < input.len() {
            // The scanner stops right at an octet that needs a decision; the machine makes it
            // and hands back. If the scanner got nowhere, the machine takes a whole block, so
            // that a body full of decisions costs one scan per block, not one per octet.
            let brief = self.skip_clean(kernel, input, &mut c);
            let stop = input.len().min(c.i.saturating_add(BLOCK));
            if self.step(input, &mut c, stop, brief, out) {
                return (c.i, true);
            }
        }
        if self.state != State::DotCr {
            self.emit(input.get(c.span..).unwrap_or_default(), out);
        }
        // Checked at the CRLF only, so the verdict does not depend on where chunks split.
        self.line_len = self
            .line_len
            .saturating_add(input.len().saturating_sub(c.line_from));
        (input.len(), false)
    }

    /// Skips clean octets at `c.i`, leaving the state as the byte-level machine would. Returns
    /// whether it skipped any.
    ///
    /// The scanner reads the octet before each block, so it never starts at the chunk's first
    /// octet; nor in `Dot` or `DotCr`, where the machine holds a decision about octets already
    /// seen. In the other states the octet before `c.i` is what the state says it is: a LF for
    /// `LineStart`, a CR for `Cr`, and for `Text` anything else, or a CR the next octet makes
    /// bare, which the scanner refuses too.
    fn skip_clean(&mut self, kernel: Kernel, input: &[u8], c: &mut Cursor) -> bool {
        if c.i == 0 || !self.scannable() {
            return false;
        }
        let mut line = Line {
            from: c.line_from,
            carry: self.line_len,
        };
        let run = kernel.skip(input, c.i, &mut line, self.max_line);
        if run.end == c.i {
            return false;
        }
        self.state = match input.get(run.end - 1) {
            Some(b'\r') => State::Cr,
            Some(b'\n') => State::LineStart,
            _ => State::Text,
        };
        c.i = run.end;
        c.line_from = line.from;
        self.line_len = line.carry;
        if run.too_long {
            self.set_fault(DataFault::LineTooLong);
        }
        true
    }

    /// Whether the scanner may take over: the state holds no decision about octets already seen.
    fn scannable(&self) -> bool {
        matches!(self.state, State::LineStart | State::Text | State::Cr)
    }

    /// The byte-level state machine, from `c.i` up to `stop` (`stop <= input.len()`), or if
    /// `brief`, only until it has moved and the scanner may take over. Returns true, with `c.i`
    /// just past it, if the terminator ends the body.
    fn step(
        &mut self,
        input: &[u8],
        c: &mut Cursor,
        stop: usize,
        brief: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        let entry = c.i;
        while c.i < stop {
            if brief && c.i > entry && self.scannable() {
                break;
            }
            let Some(&byte) = input.get(c.i) else {
                break;
            };
            match self.state {
                State::LineStart if byte == b'.' => {
                    self.emit(input.get(c.span..c.i).unwrap_or_default(), out);
                    c.i += 1;
                    c.span = c.i;
                    // The limit is on the text line, which the stuffing dot is not part of
                    // (RFC 5321 §4.5.2, §4.5.3.1.6): measure from after it.
                    c.line_from = c.i;
                    self.state = State::Dot;
                }
                State::LineStart => self.state = State::Text,
                State::Text => {
                    let rest = input.get(c.i..stop).unwrap_or_default();
                    match memchr::memchr3(b'\r', b'\n', 0, rest) {
                        None => c.i = stop,
                        Some(k) => {
                            c.i += k + 1;
                            match rest.get(k) {
                                // Bare LF; the next byte is not a line start (a line starts
                                // only after CRLF), so `\n.\r\n` cannot end the body.
                                Some(b'\n') => self.set_fault(DataFault::BareNewline),
                                Some(0) => self.set_fault(DataFault::Nul),
                                _ => self.state = State::Cr,
                            }
                        }
                    }
                }
                State::Cr if byte == b'\n' => {
                    c.i += 1;
                    if self.line_len.saturating_add(c.i - c.line_from) > self.max_line {
                        self.set_fault(DataFault::LineTooLong);
                    }
                    self.line_len = 0;
                    c.line_from = c.i;
                    self.state = State::LineStart;
                }
                State::Cr => {
                    self.set_fault(DataFault::BareNewline);
                    self.state = State::Text;
                }
                State::Dot if byte == b'\r' => {
                    // Hold the CR back: if a LF follows, it belongs to the terminator.
                    c.i += 1;
                    c.span = c.i;
                    self.state = State::DotCr;
                }
                State::Dot => self.state = State::Text,
                State::DotCr if byte == b'\n' => {
                    // The held CR and this LF end the body; nothing of them is content.
                    self.state = State::LineStart;
                    self.line_len = 0;
                    c.i += 1;
                    return true;
                }
                State::DotCr => {
                    // `.` CR x: the held CR is content, and a bare one.
                    self.emit(b"\r", out);
                    self.set_fault(DataFault::BareNewline);
                    self.state = State::Text;
                }
            }
        }
        false
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

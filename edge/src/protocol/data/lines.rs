//! Line checks for `BDAT` content ([RFC 3030]): no terminator and no dot-stuffing, but the same
//! text rules as `DATA` while BINARYMIME is not offered: lines end in CRLF, no bare CR or LF, no
//! NUL, and no line longer than the configured limit.
//!
//! [RFC 3030]: https://www.rfc-editor.org/rfc/rfc3030

use super::{DataFault, MIN_TEXT_LINE};

/// Checks text arriving in chunks of any size.
#[derive(Debug, Clone)]
pub struct LineCheck {
    /// The last octet seen was a CR.
    after_cr: bool,
    /// Octets of the current line so far, CR included.
    line_len: usize,
    /// Longest line, CRLF included.
    max_line: usize,
    fault: Option<DataFault>,
}

impl LineCheck {
    /// A check that refuses lines over `max_line` octets, CRLF included (raised to
    /// [`MIN_TEXT_LINE`] if lower).
    pub fn new(max_line: usize) -> Self {
        LineCheck {
            after_cr: false,
            line_len: 0,
            max_line: max_line.max(MIN_TEXT_LINE),
            fault: None,
        }
    }

    /// The gravest fault seen so far, if any (same order as for `DATA`).
    pub fn fault(&self) -> Option<DataFault> {
        self.fault
    }

    /// Checks `bytes`, the next octets of the content. The verdict does not depend on how the
    /// content is split. Equivalent to a byte loop; finds CR, LF and NUL with `memchr3`.
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest.first() == Some(&b'\n') {
                    if self.line_len + 1 > self.max_line {
                        self.set(DataFault::LineTooLong);
                    }
                    self.line_len = 0;
                    rest = rest.get(1..).unwrap_or_default();
                    continue;
                }
                self.set(DataFault::BareNewline);
            }
            match memchr::memchr3(b'\r', b'\n', 0, rest) {
                None => {
                    self.line_len = self.line_len.saturating_add(rest.len());
                    break;
                }
                Some(k) => {
                    self.line_len = self.line_len.saturating_add(k + 1);
                    match rest.get(k) {
                        Some(b'\n') => self.set(DataFault::BareNewline),
                        Some(0) => self.set(DataFault::Nul),
                        _ => self.after_cr = true,
                    }
                    rest = rest.get(k + 1..).unwrap_or_default();
                }
            }
        }
        // A line that is already too long fails now, not only at its CRLF: the verdict is the
        // same, and known sooner.
        if self.line_len > self.max_line {
            self.set(DataFault::LineTooLong);
        }
    }

    /// The content is complete: a CR left waiting for its LF is a bare CR. Content that does
    /// not end in CRLF is allowed (RFC 3030 leaves the last line to the message).
    pub fn finish(&mut self) {
        if self.after_cr {
            self.set(DataFault::BareNewline);
        }
    }

    fn set(&mut self, fault: DataFault) {
        self.fault = self.fault.max(Some(fault));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The limit the tests use: the RFC's floor, so that lines near it are cheap to build.
    const LINE: usize = MIN_TEXT_LINE;

    fn check(chunks: &[&[u8]]) -> Option<DataFault> {
        let mut c = LineCheck::new(LINE);
        for chunk in chunks {
            c.feed(chunk);
        }
        c.finish();
        c.fault()
    }

    /// The byte loop the fast version must agree with.
    fn naive(input: &[u8]) -> Option<DataFault> {
        let mut fault = None;
        let mut line = 0usize;
        for (i, &b) in input.iter().enumerate() {
            line += 1;
            let prev_cr = i > 0 && input[i - 1] == b'\r';
            if b == b'\n' && !prev_cr {
                fault = fault.max(Some(DataFault::BareNewline));
            }
            if b == b'\r' && input.get(i + 1) != Some(&b'\n') {
                fault = fault.max(Some(DataFault::BareNewline));
            }
            if b == 0 {
                fault = fault.max(Some(DataFault::Nul));
            }
            if line > LINE {
                fault = fault.max(Some(DataFault::LineTooLong));
            }
            if b == b'\n' {
                line = 0;
            }
        }
        fault
    }

    #[test]
    fn text_passes_and_faults_are_found() {
        assert_eq!(check(&[b"a\r\nb\r\n"]), None);
        assert_eq!(check(&[b"no final newline"]), None);
        assert_eq!(check(&[b"a\nb\r\n"]), Some(DataFault::BareNewline));
        assert_eq!(check(&[b"a\rb\r\n"]), Some(DataFault::BareNewline));
        assert_eq!(check(&[b"a\r"]), Some(DataFault::BareNewline));
        assert_eq!(check(&[b"a\0b\r\n"]), Some(DataFault::Nul));
        assert_eq!(check(&[b"\r\n\0"]), Some(DataFault::Nul));
        let long = [vec![b'x'; LINE - 1], b"\r\n".to_vec()].concat();
        assert_eq!(check(&[&long]), Some(DataFault::LineTooLong));
        let fits = [vec![b'x'; LINE - 2], b"\r\n".to_vec()].concat();
        assert_eq!(check(&[&fits]), None);
        // A higher limit lets the same line through.
        let mut c = LineCheck::new(4 * LINE);
        c.feed(&long);
        c.finish();
        assert_eq!(c.fault(), None);
    }

    proptest! {
        #[test]
        fn agrees_with_the_byte_loop_however_split(
            input in prop::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'x'), Just(0)], 0..3000),
            at in any::<prop::sample::Index>(),
        ) {
            let i = at.index(input.len() + 1);
            prop_assert_eq!(check(&[&input[..i], &input[i..]]), naive(&input));
        }
    }
}

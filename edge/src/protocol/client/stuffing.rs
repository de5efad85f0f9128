//! Message content onto the wire after `DATA` ([RFC 5321 §4.5.2]): a dot is added before every
//! line that starts with one, and `CRLF . CRLF` ends the content.
//!
//! The content may come in chunks of any size; the stuffer carries the line state across them,
//! so a message is never held whole. Line ends are normalised: a bare LF or a bare CR becomes
//! CRLF. Content from our spool never holds either (the server engine refuses them), so for it
//! the wire form is the content exactly; for anything else, no server, however lenient about line
//! ends, can read a premature end of data in what we send (SMTP smuggling, outbound).
//!
//! Lines longer than [`MAX_LINE`] octets are folded: `CRLF SP` goes in after the 998th octet, as
//! Postfix does by default (`smtp_line_length_limit = 998`). Our intake stores longer lines
//! (real mail has them), but RFC 5321 §4.5.3.1.6 lets a receiver refuse them, and a folded
//! header is still the same header (RFC 5322 §2.2.3); in a body the fold is visible, which
//! is the price every relay pays for not having the message refused.
//!
//! [RFC 5321 §4.5.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.2

/// Streaming dot-stuffer. `naive_stuff` in the tests is the one-byte-at-a-time definition that
/// this must agree with for every split of every input.
#[derive(Debug, Clone)]
pub(crate) struct DotStuffer {
    /// The next octet starts a line.
    line_start: bool,
    /// The last octet was a CR whose LF has not been seen yet.
    pending_cr: bool,
    /// Octets sent on the current line so far (a stuffed dot included).
    column: usize,
    /// Longest line sent, CRLF not counted; longer ones are folded.
    max_line: usize,
}

/// The longest line we send, without its CRLF ([RFC 5321 §4.5.3.1.6]).
///
/// [RFC 5321 §4.5.3.1.6]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.6
pub(crate) const MAX_LINE: usize = 998;

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::with_max_line(MAX_LINE)
    }
}

impl DotStuffer {
    /// A stuffer that folds lines longer than `max_line` octets (tests use short ones). At
    /// least 2: a continuation starts with its space, and must have room for one more octet.
    fn with_max_line(max_line: usize) -> Self {
        DotStuffer {
            line_start: true,
            pending_cr: false,
            column: 0,
            max_line: max_line.max(2),
        }
    }

    /// Appends the wire form of `chunk` to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 4);
        while !chunk.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                self.end_line(out);
                if let Some(rest) = chunk.strip_prefix(b"\n") {
                    chunk = rest;
                    continue;
                }
            }
            if self.line_start {
                if let Some(rest) = chunk.strip_prefix(b".") {
                    out.extend_from_slice(b"..");
                    self.line_start = false;
                    self.column = 2;
                    chunk = rest;
                    continue;
                }
            }
            // Copy the run up to the next line end in one go: lines are long, ends are rare.
            match memchr::memchr2(b'\r', b'\n', chunk) {
                None => {
                    self.text(chunk, out);
                    return;
                }
                Some(at) => {
                    let (text, rest) = chunk.split_at(at);
                    self.text(text, out);
                    match rest.split_first() {
                        Some((b'\r', rest)) => {
                            self.line_start = false;
                            self.pending_cr = true;
                            chunk = rest;
                        }
                        Some((_, rest)) => {
                            self.end_line(out);
                            chunk = rest;
                        }
                        None => return,
                    }
                }
            }
        }
    }

    /// Appends `text` (no line ends in it), folding with `CRLF SP` where the line would pass
    /// `max_line`. The continuation starts with a space, so it never needs a stuffed dot.
    fn text(&mut self, mut text: &[u8], out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        self.line_start = false;
        loop {
            let room = self.max_line.saturating_sub(self.column);
            if text.len() <= room {
                out.extend_from_slice(text);
                self.column += text.len();
                return;
            }
            let (fits, rest) = text.split_at(room);
            out.extend_from_slice(fits);
            out.extend_from_slice(b"\r\n ");
            self.column = 1;
            text = rest;
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.line_start = true;
        self.column = 0;
    }

    /// Appends the end of the content: a CRLF if the last line lacks one
    /// ([RFC 5321 §4.1.1.4]), then `.CRLF`.
    ///
    /// [RFC 5321 §4.1.1.4]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.4
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::with_max_line(self.max_line);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, one octet at a time.
    fn naive_stuff(content: &[u8]) -> Vec<u8> {
        naive_stuff_max(content, MAX_LINE)
    }

    fn naive_stuff_max(content: &[u8], max_line: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        let mut column = 0;
        let mut i = 0;
        while i < content.len() {
            let b = content[i];
            if b == b'\r' || b == b'\n' {
                out.extend_from_slice(b"\r\n");
                line_start = true;
                column = 0;
                i += if b == b'\r' && content.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                continue;
            }
            if line_start && b == b'.' {
                out.push(b'.');
                column += 1;
            }
            if column == max_line {
                out.extend_from_slice(b"\r\n ");
                column = 1;
            }
            out.push(b);
            column += 1;
            line_start = false;
            i += 1;
        }
        if !line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn stuff_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        stuff_chunks_max(chunks, MAX_LINE)
    }

    fn stuff_chunks_max(chunks: &[&[u8]], max_line: usize) -> Vec<u8> {
        let mut s = DotStuffer::with_max_line(max_line);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn rfc_5321_4_5_2_cases() {
        for (content, wire) in [
            // Empty content is just the terminator.
            (&b""[..], &b".\r\n"[..]),
            (b"a\r\n", b"a\r\n.\r\n"),
            // §4.1.1.4: a last line without CRLF gets one before the terminator.
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"..x\r\n.\r\n", b"...x\r\n..\r\n.\r\n"),
            (b"a\r\n.b\r\nc.\r\n", b"a\r\n..b\r\nc.\r\n.\r\n"),
            // Bare line ends become CRLF, and the line after them is stuffed too.
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\r", b"a\r\n..\r\n.\r\n"),
            (b"\r\r\n", b"\r\n\r\n.\r\n"),
        ] {
            assert_eq!(stuff_chunks(&[content]), wire, "{content:?}");
            assert_eq!(naive_stuff(content), wire, "naive {content:?}");
        }
    }

    #[test]
    fn a_stuffer_is_reusable_after_finish() {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        s.push(b"a", &mut out);
        s.finish(&mut out);
        s.push(b".b\r\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"a\r\n.\r\n..b\r\n.\r\n");
    }

    #[test]
    fn lines_over_998_octets_are_folded_with_crlf_space() {
        // RFC 5321 §4.5.3.1.6: 998 octets and the CRLF is the most a receiver must take.
        let exact = [b'a'; MAX_LINE];
        let mut wire = exact.to_vec();
        wire.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(stuff_chunks(&[&exact]), wire);
        // 2,500 octets: 998, then continuations of 997 after their leading space.
        let long = [b'b'; 2500];
        let out = stuff_chunks(&[&long]);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0].len(), MAX_LINE + 1, "998 and the CR");
        assert_eq!(lines[1], [&b" "[..], &[b'b'; 997], b"\r"].concat());
        assert_eq!(lines[2], [&b" "[..], &[b'b'; 505], b"\r"].concat());
        assert_eq!(&lines[3..], [&b".\r"[..], b""]);
        // A stuffed dot counts toward the line.
        let mut dotted = vec![b'.'];
        dotted.extend_from_slice(&[b'c'; MAX_LINE]);
        let out = stuff_chunks(&[&dotted]);
        assert!(out.starts_with(b".."));
        assert_eq!(out.iter().position(|&b| b == b'\r'), Some(MAX_LINE));
        assert_eq!(out, naive_stuff(&dotted));
    }

    proptest! {
        /// Folding agrees with the naive definition at every split, with a short limit so
        /// that short inputs exercise it.
        #[test]
        fn folding_matches_naive_at_every_split(
            content in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'x')], 0..40),
            max_line in 2usize..6,
        ) {
            let want = naive_stuff_max(&content, max_line);
            for i in 0..=content.len() {
                prop_assert_eq!(&stuff_chunks_max(&[&content[..i], &content[i..]], max_line), &want);
            }
            let bytes: Vec<&[u8]> = content.chunks(1).collect();
            prop_assert_eq!(&stuff_chunks_max(&bytes, max_line), &want);
        }


        /// Fast == naive for content over an alphabet rich in line ends and dots, at every split.
        #[test]
        fn stuffing_matches_naive_at_every_split(
            content in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'x')], 0..40)
        ) {
            let want = naive_stuff(&content);
            prop_assert_eq!(&stuff_chunks(&[&content]), &want);
            for i in 0..=content.len() {
                prop_assert_eq!(&stuff_chunks(&[&content[..i], &content[i..]]), &want);
            }
            let bytes: Vec<&[u8]> = content.chunks(1).collect();
            prop_assert_eq!(&stuff_chunks(&bytes), &want);
        }
    }
}

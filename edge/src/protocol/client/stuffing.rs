//! Message content onto the wire after `DATA` ([RFC 5321 §4.5.2]): a dot is added before every
//! line that starts with one, and `CRLF . CRLF` ends the content.
//!
//! The content may come in chunks of any size; the stuffer carries the line state across them,
//! so a message is never held whole. Line ends are normalised: a bare LF or a bare CR becomes
//! CRLF. Content from our spool never holds either (the server engine refuses them), so for it
//! the wire form is the content exactly; for anything else, no server, however lenient about line
//! ends, can read a premature end of data in what we send (SMTP smuggling, outbound).
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
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            line_start: true,
            pending_cr: false,
        }
    }
}

impl DotStuffer {
    /// Appends the wire form of `chunk` to `out`.
    pub(crate) fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 4);
        while !chunk.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.line_start = true;
                if let Some(rest) = chunk.strip_prefix(b"\n") {
                    chunk = rest;
                    continue;
                }
            }
            if self.line_start {
                if let Some(rest) = chunk.strip_prefix(b".") {
                    out.extend_from_slice(b"..");
                    self.line_start = false;
                    chunk = rest;
                    continue;
                }
            }
            // Copy the run up to the next line end in one go: lines are long, ends are rare.
            match memchr::memchr2(b'\r', b'\n', chunk) {
                None => {
                    out.extend_from_slice(chunk);
                    self.line_start = false;
                    return;
                }
                Some(at) => {
                    let (text, rest) = chunk.split_at(at);
                    out.extend_from_slice(text);
                    match rest.split_first() {
                        Some((b'\r', rest)) => {
                            self.line_start = false;
                            self.pending_cr = true;
                            chunk = rest;
                        }
                        Some((_, rest)) => {
                            out.extend_from_slice(b"\r\n");
                            self.line_start = true;
                            chunk = rest;
                        }
                        None => return,
                    }
                }
            }
        }
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
        *self = DotStuffer::default();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, one octet at a time.
    fn naive_stuff(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        let mut i = 0;
        while i < content.len() {
            let b = content[i];
            if b == b'\r' || b == b'\n' {
                out.extend_from_slice(b"\r\n");
                line_start = true;
                i += if b == b'\r' && content.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                continue;
            }
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
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
        let mut s = DotStuffer::default();
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

    proptest! {
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

//! A byte-at-a-time oracle for [`super::DataReceiver`]: obviously right, slow.

#![allow(clippy::indexing_slicing)]

use super::DataFault;

/// Returns (content, consumed, fault) for a whole body, or `None` if it never ends; `max_line`
/// is the longest line allowed, CRLF included.
pub fn unstuff(
    input: &[u8],
    limit: u64,
    max_line: usize,
) -> Option<(Vec<u8>, usize, Option<DataFault>)> {
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
        if b == 0 {
            fault = fault.max(Some(DataFault::Nul));
        }
        if ends_crlf {
            // The stuffing dot is transparency, not text (RFC 5321 §4.5.2).
            let text_len = line.len() - usize::from(line.first() == Some(&b'.'));
            if text_len > max_line {
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

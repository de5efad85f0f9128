//! Removing `Authentication-Results:` fields that claim to be ours ([RFC 8601 §5]): a sender
//! could otherwise write `mx.example.test; dmarc=pass` into its message and be believed by
//! every filter and mail client that trusts our authserv-id.
//!
//! [RFC 8601 §5]: https://www.rfc-editor.org/rfc/rfc8601#section-5

use memchr::memchr;

const FIELD: &[u8] = b"authentication-results:";

/// `message` without the header fields `Authentication-Results:` whose authserv-id is
/// `authserv_id` (ASCII case-insensitive); `None` if it holds none. Only the header section is
/// searched, up to the first empty line; folded fields go whole.
pub fn strip_forged(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < message.len() {
        let rest = message.get(at..).unwrap_or_default();
        if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
            break;
        }
        let end = at + field_len(rest);
        let field = message.get(at..end).unwrap_or_default();
        if is_ours(field, authserv_id) {
            // The first one found: keep what came before it.
            out.get_or_insert_with(|| message.get(..at).unwrap_or_default().to_vec());
        } else if let Some(kept) = &mut out {
            kept.extend_from_slice(field);
        }
        at = end;
    }
    let mut kept = out?;
    kept.extend_from_slice(message.get(at..).unwrap_or_default());
    Some(kept)
}

/// The length of the field at the start of `text`: its first line and every continuation line
/// (one starting with SP or HTAB, RFC 5322 §2.2.3).
fn field_len(text: &[u8]) -> usize {
    let mut len = 0;
    loop {
        let rest = text.get(len..).unwrap_or_default();
        len += memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        match text.get(len) {
            Some(b' ' | b'\t') => continue,
            _ => return len,
        }
    }
}

/// Whether `field` is an `Authentication-Results:` whose first token is `authserv_id`.
fn is_ours(field: &[u8], authserv_id: &str) -> bool {
    let Some(name) = field.get(..FIELD.len()) else {
        return false;
    };
    if !name.eq_ignore_ascii_case(FIELD) {
        return false;
    }
    let value = field.get(FIELD.len()..).unwrap_or_default();
    let value = skip_cfws(value);
    let id_len = value
        .iter()
        .position(|&b| b == b';' || b == b'(' || b.is_ascii_whitespace())
        .unwrap_or(value.len());
    value
        .get(..id_len)
        .is_some_and(|id| id.eq_ignore_ascii_case(authserv_id.as_bytes()))
}

/// Skips white space and comments (RFC 5322 §3.2.2 CFWS; nested comments counted).
fn skip_cfws(mut text: &[u8]) -> &[u8] {
    loop {
        match text.first() {
            Some(b) if b.is_ascii_whitespace() => text = text.get(1..).unwrap_or_default(),
            Some(b'(') => {
                let mut depth = 0usize;
                let mut i = 0;
                while let Some(&b) = text.get(i) {
                    i += 1;
                    match b {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                text = text.get(i..).unwrap_or_default();
            }
            _ => return text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_go_whole_with_their_folds_and_others_stay() {
        let message = b"Received: by x\r\n\
            Authentication-Results: MX.example.test;\r\n\tdmarc=pass\r\n\
            authentication-results: (comment) mx.example.test; spf=pass\r\n\
            Authentication-Results: other.test; dkim=pass\r\n\
            Authentication-Results: mx.example.test.evil; spf=pass\r\n\
            Subject: hi\r\n\
            \r\n\
            Authentication-Results: mx.example.test; in the body\r\n";
        let kept = strip_forged(message, "mx.example.test").unwrap();
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            "Received: by x\r\n\
             Authentication-Results: other.test; dkim=pass\r\n\
             Authentication-Results: mx.example.test.evil; spf=pass\r\n\
             Subject: hi\r\n\
             \r\n\
             Authentication-Results: mx.example.test; in the body\r\n"
        );
    }

    #[test]
    fn nothing_to_strip_is_none() {
        assert_eq!(strip_forged(b"Subject: a\r\n\r\nbody", "mx.test"), None);
        assert_eq!(strip_forged(b"", "mx.test"), None);
        // A header section without a body or final CRLF.
        assert_eq!(
            strip_forged(b"Authentication-Results: mx.test; none", "mx.test").unwrap(),
            b""
        );
    }
}

//! The on-disk form of one queued message: a small versioned envelope header, then the message
//! exactly as it will be delivered.
//!
//! ```text
//! SMTP-EDGE-QUEUE 1\n               magic and format version
//! size 20:00000000000000001234\n    message length in octets, fixed width (patched at commit)
//! id 26:<queue id>\n                must equal the file name
//! greeting 4:EHLO\n                 EHLO | HELO
//! body 4:7BIT\n                     7BIT | 8BITMIME
//! smtputf8 1:0\n                    0 | 1
//! helo <n>:<octets>\n               the HELO/EHLO argument as sent
//! from <n>:<mailbox>\n              n = 0 for the null reverse-path <>
//! rcpt <n>:<mailbox>\n              once per recipient, in order (at least one)
//! end 0:\n
//! Received: from ...                the message, `size` octets, nothing after it
//! ```
//!
//! Every field is `key SP length ":" value LF` in a fixed order, so a value is read by its length
//! and never scanned: a HELO argument holding a newline cannot forge a field. `from-routed` and
//! `rcpt-routed` replace `from`/`rcpt` for paths that carried a source route. The `size` field
//! turns a truncated file into an error rather than a short delivery; it is written last, just
//! before the file is synced, so a file whose size does not match was never committed.

use crate::protocol::address::parse_mailbox;
use crate::protocol::{BodyType, Envelope, Greeting, Mailbox};

use super::QueueId;

/// First line of every queue file; the digit is the format version.
pub const MAGIC: &[u8] = b"SMTP-EDGE-QUEUE 1\n";
/// Digits of the `size` field; 20 hold any `u64`.
const SIZE_DIGITS: usize = 20;
/// Offset of the `size` digits in the file: the writer patches them at commit.
pub const SIZE_OFFSET: u64 = (MAGIC.len() + b"size 20:".len()) as u64;
/// What `size` holds until commit: not digits, so an uncommitted file never decodes.
const SIZE_PLACEHOLDER: [u8; SIZE_DIGITS] = [b'-'; SIZE_DIGITS];
/// Longest value a field may declare (the HELO argument is the only long one; the engine caps
/// command lines at 512 octets, so this leaves room without trusting the file).
const MAX_FIELD: usize = 64 * 1024;
/// Most recipients a file may declare; far above any `max_recipients` the config accepts.
const MAX_RCPTS: usize = 100_000;

/// Why a queue file's header could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with [`MAGIC`] (another format or version, or not a queue file).
    #[error("not a version 1 queue file")]
    Magic,
    /// The file ends inside the header or before `size` message octets.
    #[error("truncated")]
    Truncated,
    /// A field is missing, out of order, or malformed.
    #[error("bad field {0:?}")]
    Field(&'static str),
    /// The message is longer than `size` says.
    #[error("trailing data after the message")]
    Trailing,
    /// The header names another id than the file name.
    #[error("header id {0} does not match the file name")]
    IdMismatch(String),
}

/// Encodes the header of a queue file for `envelope`, with the `size` left as a placeholder for
/// [`size_field`] to fill in at commit.
pub fn encode_header(envelope: &Envelope, id: &QueueId) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 64 * envelope.rcpt_to.len());
    out.extend_from_slice(MAGIC);
    field(&mut out, "size", &SIZE_PLACEHOLDER);
    field(&mut out, "id", id.as_str().as_bytes());
    let greeting: &[u8] = match envelope.greeting {
        Greeting::Ehlo => b"EHLO",
        Greeting::Helo => b"HELO",
    };
    field(&mut out, "greeting", greeting);
    let body: &[u8] = match envelope.body {
        BodyType::SevenBit => b"7BIT",
        BodyType::EightBitMime => b"8BITMIME",
    };
    field(&mut out, "body", body);
    field(
        &mut out,
        "smtputf8",
        if envelope.smtputf8 { b"1" } else { b"0" },
    );
    field(&mut out, "helo", envelope.helo.as_bytes());
    match &envelope.mail_from {
        None => field(&mut out, "from", b""),
        Some(m) => mailbox_field(&mut out, "from", m),
    }
    for rcpt in &envelope.rcpt_to {
        mailbox_field(&mut out, "rcpt", rcpt);
    }
    field(&mut out, "end", b"");
    out
}

/// A whole queue file for `envelope` and `message`, size filled in: for copies made outside the
/// io_uring writer (the outbound queue).
pub fn encode_file(envelope: &Envelope, id: &QueueId, message: &[u8]) -> Vec<u8> {
    let mut out = encode_header(envelope, id);
    let size = size_field(message.len() as u64);
    let at = SIZE_OFFSET as usize;
    if let Some(slot) = out.get_mut(at..at + size.len()) {
        slot.copy_from_slice(&size);
    }
    out.extend_from_slice(message);
    out
}

/// The `size` digits for a message of `len` octets, to be written at [`SIZE_OFFSET`].
pub fn size_field(len: u64) -> Vec<u8> {
    format!("{len:0SIZE_DIGITS$}").into_bytes()
}

fn field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(format!(" {}:", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn mailbox_field(out: &mut Vec<u8>, key: &'static str, m: &Mailbox) {
    let key = match (m.source_route, key) {
        (true, "from") => "from-routed",
        (true, _) => "rcpt-routed",
        (false, key) => key,
    };
    field(out, key, m.to_string().as_bytes());
}

/// A decoded queue file: its envelope and where the message starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The id recorded in the header.
    pub id: QueueId,
    /// The envelope.
    pub envelope: Envelope,
    /// Offset of the first message octet (the `Received:` header).
    pub message_offset: usize,
}

/// Decodes a whole queue file (header and message). Never panics: any input that is not a
/// complete file written by [`encode_header`] plus a committed message is an error.
pub fn decode(file: &[u8]) -> Result<Decoded, FormatError> {
    let rest = file.strip_prefix(MAGIC).ok_or(FormatError::Magic)?;
    let mut r = Reader { rest };
    let size = r.expect("size")?;
    let size: u64 = parse_digits(size).ok_or(FormatError::Field("size"))?;
    let id = r.expect("id")?;
    let id = std::str::from_utf8(id)
        .ok()
        .and_then(|s| s.parse::<QueueId>().ok())
        .ok_or(FormatError::Field("id"))?;
    let greeting = match r.expect("greeting")? {
        b"EHLO" => Greeting::Ehlo,
        b"HELO" => Greeting::Helo,
        _ => return Err(FormatError::Field("greeting")),
    };
    let body = match r.expect("body")? {
        b"7BIT" => BodyType::SevenBit,
        b"8BITMIME" => BodyType::EightBitMime,
        _ => return Err(FormatError::Field("body")),
    };
    let smtputf8 = match r.expect("smtputf8")? {
        b"0" => false,
        b"1" => true,
        _ => return Err(FormatError::Field("smtputf8")),
    };
    let helo =
        String::from_utf8(r.expect("helo")?.to_vec()).map_err(|_| FormatError::Field("helo"))?;
    let mail_from = match r.next()? {
        ("from", b"") => None,
        ("from", v) => Some(mailbox(v, false, "from")?),
        ("from-routed", v) => Some(mailbox(v, true, "from")?),
        _ => return Err(FormatError::Field("from")),
    };
    let mut rcpt_to = Vec::new();
    loop {
        match r.next()? {
            ("rcpt", v) => rcpt_to.push(mailbox(v, false, "rcpt")?),
            ("rcpt-routed", v) => rcpt_to.push(mailbox(v, true, "rcpt")?),
            ("end", b"") if !rcpt_to.is_empty() => break,
            _ => return Err(FormatError::Field("rcpt")),
        }
        if rcpt_to.len() > MAX_RCPTS {
            return Err(FormatError::Field("rcpt"));
        }
    }
    let message_offset = file.len() - r.rest.len();
    let have = r.rest.len() as u64;
    if have < size {
        return Err(FormatError::Truncated);
    }
    if have > size {
        return Err(FormatError::Trailing);
    }
    let envelope = Envelope {
        helo,
        greeting,
        mail_from,
        rcpt_to,
        body,
        smtputf8,
        login: None,
    };
    Ok(Decoded {
        id,
        envelope,
        message_offset,
    })
}

fn mailbox(v: &[u8], routed: bool, key: &'static str) -> Result<Mailbox, FormatError> {
    let s = std::str::from_utf8(v).map_err(|_| FormatError::Field(key))?;
    let mut m = parse_mailbox(s).map_err(|_| FormatError::Field(key))?;
    m.source_route = routed;
    Ok(m)
}

/// Parses ASCII digits (any count up to 20) into a `u64`, rejecting anything else.
fn parse_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > SIZE_DIGITS {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A cursor over the header fields.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads one `key SP len ":" value LF` field.
    fn next(&mut self) -> Result<(&'a str, &'a [u8]), FormatError> {
        let rest = self.rest;
        let sp = memchr::memchr(b' ', rest).ok_or(FormatError::Truncated)?;
        let (key, after) = rest.split_at(sp);
        // Keys are short lowercase words; anything else is not our file.
        if key.is_empty()
            || key.len() > 16
            || !key
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return Err(FormatError::Field("key"));
        }
        let after = after.get(1..).ok_or(FormatError::Truncated)?;
        let colon = memchr::memchr(b':', after).ok_or(FormatError::Truncated)?;
        let (len, after) = after.split_at(colon);
        // Canonical decimal only (no sign, no leading zero), so one header has one encoding.
        if len.len() > 1 && len.first() == Some(&b'0') {
            return Err(FormatError::Field("length"));
        }
        let len = parse_digits(len)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= MAX_FIELD)
            .ok_or(FormatError::Field("length"))?;
        let after = after.get(1..).ok_or(FormatError::Truncated)?;
        let value = after.get(..len).ok_or(FormatError::Truncated)?;
        match after.get(len) {
            Some(b'\n') => {}
            Some(_) => return Err(FormatError::Field("terminator")),
            None => return Err(FormatError::Truncated),
        }
        self.rest = after.get(len + 1..).ok_or(FormatError::Truncated)?;
        // Keys were checked to be ASCII above.
        let key = std::str::from_utf8(key).map_err(|_| FormatError::Field("key"))?;
        Ok((key, value))
    }

    /// Reads the field that must come next, named `key`.
    fn expect(&mut self, key: &'static str) -> Result<&'a [u8], FormatError> {
        match self.next()? {
            (k, v) if k == key => Ok(v),
            _ => Err(FormatError::Field(key)),
        }
    }
}

/// A committed queue file as the writer leaves it: header, size filled in, then `msg`.
#[cfg(test)]
pub(crate) fn committed_file(env: &Envelope, id: &QueueId, msg: &[u8]) -> Vec<u8> {
    let mut f = encode_header(env, id);
    let at = SIZE_OFFSET as usize;
    f[at..at + SIZE_DIGITS].copy_from_slice(&size_field(msg.len() as u64));
    f.extend_from_slice(msg);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(env: &Envelope, id: &QueueId, msg: &[u8]) -> Vec<u8> {
        committed_file(env, id, msg)
    }

    fn mbox(s: &str) -> Mailbox {
        parse_mailbox(s).unwrap()
    }

    fn envelope() -> Envelope {
        let mut routed = mbox("b@[IPv6:2001:db8::1]");
        routed.source_route = true;
        Envelope {
            helo: "client\nrcpt 3:x@y".into(),
            greeting: Greeting::Ehlo,
            mail_from: Some(mbox(r#""a b"@Example.TEST"#)),
            rcpt_to: vec![mbox("c@d.test"), routed, mbox("用户@例子.测试")],
            body: BodyType::EightBitMime,
            smtputf8: true,
            login: None,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let id = QueueId::from_parts(9, 1, 2);
        let env = envelope();
        let f = file(&env, &id, b"Received: x\r\n\r\nbody\r\n");
        let d = decode(&f).unwrap();
        assert_eq!(d.id, id);
        assert_eq!(d.envelope, env);
        assert_eq!(&f[d.message_offset..], b"Received: x\r\n\r\nbody\r\n");
        let text = String::from_utf8_lossy(&f);
        assert!(
            text.starts_with("SMTP-EDGE-QUEUE 1\nsize 20:00000000000000000021\nid 26:"),
            "{text}"
        );
        assert!(
            text.contains("\nhelo 17:client\nrcpt 3:x@y\nfrom 18:\"a b\"@example.test\n"),
            "{text}"
        );
    }

    #[test]
    fn null_sender() {
        let id = QueueId::from_parts(9, 1, 2);
        let env = Envelope {
            mail_from: None,
            ..envelope()
        };
        assert_eq!(decode(&file(&env, &id, b"")).unwrap().envelope, env);
    }

    #[test]
    fn uncommitted_truncated_and_trailing_are_errors() {
        let id = QueueId::from_parts(9, 1, 2);
        let env = envelope();
        let mut uncommitted = encode_header(&env, &id);
        uncommitted.extend_from_slice(b"msg");
        assert_eq!(decode(&uncommitted), Err(FormatError::Field("size")));
        let f = file(&env, &id, b"message");
        for cut in 0..f.len() {
            assert!(decode(&f[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = f.clone();
        long.push(b'x');
        assert_eq!(decode(&long), Err(FormatError::Trailing));
        assert_eq!(decode(b"SMTP-EDGE-QUEUE 2\n"), Err(FormatError::Magic));
    }

    #[test]
    fn no_recipients_is_an_error() {
        let id = QueueId::from_parts(9, 1, 2);
        let env = Envelope {
            rcpt_to: vec![],
            ..envelope()
        };
        assert_eq!(
            decode(&file(&env, &id, b"")),
            Err(FormatError::Field("rcpt"))
        );
    }

    fn arb_mailbox() -> impl Strategy<Value = Mailbox> {
        let local = prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[a-z0-9]{1,5}){0,2}",
            "\"[ -!#-\\[\\]-~]{0,20}\"",
        ];
        let domain = prop_oneof![
            "[a-z0-9]{1,10}(\\.[a-z]{2,5}){1,2}",
            Just("[192.0.2.1]".to_string()),
            Just("[IPv6:2001:db8::1]".to_string()),
        ];
        (local, domain, any::<bool>()).prop_map(|(l, d, routed)| {
            let mut m = mbox(&format!("{l}@{d}"));
            m.source_route = routed;
            m
        })
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        (
            any::<String>(),
            any::<bool>(),
            proptest::option::of(arb_mailbox()),
            proptest::collection::vec(arb_mailbox(), 1..8),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(helo, ehlo, mail_from, rcpt_to, eight, smtputf8)| Envelope {
                    helo,
                    greeting: if ehlo { Greeting::Ehlo } else { Greeting::Helo },
                    mail_from,
                    rcpt_to,
                    body: if eight {
                        BodyType::EightBitMime
                    } else {
                        BodyType::SevenBit
                    },
                    smtputf8,
                    login: None,
                },
            )
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(env in arb_envelope(), msg in proptest::collection::vec(any::<u8>(), 0..200), c in any::<u64>()) {
            let id = QueueId::from_parts(c, 3, c);
            let f = file(&env, &id, &msg);
            let d = decode(&f).unwrap();
            prop_assert_eq!(d.id, id);
            prop_assert_eq!(d.envelope, env);
            prop_assert_eq!(&f[d.message_offset..], &msg[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let mut prefixed = MAGIC.to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = decode(&prefixed);
        }

        #[test]
        fn mutated_files_never_panic(env in arb_envelope(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut f = file(&env, &QueueId::from_parts(1, 2, 3), b"msg");
            let i = at.index(f.len());
            f[i] = b;
            let _ = decode(&f);
        }
    }
}

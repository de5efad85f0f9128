//! Reading what the server delivered: the trace headers it prepends and the message after them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{wait_for_maildir, DELIVERY_DEADLINE};

/// One delivered Maildir file, split into the server's trace headers and the message.
#[derive(Debug)]
pub struct Delivered {
    /// Value of the `Return-Path:` header, e.g. `<a@remote.test>`.
    pub return_path: String,
    /// Value of the `Delivered-To:` header.
    pub delivered_to: String,
    /// The `Received:` header, all folded lines, CRLFs included.
    pub received: String,
    /// Everything after the trace headers: the message as the client sent it.
    pub message: Vec<u8>,
}

/// Parses a delivered file; panics (naming the file) if the trace headers are not as specified:
/// `Return-Path`, `Delivered-To`, then a `Received` header whose continuation lines start with
/// whitespace.
pub fn read(path: &Path) -> Delivered {
    let raw = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let show = || String::from_utf8_lossy(&raw[..raw.len().min(600)]).into_owned();
    let mut rest: &[u8] = &raw;
    let take_line = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let pos = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = rest[..pos + 2].to_vec();
        *rest = &rest[pos + 2..];
        Some(line)
    };
    let header = |line: Option<Vec<u8>>, name: &str| -> String {
        let line =
            line.unwrap_or_else(|| panic!("{}: no {name} line in {:?}", path.display(), show()));
        let text = String::from_utf8_lossy(&line).into_owned();
        let prefix = format!("{name}: ");
        assert!(
            text.starts_with(&prefix),
            "{}: expected a `{name}:` line, got {text:?}\nfile starts: {:?}",
            path.display(),
            show()
        );
        text[prefix.len()..].trim_end_matches("\r\n").to_string()
    };
    let return_path = header(take_line(&mut rest), "Return-Path");
    let delivered_to = header(take_line(&mut rest), "Delivered-To");
    let first = header(take_line(&mut rest), "Received");
    let mut received = format!("Received: {first}\r\n");
    while rest.first().is_some_and(|&b| b == b'\t' || b == b' ') {
        let line = take_line(&mut rest)
            .unwrap_or_else(|| panic!("{}: unterminated Received header", path.display()));
        received.push_str(&String::from_utf8_lossy(&line));
    }
    Delivered {
        return_path,
        delivered_to,
        received,
        message: rest.to_vec(),
    }
}

/// The `new/` directory of `addr`'s mailbox: `<maildir>/<domain>/<localpart>/new`.
pub fn new_dir(maildir: &Path, addr: &str) -> PathBuf {
    let (local, domain) = addr.rsplit_once('@').expect("address with @");
    maildir.join(domain).join(local).join("new")
}

/// Asserts that `file` is `msg` delivered from `from` to `rcpt`, byte for byte.
pub fn assert_delivered(file: &Path, from: &str, rcpt: &str, msg: &[u8]) {
    let d = read(file);
    assert_eq!(
        d.return_path,
        format!("<{from}>"),
        "Return-Path of {}",
        file.display()
    );
    assert!(
        d.delivered_to == rcpt || d.delivered_to == format!("<{rcpt}>"),
        "Delivered-To of {}: {:?}, want {rcpt}",
        file.display(),
        d.delivered_to
    );
    assert!(
        d.received.len() > "Received: \r\n".len(),
        "empty Received header in {}",
        file.display()
    );
    assert_bytes_eq(&d.message, msg, &format!("message in {}", file.display()));
}

/// Waits for the one message to `rcpt` under `maildir`, asserts that it is `msg` delivered from
/// `from` ([`assert_delivered`]) and returns its `Received:` header unfolded (RFC 5322 §2.2.3: a
/// fold is a CRLF before whitespace).
pub fn assert_one_delivered(maildir: &Path, from: &str, rcpt: &str, msg: &[u8]) -> String {
    let files = wait_for_maildir(&new_dir(maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{rcpt}: {files:?}");
    assert_delivered(&files[0], from, rcpt, msg);
    read(&files[0]).received.replace("\r\n", "")
}

/// Byte equality with a readable diff position on failure.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |s: &[u8]| {
        let lo = at.saturating_sub(40);
        String::from_utf8_lossy(&s[lo.min(s.len())..(at + 40).min(s.len())]).into_owned()
    };
    panic!(
        "{what}: differs at byte {at} (got {} bytes, want {})\n got: {:?}\nwant: {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// The value of the first `name:` header line in `msg` (unfolded lines only).
pub fn header_value(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
}

/// A 7-bit test message with CRLF line endings that exercises dot-stuffing and whitespace:
/// a line that is only `.`, lines starting with `.` and `..`, trailing blanks, a long line.
pub fn sample_message(tag: &str, from: &str, to: &str) -> Vec<u8> {
    let mut m = String::new();
    m.push_str(&format!("From: Sender <{from}>\r\n"));
    m.push_str(&format!("To: <{to}>\r\n"));
    m.push_str(&format!("Subject: blackbox {tag}\r\n"));
    m.push_str(&format!("Message-ID: <{tag}@client.test>\r\n"));
    m.push_str(&format!("X-Token: {tag}\r\n"));
    m.push_str("\r\n");
    m.push_str("Hello from the black-box tests.\r\n");
    m.push_str(".\r\n");
    m.push_str(".leading dot\r\n");
    m.push_str("..two leading dots\r\n");
    m.push_str("trailing blanks   \t\r\n");
    m.push_str("\r\n");
    m.push_str("\tindented with a tab\r\n");
    m.push_str(&"x".repeat(900));
    m.push_str("\r\n");
    m.push_str(&format!("token {tag}\r\n"));
    m.into_bytes()
}

/// The `X-Token` header of every message delivered under `maildir`, sorted (duplicates kept).
pub fn tokens_in(maildir: &Path) -> Vec<String> {
    let mut tokens: Vec<String> = crate::harness::maildir_files(maildir)
        .iter()
        .filter_map(|f| header_value(&read(f).message, "X-Token"))
        .collect();
    tokens.sort();
    tokens
}

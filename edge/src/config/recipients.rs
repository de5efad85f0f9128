//! The `delivery.recipients` file: the local recipients that exist, one address per line.
//!
//! ```text
//! # comment lines start with '#'; blank lines are ignored
//! alice@example.test
//! Bob@Example.TEST        <- stored as bob@example.test
//! ```
//!
//! A `#` only starts a comment at the beginning of a line: `a#b@example.test` is a valid
//! address (`#` is `atext`, RFC 5322 §3.2.3).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use super::ConfigError;
use crate::protocol::address::{parse_mailbox, AddressError, Domain, MAX_LOCAL_PART};

/// Largest recipients file read, 64 MiB: about a million addresses. The whole set is held in
/// memory for the life of the config, so the file needs a cap like every other input.
pub const MAX_RECIPIENTS_FILE: u64 = 64 * 1024 * 1024;

/// At most this many bad lines are reported one by one; the rest are counted in one last error,
/// so a file in the wrong format does not bury the other problems.
pub const MAX_REPORTED_LINE_ERRORS: usize = 20;

const KEY: &str = "delivery.recipients";

/// Reads and checks the file at `path`. Each address is lower-cased `local@domain` and its
/// domain must be one of `local_domains` (already lower-cased). Returns `None` after pushing at
/// least one error.
pub(super) fn load(
    path: &Path,
    local_domains: &[String],
    errors: &mut Vec<ConfigError>,
) -> Option<HashSet<String>> {
    let bytes = match read_capped(path) {
        Ok(bytes) => bytes,
        Err(problem) => {
            errors.push(ConfigError::new(KEY, problem));
            return None;
        }
    };
    let (set, bad) = parse(&bytes, local_domains);
    if bad.is_empty() {
        return Some(set);
    }
    let total = bad.len();
    for (line, problem) in bad.into_iter().take(MAX_REPORTED_LINE_ERRORS) {
        errors.push(ConfigError::new(KEY, format!("line {line}: {problem}")));
    }
    if total > MAX_REPORTED_LINE_ERRORS {
        errors.push(ConfigError::new(
            KEY,
            format!(
                "{} more bad lines in {} not shown",
                total - MAX_REPORTED_LINE_ERRORS,
                path.display()
            ),
        ));
    }
    None
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    // Read one byte past the cap to tell "exactly the cap" from "over it".
    file.take(MAX_RECIPIENTS_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_RECIPIENTS_FILE {
        return Err(format!(
            "{} is larger than {MAX_RECIPIENTS_FILE} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// The addresses of `bytes`, and every bad line as (1-based line number, problem).
fn parse(bytes: &[u8], local_domains: &[String]) -> (HashSet<String>, Vec<(usize, String)>) {
    let mut set = HashSet::new();
    let mut bad = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        match address(line, local_domains) {
            Ok(Some(addr)) => {
                set.insert(addr);
            }
            Ok(None) => {}
            Err(problem) => bad.push((i + 1, problem)),
        }
    }
    (set, bad)
}

/// One line: `Ok(None)` for a blank or comment line, else the normalised address.
fn address(line: &[u8], local_domains: &[String]) -> Result<Option<String>, String> {
    let line = std::str::from_utf8(line).map_err(|_| "not valid UTF-8".to_owned())?;
    // trim() also drops the CR of a CRLF file.
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mbox = parse_mailbox(line).map_err(|e| match e {
        AddressError::TooLong => format!(
            "{line:?} is too long (RFC 5321 §4.5.3.1: local part at most {MAX_LOCAL_PART} \
             octets, domain at most 255)"
        ),
        AddressError::Syntax => {
            format!("{line:?} is not an address (expected local@domain, RFC 5321 §4.1.2)")
        }
    })?;
    if mbox.quoted {
        // The engine matches on the plain `local@domain` form; a quoted local part has more than
        // one spelling, so listing one would silently miss the others.
        return Err(format!(
            "{line:?}: quoted local parts are not supported here"
        ));
    }
    let domain = match &mbox.domain {
        Domain::Name(name) => name,
        _ => {
            return Err(format!(
                "{line:?}: an address literal is not a local domain"
            ))
        }
    };
    if !local_domains.iter().any(|d| d == domain) {
        return Err(format!("{line:?}: domain {domain} is not in local_domains"));
    }
    Ok(Some(format!(
        "{}@{domain}",
        mbox.local.to_ascii_lowercase()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<String> {
        vec!["example.test".to_owned()]
    }

    #[test]
    fn comments_blank_lines_crlf_and_case() {
        let text = b"# staff\r\n\r\nAlice@Example.TEST\r\n  bob@example.test  \na#b@example.test";
        let (set, bad) = parse(text, &domains());
        assert!(bad.is_empty(), "{bad:?}");
        let mut got: Vec<_> = set.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            ["a#b@example.test", "alice@example.test", "bob@example.test"]
        );
    }

    #[test]
    fn bad_lines_are_numbered() {
        let text =
            b"ok@example.test\nno-at-sign\nx@other.test\n\"q\"@example.test\nx@[192.0.2.1]\n\xff";
        let (_, bad) = parse(text, &domains());
        let lines: Vec<usize> = bad.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(bad[1].1.contains("not in local_domains"), "{:?}", bad[1]);
    }
}

//! Maildir layout: which directory a recipient's mail goes to, and the name of each entry.
//!
//! ```text
//! <maildir>/<domain>/<local part>/{tmp,new,cur}/<qid>.<key hash>.smtp-edge
//! ```
//!
//! Both path components come from the peer, so both go through [`path_component`]: lower-cased,
//! and every byte outside `[a-z0-9._+-]` (and a leading `.`) percent-encoded. The result never
//! holds `/`, never is `.` or `..`, and never starts with a dot; so no address, quoted or not,
//! can leave `<maildir>` or land in a hidden directory. The encoding is injective, so two
//! different mailboxes never share a directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::protocol::{Domain, Mailbox};
use crate::spool::QueueId;

/// Default permission bits of a Maildir entry: the server's user alone.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// The mode of a Maildir directory for entries of `file_mode`: the same bits, plus search (x)
/// for every class that may read (0600 gives 0700, 0660 gives 0770, 0640 gives 0750).
pub fn dir_mode(file_mode: u32) -> u32 {
    file_mode | ((file_mode & 0o444) >> 2)
}

/// A recipient's mailbox directory and the entry name of one message in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `<maildir>/<domain>/<local part>`.
    pub dir: PathBuf,
    /// `<qid>.<hash>.smtp-edge`: the same for the same message and mailbox on every attempt,
    /// which is what makes a resumed delivery skip what it already did.
    pub name: String,
    /// The recipient as written in `Delivered-To:`.
    pub rcpt: String,
}

/// Why a recipient has no mailbox here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `user@[192.0.2.1]`: an address literal names a host, not a local domain.
    #[error("{0}: address literals are not delivered locally")]
    AddressLiteral(String),
    /// `""@example.test`: nothing to name a directory after.
    #[error("{0}: empty local part")]
    EmptyLocalPart(String),
}

/// Maps a recipient to its mailbox and entry name for message `id`.
pub fn target(maildir: &Path, id: &QueueId, rcpt: &Mailbox) -> Result<Target, TargetError> {
    let domain = match &rcpt.domain {
        Domain::Name(name) => path_component(name),
        Domain::Ipv4(_) | Domain::Ipv6(_) => {
            return Err(TargetError::AddressLiteral(rcpt.to_string()))
        }
    };
    let local = rcpt.local_unquoted();
    if local.is_empty() {
        return Err(TargetError::EmptyLocalPart(rcpt.to_string()));
    }
    let local = path_component(&local);
    // The key is the directory itself, so two spellings of one mailbox (`A@x`, `"a"@x`) give
    // one entry name and are delivered once.
    let hash = fnv1a(format!("{domain}/{local}").as_bytes());
    Ok(Target {
        dir: maildir.join(domain).join(local),
        name: format!("{id}.{hash:016x}.smtp-edge"),
        rcpt: rcpt.to_string(),
    })
}

/// Lower-cases `s` and percent-encodes (`%HH`, uppercase hex) every byte outside
/// `[a-z0-9._+-]`, and a leading `.`, so the result is one safe path component.
pub fn path_component(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    for (i, b) in lower.bytes().enumerate() {
        let plain = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'+' | b'-')
            || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// FNV-1a, 64 bits: stable across Rust versions and runs, unlike `DefaultHasher`, which the
/// entry name needs (it must be recomputed identically after a restart).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::address::parse_mailbox;
    use std::path::Component;

    fn t(addr: &str) -> Result<Target, TargetError> {
        target(
            Path::new("/m"),
            &QueueId::from_parts(1, 2, 3),
            &parse_mailbox(addr).unwrap(),
        )
    }

    #[test]
    fn components() {
        for (input, want) in [
            ("John.Doe", "john.doe"),
            ("a+tag_x-y", "a+tag_x-y"),
            ("a/b", "a%2Fb"),
            ("../../etc", "%2E.%2F..%2Fetc"),
            ("..", "%2E."),
            (".hidden", "%2Ehidden"),
            ("a b\"c%", "a%20b%22c%25"),
            ("Ünï", "%C3%BCn%C3%AF"),
        ] {
            assert_eq!(path_component(input), want, "{input}");
        }
    }

    #[test]
    fn traversal_stays_inside() {
        for addr in [
            r#""../../etc"@example.test"#,
            "a/b@example.test",
            r#""/abs"@example.test"#,
            r#"".."@example.test"#,
        ] {
            let target = t(addr).unwrap();
            let rel = target.dir.strip_prefix("/m").unwrap();
            let parts: Vec<_> = rel.components().collect();
            assert_eq!(parts.len(), 2, "{addr}: {parts:?}");
            assert!(
                parts.iter().all(|c| matches!(c, Component::Normal(_))),
                "{addr}: {parts:?}"
            );
            assert!(!target.name.contains('/') && !target.name.contains(':'));
        }
    }

    #[test]
    fn spellings_of_one_mailbox_share_a_name() {
        let (a, b) = (
            t("User@Example.TEST").unwrap(),
            t(r#""user"@example.test"#).unwrap(),
        );
        assert_eq!((a.dir.clone(), a.name.clone()), (b.dir, b.name));
        assert_eq!(a.dir, Path::new("/m/example.test/user"));
        assert_ne!(a.name, t("other@example.test").unwrap().name);
    }

    #[test]
    fn refused() {
        assert!(matches!(
            t("a@[192.0.2.1]"),
            Err(TargetError::AddressLiteral(_))
        ));
        assert!(matches!(
            t("a@[IPv6:2001:db8::1]"),
            Err(TargetError::AddressLiteral(_))
        ));
        assert!(matches!(
            t(r#"""@example.test"#),
            Err(TargetError::EmptyLocalPart(_))
        ));
    }
}

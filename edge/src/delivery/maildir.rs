//! Maildir layout: which directory a recipient's mail goes to, and the name of each entry.
//!
//! ```text
//! <maildir>/<domain>/<local part>/{tmp,new,cur}/<qid>.<key hash>.smtp-edge
//! <maildir>/<domain>/<local part>/.Junk/{tmp,new,cur}/...    (quarantined messages)
//! ```
//!
//! `.Junk` is a Maildir++ subfolder (Dovecot's and Courier's layout: `.<name>` inside the
//! mailbox), where mail the DMARC check quarantined goes ([`Folder::of`]).
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

/// The folder of a mailbox a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// The mailbox itself.
    Inbox,
    /// `.Junk`: mail our DMARC check quarantined (`p=quarantine` under `checks.dmarc =
    /// "enforce"`).
    Junk,
}

impl Folder {
    /// The folder for `message` as spooled: `Junk` when our `Authentication-Results:` says it
    /// is quarantined ([`crate::checks::quarantined`], which explains why that header is
    /// trusted and why it, not the queue, carries the decision).
    pub fn of(message: &[u8]) -> Folder {
        if crate::checks::quarantined(message) {
            Folder::Junk
        } else {
            Folder::Inbox
        }
    }

    /// The subdirectory of the mailbox, if any. It starts with a dot, which
    /// [`path_component`] never gives, so it cannot be another address's mailbox.
    fn subdir(self) -> Option<&'static str> {
        match self {
            Folder::Inbox => None,
            Folder::Junk => Some(".Junk"),
        }
    }
}

/// A recipient's mailbox directory and the entry name of one message in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `<maildir>/<domain>/<local part>`.
    pub mailbox: PathBuf,
    /// Where the entry goes: the mailbox, or its folder (`<mailbox>/.Junk`).
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

/// Maps a recipient to its mailbox, the directory of `folder` in it, and the entry name for
/// message `id`.
pub fn target(
    maildir: &Path,
    id: &QueueId,
    rcpt: &Mailbox,
    folder: Folder,
) -> Result<Target, TargetError> {
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
    let mailbox = maildir.join(domain).join(local);
    Ok(Target {
        dir: match folder.subdir() {
            Some(sub) => mailbox.join(sub),
            None => mailbox.clone(),
        },
        mailbox,
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
            Folder::Inbox,
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
    fn junk_is_a_subfolder_of_the_same_mailbox_with_the_same_name() {
        let inbox = t("user@example.test").unwrap();
        let junk = target(
            Path::new("/m"),
            &QueueId::from_parts(1, 2, 3),
            &parse_mailbox("user@example.test").unwrap(),
            Folder::Junk,
        )
        .unwrap();
        assert_eq!(junk.mailbox, inbox.dir);
        assert_eq!(junk.dir, Path::new("/m/example.test/user/.Junk"));
        assert_eq!(junk.name, inbox.name);
        // No address maps onto the folder of another: a leading dot is always encoded.
        assert_eq!(
            t(r#"".Junk"@example.test"#).unwrap().dir,
            Path::new("/m/example.test/%2Ejunk")
        );
    }

    #[test]
    fn folder_follows_our_quarantine_mark_alone() {
        let received = "Received: from c.test\r\n\tby mx.test; Sun, 29 Nov 2026 22:00:00 +0000\r\n";
        let ours = |dmarc: &str| {
            format!("{received}Authentication-Results: mx.test;\r\n\tspf=fail smtp.mailfrom=a@q.test;\r\n\t{dmarc}\r\nSubject: x\r\n\r\nbody\r\n")
        };
        let marked = ours(
            "dmarc=fail header.from=q.test policy.dmarc=quarantine policy.disposition=quarantine",
        );
        assert_eq!(Folder::of(marked.as_bytes()), Folder::Junk);
        let tagged = ours("dmarc=fail header.from=q.test policy.dmarc=quarantine");
        assert_eq!(Folder::of(tagged.as_bytes()), Folder::Inbox);
        let passed = ours("dmarc=pass header.from=q.test policy.dmarc=quarantine");
        assert_eq!(Folder::of(passed.as_bytes()), Folder::Inbox);
        // The same line in the sender's fields, below our trace fields, is not ours.
        let below = format!("{received}X-A: 1\r\n{}", &marked[received.len()..]);
        assert_eq!(Folder::of(below.as_bytes()), Folder::Inbox);
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

//! Inbound trust checks on delivery listeners: SPF ([RFC 7208]), DKIM ([RFC 6376]), DMARC
//! ([RFC 7489]) and ARC ([RFC 8617]), each `off`, `tag` (an `Authentication-Results:` header,
//! [RFC 8601]) or `enforce`.
//!
//! [RFC 7208]: https://www.rfc-editor.org/rfc/rfc7208
//! [RFC 6376]: https://www.rfc-editor.org/rfc/rfc6376
//! [RFC 7489]: https://www.rfc-editor.org/rfc/rfc7489
//! [RFC 8617]: https://www.rfc-editor.org/rfc/rfc8617
//! [RFC 8601]: https://www.rfc-editor.org/rfc/rfc8601
//!
//! - `verify.rs`: [`Verifier`], one per worker: the lookups, with mail-auth, on the worker's
//!   runtime; SPF at `MAIL` ([`Verifier::sender`]), the rest over the whole message
//!   ([`Verifier::message`]).
//! - `result.rs`: results in RFC 8601's words, the `Authentication-Results:` header, and
//!   reading back from it whether a spooled message was quarantined.
//! - `forged.rs`: removing the ones that arrive claiming our host name.
//! - `cache.rs`: the worker's DNS cache, by TTL.

mod cache;
mod forged;
mod result;
mod verify;

pub use forged::strip_forged;
pub use result::{
    quarantined, Check, DkimSignature, DmarcPolicy, DmarcVerdict, Results, SpfVerdict, Verdict,
};
pub use verify::{SenderCheck, Verifier, VerifierError};

use crate::guard::DnsblConfig;

/// What one check does with its result (`checks.spf`, `checks.dkim`, `checks.dmarc`,
/// `checks.arc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckMode {
    /// Not looked up, not reported.
    Off,
    /// Looked up and reported in `Authentication-Results:`; never refuses mail.
    #[default]
    Tag,
    /// Reported, and acted on: an SPF `fail` is refused at MAIL FROM, a DMARC `fail` under
    /// `p=reject` after the data, and under `p=quarantine` the message is marked so (see
    /// [`quarantined`]) and Maildir delivery puts it into the mailbox's `.Junk` folder. DKIM and ARC never refuse on their
    /// own (RFC 6376 §6.1: a failed signature is as no signature).
    Enforce,
}

impl CheckMode {
    /// The names the configuration file uses.
    pub const NAMES: [&'static str; 3] = ["off", "tag", "enforce"];

    /// Parses a configuration value.
    pub fn parse(text: &str) -> Option<CheckMode> {
        match text {
            "off" => Some(CheckMode::Off),
            "tag" => Some(CheckMode::Tag),
            "enforce" => Some(CheckMode::Enforce),
            _ => None,
        }
    }

    /// Whether the check is looked up at all.
    pub fn is_on(self) -> bool {
        self != CheckMode::Off
    }
}

/// `[checks]`: what the delivery listeners verify. Submission listeners check nothing: their
/// senders authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksConfig {
    /// SPF on the MAIL FROM domain (or the HELO name for the null sender), RFC 7208 §2.4.
    pub spf: CheckMode,
    /// DKIM signatures on the message, RFC 6376 §6.
    pub dkim: CheckMode,
    /// DMARC on the From: domain, RFC 7489 §6.6, from the SPF and DKIM results; it needs both
    /// looked up, and it looks up what it needs even when `spf` or `dkim` is `off`.
    pub dmarc: CheckMode,
    /// ARC chains, RFC 8617 §5.2.
    pub arc: CheckMode,
    /// DNS block and allow lists scored before `MAIL` (`[[checks.dnsbl]]`,
    /// `checks.dnsbl_threshold`); none by default.
    pub dnsbl: DnsblConfig,
}

impl ChecksConfig {
    /// Whether any check is on: without one, a delivery session needs no resolver.
    pub fn any(&self) -> bool {
        [self.spf, self.dkim, self.dmarc, self.arc]
            .iter()
            .any(|m| m.is_on())
    }
}

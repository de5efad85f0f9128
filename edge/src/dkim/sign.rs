//! Which key signs a message, and the signature itself: relaxed/relaxed ([RFC 6376 §3.4]),
//! over the header fields of [`SIGNED_FIELDS`] that the message has, with `From` oversigned.
//!
//! [RFC 6376 §3.4]: https://www.rfc-editor.org/rfc/rfc6376#section-3.4

use std::collections::HashMap;
use std::sync::Arc;

use mail_auth::common::crypto::{Algorithm, DkimKey, Sha256};
use mail_auth::common::headers::{HeaderWriter as _, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use super::key::SigningKey;

/// The header fields signed when the message has them: the list of [RFC 6376 §5.4.1], plus
/// `Message-ID`, `Sender` and the MIME fields, whose change alters what the reader sees.
/// Fields the message lacks are not signed (as empty): a mailing list adding `List-Id` to a
/// message must not break its signature for that alone.
///
/// [RFC 6376 §5.4.1]: https://www.rfc-editor.org/rfc/rfc6376#section-5.4.1
pub const SIGNED_FIELDS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "List-Archive",
    "Message-ID",
    "Sender",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// One `[[dkim.sign]]` entry: a domain, its selector and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainKey {
    /// The `d=` domain, lower-cased.
    pub domain: String,
    /// The `s=` selector: the key record is at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// The private key.
    pub key: SigningKey,
}

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DKIM signing for {domain} failed: {problem}")]
pub struct SignError {
    /// The `d=` domain.
    pub domain: String,
    /// The signing library's reason.
    pub problem: String,
}

/// The keys of `[[dkim.sign]]`, by domain; empty when none are configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DkimSigners {
    by_domain: HashMap<String, Arc<DomainKey>>,
}

impl DkimSigners {
    /// The set of `keys`; their domains must differ (the config checks that).
    pub fn new(keys: Vec<DomainKey>) -> DkimSigners {
        let by_domain = keys
            .into_iter()
            .map(|k| (k.domain.clone(), Arc::new(k)))
            .collect();
        DkimSigners { by_domain }
    }

    /// No domain has a key: nothing is ever signed.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The key for a message whose header section is `header`: that of the domain of its
    /// `From:` address. `None` unless there is exactly one `From:` field holding exactly one
    /// address ([RFC 5322 §3.6.2] allows a list, with `Sender:`; DMARC ([RFC 7489 §6.6.1])
    /// treats such mail as unaligned, so signing it would promise nothing), or when its domain
    /// has no key.
    ///
    /// [RFC 5322 §3.6.2]: https://www.rfc-editor.org/rfc/rfc5322#section-3.6.2
    /// [RFC 7489 §6.6.1]: https://www.rfc-editor.org/rfc/rfc7489#section-6.6.1
    pub fn key_for(&self, header: &[u8]) -> Option<Arc<DomainKey>> {
        if self.is_empty() {
            return None;
        }
        let parsed = mail_parser::MessageParser::new().parse_headers(header)?;
        let from_fields = parsed
            .headers()
            .iter()
            .filter(|h| h.name.as_str().eq_ignore_ascii_case("From"))
            .count();
        if from_fields != 1 {
            return None;
        }
        let from = parsed.from()?;
        let mut addresses = from.iter();
        let address = addresses.next()?.address()?;
        if addresses.next().is_some() {
            return None;
        }
        let (_, domain) = address.rsplit_once('@')?;
        self.by_domain
            .get(&domain.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }
}

impl DomainKey {
    /// Signs `message` (header section, blank line, body, as it will be delivered) and returns
    /// the `DKIM-Signature:` field to put on top of it, CRLF-terminated. `t=` is the signing
    /// time; no `l=` (a body length lets anyone append to the message) and no `x=`.
    pub fn sign(&self, message: &[u8]) -> Result<String, SignError> {
        let present = mail_parser::MessageParser::new()
            .parse_headers(message)
            .map(|m| {
                m.headers()
                    .iter()
                    .map(|h| h.name.as_str().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut fields: Vec<&str> = SIGNED_FIELDS
            .iter()
            .copied()
            .filter(|field| present.iter().any(|name| name.eq_ignore_ascii_case(field)))
            .collect();
        // Oversigning (RFC 6376 §8.15): `From` listed once more than the message has it, so a
        // second From: added on the way breaks the signature instead of being shown.
        fields.push("From");
        let signature = DkimSigner::from_key(SharedKey(self.key.key.clone()))
            .domain(self.domain.as_str())
            .selector(self.selector.as_str())
            .headers(fields)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .map_err(|e| SignError {
                domain: self.domain.clone(),
                problem: e.to_string(),
            })?;
        let mut header = signature.to_header();
        if !header.ends_with("\r\n") {
            header.push_str("\r\n");
        }
        Ok(header)
    }
}

/// A key shared by every signature a domain makes: the signing library takes its key by value
/// per signer, and an RSA key is not cheap to copy.
struct SharedKey(Arc<DkimKey>);

impl mail_auth::common::crypto::SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

#[cfg(test)]
mod tests {
    use super::super::key::{generate, KeyAlgorithm};
    use super::*;

    fn signers() -> DkimSigners {
        let pem = generate(KeyAlgorithm::Ed25519, 0).unwrap();
        DkimSigners::new(vec![DomainKey {
            domain: "example.test".to_owned(),
            selector: "s1".to_owned(),
            key: SigningKey::from_pem(pem.as_bytes()).unwrap(),
        }])
    }

    #[test]
    fn the_key_is_chosen_by_the_one_from_address() {
        let s = signers();
        let domain = |header: &str| s.key_for(header.as_bytes()).map(|k| k.domain.clone());
        let ours = Some("example.test".to_owned());
        assert_eq!(domain("From: Alice <alice@example.test>\r\n\r\n"), ours);
        assert_eq!(domain("From: alice@EXAMPLE.test\r\nTo: x@y\r\n\r\n"), ours);
        assert_eq!(domain("from:\r\n \"A, B\" <a@example.test>\r\n\r\n"), ours);
        assert_eq!(domain("From: alice@other.test\r\n\r\n"), None);
        assert_eq!(domain("To: alice@example.test\r\n\r\n"), None);
        assert_eq!(
            domain("From: a@example.test\r\nFrom: b@example.test\r\n\r\n"),
            None,
            "two From: fields"
        );
        assert_eq!(
            domain("From: a@example.test, b@example.test\r\n\r\n"),
            None,
            "two addresses"
        );
        assert_eq!(domain("From: alice@example.test.evil\r\n\r\n"), None);
    }

    #[test]
    fn the_signature_lists_present_fields_and_oversigns_from() {
        let s = signers();
        let message = b"From: alice@example.test\r\nSubject: hi\r\nX-Other: 1\r\n\r\nbody\r\n";
        let key = s.key_for(message).unwrap();
        let header = key.sign(message).unwrap();
        assert!(
            header.starts_with(
                "DKIM-Signature: v=1; a=ed25519-sha256; s=s1; d=example.test; c=relaxed/relaxed;"
            ),
            "{header}"
        );
        assert!(header.ends_with("\r\n"));
        let unfolded: String = header.split("\r\n\t").collect();
        let h = unfolded
            .split(';')
            .map(str::trim)
            .find_map(|tag| tag.strip_prefix("h="))
            .unwrap();
        let mut listed: Vec<String> = h.split(':').map(str::to_ascii_lowercase).collect();
        listed.sort();
        assert_eq!(listed, ["from", "from", "subject"], "{header}");
    }
}

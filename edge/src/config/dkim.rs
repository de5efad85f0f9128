//! `[[dkim.sign]]`: the domains whose submitted mail is signed, their selectors and keys. Each
//! key file is read and checked here (RSA 2048..=4096 bits or Ed25519), so `check-config`
//! catches a key that `serve` could not sign with.

use std::collections::HashSet;

use super::raw::RawDkim;
use super::validate::{domain_name, Validator};
use crate::dkim::{DkimSigners, DomainKey, SigningKey};

impl Validator<'_> {
    /// `[dkim]`; no entries (the default) signs nothing.
    pub(super) fn dkim(&mut self, raw: RawDkim) -> Option<DkimSigners> {
        let mut keys = Vec::with_capacity(raw.sign.len());
        let mut domains = HashSet::new();
        let mut ok = true;
        for (i, entry) in raw.sign.iter().enumerate() {
            let at = format!("dkim.sign[{i}]");
            let domain = match domain_name(&entry.domain) {
                Ok(d) if !domains.insert(d.clone()) => {
                    self.push(
                        format!("{at}.domain"),
                        format!("{d:?} has a key already: one key per domain"),
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    self.push(format!("{at}.domain"), e);
                    None
                }
            };
            // A selector is labels separated by dots (RFC 6376 §3.1), as a domain name is.
            let selector = match domain_name(&entry.selector) {
                Ok(s) => Some(s),
                Err(_) => {
                    self.push(
                        format!("{at}.selector"),
                        format!(
                            "{:?} is not a selector (RFC 6376 §3.1: labels of letters, digits \
                             and inner hyphens, separated by dots)",
                            entry.selector
                        ),
                    );
                    None
                }
            };
            let key_at = format!("{at}.key");
            let key =
                self.readable_file(&key_at, &entry.key).and_then(|path| {
                    match SigningKey::load(&path) {
                        Ok(key) => Some(key),
                        Err(e) => {
                            self.push(&key_at, e.to_string());
                            None
                        }
                    }
                });
            match (domain, selector, key) {
                (Some(domain), Some(selector), Some(key)) => keys.push(DomainKey {
                    domain,
                    selector,
                    key,
                }),
                _ => ok = false,
            }
        }
        ok.then(|| DkimSigners::new(keys))
    }
}

//! DKIM signing of submitted mail ([RFC 6376]), with Stalwart's `mail-auth`.
//!
//! Mail from an authenticated submission session whose `From:` domain has a `[[dkim.sign]]`
//! key is signed before it enters the queue: relaxed/relaxed, the header fields of
//! [`SIGNED_FIELDS`] it has, `From` oversigned. Mail on delivery listeners, and mail whose
//! `From:` domain has no key, is never signed.
//!
//! - `key.rs`: PEM keys (RSA 2048..=4096 bits, Ed25519), the DNS record, new keys.
//! - `sign.rs`: which key signs a message, and the signature.
//! - `hold.rs`: the message held in memory until its signature is known (why: see there).
//! - `cli.rs`: `smtp-edge dkim keygen`.
//!
//! [RFC 6376]: https://www.rfc-editor.org/rfc/rfc6376

pub mod cli;
mod hold;
mod key;
mod sign;

pub use hold::{Hold, Step};
pub use key::{generate, KeyAlgorithm, KeyError, SigningKey, MAX_RSA_BITS, MIN_RSA_BITS};
pub use sign::{DkimSigners, DomainKey, SignError, SIGNED_FIELDS};

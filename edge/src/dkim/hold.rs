//! A submitted message held in memory until its signature is known.
//!
//! The queue file puts the message right after its envelope, and delivery and the relay read it
//! from there as it is: a signature has to be in the file before the message, but it exists only
//! once the body has been read. So the content of an authenticated submission is held here
//! rather than written as it streams, until its header section is complete. Then, if its
//! `From:` domain has no key, it is released (the driver writes what is held and streams the
//! rest as usual); if it has one, the whole message stays here until the end of data, is signed,
//! and goes to the spool with its `DKIM-Signature:` on top, before the fsync and the 250.
//! What is held is bounded by `limits.max_message_size`, which the engine enforces.

use std::sync::Arc;

use super::sign::{DkimSigners, DomainKey, SignError};

/// What the driver does after [`Hold::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep holding: the header section is not complete yet, or the message will be signed.
    Hold,
    /// Not signed: write out what is held ([`Hold::release`]) and stream the rest.
    Release,
}

/// The content of one message so far, and the key that will sign it once known.
pub struct Hold {
    signers: Arc<DkimSigners>,
    message: Vec<u8>,
    /// How far the search for the end of the header section has looked.
    scanned: usize,
    /// `None` until the header section is complete.
    key: Option<Arc<DomainKey>>,
}

impl std::fmt::Debug for Hold {
    /// Sizes only: never the message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("held", &self.message.len())
            .field("signing", &self.key.as_ref().map(|k| &k.domain))
            .finish_non_exhaustive()
    }
}

impl Hold {
    /// Starts holding a message that `signers` may sign.
    pub fn new(signers: Arc<DkimSigners>) -> Hold {
        Hold {
            signers,
            message: Vec::new(),
            scanned: 0,
            key: None,
        }
    }

    /// Takes the next piece of content (unstuffed, as it will be delivered).
    pub fn push(&mut self, data: &[u8]) -> Step {
        self.message.extend_from_slice(data);
        if self.key.is_some() {
            return Step::Hold;
        }
        match header_end(&self.message, self.scanned) {
            Some(end) => self.decide(end),
            None => {
                // The next search starts where "\r\n\r\n" could still begin.
                self.scanned = self.message.len().saturating_sub(3);
                Step::Hold
            }
        }
    }

    /// What is held, to be written out after [`Step::Release`].
    pub fn release(self) -> Vec<u8> {
        self.message
    }

    /// At the end of data: the message to spool, and the `DKIM-Signature:` field to write
    /// before it, if its `From:` domain has a key. A message that never reached the end of its
    /// header section is all header.
    pub fn finish(mut self) -> Result<(Option<String>, Vec<u8>), SignError> {
        if self.key.is_none() {
            self.decide(self.message.len());
        }
        match &self.key {
            None => Ok((None, self.message)),
            Some(key) => Ok((Some(key.sign(&self.message)?), self.message)),
        }
    }

    fn decide(&mut self, header_end: usize) -> Step {
        let header = self.message.get(..header_end).unwrap_or_default();
        self.key = self.signers.key_for(header);
        match self.key {
            Some(_) => Step::Hold,
            None => Step::Release,
        }
    }
}

/// Where the header section ends (just past the empty line that closes it, [RFC 5322 §2.1]),
/// looking from `from`; a message that starts with the empty line has no header fields.
///
/// [RFC 5322 §2.1]: https://www.rfc-editor.org/rfc/rfc5322#section-2.1
fn header_end(message: &[u8], from: usize) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(2);
    }
    let rest = message.get(from..)?;
    memchr::memmem::find(rest, b"\r\n\r\n").map(|i| from + i + 4)
}

#[cfg(test)]
mod tests {
    use super::super::key::{generate, KeyAlgorithm, SigningKey};
    use super::*;

    fn signers() -> Arc<DkimSigners> {
        let pem = generate(KeyAlgorithm::Ed25519, 0).unwrap();
        Arc::new(DkimSigners::new(vec![DomainKey {
            domain: "example.test".to_owned(),
            selector: "s1".to_owned(),
            key: SigningKey::from_pem(pem.as_bytes()).unwrap(),
        }]))
    }

    /// Feeds `message` in pieces of `size` octets; returns the step after each.
    fn feed(hold: &mut Hold, message: &[u8], size: usize) -> Vec<Step> {
        message.chunks(size).map(|c| hold.push(c)).collect()
    }

    #[test]
    fn ours_is_held_to_the_end_and_signed_at_any_split() {
        let message = b"From: a@example.test\r\nSubject: s\r\n\r\nbody\r\n\r\nmore\r\n";
        let signers = signers();
        for size in 1..=message.len() {
            let mut hold = Hold::new(signers.clone());
            let steps = feed(&mut hold, message, size);
            assert!(steps.iter().all(|s| *s == Step::Hold), "size {size}");
            let (signature, held) = hold.finish().unwrap();
            assert_eq!(held, message);
            assert!(signature.unwrap().contains("d=example.test"));
        }
    }

    #[test]
    fn others_are_released_once_their_header_section_ends() {
        let message = b"From: a@other.test\r\nSubject: s\r\n\r\nbody\r\n";
        let header_len = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let signers = signers();
        for size in 1..=message.len() {
            let mut hold = Hold::new(signers.clone());
            let mut fed = 0;
            for chunk in message.chunks(size) {
                fed += chunk.len();
                let step = hold.push(chunk);
                if step == Step::Release {
                    assert!(fed >= header_len, "released before the header ended");
                    assert!(fed - chunk.len() < header_len, "released late");
                    assert_eq!(hold.release(), &message[..fed]);
                    break;
                }
                assert!(fed < header_len, "size {size}: still held after the header");
            }
        }
    }

    #[test]
    fn a_message_that_is_all_header_is_decided_at_the_end() {
        let mut hold = Hold::new(signers());
        assert_eq!(hold.push(b"From: a@example.test\r\n"), Step::Hold);
        let (signature, _) = hold.finish().unwrap();
        assert!(signature.is_some());

        let mut hold = Hold::new(signers());
        assert_eq!(hold.push(b"\r\nno header at all\r\n"), Step::Release);
    }
}

//! The client's half of SMTP AUTH ([RFC 4954]): PLAIN with an initial response ([RFC 4616]),
//! or LOGIN (user name and password, each answering a 334).
//!
//! [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954
//! [RFC 4616]: https://www.rfc-editor.org/rfc/rfc4616

use super::config::ClientCredentials;
use super::reply::ServerReply;

/// The mechanism chosen from what the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    /// PLAIN: one command carries everything.
    Plain,
    /// LOGIN: for servers that list it and not PLAIN.
    Login,
}

impl Mechanism {
    /// PLAIN when offered, else LOGIN when offered.
    pub(crate) fn choose(offered: &[String]) -> Option<Mechanism> {
        if offered.iter().any(|m| m == "PLAIN") {
            Some(Mechanism::Plain)
        } else if offered.iter().any(|m| m == "LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }
}

/// The first command line of the exchange, CRLF included.
pub(crate) fn command(mechanism: Mechanism, creds: &ClientCredentials) -> Vec<u8> {
    match mechanism {
        Mechanism::Plain => {
            // authzid NUL authcid NUL passwd, with an empty authzid (RFC 4616 §2).
            let mut message = Vec::with_capacity(creds.username.len() + 2 + 64);
            message.push(0);
            message.extend_from_slice(creds.username.as_bytes());
            message.push(0);
            message.extend_from_slice(creds.password.expose());
            let mut line = b"AUTH PLAIN ".to_vec();
            encode_base64(&message, &mut line);
            line.extend_from_slice(b"\r\n");
            // The buffer held the password in the clear: wipe it.
            zeroize::Zeroize::zeroize(&mut message);
            line
        }
        Mechanism::Login => b"AUTH LOGIN\r\n".to_vec(),
    }
}

/// The line answering LOGIN's `step`-th 334 (0: user name, 1: password).
pub(crate) fn login_response(step: u8, creds: &ClientCredentials) -> Vec<u8> {
    let mut line = Vec::new();
    if step == 0 {
        encode_base64(creds.username.as_bytes(), &mut line);
    } else {
        encode_base64(creds.password.expose(), &mut line);
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// Whether a reply is the 334 challenge LOGIN expects.
pub(crate) fn is_challenge(reply: &ServerReply) -> bool {
    reply.code == 334
}

/// Appends standard base64 with padding ([RFC 4648 §4]), encoded in place at the end of `out`
/// so that no other buffer holds the encoded password.
///
/// [RFC 4648 §4]: https://www.rfc-editor.org/rfc/rfc4648#section-4
pub(crate) fn encode_base64(input: &[u8], out: &mut Vec<u8>) {
    use base64::Engine as _;
    let start = out.len();
    // `None` only for an output longer than the address space.
    let Some(len) = base64::encoded_len(input.len(), true) else {
        return;
    };
    out.resize(start.saturating_add(len), 0);
    let written = out.get_mut(start..).map_or(0, |tail| {
        base64::engine::general_purpose::STANDARD
            .encode_slice(input, tail)
            .unwrap_or(0)
    });
    out.truncate(start.saturating_add(written));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::{decode_base64, Secret};

    #[test]
    fn base64_matches_rfc_4648_vectors_and_our_decoder() {
        for (plain, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            encode_base64(plain.as_bytes(), &mut out);
            assert_eq!(out, b64.as_bytes());
            assert_eq!(decode_base64(&out).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn plain_carries_user_and_password_after_nuls() {
        let creds = ClientCredentials {
            username: "relay".into(),
            password: Secret::new(b"pw".to_vec()),
            allow_plaintext: false,
        };
        let line = command(Mechanism::Plain, &creds);
        let b64 = line
            .strip_prefix(b"AUTH PLAIN ")
            .and_then(|l| l.strip_suffix(b"\r\n"))
            .unwrap();
        assert_eq!(decode_base64(b64).unwrap(), b"\0relay\0pw");
    }

    #[test]
    fn plain_is_preferred_to_login() {
        let offered = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Mechanism::choose(&offered(&["LOGIN", "PLAIN"])),
            Some(Mechanism::Plain)
        );
        assert_eq!(
            Mechanism::choose(&offered(&["CRAM-MD5", "LOGIN"])),
            Some(Mechanism::Login)
        );
        assert_eq!(Mechanism::choose(&offered(&["CRAM-MD5"])), None);
    }
}

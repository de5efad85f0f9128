//! SMTP AUTH ([RFC 4954]) with the PLAIN ([RFC 4616]) and LOGIN mechanisms: the SASL exchange
//! only. Whether the credentials are good is the driver's question to ask off the engine; it
//! answers with `Connection::handle_auth`.
//!
//! [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954
//! [RFC 4616]: https://www.rfc-editor.org/rfc/rfc4616

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::reply::Reply;

/// Longest AUTH command or response line, CRLF included ([RFC 4954 §4] raises the 512-octet
/// command limit to at least 12288 for AUTH).
///
/// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
pub const MAX_AUTH_LINE: usize = 12288;

/// A secret that is wiped when dropped (its whole allocation, by `zeroize`) and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SASL mechanisms we offer, in the order of the EHLO keyword.
pub const MECHANISMS: &str = "PLAIN LOGIN";

/// Credentials a client presented, to be checked by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: &'static str,
    /// The authentication identity (the login), as sent.
    pub username: String,
    /// The password.
    pub password: Secret,
    /// PLAIN's authorization identity, when it differs from `username`: acting for someone
    /// else, which we do not allow, so the driver must refuse these credentials.
    pub authorize_as: Option<String>,
}

/// What the exchange needs next.
#[derive(Debug)]
pub(super) enum SaslStep {
    /// Send this 334 challenge and read one response line.
    Challenge(Reply),
    /// The client has presented credentials.
    Done(Credentials),
    /// The exchange failed; send this reply.
    Fail(Reply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Plain,
    Login,
}

/// One SASL exchange in progress.
#[derive(Debug)]
pub(super) struct SaslExchange {
    mechanism: Mechanism,
    /// LOGIN: the username, once given.
    username: Option<String>,
}

impl SaslExchange {
    /// Starts an exchange from the argument of `AUTH`: `mechanism [initial-response]`.
    pub(super) fn start(arg: &str) -> (Option<SaslExchange>, SaslStep) {
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, ir)) => (m, Some(ir)),
            None => (arg, None),
        };
        let mechanism = if mech.eq_ignore_ascii_case("PLAIN") {
            Mechanism::Plain
        } else if mech.eq_ignore_ascii_case("LOGIN") {
            Mechanism::Login
        } else {
            return (None, SaslStep::Fail(Reply::unknown_mechanism()));
        };
        let mut exchange = SaslExchange {
            mechanism,
            username: None,
        };
        let step = match (mechanism, initial) {
            // RFC 4954 §4: "=" is an empty initial response.
            (_, Some(ir)) => exchange.respond(ir.as_bytes()),
            (Mechanism::Plain, None) => SaslStep::Challenge(Reply::auth_challenge("")),
            // LOGIN's challenges are base64 "Username:" and "Password:".
            (Mechanism::Login, None) => SaslStep::Challenge(Reply::auth_challenge("VXNlcm5hbWU6")),
        };
        match step {
            SaslStep::Challenge(_) => (Some(exchange), step),
            _ => (None, step),
        }
    }

    /// Takes one client response line (CRLF removed).
    pub(super) fn respond(&mut self, line: &[u8]) -> SaslStep {
        if line == b"*" {
            return SaslStep::Fail(Reply::auth_cancelled());
        }
        let decoded = if line == b"=" {
            Some(Vec::new())
        } else {
            decode_base64(line)
        };
        let Some(decoded) = decoded else {
            return SaslStep::Fail(Reply::bad_base64());
        };
        let decoded = Secret::new(decoded);
        match self.mechanism {
            Mechanism::Plain => plain(decoded.expose()),
            Mechanism::Login => match self.username.take() {
                None => match String::from_utf8(decoded.expose().to_vec()) {
                    Ok(user) => {
                        self.username = Some(user);
                        SaslStep::Challenge(Reply::auth_challenge("UGFzc3dvcmQ6"))
                    }
                    Err(_) => SaslStep::Fail(Reply::bad_base64()),
                },
                Some(username) => SaslStep::Done(Credentials {
                    mechanism: "LOGIN",
                    username,
                    password: Secret::new(decoded.expose().to_vec()),
                    authorize_as: None,
                }),
            },
        }
    }
}

/// `message = [authzid] UTF8NUL authcid UTF8NUL passwd` ([RFC 4616 §2]).
///
/// [RFC 4616 §2]: https://www.rfc-editor.org/rfc/rfc4616#section-2
fn plain(message: &[u8]) -> SaslStep {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd)) = (parts.next(), parts.next(), parts.next())
    else {
        return SaslStep::Fail(Reply::syntax(
            "AUTH PLAIN base64([authzid] NUL authcid NUL passwd)",
        ));
    };
    let (Ok(authzid), Ok(authcid)) = (std::str::from_utf8(authzid), std::str::from_utf8(authcid))
    else {
        return SaslStep::Fail(Reply::bad_base64());
    };
    let authorize_as =
        (!authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid)).then(|| authzid.to_owned());
    SaslStep::Done(Credentials {
        mechanism: "PLAIN",
        username: authcid.to_owned(),
        password: Secret::new(passwd.to_vec()),
        authorize_as,
    })
}

/// Decodes standard base64 with padding ([RFC 4648 §4]), as RFC 4954 requires; `None` on any
/// invalid character, misplaced padding, bad length or non-zero trailing bits: only the
/// canonical encoding of a value is accepted (RFC 4648 §3.5), so `QR==` is refused.
///
/// [RFC 4648 §4]: https://www.rfc-editor.org/rfc/rfc4648#section-4
pub fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(input).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (plain, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(decode_base64(b64.as_bytes()).unwrap(), plain.as_bytes());
        }
        // QR== and Zh== carry set bits past the last octet: non-canonical encodings of "A" and
        // "f" (RFC 4648 §3.5).
        for bad in [
            "Zg=", "Z===", "Zg==Zg==", "Zm9v!", "Zm 9v", "Zg", "QR==", "Zh==", "Zm9=",
        ] {
            assert_eq!(decode_base64(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn plain_with_initial_response() {
        // base64("\0alice@example.test\0secret")
        let (ex, step) = SaslExchange::start("PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=");
        assert!(ex.is_none());
        let SaslStep::Done(c) = step else {
            panic!("{step:?}")
        };
        assert_eq!(c.username, "alice@example.test");
        assert_eq!(c.password.expose(), b"secret");
        assert_eq!(
            format!("{c:?}").matches("secret").count(),
            0,
            "password in Debug"
        );
    }

    #[test]
    fn plain_with_a_non_canonical_encoding_is_refused() {
        // As above, with the last quantum's unused bits set (`ZXR=` for `ZXQ=`): the same
        // octets to a lax decoder, refused as invalid base64 here.
        let (ex, step) = SaslExchange::start("PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXR=");
        assert!(ex.is_none());
        assert!(
            matches!(step, SaslStep::Fail(ref r) if *r == Reply::bad_base64()),
            "{step:?}"
        );
        let (ex, _) = SaslExchange::start("PLAIN");
        assert!(
            matches!(ex.unwrap().respond(b"QR=="), SaslStep::Fail(r) if r == Reply::bad_base64())
        );
    }

    #[test]
    fn login_two_challenges() {
        let (ex, step) = SaslExchange::start("login");
        let mut ex = ex.unwrap();
        assert!(
            matches!(step, SaslStep::Challenge(ref r) if *r == Reply::auth_challenge("VXNlcm5hbWU6"))
        );
        let step = ex.respond(b"YWxpY2U="); // alice
        assert!(
            matches!(step, SaslStep::Challenge(ref r) if *r == Reply::auth_challenge("UGFzc3dvcmQ6"))
        );
        let SaslStep::Done(c) = ex.respond(b"cHc=") else {
            panic!()
        };
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("alice", &b"pw"[..])
        );
    }

    #[test]
    fn cancel_bad_base64_and_unknown_mechanism() {
        let (ex, _) = SaslExchange::start("PLAIN");
        let mut ex = ex.unwrap();
        assert!(matches!(ex.respond(b"*"), SaslStep::Fail(r) if r == Reply::auth_cancelled()));
        let (ex, _) = SaslExchange::start("PLAIN");
        assert!(
            matches!(ex.unwrap().respond(b"%%%%"), SaslStep::Fail(r) if r == Reply::bad_base64())
        );
        assert!(
            matches!(SaslExchange::start("CRAM-MD5").1, SaslStep::Fail(r) if r == Reply::unknown_mechanism())
        );
    }

    #[test]
    fn plain_acting_for_someone_else_cannot_succeed() {
        // base64("bob\0alice\0pw"): authzid bob, authcid alice.
        let (_, step) = SaslExchange::start("PLAIN Ym9iAGFsaWNlAHB3");
        let SaslStep::Done(c) = step else { panic!() };
        assert_eq!(c.username, "alice");
        assert_eq!(c.authorize_as.as_deref(), Some("bob"));
    }
}

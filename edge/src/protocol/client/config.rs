//! What the caller decides for a client session: the dialect, our name, TLS and AUTH policy,
//! and the timeouts.

use std::fmt;
use std::time::Duration;

use crate::protocol::Secret;

/// SMTP or LMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SMTP ([RFC 5321]): `EHLO` (falling back to `HELO`), one final reply per message.
    ///
    /// [RFC 5321]: https://www.rfc-editor.org/rfc/rfc5321
    Smtp,
    /// LMTP ([RFC 2033]): `LHLO`, and one reply per accepted recipient after the content.
    ///
    /// [RFC 2033]: https://www.rfc-editor.org/rfc/rfc2033
    Lmtp,
}

/// When to use STARTTLS ([RFC 3207]).
///
/// [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never.
    None,
    /// When the server offers it; if it does not, or refuses the command, go on in the clear.
    Opportunistic,
    /// Always: a server that does not offer it, or refuses it, gets no mail (every recipient
    /// deferred).
    Required,
}

/// Credentials for `AUTH` to a smarthost ([RFC 4954]).
///
/// [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954
#[derive(Clone)]
pub struct ClientCredentials {
    /// The authentication identity.
    pub username: String,
    /// The password; wiped on drop, never printed.
    pub password: Secret,
    /// Send the credentials without TLS. Off by default: a password in the clear is readable
    /// by anyone on the path.
    pub allow_plaintext: bool,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("username", &self.username)
            .field("allow_plaintext", &self.allow_plaintext)
            .finish_non_exhaustive()
    }
}

/// How long the client waits for each reply. Defaults are those of [RFC 5321 §4.5.3.2].
///
/// [RFC 5321 §4.5.3.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// The 220 greeting (§4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// Replies to EHLO, HELO, LHLO, STARTTLS, AUTH, RSET and QUIT, which the RFC does not
    /// name (5 minutes, as for MAIL).
    pub command: Duration,
    /// The reply to MAIL (§4.5.3.2.2: 5 minutes).
    pub mail: Duration,
    /// The reply to each RCPT (§4.5.3.2.3: 5 minutes).
    pub rcpt: Duration,
    /// The 354 to DATA (§4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Between two pieces of content handed to the engine while sending (§4.5.3.2.5:
    /// 3 minutes): a server that stops reading stalls the caller's sends past it.
    pub data_block: Duration,
    /// The reply after the final dot (§4.5.3.2.6: 10 minutes; for LMTP, to each recipient's).
    pub data_term: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        const MINUTE: u64 = 60;
        ClientTimeouts {
            greeting: Duration::from_secs(5 * MINUTE),
            command: Duration::from_secs(5 * MINUTE),
            mail: Duration::from_secs(5 * MINUTE),
            rcpt: Duration::from_secs(5 * MINUTE),
            data_init: Duration::from_secs(2 * MINUTE),
            data_block: Duration::from_secs(3 * MINUTE),
            data_term: Duration::from_secs(10 * MINUTE),
        }
    }
}

/// Everything a client session needs from the caller.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// SMTP or LMTP.
    pub dialect: Dialect,
    /// Our name, the argument of EHLO/HELO/LHLO: a domain or an address literal. It must hold
    /// no spaces or line ends (the configuration layer checks it).
    pub helo: String,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// Credentials for AUTH; `None` sends none.
    pub credentials: Option<ClientCredentials>,
    /// Use PIPELINING when the server offers it. On by default; off only to talk to a server
    /// that advertises it and gets it wrong.
    pub pipelining: bool,
    /// Reply deadlines.
    pub timeouts: ClientTimeouts,
}

impl ClientConfig {
    /// A configuration with the defaults: opportunistic TLS, no AUTH, pipelining, RFC timeouts.
    pub fn new(dialect: Dialect, helo: &str) -> Self {
        ClientConfig {
            dialect,
            helo: helo.to_owned(),
            tls: TlsPolicy::Opportunistic,
            credentials: None,
            pipelining: true,
            timeouts: ClientTimeouts::default(),
        }
    }
}

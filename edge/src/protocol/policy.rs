//! What an engine is configured with: its role, our domains, the limits and the timeouts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What a listener is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The MX (port 25): anyone may connect, nobody authenticates, mail only for our domains.
    Delivery,
    /// Submission (587/465): our users authenticate, then may send anywhere.
    Submission,
}

/// Longest command line, CRLF included ([RFC 5321 §4.5.3.1.4]).
///
/// [RFC 5321 §4.5.3.1.4]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.4
pub const MAX_COMMAND_LINE: usize = 512;
/// The least text line length, CRLF included, a server must accept ([RFC 5321 §4.5.3.1.6]);
/// the floor of `limits.max_line_length`.
///
/// [RFC 5321 §4.5.3.1.6]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.6
pub const MIN_TEXT_LINE: usize = 1000;
/// Default longest text line of a message, CRLF included (`limits.max_line_length`). RFC 5321
/// §4.5.3.1.6 sets 1000 octets as a floor for receivers, but real mail (HTML on one line,
/// long headers from broken generators) carries longer lines, and Postfix and Exim accept
/// them; refusing them loses legitimate mail for no safety gained.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 65_536;
/// The least number of recipients a server must accept ([RFC 5321 §4.5.3.1.8]).
///
/// [RFC 5321 §4.5.3.1.8]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.8
pub const MIN_RECIPIENTS: usize = 100;

/// Server-side timeouts. Defaults are those of [RFC 5321 §4.5.3.2].
///
/// [RFC 5321 §4.5.3.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the next command (§4.5.3.2.7: 5 minutes).
    pub command: Duration,
    /// Waiting for the next block of message data (§4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(5 * 60),
            data_block: Duration::from_secs(3 * 60),
        }
    }
}

/// Everything one engine needs to decide replies. Shared read-only by every connection of a
/// listener.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our name, in the greeting and the EHLO reply.
    pub hostname: String,
    /// Delivery or submission.
    pub role: Role,
    /// Domains we accept mail for, lower-cased.
    pub local_domains: HashSet<String>,
    /// The local domain `<postmaster>` without a domain is delivered to (RFC 5321 §4.5.1).
    pub postmaster_domain: String,
    /// If set, decides which local recipients exist; others get 550 5.1.1 at RCPT.
    pub recipients: Option<Arc<dyn RecipientCheck>>,
    /// Largest message accepted, in octets (RFC 1870).
    pub max_message_size: u64,
    /// Most recipients per transaction.
    pub max_recipients: usize,
    /// Bad commands tolerated before 421 and close.
    pub max_bad_commands: u32,
    /// Longest text line of message content, CRLF included; at least [`MIN_TEXT_LINE`]. A
    /// longer line refuses the message (550 5.6.0) once its data has been read.
    pub max_line_length: usize,
    /// Refuse `MAIL FROM:a@b` and `RCPT TO:a@b` without angle brackets, which RFC 5321
    /// §4.1.1.2 requires but many senders omit (Postfix's `strict_rfc821_envelopes`).
    pub strict_envelopes: bool,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// STARTTLS is offered ([RFC 3207]) on this listener.
    ///
    /// [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
    pub tls_offered: bool,
    /// Until TLS is up, only EHLO, HELO, STARTTLS, NOOP, RSET and QUIT are allowed
    /// ([RFC 3207 §4]); the rest get 530 5.7.0.
    ///
    /// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
    pub tls_required: bool,
    /// SMTP AUTH is offered (submission with a credential store); only inside TLS unless
    /// `auth_plaintext`.
    pub auth_offered: bool,
    /// AUTH is offered and accepted before TLS too (`auth.allow_plaintext`); otherwise AUTH
    /// outside TLS gets 538 ([RFC 4954 §4]).
    ///
    /// [RFC 4954 §4]: https://www.rfc-editor.org/rfc/rfc4954#section-4
    pub auth_plaintext: bool,
    /// How long the 220 greeting is held back on a cleartext session; zero sends it at once. A
    /// client that talks before it gets 554 and the session closes with
    /// [`CloseReason::Pregreet`](super::CloseReason::Pregreet).
    pub greet_delay: Duration,
    /// Each sender is checked outside the engine before `MAIL` is answered
    /// ([`Event::CheckSender`](super::Event::CheckSender), then
    /// [`Connection::handle_sender_checked`](super::Connection::handle_sender_checked)): SPF
    /// on delivery listeners.
    pub check_sender: bool,
}

impl EngineConfig {
    /// A configuration for `role` with the defaults of the embedded config; for tests and tools.
    pub fn new(hostname: &str, role: Role, local_domains: &[&str]) -> Self {
        EngineConfig {
            hostname: hostname.to_owned(),
            role,
            local_domains: local_domains
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            postmaster_domain: local_domains
                .first()
                .map_or_else(|| hostname.to_ascii_lowercase(), |d| d.to_ascii_lowercase()),
            recipients: None,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: MIN_RECIPIENTS,
            max_bad_commands: 20,
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            strict_envelopes: false,
            timeouts: Timeouts::default(),
            tls_offered: false,
            tls_required: false,
            auth_offered: false,
            auth_plaintext: false,
            greet_delay: Duration::ZERO,
            check_sender: false,
        }
    }
}

/// Which recipients in our domains exist, decided outside the engine (a recipients file,
/// aliases, catch-alls) and asked at `RCPT`. Pure: no I/O behind it.
pub trait RecipientCheck: Send + Sync + std::fmt::Debug {
    /// Whether `local@domain` exists; `local` is unquoted, `domain` one of `local_domains`.
    fn exists(&self, local: &str, domain: &str) -> bool;
}

/// A set of lower-cased `local@domain` addresses: exactly those exist.
impl RecipientCheck for HashSet<String> {
    fn exists(&self, local: &str, domain: &str) -> bool {
        self.contains(&format!("{}@{domain}", local.to_ascii_lowercase()))
    }
}

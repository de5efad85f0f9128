//! `[relay]` and `[dns]`, validated: the typed configuration the relay and the queue run on.

use std::net::SocketAddr;
use std::time::Duration;

use super::Route;
use crate::protocol::client::{ClientCredentials, ClientTimeouts, TlsPolicy};

/// Default `relay.mx_port`: SMTP's well-known port.
pub const DEFAULT_MX_PORT: u16 = 25;

/// Default `relay.max_connections_per_domain`.
pub const DEFAULT_MAX_CONNECTIONS_PER_DOMAIN: usize = 10;

/// Largest `relay.max_connections_per_domain`: more parallel connections to one destination
/// than this is a typo, and receivers throttle such senders long before.
pub const MAX_CONNECTIONS_PER_DOMAIN: usize = 1000;

/// Default `relay.connect_timeout_secs`: how long a TCP connection to a host may take before
/// the next address is tried (Postfix's `smtp_connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 30;

/// Default `relay.idle_secs`: how long a connection with nothing to send waits for more mail to
/// its destination before QUIT (Postfix's `smtp_connection_cache_time_limit`).
pub const DEFAULT_IDLE_SECS: u64 = 2;

/// Largest `relay.idle_secs`. An idle connection is not read while it waits, so it must end
/// well before the receiver's own idle timeout (5 minutes and more, RFC 5321 §4.5.3.2.7) drops
/// it under the next message.
pub const MAX_IDLE_SECS: u64 = 60;

/// Default `relay.retry_secs`: 1 minute, 5, 15, 1 hour, then every 4 hours.
pub const DEFAULT_RETRY_SECS: [u64; 5] = [60, 300, 900, 3600, 14400];

/// Default `relay.max_age_secs`: 5 days, as Postfix's `maximal_queue_lifetime`
/// ([RFC 5321 §4.5.4.1] asks for at least 4-5 days).
///
/// [RFC 5321 §4.5.4.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.4.1
pub const DEFAULT_MAX_AGE_SECS: u64 = 5 * 24 * 3600;

/// The relay's configuration: where mail goes and how it is carried.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `relay.local`: the route for recipients in `local_domains`. Default [`Route::Maildir`].
    pub local: Route,
    /// `relay.remote`: the route for every other recipient, [`Route::Mx`] (the default) or
    /// [`Route::Smtp`] (a smarthost).
    pub remote: Route,
    /// `relay.smarthost_user` with the first line of `relay.smarthost_password_file`: AUTH
    /// to the smarthost ([RFC 4954]), only over TLS. Set only with a `smtp://` remote.
    ///
    /// [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954
    pub smarthost_credentials: Option<ClientCredentials>,
    /// `relay.mx_port`: the port of MX hosts (25; labs run receivers elsewhere).
    pub mx_port: u16,
    /// `relay.tls`: STARTTLS policy ([RFC 3207]) for every SMTP route.
    ///
    /// - `"opportunistic"` (default, Postfix `may`): STARTTLS when offered, certificates not
    ///   verified ([RFC 7435] opportunistic security: an unverified channel still beats
    ///   plaintext against passive listeners); when the handshake fails, the same host gets
    ///   the mail in the clear on a new connection (as Postfix does).
    /// - `"required"` (Postfix `encrypt`): no mail without TLS; a server without STARTTLS gets
    ///   its recipients deferred. Certificates are still not verified: MX certificates are
    ///   routinely self-signed or for another name, and the MX name itself came from
    ///   unauthenticated DNS, so verifying it would defer mail without stopping an active
    ///   attacker (that takes DANE or MTA-STS).
    /// - `"none"`: never STARTTLS.
    ///
    /// LMTP routes never use STARTTLS: a mail store is local.
    ///
    /// [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
    /// [RFC 7435]: https://www.rfc-editor.org/rfc/rfc7435
    pub tls: TlsPolicy,
    /// `relay.max_connections_per_domain`: connections open at once to one destination (a
    /// recipient domain for MX, the host for a next hop).
    pub max_connections_per_domain: usize,
    /// `relay.connect_timeout_secs`: the wait for a TCP connection to one address.
    pub connect_timeout: Duration,
    /// `relay.idle_secs`: how long a connection whose destination has nothing waiting stays
    /// open for mail that may come (zero: QUIT at once). It still counts against
    /// `max_connections_per_domain`.
    pub idle: Duration,
    /// `relay.retry_secs`: waits before each retry of a deferred recipient, the last
    /// repeating. Never empty.
    pub retry: Vec<Duration>,
    /// `relay.max_age_secs`: how long a recipient may stay deferred before it fails.
    pub max_age: Duration,
    /// `dns.nameservers`: the servers MX, A and AAAA queries go to; empty means the system
    /// resolver (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Our name in EHLO/LHLO: the top-level `hostname`.
    pub helo: String,
    /// Reply deadlines of each session (RFC 5321 §4.5.3.2 defaults; tests shorten them).
    pub timeouts: ClientTimeouts,
}

impl PartialEq for RelayConfig {
    /// Field by field; credentials compare by user, password and plaintext permission.
    fn eq(&self, other: &Self) -> bool {
        let creds = |c: &ClientCredentials| {
            (
                c.username.clone(),
                c.password.expose().to_vec(),
                c.allow_plaintext,
            )
        };
        self.local == other.local
            && self.remote == other.remote
            && self.smarthost_credentials.as_ref().map(creds)
                == other.smarthost_credentials.as_ref().map(creds)
            && self.mx_port == other.mx_port
            && self.tls == other.tls
            && self.max_connections_per_domain == other.max_connections_per_domain
            && self.connect_timeout == other.connect_timeout
            && self.idle == other.idle
            && self.retry == other.retry
            && self.max_age == other.max_age
            && self.nameservers == other.nameservers
            && self.helo == other.helo
            && self.timeouts == other.timeouts
    }
}

impl Eq for RelayConfig {}

impl RelayConfig {
    /// The defaults for a server called `helo`: local mail to Maildir, remote mail by MX,
    /// opportunistic TLS, the system resolver.
    pub fn new(helo: &str) -> Self {
        RelayConfig {
            local: Route::Maildir,
            remote: Route::Mx,
            smarthost_credentials: None,
            mx_port: DEFAULT_MX_PORT,
            tls: TlsPolicy::Opportunistic,
            max_connections_per_domain: DEFAULT_MAX_CONNECTIONS_PER_DOMAIN,
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
            idle: Duration::from_secs(DEFAULT_IDLE_SECS),
            retry: DEFAULT_RETRY_SECS.map(Duration::from_secs).to_vec(),
            max_age: Duration::from_secs(DEFAULT_MAX_AGE_SECS),
            nameservers: Vec::new(),
            helo: helo.to_owned(),
            timeouts: ClientTimeouts::default(),
        }
    }

    /// The route for a recipient: [`RelayConfig::local`] if its domain is one of ours, else
    /// [`RelayConfig::remote`].
    pub fn route(&self, local_domain: bool) -> &Route {
        if local_domain {
            &self.local
        } else {
            &self.remote
        }
    }

    /// The wait before retry number `attempt` (1 for the first retry after the first
    /// attempt): the `attempt`-th entry of [`RelayConfig::retry`], the last one repeating.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) - 1) as usize;
        let last = self
            .retry
            .last()
            .copied()
            .unwrap_or(Duration::from_secs(60));
        self.retry.get(i).copied().unwrap_or(last)
    }
}

//! SMTP AUTH for the submission role: who may log in, checking passwords off the ring, who may
//! use which `MAIL FROM`, and what to do with sources that keep guessing.
//!
//! The SASL exchange itself (`AUTH PLAIN`, `AUTH LOGIN`, [RFC 4954]) lives in the sans-IO engine;
//! this module holds what sits behind it:
//!
//! ```text
//!  engine: AUTH PLAIN <b64> ──► driver ──► AuthServices::check: CheckSlots (per source), then
//!                                 │          Verifier::verify(user, password) ──► Verdict
//!                                 │          (std threads: argon2id is ~tens of ms of CPU,
//!                                 │           never run on an io_uring worker)
//!                                 │                 │ looks up
//!                                 │                 ▼
//!                                 │         CredentialStore ── ArcSwap<Credentials> ◄── reload (SIGHUP)
//!                                 │                 ▲
//!  engine: MAIL FROM:<a@b> ───────┼── may_send_as ──┘
//!                                 ▼
//!  AuthServices::decide(Verdict) ──► AuthDecision { outcome, tarpit delay, close } ──► driver
//!            └─► AbuseTracker: failures per source (IPv6 by /64) ──► Ban ──► guard (shield)
//! ```
//!
//! - [`users`]: the users file (`address:$argon2id$...` per line) and the aliases file, loaded
//!   whole into an immutable [`Credentials`], swapped atomically by [`CredentialStore::reload`].
//! - [`verify`]: the [`Verifier`] thread pool. An unknown user costs the same argon2id work as a
//!   known one, so timing does not tell which logins exist.
//! - [`abuse`]: the [`AbuseTracker`], shared by all workers, and the tarpit delay.
//! - [`admission`]: [`CheckSlots`], how many password checks one source may have in flight.
//! - [`session`]: [`AuthServices`] (all of the above, shared by the workers) and the
//!   [`AuthDecision`] on each attempt, which the driver executes.
//! - [`cli`]: `smtp-edge user add|passwd|del`.
//!
//! [`AuthConfig`] is the validated `[auth]` section; [`crate::config`] builds it (so `config`
//! depends on `auth`, never the reverse).
//!
//! [RFC 4954]: https://www.rfc-editor.org/rfc/rfc4954

pub mod abuse;
pub mod admission;
pub mod cli;
pub mod session;
pub mod users;
pub mod verify;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use abuse::{source_of, AbuseTracker, Ban, MAX_TRACKED_SOURCES};
pub use admission::{
    CheckSlot, CheckSlots, CHECK_WAIT, DEFAULT_MAX_CHECKS_PER_SOURCE, MAX_CHECKS_PER_SOURCE,
};
pub use session::{AuthDecision, AuthServices, SessionAuth, MAX_FAILURES_PER_SESSION};
pub use users::{
    hash_password, normalize_login, CredentialStore, Credentials, HashParams, MAX_AUTH_FILE,
    MAX_HASH_LANES, MAX_HASH_MEMORY_KIB, MAX_HASH_PASSES, MAX_REPORTED_LINE_ERRORS,
};
pub use verify::{Verdict, Verifier, MAX_PENDING_PER_THREAD};

/// Default `auth.max_failures`.
pub const DEFAULT_MAX_FAILURES: u32 = 5;
/// Default `auth.failure_window_secs`.
pub const DEFAULT_FAILURE_WINDOW_SECS: u64 = 600;
/// Default `auth.ban_secs`.
pub const DEFAULT_BAN_SECS: u64 = 3600;
/// Default `auth.tarpit_max_ms`.
pub const DEFAULT_TARPIT_MAX_MS: u64 = 5000;
/// Default `auth.verify_threads`.
pub const DEFAULT_VERIFY_THREADS: usize = 2;

/// Largest `auth.max_failures`: more than this many guesses per window is no protection.
pub const MAX_FAILURES_CEILING: u32 = 1000;
/// Largest `auth.failure_window_secs` (one day): the tracker keeps an entry per source for
/// that long, so a longer window holds memory longer for little gain.
pub const MAX_FAILURE_WINDOW_SECS: u64 = 24 * 60 * 60;
/// Largest `auth.ban_secs` (one week). It also keeps `now + ban` far from `Instant` overflow.
pub const MAX_BAN_SECS: u64 = 7 * 24 * 60 * 60;
/// Largest `auth.tarpit_max_ms` (one minute): well under the five-minute command timeout of
/// [RFC 5321 §4.5.3.2.7], so a tarpitted client still gets its reply.
///
/// [RFC 5321 §4.5.3.2.7]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2.7
pub const MAX_TARPIT_MS: u64 = 60_000;
/// Largest `auth.verify_threads`: argon2id is memory-hard, and each thread holds one hash's
/// memory (19 MiB with the default parameters) while it works.
pub const MAX_VERIFY_THREADS: usize = 16;

/// The validated `[auth]` section. Every key is optional; [`AuthConfig::default`] is the
/// section left out.
///
/// Without `auth.users` the server does not offer AUTH at all ([`AuthConfig::offers_auth`]):
/// submission is then open only to `submission_networks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `auth.users`: the users file (absolute), re-read by [`CredentialStore::reload`].
    pub users: Option<PathBuf>,
    /// `auth.aliases`: extra `MAIL FROM` addresses per user (absolute); only with `users`.
    pub aliases: Option<PathBuf>,
    /// The two files as loaded (and checked) with the configuration; empty without `users`.
    /// [`CredentialStore::new`] starts from this, so the files are not read twice at start-up.
    pub credentials: Arc<Credentials>,
    /// `auth.max_failures`: failed AUTHs from one source, within `failure_window`, that ban it;
    /// `1..=`[`MAX_FAILURES_CEILING`].
    pub max_failures: u32,
    /// `auth.failure_window_secs`: the window, opened by a source's first failure.
    pub failure_window: Duration,
    /// `auth.ban_secs`: how long a banned source is refused at connect.
    pub ban: Duration,
    /// `auth.tarpit_max_ms`: the longest delay before answering a failed AUTH (0: no delay).
    pub tarpit_max: Duration,
    /// `auth.verify_threads`: size of the [`Verifier`] pool, `1..=`[`MAX_VERIFY_THREADS`].
    pub verify_threads: usize,
    /// `auth.max_checks_per_source`: password checks one source (IPv6: its /64) may have in
    /// flight; more wait for one to end, up to [`CHECK_WAIT`], then get 454.
    /// `1..=`[`MAX_CHECKS_PER_SOURCE`].
    pub max_checks_per_source: u32,
    /// `auth.submission_networks`: hosts that may submit without AUTH
    /// ([`AuthConfig::is_trusted`]).
    pub submission_networks: Vec<ipnet::IpNet>,
    /// `auth.trace_login`: whether the `Received:` header may name the authenticated login
    /// (default false: the login is an account name, which the recipients need not learn).
    pub trace_login: bool,
    /// `auth.allow_plaintext`: AUTH is offered and accepted without TLS too, and a
    /// submission listener may have `tls = "none"` (default false: passwords travel only
    /// inside TLS, as Postfix's `smtpd_tls_auth_only = yes`). For a listener behind a proxy
    /// that terminates TLS, or a closed network.
    pub allow_plaintext: bool,
}

impl Default for AuthConfig {
    /// No users (AUTH not offered), no trusted networks, and the default limits.
    fn default() -> Self {
        AuthConfig {
            users: None,
            aliases: None,
            credentials: Arc::new(Credentials::empty()),
            max_failures: DEFAULT_MAX_FAILURES,
            failure_window: Duration::from_secs(DEFAULT_FAILURE_WINDOW_SECS),
            ban: Duration::from_secs(DEFAULT_BAN_SECS),
            tarpit_max: Duration::from_millis(DEFAULT_TARPIT_MAX_MS),
            verify_threads: DEFAULT_VERIFY_THREADS,
            max_checks_per_source: DEFAULT_MAX_CHECKS_PER_SOURCE,
            submission_networks: Vec::new(),
            trace_login: false,
            allow_plaintext: false,
        }
    }
}

impl AuthConfig {
    /// Whether submission listeners advertise and accept AUTH: only when `auth.users` is set.
    /// Offering a mechanism that can never succeed would only invite guessing.
    pub fn offers_auth(&self) -> bool {
        self.users.is_some()
    }

    /// Whether `ip` is in `auth.submission_networks`, and so may submit without AUTH. An
    /// IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4 peers)
    /// is matched as the IPv4 address it carries.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.submission_networks.iter().any(|net| net.contains(&ip))
    }
}

/// One problem with an auth file, displayed `key: problem` like a
/// [`ConfigError`](crate::config::ConfigError); the problem starts with `line N:` when one line
/// is at fault. It never quotes a password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// `auth.users` or `auth.aliases`.
    pub key: &'static str,
    /// What is wrong, with the line number if one line is at fault.
    pub problem: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

/// Why loading credentials or starting the verifier failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The users or aliases file is unreadable or has bad lines; every problem found, never
    /// empty. On [`CredentialStore::reload`] the credentials in force are kept.
    #[error("{}", join_problems(.0))]
    Files(Vec<FileProblem>),
    /// A [`Verifier`] thread could not be started.
    #[error("auth.verify_threads: cannot start a verifier thread: {0}")]
    Spawn(#[source] std::io::Error),
}

fn join_problems(problems: &[FileProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_networks_match_mapped_ipv4() {
        let cfg = AuthConfig {
            submission_networks: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ..AuthConfig::default()
        };
        assert!(cfg.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(cfg.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(cfg.is_trusted("2001:db8:1::1".parse().unwrap()));
        assert!(!cfg.is_trusted("11.0.0.1".parse().unwrap()));
        assert!(!AuthConfig::default().is_trusted("127.0.0.1".parse().unwrap()));
        assert!(!AuthConfig::default().offers_auth());
    }

    /// All workers share these (`Arc`), so they must cross threads.
    #[test]
    fn shared_types_are_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<CredentialStore>();
        shared::<Verifier>();
        shared::<AbuseTracker>();
        shared::<AuthConfig>();
    }

    #[test]
    fn errors_read_as_key_colon_problem() {
        let e = AuthError::Files(vec![
            FileProblem {
                key: "auth.users",
                problem: "line 3: bad".into(),
            },
            FileProblem {
                key: "auth.aliases",
                problem: "line 1: worse".into(),
            },
        ]);
        assert_eq!(
            e.to_string(),
            "auth.users: line 3: bad; auth.aliases: line 1: worse"
        );
    }
}

//! The configuration file: TOML in, a typed [`Config`] out, or every problem named by its key.
//!
//! Loading has two steps, and only the second gives values a meaning:
//!
//! ```text
//!  text ──► toml::Table ──► raw structs ──► validate ──► Config
//!           (syntax:         (serde, per     (one pass: ranges, RFC floors,
//!            "(file)")        section, deny    addresses, paths, recipients file)
//!                             unknown keys)
//! ```
//!
//! Every failure becomes a [`ConfigError`] `key: problem`, where `key` is the TOML path
//! (`listener[1].addr`, `limits.max_recipients`) and the problem cites the RFC floor if there is
//! one. Validation does not stop at the first problem: [`ConfigErrors`] holds them all, so an
//! operator fixes a file in one round trip.
//!
//! # Schema
//!
//! The embedded default ([`Config::embedded_default`], `config/default.toml`) is the reference:
//!
//! ```toml
#![doc = include_str!("default.toml")]
//! ```
//!
//! Required: `hostname`, `local_domains`, at least one `[[listener]]`, `spool.dir` and
//! `delivery.maildir`. `[limits]`, `[shutdown]` and `workers` default to the values shown;
//! without `[metrics]` there is no metrics endpoint; `listener.tls` defaults to `none`.
//!
//! `listener.require_tls` defaults to true on submission listeners with `tls = "starttls"`,
//! false on delivery listeners ([RFC 3207 §4]: a publicly referenced MX must not require it),
//! and is implied by `tls = "implicit"`; it cannot be true with `tls = "none"`.
//!
//! `listener.greet_delay_ms` (default 0, at most 30000) holds the 220 greeting back; a client
//! that talks before it is a pregreeter (RFC 5321 §3.1: the server speaks first). It is not
//! allowed with `tls = "implicit"`, where the client speaks first.
//!
//! `limits.max_connections_per_ip` (default 50, 0 = no limit, at most 100000) caps the
//! connections one source holds open at once. `limits.max_connections` caps them all together
//! (1..=10000000); without it the cap is derived at start from the open-file limit
//! ([`crate::guard::capacity`]).
//!
//! `[guard]` has one key, `trusted` (default `["127.0.0.0/8", "::1/128"]`): networks of our
//! own software (webmail, a content filter, reinjection) that are never banned, never held to
//! `greet_delay_ms` and not counted against `limits.max_connections_per_ip`.
//!
//! `[control]` has one key, `socket`: the Unix socket (mode 0600) where the running server
//! answers `smtp-edge ban ...` ([`crate::control`]); by default `control.sock` in the spool
//! directory.
//!
//! `[shield]` is the XDP shield ([`crate::shield`]), disabled by default; its keys are those
//! of [`ShieldConfig`], checked by [`ShieldConfig::validate`] (interfaces are looked up when
//! `shield.enabled` is true). Without `shield.ports` it protects the ports of the delivery
//! listeners.
//!
//! `[tls]` is used only if some listener has `tls != "none"`. Its keys, all optional:
//!
//! ```toml
//! [tls]
//! cert = "/etc/smtp-edge/mx.pem"      # the default certificate chain (PEM)...
//! key = "/etc/smtp-edge/mx.key"       # ...and its key: both or neither
//! self_signed_dir = "./var/tls"       # without cert/key: a self-signed cert for `hostname`,
//!                                     # generated here on first use (cert.pem, key.pem 0600)
//! session_cache = 16384               # stateful session cache entries; 0 disables it
//! handshake_timeout_secs = 10         # 1..=300
//!
//! [[tls.certificate]]                 # any number, chosen by SNI (wildcards work)
//! cert = "/etc/smtp-edge/other.pem"
//! key = "/etc/smtp-edge/other.key"
//! ```
//!
//! Certificate and key files must be readable when the configuration is loaded; their contents
//! are parsed by [`TlsContext::new`](crate::tls::TlsContext::new), whose errors name the same
//! keys, and, before that, by [`Config::preflight`] (which `check-config` runs too).
//!
//! `[auth]` configures SMTP AUTH on submission listeners ([`crate::auth`]). Its keys, all
//! optional:
//!
//! ```toml
//! [auth]
//! users = "/etc/smtp-edge/users"      # `address:$argon2id$...` per line (`smtp-edge user add`);
//!                                     # without it AUTH is not offered at all
//! aliases = "/etc/smtp-edge/aliases"  # `alias@domain: user@domain[, ...]`: extra MAIL FROM
//!                                     # addresses per user; needs `users`
//! max_failures = 5                    # failed AUTHs from one source (IPv6: its /64)...
//! failure_window_secs = 600           # ...within this window (opened by the first failure)...
//! ban_secs = 3600                     # ...ban the source for this long
//! tarpit_max_ms = 5000                # delay before a failed AUTH's reply: 1 s doubling, capped
//! verify_threads = 2                  # argon2id threads, off the io_uring workers; 1..=16
//! max_checks_per_source = 8           # checks in flight per source (IPv6: /64); 1..=16; more
//!                                     # wait for one to end (up to 30 s), then 454
//! submission_networks = ["10.0.0.0/8"]  # may submit without AUTH (CIDR or single address)
//! trace_login = false                 # whether Received: may name the login
//! allow_plaintext = false             # AUTH without TLS too; submission may have tls = "none"
//! ```
//!
//! The users and aliases files are read and checked when the configuration is loaded; a bad
//! line is reported as `auth.users: line 3: ...`.
//!
//! Between keys (`conflicts.rs`): the metrics address may not be a listener's, the control
//! socket may not be another configured path, and a submission listener needs TLS unless
//! `auth.allow_plaintext = true`. What the file names on disk is checked by
//! [`Config::preflight`] (`preflight.rs`), not by loading.
//!
//! `[checks]` sets what the delivery listeners verify ([`crate::checks`]): `spf`, `dkim`,
//! `dmarc` and `arc`, each `"off"`, `"tag"` (the default: an `Authentication-Results:` header)
//! or `"enforce"` (SPF `fail` refused at MAIL FROM, DMARC `fail` under `p=reject` refused after
//! the data; under `p=quarantine` it goes to the Maildir's `.Junk` folder).
//!
//! Relative paths (`spool.dir`, `delivery.maildir`, `delivery.recipients`, `delivery.aliases`,
//! the `[tls]` paths,
//! `auth.users`, `auth.aliases`)
//! are resolved against the current working directory at load time, so a later `chdir` cannot
//! change their meaning.
//!
//! [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4

mod checks;
pub mod cli;
mod conflicts;
mod dkim;
mod preflight;
mod raw;
mod recipients;
mod relay;
mod restart;
mod show;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::checks::ChecksConfig;
use crate::control::ControlConfig;
use crate::dkim::DkimSigners;
use crate::guard::GuardConfig;
use crate::logging::LogConfig;
use crate::protocol::{EngineConfig, Role, Timeouts};
use crate::proxy::ProxyConfig;
use crate::relay::RelayConfig;
use crate::rewrite::SharedRewriter;
use crate::service::privileges::RunAs;
use crate::shield::ShieldConfig;
use crate::tls::TlsConfig;

pub use preflight::{usable_dir, Findings, EXPIRY_WARNING};
pub use recipients::{MAX_RECIPIENTS_FILE, MAX_REPORTED_LINE_ERRORS};
pub use relay::{MAX_NAMESERVERS, MAX_RELAY_AGE_SECS, MAX_RETRY_STEPS};
pub use show::show;
pub(crate) use validate::domain_name;
pub use validate::{
    MAX_BAD_COMMANDS_CEILING, MAX_CONNECTIONS_PER_IP, MAX_GREET_DELAY_MS,
    MAX_HANDSHAKE_TIMEOUT_SECS, MAX_MESSAGE_SIZE_CEILING, MAX_RECIPIENTS_CEILING,
    MAX_SESSION_CACHE, MAX_TIMEOUT_SECS, MAX_WORKERS, MIN_MESSAGE_SIZE,
};

/// Default `limits.max_connections_per_ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 50;

/// The key under which problems with the file as a whole are reported: it could not be read,
/// or it is not TOML.
pub const FILE_KEY: &str = "(file)";

/// The embedded default configuration, `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// One problem with the configuration, displayed as `key: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The TOML path of the value at fault (`listener[1].addr`), or [`FILE_KEY`].
    pub key: String,
    /// What is wrong and, where there is one, the bound it breaks and its source.
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Every problem found in one configuration: type and unknown-key errors (at most one per
/// section or listener, as serde stops at the first), then the validation problems. Never empty
/// when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    /// One `key: problem` per line, with no trailing newline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// How a listener speaks TLS (`listener.tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext only; STARTTLS is not advertised.
    #[default]
    None,
    /// Plaintext, upgraded by STARTTLS ([RFC 3207]).
    ///
    /// [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
    StartTls,
    /// TLS from the first byte ([RFC 8314 §3.3], port 465).
    ///
    /// [RFC 8314 §3.3]: https://www.rfc-editor.org/rfc/rfc8314#section-3.3
    Implicit,
}

/// One `[[listener]]`: a socket to accept on, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Where to listen. Port 0 asks the kernel for a free port (tests).
    pub addr: SocketAddr,
    /// Delivery (MX) or submission.
    pub role: Role,
    /// TLS mode.
    pub tls: TlsMode,
    /// Whether mail may only be sent over TLS: until STARTTLS, commands other than EHLO, HELO,
    /// STARTTLS, NOOP, RSET and QUIT get 530 5.7.0 ([RFC 3207 §4]). Always true for
    /// [`TlsMode::Implicit`], never for [`TlsMode::None`].
    ///
    /// [RFC 3207 §4]: https://www.rfc-editor.org/rfc/rfc3207#section-4
    pub require_tls: bool,
    /// How long the server waits after accepting before it sends the 220 greeting
    /// (`greet_delay_ms`, at most [`MAX_GREET_DELAY_MS`]); zero sends it at once. A client that
    /// speaks before the greeting breaks RFC 5321 §3.1 (the server speaks first), which real
    /// MTAs never do and spam bots often do. Always zero on [`TlsMode::Implicit`] listeners,
    /// where the client speaks first (the TLS ClientHello).
    pub greet_delay: Duration,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a balancer in
    /// `proxy.trusted`, naming the real client ([`crate::proxy`]); connections from anywhere
    /// else are closed before any byte is sent.
    pub proxy_protocol: bool,
    /// `name`: what the listener's metrics (the `listener` label) and log lines call it;
    /// without it, its bound address (`0.0.0.0:25`).
    pub name: Option<String>,
}

/// `[limits]`: what one connection or transaction may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in octets, advertised as `SIZE` ([RFC 1870]); within
    /// [`MIN_MESSAGE_SIZE`]`..=`[`MAX_MESSAGE_SIZE_CEILING`].
    ///
    /// [RFC 1870]: https://www.rfc-editor.org/rfc/rfc1870
    pub max_message_size: u64,
    /// Most recipients per transaction; within
    /// [`MIN_RECIPIENTS`](crate::protocol::MIN_RECIPIENTS)`..=`[`MAX_RECIPIENTS_CEILING`].
    pub max_recipients: usize,
    /// Bad commands tolerated before 421 and close; at least 1.
    pub max_bad_commands: u32,
    /// Waiting for the next command ([RFC 5321 §4.5.3.2.7]: 5 minutes).
    ///
    /// [RFC 5321 §4.5.3.2.7]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2.7
    pub command_timeout: Duration,
    /// Waiting for the next block of message data ([RFC 5321 §4.5.3.2.5]: 3 minutes).
    ///
    /// [RFC 5321 §4.5.3.2.5]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2.5
    pub data_timeout: Duration,
    /// Connections one source may hold open at once, on every listener together; 0 means no
    /// limit. At most [`MAX_CONNECTIONS_PER_IP`].
    pub max_connections_per_ip: u32,
    /// Connections the server holds at once, from everyone; past it a new connection gets
    /// `421 4.3.2`. `None`: derived at start from the open-file limit
    /// ([`crate::guard::capacity`]), so that descriptors never run out.
    pub max_connections: Option<u32>,
    /// Longest line of message content, CRLF included, stored byte-exact; a longer line
    /// refuses the message (550 5.6.0) after its data. At least
    /// [`MIN_TEXT_LINE`](crate::protocol::MIN_TEXT_LINE), the floor of [RFC 5321 §4.5.3.1.6];
    /// 65536 by default.
    ///
    /// [RFC 5321 §4.5.3.1.6]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.6
    pub max_line_length: usize,
    /// Refuse envelope addresses without angle brackets (`MAIL FROM:a@b`), as Postfix's
    /// `strict_rfc821_envelopes = yes` does; off by default, like Postfix.
    pub strict_envelopes: bool,
}

impl Default for Limits {
    /// The values of `default.toml`: 25 MiB, 100 recipients, 20 bad commands, and the timeouts of
    /// [RFC 5321 §4.5.3.2](https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.2).
    fn default() -> Self {
        let timeouts = Timeouts::default();
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: crate::protocol::MIN_RECIPIENTS,
            max_bad_commands: 20,
            command_timeout: timeouts.command,
            data_timeout: timeouts.data_block,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections: None,
            max_line_length: crate::protocol::DEFAULT_MAX_LINE_LENGTH,
            strict_envelopes: false,
        }
    }
}

/// A validated configuration: every value is in range and every path is absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our name, in the greeting and the EHLO reply; a syntactically valid domain name.
    pub hostname: String,
    /// Domains we accept mail for: lower-cased, valid domain names, without duplicates, never
    /// empty.
    pub local_domains: Vec<String>,
    /// Worker threads as written; 0 means one per core. Use [`Config::worker_count`].
    pub workers: usize,
    /// At least one, with no two on the same address (port 0 excepted).
    pub listeners: Vec<ListenerConfig>,
    /// The spool directory (absolute).
    pub spool_dir: PathBuf,
    /// The Maildir root for local delivery (absolute).
    pub maildir: PathBuf,
    /// `delivery.mode`: permission bits of Maildir entries, 0600 by default; the directories
    /// delivery creates get the matching search bits ([`crate::delivery::dir_mode`]: 0660
    /// gives 0770).
    pub maildir_mode: u32,
    /// If `delivery.recipients` is set, the only local recipients that exist, as lower-cased
    /// `local@domain`, each in one of `local_domains`. Loaded once, at config time.
    pub recipients: Option<Arc<HashSet<String>>>,
    /// The local recipient rewriting (`delivery.aliases`, `delivery.catch_all`,
    /// `delivery.recipient_delimiter`, with `recipients`), shared with the engines and the
    /// queue; a reload brings its own, for new sessions and the queue's next attempts.
    pub rewrite: Arc<SharedRewriter>,
    /// Per-connection and per-transaction limits.
    pub limits: Limits,
    /// Where to serve Prometheus metrics; `None` when `[metrics]` is absent.
    pub metrics_addr: Option<SocketAddr>,
    /// On SIGTERM, how long sessions in DATA may run on before they are cut.
    pub shutdown_grace: Duration,
    /// `[tls]`, with its defaults when absent (a self-signed certificate for `hostname` under
    /// `./var/tls`). Only used if a listener has `tls` other than [`TlsMode::None`]: then the
    /// driver builds one [`TlsContext`](crate::tls::TlsContext) from it.
    pub tls: TlsConfig,
    /// `[auth]`, with its defaults when absent (no users: AUTH is not offered). The users and
    /// aliases files named in it were read and checked at load: their contents are in
    /// [`AuthConfig::credentials`].
    pub auth: AuthConfig,
    /// `[shield]`, validated by [`ShieldConfig::validate`]; its defaults (disabled) when
    /// absent. Without `shield.ports` in the file, `ports` holds the fixed (non-zero) ports of
    /// the delivery listeners.
    pub shield: ShieldConfig,
    /// `[guard]`, with its defaults when absent (loopback trusted).
    pub guard: GuardConfig,
    /// `[control]`: the control socket (absolute), by default `control.sock` in the spool
    /// directory.
    pub control: ControlConfig,
    /// `[relay]` and `[dns]`, with their defaults when absent (local mail to Maildir, remote
    /// mail by MX through the system resolver). A smarthost password file named in it was read
    /// at load.
    pub relay: RelayConfig,
    /// `[checks]`: SPF, DKIM, DMARC and ARC on the delivery listeners, each `tag` when absent.
    /// Their DNS queries go to `dns.nameservers`, as the relay's do.
    pub checks: ChecksConfig,
    /// `[proxy]`, with its defaults when absent (no balancer trusted, a five-second header
    /// deadline); used by listeners with `proxy_protocol = true`.
    pub proxy: ProxyConfig,
    /// `[log]`: text (the default) or one JSON object per line.
    pub log: LogConfig,
    /// `[[dkim.sign]]`: the keys that sign authenticated submissions by their `From:` domain,
    /// read and checked at load; empty when none are configured.
    pub dkim: Arc<DkimSigners>,
    /// `user` and `group`: who the server runs as after binding, attaching and opening what
    /// needs root ([`crate::service::privileges`]); `None` keeps the user it was started as.
    pub run_as: Option<RunAs>,
}

impl Config {
    /// Parses and validates a configuration, reporting every problem found.
    ///
    /// A `delivery.recipients` file is read here, so this does file I/O if the text names one.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let config =
            raw::parse(text, &mut errors).and_then(|raw| validate::validate(raw, &mut errors));
        if let Some(config) = &config {
            conflicts::check(config, &mut errors);
        }
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => {
                debug_assert!(!errors.is_empty(), "validation failed without an error");
                Err(ConfigErrors(errors))
            }
        }
    }

    /// Reads `path` and parses it as [`Config::from_toml_str`] does. A file that cannot be read
    /// (or is not UTF-8) is reported under [`FILE_KEY`] with its path.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                FILE_KEY,
                format!("cannot read {}: {e}", path.display()),
            )])
        })?;
        Config::from_toml_str(&text)
    }

    /// The embedded default ([`DEFAULT_TOML`]): delivery on 127.0.0.1:2525 and submission on
    /// 127.0.0.1:2587, both with STARTTLS, submission with implicit TLS on 127.0.0.1:2465,
    /// metrics on 127.0.0.1:9125, spool, Maildir and a self-signed certificate under `./var`.
    ///
    /// # Panics
    ///
    /// If the embedded file does not validate, which the unit tests rule out, or if the current
    /// directory cannot be read to resolve its relative paths.
    pub fn embedded_default() -> Config {
        match Config::from_toml_str(DEFAULT_TOML) {
            Ok(config) => config,
            Err(errors) => panic!("the embedded default.toml does not validate:\n{errors}"),
        }
    }

    /// How many io_uring worker threads to run: `workers`, or one per core when it is 0 (one if
    /// the core count is unknown).
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The engine configuration for `listener`: its role, whether it offers STARTTLS and
    /// whether it requires TLS. The recipients set is shared, not copied.
    ///
    /// On an implicit-TLS listener `tls_offered` is false (the session is already encrypted)
    /// and `tls_required` true: the driver must start those sessions with
    /// `Connection::new_secure`.
    pub fn engine_config(&self, listener: &ListenerConfig) -> EngineConfig {
        EngineConfig {
            hostname: self.hostname.clone(),
            role: listener.role,
            local_domains: self.local_domains.iter().cloned().collect(),
            // The hostname if it is one of ours, else the first local domain.
            postmaster_domain: if self.local_domains.contains(&self.hostname) {
                self.hostname.clone()
            } else {
                self.local_domains
                    .first()
                    .cloned()
                    .unwrap_or_else(|| self.hostname.clone())
            },
            recipients: Some(self.rewrite.clone()),
            max_message_size: self.limits.max_message_size,
            max_recipients: self.limits.max_recipients,
            max_bad_commands: self.limits.max_bad_commands,
            max_line_length: self.limits.max_line_length,
            strict_envelopes: self.limits.strict_envelopes,
            timeouts: Timeouts {
                command: self.limits.command_timeout,
                data_block: self.limits.data_timeout,
            },
            tls_offered: listener.tls == TlsMode::StartTls,
            tls_required: listener.require_tls,
            // AUTH only where someone can log in: a submission listener with a users file.
            auth_offered: listener.role == Role::Submission && self.auth.offers_auth(),
            auth_plaintext: self.auth.allow_plaintext,
            // Validation refuses a delay on implicit TLS, where the client speaks first.
            greet_delay: listener.greet_delay,
            // SPF is looked up at MAIL, so that `enforce` can refuse there (RFC 7208 §2.4)
            // and `tag` has the result ready for the header.
            check_sender: listener.role == Role::Delivery && self.checks.spf.is_on(),
        }
    }
}

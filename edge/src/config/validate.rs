//! The one validation pass: raw structs in, typed [`Config`] out, every problem pushed as it is
//! found so that none hides another.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    RawAuth, RawConfig, RawControl, RawGuard, RawLimits, RawProxy, RawShield, RawTls,
};
use super::{
    recipients, Config, ConfigError, Limits, ListenerConfig, TlsMode, MAX_REPORTED_LINE_ERRORS,
};
use crate::auth::{
    AuthConfig, AuthError, Credentials, MAX_BAN_SECS, MAX_CHECKS_PER_SOURCE, MAX_FAILURES_CEILING,
    MAX_FAILURE_WINDOW_SECS, MAX_TARPIT_MS, MAX_VERIFY_THREADS,
};
use crate::control::{ControlConfig, DEFAULT_CONTROL_SOCKET};
use crate::delivery::DEFAULT_FILE_MODE;
use crate::guard::GuardConfig;
use crate::logging::LogConfig;
use crate::protocol::address::{parse_domain, parse_mailbox, Domain};
use crate::protocol::{Role, MIN_RECIPIENTS, MIN_TEXT_LINE};
use crate::proxy::ProxyConfig;
use crate::rewrite::{self, Rewriter, SharedRewriter, DEFAULT_DELIMITER};
use crate::service::privileges::RunAs;
use crate::shield::ShieldConfig;
use crate::tls::{
    CertEntry, CertSource, TlsConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SELF_SIGNED_DIR,
    DEFAULT_SESSION_CACHE,
};

/// Most worker threads accepted; far above any core count, it catches a typo such as `workers =
/// 80000` before the server tries to start that many rings.
pub const MAX_WORKERS: usize = 1024;

/// Smallest `limits.max_message_size`: [RFC 5321 §4.5.3.1.7] requires that a server accept
/// message content of at least 64K octets.
///
/// [RFC 5321 §4.5.3.1.7]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.7
pub const MIN_MESSAGE_SIZE: u64 = 64 * 1024;

/// Largest `limits.max_message_size`, 1 GiB: each message is spooled whole before the 250, so a
/// larger limit is more likely a typo (an extra zero) than a policy.
pub const MAX_MESSAGE_SIZE_CEILING: u64 = 1024 * 1024 * 1024;

/// Largest `limits.max_recipients`. [RFC 5321 §4.5.3.1.8] sets only the floor; the envelope of
/// one transaction is held in memory, so it needs a ceiling too.
///
/// [RFC 5321 §4.5.3.1.8]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.8
pub const MAX_RECIPIENTS_CEILING: usize = 10_000;

/// Largest `limits.max_bad_commands`.
pub const MAX_BAD_COMMANDS_CEILING: u32 = 1000;

/// Largest timeout or grace period, in seconds (one day). It keeps `now + timeout` far from
/// `Instant` overflow, and a longer idle timeout only lets idle clients hold connections.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Largest `tls.session_cache`, in entries. Each holds one session's secrets (a few hundred
/// octets), so this caps the cache near a few hundred MiB.
pub const MAX_SESSION_CACHE: usize = 1 << 20;

/// Largest `tls.handshake_timeout_secs`: five minutes, the RFC 5321 §4.5.3.2.7 command timeout.
/// A handshake slower than that is a dead or hostile peer holding a connection.
pub const MAX_HANDSHAKE_TIMEOUT_SECS: u64 = 300;

/// Largest `limits.max_connections_per_ip`: more connections than one address has ports for
/// is no limit at all, and a typo (an extra zero) should not silently become one.
pub const MAX_CONNECTIONS_PER_IP: u32 = 100_000;

/// Largest `proxy.header_timeout_secs`: a balancer sends its header with the connection's
/// first packet; a minute is already far past any real one.
const MAX_PROXY_HEADER_TIMEOUT_SECS: u64 = 60;

/// Largest `listener.greet_delay_ms`: 30 s. RFC 5321 §4.5.3.2.1 gives clients 5 minutes for
/// the greeting, but many give up sooner, and each delayed session holds a connection.
pub const MAX_GREET_DELAY_MS: u64 = 30_000;

/// Longest Unix socket path, with its terminating NUL (`sun_path`, unix(7)).
const MAX_SOCKET_PATH: usize = 108;

/// Longest `listener[i].name`: a label, not a description.
pub const MAX_LISTENER_NAME: usize = 64;

/// Default `shutdown.grace_secs`.
const DEFAULT_GRACE_SECS: u64 = 30;

/// Validates `raw`, pushing every problem to `errors`. Returns `None` when a required value is
/// missing or invalid; the caller treats any pushed error as failure even if a `Config` comes
/// back.
pub(super) fn validate(raw: RawConfig, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut v = Validator { errors };
    let hostname = v.hostname(raw.hostname);
    let local_domains = v.local_domains(raw.local_domains);
    let workers = raw
        .workers
        .map_or(Some(0), |w| {
            v.int_in("workers", w, 0, MAX_WORKERS as u64, "")
        })
        .map(|w| w as usize);
    let listeners = v.listeners(raw.listeners);
    let run_as = v.run_as(raw.user.as_deref(), raw.group.as_deref());
    let spool_dir = match raw.spool {
        Some(spool) => v.path("spool.dir", &spool.dir),
        None => v.missing("spool.dir"),
    };
    let (maildir, recipients, maildir_mode, rewrite) = match raw.delivery {
        Some(delivery) => {
            let maildir = v.path("delivery.maildir", &delivery.maildir);
            let mode = delivery.mode.map_or(Some(DEFAULT_FILE_MODE), |m| {
                v.file_mode("delivery.mode", &m)
            });
            let recipients = match delivery.recipients {
                None => Some(None),
                Some(path) => v.path("delivery.recipients", &path).and_then(|path| {
                    // Without valid local domains every line would be reported as foreign;
                    // the domain errors already explain the failure.
                    let domains = local_domains.as_ref()?;
                    recipients::load(&path, domains, v.errors).map(|set| Some(set.into()))
                }),
            };
            let rewrite = v.rewrite(
                delivery.aliases,
                delivery.catch_all,
                delivery.recipient_delimiter,
                local_domains.as_deref(),
            );
            (maildir, recipients, mode, rewrite)
        }
        None => (
            v.missing("delivery.maildir"),
            Some(None),
            Some(DEFAULT_FILE_MODE),
            Some(Rewriter {
                delimiter: DEFAULT_DELIMITER.to_owned(),
                ..Rewriter::default()
            }),
        ),
    };
    let limits = v.limits(raw.limits.unwrap_or_default());
    let metrics_addr = match raw.metrics {
        Some(m) => v.socket_addr("metrics.addr", &m.addr).map(Some),
        None => Some(None),
    };
    let shutdown_grace = raw
        .shutdown
        .and_then(|s| s.grace_secs)
        .map_or(Some(DEFAULT_GRACE_SECS), |g| {
            v.int_in("shutdown.grace_secs", g, 0, MAX_TIMEOUT_SECS, "")
        })
        .map(Duration::from_secs);
    let tls = v.tls(raw.tls.unwrap_or_default(), hostname.as_deref());
    let auth = v.auth(raw.auth.unwrap_or_default());
    let proxy = v.proxy(raw.proxy.unwrap_or_default(), listeners.as_deref());
    let shield = v.shield(raw.shield, listeners.as_deref(), proxy.as_ref());
    let guard = v.guard(raw.guard.unwrap_or_default(), proxy.as_ref());
    let control = v.control(raw.control.unwrap_or_default(), spool_dir.as_deref());
    let relay = v.relay(
        raw.relay.unwrap_or_default(),
        raw.dns.unwrap_or_default(),
        hostname.as_deref(),
    );
    let checks = v.checks(raw.checks.unwrap_or_default());
    let log = LogConfig {
        format: raw.log.and_then(|l| l.format).unwrap_or_default(),
    };
    let dkim = v.dkim(raw.dkim.unwrap_or_default());
    let rewrite = match (rewrite, &local_domains, &recipients) {
        (Some(mut rewrite), Some(domains), Some(known)) => {
            rewrite.local_domains = domains.iter().cloned().collect();
            rewrite.recipients = known.clone();
            Some(SharedRewriter::new(rewrite))
        }
        _ => None,
    };
    Some(Config {
        hostname: hostname?,
        local_domains: local_domains?,
        workers: workers?,
        listeners: listeners?,
        spool_dir: spool_dir?,
        maildir: maildir?,
        maildir_mode: maildir_mode?,
        rewrite: rewrite?,
        recipients: recipients?,
        limits: limits?,
        metrics_addr: metrics_addr?,
        shutdown_grace: shutdown_grace?,
        tls: tls?,
        auth: auth?,
        shield: shield?,
        guard: guard?,
        control: control?,
        relay: relay?,
        checks: checks?,
        proxy: proxy?,
        log,
        dkim: Arc::new(dkim?),
        run_as: run_as?,
    })
}

/// Holds the error list; each check returns `Some(value)` or pushes an error and returns `None`.
pub(super) struct Validator<'e> {
    errors: &'e mut Vec<ConfigError>,
}

impl Validator<'_> {
    pub(super) fn push(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.errors.push(ConfigError::new(key, problem));
    }

    /// Reports `key` as missing, unless its section already has an error: a section that
    /// failed to deserialize reaches here as absent, and one error for it is enough.
    fn missing<T>(&mut self, key: &str) -> Option<T> {
        if !self.reported(key) {
            self.push(key, "required key is missing");
        }
        None
    }

    /// Whether an error was already pushed for the top-level section of `key`.
    fn reported(&self, key: &str) -> bool {
        let section = key.split(['.', '[']).next().unwrap_or(key);
        self.errors.iter().any(|e| {
            e.key
                .strip_prefix(section)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    /// `user` and `group`, looked up now so that a typo fails `check-config`, not the start.
    fn run_as(&mut self, user: Option<&str>, group: Option<&str>) -> Option<Option<RunAs>> {
        match (user, group) {
            (None, None) => Some(None),
            (None, Some(_)) => {
                self.push("group", "needs user: the group is what user runs with");
                None
            }
            (Some(""), _) => {
                self.push("user", "must not be empty");
                None
            }
            (Some(user), group) => match RunAs::resolve(user, group) {
                Ok(run_as) => Some(Some(run_as)),
                Err((key, problem)) => {
                    self.push(key, problem);
                    None
                }
            },
        }
    }

    fn hostname(&mut self, hostname: Option<String>) -> Option<String> {
        let Some(hostname) = hostname else {
            return self.missing("hostname");
        };
        // The greeting and EHLO reply carry a Domain (RFC 5321 §4.1.1.1, §4.2); a literal or a
        // stray space there would make every reply we send malformed.
        match domain_name(&hostname) {
            Ok(name) => Some(name),
            Err(problem) => {
                self.push("hostname", problem);
                None
            }
        }
    }

    fn local_domains(&mut self, domains: Option<Vec<String>>) -> Option<Vec<String>> {
        let Some(domains) = domains else {
            return self.missing("local_domains");
        };
        if domains.is_empty() {
            self.push(
                "local_domains",
                "must name at least one domain: with none, every RCPT TO would be refused",
            );
            return None;
        }
        let mut out: Vec<String> = Vec::with_capacity(domains.len());
        let mut ok = true;
        for (i, domain) in domains.iter().enumerate() {
            match domain_name(domain) {
                // Duplicates (often the same name in two cases) are harmless: keep the first.
                Ok(name) if out.contains(&name) => {}
                Ok(name) => out.push(name),
                Err(problem) => {
                    self.push(format!("local_domains[{i}]"), problem);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn listeners(
        &mut self,
        raw: Vec<Option<super::raw::RawListener>>,
    ) -> Option<Vec<ListenerConfig>> {
        if raw.is_empty() {
            if self.reported("listener") {
                return None;
            }
            self.push(
                "listener",
                "at least one [[listener]] is required: there is nothing to accept on",
            );
            return None;
        }
        let mut out = Vec::with_capacity(raw.len());
        let mut ok = true;
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, entry) in raw.into_iter().enumerate() {
            // A `None` entry failed to deserialize and is already reported.
            let Some(entry) = entry else {
                ok = false;
                continue;
            };
            let key = format!("listener[{i}]");
            let addr = self.socket_addr(&format!("{key}.addr"), &entry.addr);
            if let Some(addr) = addr {
                // Port 0 binds a fresh port each time, so two of them never collide.
                if addr.port() != 0 {
                    if let Some(first) = seen.insert(addr, i) {
                        self.push(
                            format!("{key}.addr"),
                            format!("{addr} is already used by listener[{first}]"),
                        );
                        ok = false;
                    }
                }
            }
            let require_tls = self.require_tls(&key, entry.role, entry.tls, entry.require_tls);
            let greet_delay = self.greet_delay(&key, entry.tls, entry.greet_delay_ms);
            let name = self.listener_name(&key, entry.name, &mut names, i);
            match (addr, require_tls, greet_delay, name) {
                (Some(addr), Some(require_tls), Some(greet_delay), Some(name)) => {
                    out.push(ListenerConfig {
                        addr,
                        role: entry.role,
                        tls: entry.tls,
                        require_tls,
                        greet_delay,
                        proxy_protocol: entry.proxy_protocol,
                        name,
                    })
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `listener[i].name`: optional; 1 to [`MAX_LISTENER_NAME`] letters, digits, `.`, `_` or
    /// `-`, and unique, since it labels the listener's metrics and log lines.
    fn listener_name(
        &mut self,
        key: &str,
        name: Option<String>,
        names: &mut HashMap<String, usize>,
        index: usize,
    ) -> Option<Option<String>> {
        let Some(name) = name else {
            return Some(None);
        };
        let key = format!("{key}.name");
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > MAX_LISTENER_NAME || !name.chars().all(allowed) {
            self.push(
                key,
                format!(
                    "must be 1 to {MAX_LISTENER_NAME} letters, digits, '.', '_' or '-', got {name:?}"
                ),
            );
            return None;
        }
        if let Some(first) = names.insert(name.clone(), index) {
            self.push(
                key,
                format!("{name:?} is already the name of listener[{first}]"),
            );
            return None;
        }
        Some(Some(name))
    }

    /// `listener[i].require_tls`: defaults to true for submission with STARTTLS (RFC 8314
    /// §3.3 wants submission encrypted) and false for delivery (RFC 3207 §4: a publicly
    /// referenced server must not require TLS); implied by implicit TLS; impossible without TLS.
    fn require_tls(
        &mut self,
        key: &str,
        role: Role,
        tls: TlsMode,
        require: Option<bool>,
    ) -> Option<bool> {
        match (tls, require) {
            (TlsMode::None, Some(true)) => {
                self.push(
                    format!("{key}.require_tls"),
                    "cannot be true with tls = \"none\": the listener never offers TLS; set \
                     tls = \"starttls\" or \"implicit\"",
                );
                None
            }
            (TlsMode::Implicit, Some(false)) => {
                self.push(
                    format!("{key}.require_tls"),
                    "cannot be false with tls = \"implicit\": every session is TLS from the \
                     first byte; remove the key",
                );
                None
            }
            (_, Some(require)) => Some(require),
            (TlsMode::None, None) => Some(false),
            (TlsMode::Implicit, None) => Some(true),
            (TlsMode::StartTls, None) => Some(role == Role::Submission),
        }
    }

    /// `listener[i].greet_delay_ms`: 0 (the default) to [`MAX_GREET_DELAY_MS`]; not with
    /// implicit TLS, where the client speaks first and there is no greeting to hold back.
    fn greet_delay(&mut self, key: &str, tls: TlsMode, ms: Option<i64>) -> Option<Duration> {
        let Some(ms) = ms else {
            return Some(Duration::ZERO);
        };
        let key = format!("{key}.greet_delay_ms");
        let ms = self.int_in(
            &key,
            ms,
            0,
            MAX_GREET_DELAY_MS,
            " (milliseconds; 0 greets at once)",
        )?;
        if tls == TlsMode::Implicit && ms > 0 {
            self.push(
                key,
                "not allowed with tls = \"implicit\": the client speaks first (the TLS \
                 handshake), so there is no greeting to hold back; remove the key",
            );
            return None;
        }
        Some(Duration::from_millis(ms))
    }

    /// `[shield]`: [`ShieldConfig::validate`]'s problems, under their own keys. Without
    /// `shield.ports`, the protected ports are those of the delivery listeners (port 0 is not
    /// known until bind, so it cannot be protected).
    ///
    /// When a listener takes PROXY headers, the trusted balancers join `shield.allow`: every
    /// proxied client arrives from a balancer's address, so a SYN budget or a ban on that
    /// address would cut them all off (ARCHITECTURE.md, "Behind a balancer").
    fn shield(
        &mut self,
        raw: Option<RawShield>,
        listeners: Option<&[ListenerConfig]>,
        proxy: Option<&ProxyConfig>,
    ) -> Option<ShieldConfig> {
        let RawShield {
            config: mut shield,
            ports_given,
        } = match raw {
            Some(raw) => raw,
            // It failed to deserialize, and that is reported.
            None if self.reported("shield") => return None,
            // Absent: disabled, with the defaults (ports as below).
            None => RawShield {
                config: ShieldConfig::default(),
                ports_given: false,
            },
        };
        if !ports_given {
            let mut ports: Vec<u16> = Vec::new();
            for l in listeners.unwrap_or_default() {
                let port = l.addr.port();
                if l.role == Role::Delivery && port != 0 && !ports.contains(&port) {
                    ports.push(port);
                }
            }
            if !ports.is_empty() {
                shield.ports = ports;
            } else if shield.enabled && listeners.is_some() {
                self.push(
                    "shield.ports",
                    "required here: it defaults to the delivery listeners' ports, and no \
                     delivery listener has a fixed (non-zero) port",
                );
                return None;
            }
        }
        let proxied = listeners
            .unwrap_or_default()
            .iter()
            .any(|l| l.proxy_protocol);
        if let (true, Some(proxy)) = (proxied, proxy) {
            for net in &proxy.trusted {
                let text = net.to_string();
                if !shield.allow.contains(&text) {
                    shield.allow.push(text);
                }
            }
        }
        let problems = shield.validate();
        if !problems.is_empty() {
            for (key, problem) in problems {
                self.push(key, problem);
            }
            return None;
        }
        Some(shield)
    }

    /// `[tls]`: the default certificate (files, or self-signed for `hostname`), the SNI
    /// entries, the session cache and the handshake timeout. Certificate files are checked
    /// for readability here; their contents are parsed by `TlsContext::new`.
    fn tls(&mut self, raw: RawTls, hostname: Option<&str>) -> Option<TlsConfig> {
        let mut ok = true;
        let default_cert = match (raw.cert, raw.key) {
            (Some(cert), Some(key)) => {
                let cert = self.readable_file("tls.cert", &cert);
                let key = self.readable_file("tls.key", &key);
                cert.zip(key)
                    .map(|(cert, key)| CertSource::Files(CertEntry::new("tls", cert, key)))
            }
            (Some(_), None) => self.unpaired("tls.key", "tls.cert"),
            (None, Some(_)) => self.unpaired("tls.cert", "tls.key"),
            (None, None) => {
                let dir = raw
                    .self_signed_dir
                    .as_deref()
                    .unwrap_or(DEFAULT_SELF_SIGNED_DIR);
                // Without a valid hostname there is no name to certify; that is reported.
                let dir = self.path("tls.self_signed_dir", dir);
                dir.zip(hostname)
                    .map(|(dir, hostname)| CertSource::SelfSigned {
                        dir,
                        hostname: hostname.to_owned(),
                    })
            }
        };
        let mut certificates = Vec::with_capacity(raw.certificates.len());
        for (i, entry) in raw.certificates.into_iter().enumerate() {
            let Some(entry) = entry else {
                ok = false;
                continue;
            };
            let key = format!("tls.certificate[{i}]");
            let cert = self.readable_file(&format!("{key}.cert"), &entry.cert);
            let private = self.readable_file(&format!("{key}.key"), &entry.key);
            match cert.zip(private) {
                Some((cert, private)) => certificates.push(CertEntry::new(&key, cert, private)),
                None => ok = false,
            }
        }
        let session_cache = raw.session_cache.map_or(Some(DEFAULT_SESSION_CACHE), |n| {
            self.int_in(
                "tls.session_cache",
                n,
                0,
                MAX_SESSION_CACHE as u64,
                " (0 disables the cache; tickets still resume sessions)",
            )
            .map(|n| n as usize)
        });
        let handshake_timeout =
            raw.handshake_timeout_secs
                .map_or(Some(DEFAULT_HANDSHAKE_TIMEOUT), |n| {
                    self.int_in(
                        "tls.handshake_timeout_secs",
                        n,
                        1,
                        MAX_HANDSHAKE_TIMEOUT_SECS,
                        "",
                    )
                    .map(Duration::from_secs)
                });
        let tls = TlsConfig {
            default_cert: default_cert?,
            certificates,
            session_cache: session_cache?,
            handshake_timeout: handshake_timeout?,
        };
        ok.then_some(tls)
    }

    /// `[auth]`: the users and aliases files (read and checked now, each bad line reported
    /// under its key with its number), the abuse limits, the verifier pool and the trusted
    /// networks.
    fn auth(&mut self, raw: RawAuth) -> Option<AuthConfig> {
        let d = AuthConfig::default();
        let users = match &raw.users {
            None => Some(None),
            Some(path) => self.path("auth.users", path).map(Some),
        };
        let aliases = match (&raw.aliases, &raw.users) {
            (None, _) => Some(None),
            (Some(_), None) => {
                self.push(
                    "auth.aliases",
                    "requires auth.users: aliases grant addresses to users, and without \
                     auth.users there are none",
                );
                None
            }
            (Some(path), Some(_)) => self.path("auth.aliases", path).map(Some),
        };
        let credentials = match (&users, &aliases) {
            (Some(None), _) => Some(Arc::clone(&d.credentials)),
            (Some(Some(users)), Some(aliases)) => {
                match Credentials::load(Some(users), aliases.as_deref()) {
                    Ok(credentials) => Some(Arc::new(credentials)),
                    Err(AuthError::Files(problems)) => {
                        for p in problems {
                            self.push(p.key, p.problem);
                        }
                        None
                    }
                    Err(other) => {
                        self.push("auth.users", other.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        let max_failures = raw.max_failures.map_or(Some(d.max_failures), |n| {
            self.int_in("auth.max_failures", n, 1, MAX_FAILURES_CEILING.into(), "")
                .map(|n| n as u32)
        });
        let failure_window = raw.failure_window_secs.map_or(Some(d.failure_window), |n| {
            self.int_in(
                "auth.failure_window_secs",
                n,
                1,
                MAX_FAILURE_WINDOW_SECS,
                "",
            )
            .map(Duration::from_secs)
        });
        let ban = raw.ban_secs.map_or(Some(d.ban), |n| {
            self.int_in("auth.ban_secs", n, 1, MAX_BAN_SECS, "")
                .map(Duration::from_secs)
        });
        let tarpit_max = raw.tarpit_max_ms.map_or(Some(d.tarpit_max), |n| {
            self.int_in(
                "auth.tarpit_max_ms",
                n,
                0,
                MAX_TARPIT_MS,
                " (0 answers failed AUTH at once)",
            )
            .map(Duration::from_millis)
        });
        let verify_threads = raw.verify_threads.map_or(Some(d.verify_threads), |n| {
            self.int_in("auth.verify_threads", n, 1, MAX_VERIFY_THREADS as u64, "")
                .map(|n| n as usize)
        });
        let max_checks_per_source =
            raw.max_checks_per_source
                .map_or(Some(d.max_checks_per_source), |n| {
                    self.int_in(
                        "auth.max_checks_per_source",
                        n,
                        1,
                        u64::from(MAX_CHECKS_PER_SOURCE),
                        "",
                    )
                    .map(|n| n as u32)
                });
        let submission_networks = raw.submission_networks.map_or(Some(Vec::new()), |list| {
            self.cidrs("auth.submission_networks", &list)
        });
        Some(AuthConfig {
            users: users?,
            aliases: aliases?,
            credentials: credentials?,
            max_failures: max_failures?,
            failure_window: failure_window?,
            ban: ban?,
            tarpit_max: tarpit_max?,
            verify_threads: verify_threads?,
            max_checks_per_source: max_checks_per_source?,
            submission_networks: submission_networks?,
            trace_login: raw.trace_login.unwrap_or(d.trace_login),
            allow_plaintext: raw.allow_plaintext.unwrap_or(d.allow_plaintext),
        })
    }

    /// `[guard]`: the trusted networks; the balancers of `[proxy]`, which it must never ban.
    fn guard(&mut self, raw: RawGuard, proxy: Option<&ProxyConfig>) -> Option<GuardConfig> {
        let trusted = match raw.trusted {
            None => GuardConfig::default().trusted,
            Some(list) => self.cidrs("guard.trusted", &list)?,
        };
        Some(GuardConfig {
            trusted,
            balancers: proxy.map(|p| p.trusted.clone()).unwrap_or_default(),
        })
    }

    /// `[proxy]`: the trusted balancers and the header deadline. A listener with
    /// `proxy_protocol = true` needs at least one balancer: without one it would refuse every
    /// connection.
    fn proxy(
        &mut self,
        raw: RawProxy,
        listeners: Option<&[ListenerConfig]>,
    ) -> Option<ProxyConfig> {
        let d = ProxyConfig::default();
        let trusted = match raw.trusted {
            None => d.trusted,
            Some(list) => self.cidrs("proxy.trusted", &list)?,
        };
        let header_timeout = match raw.header_timeout_secs {
            None => d.header_timeout,
            Some(secs) => Duration::from_secs(self.int_in(
                "proxy.header_timeout_secs",
                secs,
                1,
                MAX_PROXY_HEADER_TIMEOUT_SECS,
                "",
            )?),
        };
        if trusted.is_empty() {
            let proxied = listeners
                .unwrap_or_default()
                .iter()
                .position(|l| l.proxy_protocol);
            if let Some(i) = proxied {
                self.push(
                    format!("listener[{i}].proxy_protocol"),
                    "needs proxy.trusted: PROXY headers are believed only from the balancers \
                     listed there, and with none every connection would be refused",
                );
                return None;
            }
        }
        Some(ProxyConfig {
            trusted,
            header_timeout,
        })
    }

    /// `[control]`: where the control socket is; by default `control.sock` in the spool
    /// directory (`None` when that is already reported as missing or invalid).
    fn control(&mut self, raw: RawControl, spool_dir: Option<&Path>) -> Option<ControlConfig> {
        let socket = match raw.socket {
            Some(text) => self.path("control.socket", &text)?,
            None => spool_dir?.join(DEFAULT_CONTROL_SOCKET),
        };
        // sun_path holds 108 octets with its NUL (unix(7)); a longer path fails at bind.
        if socket.as_os_str().len() >= MAX_SOCKET_PATH {
            self.push(
                "control.socket",
                format!(
                    "{} is longer than a Unix socket path may be ({} octets at most)",
                    socket.display(),
                    MAX_SOCKET_PATH - 1
                ),
            );
            return None;
        }
        Some(ControlConfig { socket })
    }

    /// A list of networks, each reported under `key[i]` if it is not one.
    fn cidrs(&mut self, key: &str, list: &[String]) -> Option<Vec<ipnet::IpNet>> {
        let mut ok = true;
        let mut nets = Vec::with_capacity(list.len());
        for (i, text) in list.iter().enumerate() {
            match crate::cidr::parse(text) {
                Ok(net) => nets.push(net),
                Err(e) => {
                    self.push(format!("{key}[{i}]"), e.to_string());
                    ok = false;
                }
            }
        }
        ok.then_some(nets)
    }

    /// `missing` must be set because `present` is.
    fn unpaired<T>(&mut self, missing: &str, present: &str) -> Option<T> {
        self.push(
            missing,
            format!(
                "required when {present} is set (set both, or neither for a self-signed \
                 certificate under tls.self_signed_dir)"
            ),
        );
        None
    }

    /// A path (as [`Self::path`]) naming a regular file that can be opened for reading now.
    pub(super) fn readable_file(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        let path = self.path(key, text)?;
        let problem = match std::fs::File::open(&path).and_then(|f| f.metadata()) {
            Ok(meta) if meta.is_file() => return Some(path),
            Ok(_) => format!("{} is not a regular file", path.display()),
            Err(e) => format!("cannot read {}: {e}", path.display()),
        };
        self.push(key, problem);
        None
    }

    fn limits(&mut self, raw: RawLimits) -> Option<Limits> {
        let d = Limits::default();
        let max_message_size = raw.max_message_size.map_or(Some(d.max_message_size), |n| {
            self.int_in(
                "limits.max_message_size",
                n,
                MIN_MESSAGE_SIZE,
                MAX_MESSAGE_SIZE_CEILING,
                " (RFC 5321 §4.5.3.1.7 requires at least 64K octets)",
            )
        });
        let max_recipients = raw.max_recipients.map_or(Some(d.max_recipients), |n| {
            self.int_in(
                "limits.max_recipients",
                n,
                MIN_RECIPIENTS as u64,
                MAX_RECIPIENTS_CEILING as u64,
                " (RFC 5321 §4.5.3.1.8 requires at least 100)",
            )
            .map(|n| n as usize)
        });
        let max_bad_commands = raw.max_bad_commands.map_or(Some(d.max_bad_commands), |n| {
            self.int_in(
                "limits.max_bad_commands",
                n,
                1,
                u64::from(MAX_BAD_COMMANDS_CEILING),
                "",
            )
            .map(|n| n as u32)
        });
        let command_timeout = raw
            .command_timeout_secs
            .map_or(Some(d.command_timeout), |n| {
                self.int_in(
                    "limits.command_timeout_secs",
                    n,
                    1,
                    MAX_TIMEOUT_SECS,
                    " (RFC 5321 §4.5.3.2.7 recommends 300)",
                )
                .map(Duration::from_secs)
            });
        let data_timeout = raw.data_timeout_secs.map_or(Some(d.data_timeout), |n| {
            self.int_in(
                "limits.data_timeout_secs",
                n,
                1,
                MAX_TIMEOUT_SECS,
                " (RFC 5321 §4.5.3.2.5 recommends 180)",
            )
            .map(Duration::from_secs)
        });
        let max_connections_per_ip =
            raw.max_connections_per_ip
                .map_or(Some(d.max_connections_per_ip), |n| {
                    self.int_in(
                        "limits.max_connections_per_ip",
                        n,
                        0,
                        u64::from(MAX_CONNECTIONS_PER_IP),
                        " (0 = no limit)",
                    )
                    .map(|n| n as u32)
                });
        let max_connections = raw.max_connections.map_or(Some(None), |n| {
            self.int_in(
                "limits.max_connections",
                n,
                1,
                u64::from(crate::guard::capacity::MAX_CONNECTIONS),
                " (leave it out to derive it from the open-file limit)",
            )
            .map(|n| Some(n as u32))
        });
        let max_line_length = raw.max_line_length.map_or(Some(d.max_line_length), |n| {
            self.int_in(
                "limits.max_line_length",
                n,
                MIN_TEXT_LINE as u64,
                MAX_MESSAGE_SIZE_CEILING,
                " (octets, CRLF included; RFC 5321 §4.5.3.1.6 requires at least 1000)",
            )
            .map(|n| n as usize)
        });
        Some(Limits {
            max_line_length: max_line_length?,
            strict_envelopes: raw.strict_envelopes.unwrap_or(d.strict_envelopes),
            max_message_size: max_message_size?,
            max_recipients: max_recipients?,
            max_bad_commands: max_bad_commands?,
            command_timeout: command_timeout?,
            data_timeout: data_timeout?,
            max_connections_per_ip: max_connections_per_ip?,
            max_connections: max_connections?,
        })
    }

    /// An octal file mode for Maildir entries (`"0660"`): read and write for the owner always,
    /// other bits only among read and write (no execute, setuid, setgid or sticky bits).
    fn file_mode(&mut self, key: &str, text: &str) -> Option<u32> {
        let mode = (text.len() == 4 && text.starts_with('0'))
            .then(|| u32::from_str_radix(text, 8).ok())
            .flatten();
        match mode {
            Some(m) if m & !0o666 == 0 && m & 0o600 == 0o600 => Some(m),
            _ => {
                self.push(
                    key,
                    format!(
                        "must be four octal digits from \"0600\" to \"0666\", with read and \
                         write for the owner and no execute bits (e.g. \"0660\" for a mail \
                         group), got {text:?}"
                    ),
                );
                None
            }
        }
    }

    /// `n` within `min..=max`, or an error naming the range, the `why` and the value.
    /// `delivery.aliases`, `delivery.catch_all` and `delivery.recipient_delimiter` (the
    /// domains and recipients are filled in by the caller).
    fn rewrite(
        &mut self,
        aliases: Option<String>,
        catch_all: Option<std::collections::BTreeMap<String, String>>,
        delimiter: Option<String>,
        local_domains: Option<&[String]>,
    ) -> Option<Rewriter> {
        let domains: HashSet<String> = local_domains?.iter().cloned().collect();
        let delimiter = delimiter.unwrap_or_else(|| DEFAULT_DELIMITER.to_owned());
        let mut ok = true;
        if delimiter
            .chars()
            .any(|c| c == '@' || c.is_whitespace() || c.is_control())
        {
            self.push(
                "delivery.recipient_delimiter",
                format!("{delimiter:?}: may not hold '@', spaces or control characters"),
            );
            ok = false;
        }
        let mut table = HashMap::new();
        if let Some(path) = aliases {
            match self.path("delivery.aliases", &path).map(|p| read_text(&p)) {
                Some(Ok(text)) => {
                    let (parsed, bad) = rewrite::aliases::parse(&text, &domains);
                    ok &= bad.is_empty();
                    for (line, problem) in bad.into_iter().take(MAX_REPORTED_LINE_ERRORS) {
                        self.push("delivery.aliases", format!("line {line}: {problem}"));
                    }
                    table = parsed;
                }
                Some(Err(problem)) => {
                    self.push("delivery.aliases", problem);
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut catch = HashMap::new();
        for (domain, target) in catch_all.unwrap_or_default() {
            let key = format!("delivery.catch_all.{domain}");
            let lower = domain.to_ascii_lowercase();
            if !domains.contains(&lower) {
                self.push(&key, "not one of local_domains");
                ok = false;
                continue;
            }
            match parse_mailbox(&target) {
                Ok(m) => {
                    catch.insert(lower, m.to_string());
                }
                Err(_) => {
                    self.push(&key, format!("{target:?} is not an address"));
                    ok = false;
                }
            }
        }
        ok.then(|| Rewriter {
            aliases: table,
            catch_all: catch,
            delimiter,
            ..Rewriter::default()
        })
    }

    pub(super) fn int_in(
        &mut self,
        key: &str,
        n: i64,
        min: u64,
        max: u64,
        why: &str,
    ) -> Option<u64> {
        match u64::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.push(key, format!("must be {min}..={max}{why}, got {n}"));
                None
            }
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.push(
                    key,
                    format!(
                        "invalid socket address {text:?} (expected ip:port, such as \
                         \"0.0.0.0:25\" or \"[::]:25\")"
                    ),
                );
                None
            }
        }
    }

    /// A non-empty path, made absolute against the current directory.
    pub(super) fn path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        if text.is_empty() {
            self.push(key, "must not be empty");
            return None;
        }
        match std::path::absolute(text) {
            Ok(path) => Some(path),
            Err(e) => {
                self.push(
                    key,
                    format!("cannot resolve {text:?} against the current directory: {e}"),
                );
                None
            }
        }
    }
}

/// A domain name (not an address literal), lower-cased, or why it is not one.
pub(crate) fn domain_name(text: &str) -> Result<String, String> {
    match parse_domain(text) {
        Ok(Domain::Name(name)) => Ok(name),
        Ok(_) => Err(format!(
            "{text:?} is an address literal; a domain name is needed"
        )),
        Err(_) => Err(format!(
            "{text:?} is not a valid domain name (RFC 5321 §4.1.2: labels of letters, digits \
             and inner hyphens, at most 63 octets each, separated by dots)"
        )),
    }
}

/// A text file of at most [`rewrite::aliases::MAX_ALIASES_FILE`] octets, or why not.
fn read_text(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(rewrite::aliases::MAX_ALIASES_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > rewrite::aliases::MAX_ALIASES_FILE {
        return Err(format!(
            "{} is larger than {} bytes",
            path.display(),
            rewrite::aliases::MAX_ALIASES_FILE
        ));
    }
    Ok(text)
}

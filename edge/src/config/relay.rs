//! `[relay]` and `[dns]`: routes, the smarthost's credentials, MX and TLS policy, the retry
//! schedule, and the nameservers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::raw::{RawDns, RawRelay};
use super::validate::{Validator, MAX_TIMEOUT_SECS};
use crate::protocol::client::{ClientCredentials, TlsPolicy};
use crate::protocol::Secret;
use crate::relay::{RelayConfig, Route, MAX_CONNECTIONS_PER_DOMAIN, MAX_IDLE_SECS};

/// Longest `relay.max_age_secs`: 30 days. Mail older than that is not worth delivering, and
/// a larger value is more likely a typo.
pub const MAX_RELAY_AGE_SECS: u64 = 30 * 24 * 3600;

/// Most entries in `relay.retry_secs`.
pub const MAX_RETRY_STEPS: usize = 100;

/// Most `dns.nameservers`.
pub const MAX_NAMESERVERS: usize = 16;

/// Longest smarthost password, in octets (the first line of the file).
const MAX_PASSWORD: usize = 1024;

impl Validator<'_> {
    /// `[relay]` and `[dns]`, defaults for what is absent.
    pub(super) fn relay(
        &mut self,
        raw: RawRelay,
        dns: RawDns,
        hostname: Option<&str>,
    ) -> Option<RelayConfig> {
        let mut cfg = RelayConfig::new(hostname.unwrap_or("localhost"));
        let mut ok = true;
        if let Some(text) = &raw.local {
            match Route::parse(text) {
                Ok(Route::Mx) => {
                    ok = false;
                    self.push(
                        "relay.local",
                        "\"mx\" is for remote mail: our own domains' MX is this server; \
                         expected \"maildir\", \"lmtp://HOST:PORT\", \"lmtp+unix:///PATH\" or \
                         \"smtp://HOST:PORT\"",
                    );
                }
                Ok(route) => cfg.local = route,
                Err(e) => {
                    ok = false;
                    self.push("relay.local", e);
                }
            }
        }
        if let Some(text) = &raw.remote {
            match Route::parse(text) {
                Ok(route @ (Route::Mx | Route::Smtp(_))) => cfg.remote = route,
                Ok(_) => {
                    ok = false;
                    self.push(
                        "relay.remote",
                        format!("{text:?}: remote mail goes by \"mx\" or to a smarthost \"smtp://HOST:PORT\""),
                    );
                }
                Err(e) => {
                    ok = false;
                    self.push("relay.remote", e);
                }
            }
        }
        match self.smarthost(&raw, &cfg.remote) {
            Some(creds) => cfg.smarthost_credentials = creds,
            None => ok = false,
        }
        if let Some(n) = raw.mx_port {
            match self.int_in("relay.mx_port", n, 1, u64::from(u16::MAX), "") {
                Some(port) => cfg.mx_port = port as u16,
                None => ok = false,
            }
        }
        if let Some(text) = &raw.tls {
            cfg.tls = match text.as_str() {
                "opportunistic" => TlsPolicy::Opportunistic,
                "required" => TlsPolicy::Required,
                "none" => TlsPolicy::None,
                _ => {
                    ok = false;
                    self.push(
                        "relay.tls",
                        format!(
                            "expected \"opportunistic\", \"required\" or \"none\", got {text:?}"
                        ),
                    );
                    TlsPolicy::Opportunistic
                }
            };
        }
        if let Some(n) = raw.max_connections_per_domain {
            let max = MAX_CONNECTIONS_PER_DOMAIN as u64;
            match self.int_in("relay.max_connections_per_domain", n, 1, max, "") {
                Some(n) => cfg.max_connections_per_domain = n as usize,
                None => ok = false,
            }
        }
        if let Some(n) = raw.connect_timeout_secs {
            match self.int_in("relay.connect_timeout_secs", n, 1, MAX_TIMEOUT_SECS, "") {
                Some(secs) => cfg.connect_timeout = Duration::from_secs(secs),
                None => ok = false,
            }
        }
        if let Some(n) = raw.idle_secs {
            match self.int_in("relay.idle_secs", n, 0, MAX_IDLE_SECS, "") {
                Some(secs) => cfg.idle = Duration::from_secs(secs),
                None => ok = false,
            }
        }
        if let Some(steps) = &raw.retry_secs {
            match self.retry(steps) {
                Some(retry) => cfg.retry = retry,
                None => ok = false,
            }
        }
        if let Some(n) = raw.max_age_secs {
            match self.int_in("relay.max_age_secs", n, 60, MAX_RELAY_AGE_SECS, "") {
                Some(secs) => cfg.max_age = Duration::from_secs(secs),
                None => ok = false,
            }
        }
        if let Some(servers) = &dns.nameservers {
            match self.nameservers(servers) {
                Some(list) => cfg.nameservers = list,
                None => ok = false,
            }
        }
        ok.then_some(cfg)
    }

    /// The smarthost credentials: both keys or neither, and only with an `smtp://` remote.
    /// `Some(None)` when none are configured.
    fn smarthost(&mut self, raw: &RawRelay, remote: &Route) -> Option<Option<ClientCredentials>> {
        const USER: &str = "relay.smarthost_user";
        const FILE: &str = "relay.smarthost_password_file";
        let (user, file) = match (&raw.smarthost_user, &raw.smarthost_password_file) {
            (None, None) => return Some(None),
            (Some(_), None) => {
                self.push(
                    FILE,
                    format!("missing: {USER} is set, so the password is needed"),
                );
                return None;
            }
            (None, Some(_)) => {
                self.push(
                    USER,
                    format!("missing: {FILE} is set, so the user is needed"),
                );
                return None;
            }
            (Some(user), Some(file)) => (user, file),
        };
        if !matches!(remote, Route::Smtp(_)) {
            self.push(
                USER,
                "AUTH is only for a smarthost: set relay.remote = \"smtp://HOST:PORT\"",
            );
            return None;
        }
        if user.is_empty() || user.chars().any(char::is_control) {
            self.push(USER, "must be non-empty, without control characters");
            return None;
        }
        let path = self.readable_file(FILE, file)?;
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) => {
                self.push(FILE, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        // The first line; a trailing newline (as `echo` writes) is not part of the password.
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.len() > MAX_PASSWORD {
            self.push(
                FILE,
                format!(
                    "{}: the first line must hold the password (1..={MAX_PASSWORD} octets)",
                    path.display()
                ),
            );
            return None;
        }
        Some(Some(ClientCredentials {
            username: user.clone(),
            password: Secret::new(line.to_vec()),
            allow_plaintext: false,
        }))
    }

    fn retry(&mut self, steps: &[i64]) -> Option<Vec<Duration>> {
        const KEY: &str = "relay.retry_secs";
        if steps.is_empty() || steps.len() > MAX_RETRY_STEPS {
            self.push(KEY, format!("must list 1..={MAX_RETRY_STEPS} waits"));
            return None;
        }
        let mut out = Vec::with_capacity(steps.len());
        for (i, &n) in steps.iter().enumerate() {
            let secs = self.int_in(&format!("{KEY}[{i}]"), n, 1, MAX_TIMEOUT_SECS, "")?;
            out.push(Duration::from_secs(secs));
        }
        Some(out)
    }

    /// `"IP"` (port 53) or `"IP:PORT"` (`"[v6]:PORT"`).
    fn nameservers(&mut self, servers: &[String]) -> Option<Vec<SocketAddr>> {
        const KEY: &str = "dns.nameservers";
        if servers.len() > MAX_NAMESERVERS {
            self.push(KEY, format!("at most {MAX_NAMESERVERS} servers"));
            return None;
        }
        let mut out = Vec::with_capacity(servers.len());
        let mut ok = true;
        for (i, text) in servers.iter().enumerate() {
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(addr) if addr.port() != 0 => out.push(addr),
                _ => {
                    ok = false;
                    self.push(
                        format!("{KEY}[{i}]"),
                        format!(
                            "expected an IP address, with an optional port (\"192.0.2.53\", \
                             \"127.0.0.1:5353\", \"[::1]:53\"), got {text:?}"
                        ),
                    );
                }
            }
        }
        ok.then_some(out)
    }
}

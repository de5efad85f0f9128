//! The file as written: serde structs that mirror the TOML schema one to one, with no meaning
//! attached yet. [`super::validate`] turns them into the typed [`super::Config`].
//!
//! The document is parsed into a [`toml::Table`] first and each section is then deserialized on
//! its own, so that a mistake in `[limits]` does not hide one in `[[listener]]`: serde stops at
//! the first error of a struct, and per-section deserialization gives one error per section
//! instead of one per file, each named by its key.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{ConfigError, TlsMode};
use crate::protocol::Role;
use crate::shield::ShieldConfig;

/// The whole file. Absent sections are `None` (or empty); [`super::validate`] decides which are
/// required.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub hostname: Option<String>,
    pub local_domains: Option<Vec<String>>,
    pub workers: Option<i64>,
    /// `user` and `group`: who the server runs as once started as root.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Indexed as in the file, so errors can name `listener[i]`; `None` where the entry failed
    /// to deserialize (already reported).
    pub listeners: Vec<Option<RawListener>>,
    pub spool: Option<RawSpool>,
    pub delivery: Option<RawDelivery>,
    pub limits: Option<RawLimits>,
    pub metrics: Option<RawMetrics>,
    pub shutdown: Option<RawShutdown>,
    /// `[tls]`; `None` when absent or when it failed to deserialize (already reported).
    pub tls: Option<RawTls>,
    /// `[auth]`; `None` when absent or when it failed to deserialize (already reported).
    pub auth: Option<RawAuth>,
    /// `[shield]`; `None` when absent or when it failed to deserialize (already reported).
    pub shield: Option<RawShield>,
    /// `[guard]`; `None` when absent or when it failed to deserialize (already reported).
    pub guard: Option<RawGuard>,
    /// `[control]`; `None` when absent or when it failed to deserialize (already reported).
    pub control: Option<RawControl>,
    /// `[relay]`; `None` when absent or when it failed to deserialize (already reported).
    pub relay: Option<RawRelay>,
    /// `[dns]`; `None` when absent or when it failed to deserialize (already reported).
    pub dns: Option<RawDns>,
    /// `[checks]`; `None` when absent or when it failed to deserialize (already reported).
    pub checks: Option<RawChecks>,
    /// `[proxy]`; `None` when absent or when it failed to deserialize (already reported).
    pub proxy: Option<RawProxy>,
    /// `[log]`; `None` when absent or when it failed to deserialize (already reported).
    pub log: Option<RawLog>,
    /// `[dkim]`; `None` when absent or when it failed to deserialize (already reported).
    pub dkim: Option<RawDkim>,
}

/// `[proxy]`; every key is optional and defaults to [`crate::proxy::ProxyConfig::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub trusted: Option<Vec<String>>,
    pub header_timeout_secs: Option<i64>,
}

/// `[guard]`; every key is optional and defaults to [`crate::guard::GuardConfig::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    pub trusted: Option<Vec<String>>,
}

/// `[control]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub socket: Option<String>,
}

/// `[shield]`: [`ShieldConfig`]'s own serde (its defaults for absent keys), plus whether
/// `ports` was written, which its `Default` cannot tell: absent, it follows the delivery
/// listeners.
#[derive(Debug)]
pub(super) struct RawShield {
    pub config: ShieldConfig,
    pub ports_given: bool,
}

/// One `[[listener]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub addr: String,
    pub role: Role,
    #[serde(default)]
    pub tls: TlsMode,
    pub require_tls: Option<bool>,
    pub greet_delay_ms: Option<i64>,
    #[serde(default)]
    pub proxy_protocol: bool,
    pub name: Option<String>,
}

/// `[tls]`; every key is optional. `certificate` is taken out of the table first and
/// deserialized entry by entry, as `[[listener]]` is, so errors name `tls.certificate[i]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub self_signed_dir: Option<String>,
    pub session_cache: Option<i64>,
    pub handshake_timeout_secs: Option<i64>,
    /// Indexed as in the file; `None` where the entry failed to deserialize (already reported).
    #[serde(skip)]
    pub certificates: Vec<Option<RawCertificate>>,
}

/// One `[[tls.certificate]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub cert: String,
    pub key: String,
}

/// `[spool]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpool {
    pub dir: String,
}

/// `[delivery]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub maildir: String,
    pub recipients: Option<String>,
    pub mode: Option<String>,
    pub aliases: Option<String>,
    pub catch_all: Option<std::collections::BTreeMap<String, String>>,
    pub recipient_delimiter: Option<String>,
}

/// `[limits]`; every key is optional and defaults to [`super::Limits::default`].
///
/// Integers are read as `i64` (TOML's integer type) so that a negative or oversized value gets
/// our range message, naming the bounds, instead of serde's "expected u32".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_message_size: Option<i64>,
    pub max_recipients: Option<i64>,
    pub max_bad_commands: Option<i64>,
    pub command_timeout_secs: Option<i64>,
    pub data_timeout_secs: Option<i64>,
    pub max_connections_per_ip: Option<i64>,
    pub max_connections: Option<i64>,
    pub max_line_length: Option<i64>,
    pub strict_envelopes: Option<bool>,
}

/// `[metrics]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub addr: String,
}

/// `[auth]`; every key is optional and defaults to [`crate::auth::AuthConfig::default`].
/// Integers are `i64` for our range messages, as in [`RawLimits`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub users: Option<String>,
    pub aliases: Option<String>,
    pub max_failures: Option<i64>,
    pub failure_window_secs: Option<i64>,
    pub ban_secs: Option<i64>,
    pub tarpit_max_ms: Option<i64>,
    pub verify_threads: Option<i64>,
    pub max_checks_per_source: Option<i64>,
    pub submission_networks: Option<Vec<String>>,
    pub trace_login: Option<bool>,
    pub allow_plaintext: Option<bool>,
}

/// `[relay]`; every key is optional. Integers are `i64` for our range messages, as in
/// [`RawLimits`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRelay {
    pub local: Option<String>,
    pub remote: Option<String>,
    pub smarthost_user: Option<String>,
    pub smarthost_password_file: Option<String>,
    pub mx_port: Option<i64>,
    pub tls: Option<String>,
    pub max_connections_per_domain: Option<i64>,
    pub connect_timeout_secs: Option<i64>,
    pub idle_secs: Option<i64>,
    pub retry_secs: Option<Vec<i64>>,
    pub max_age_secs: Option<i64>,
}

/// `[dns]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub nameservers: Option<Vec<String>>,
}

/// `[checks]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChecks {
    pub spf: Option<String>,
    pub dkim: Option<String>,
    pub dmarc: Option<String>,
    pub arc: Option<String>,
    #[serde(default)]
    pub dnsbl: Vec<RawDnsbl>,
    pub dnsbl_threshold: Option<i64>,
}

/// One `[[checks.dnsbl]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnsbl {
    pub zone: String,
    pub weight: i64,
}

/// `[log]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: Option<crate::logging::LogFormat>,
}

/// `[dkim]`: `[[dkim.sign]]` entries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    #[serde(default)]
    pub sign: Vec<RawDkimSign>,
}

/// One `[[dkim.sign]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimSign {
    pub domain: String,
    pub selector: String,
    pub key: String,
}

/// `[shutdown]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    pub grace_secs: Option<i64>,
}

/// The top-level keys, in schema order; anything else is reported as unknown.
const TOP_LEVEL_KEYS: &[&str] = &[
    "hostname",
    "local_domains",
    "workers",
    "user",
    "group",
    "listener",
    "spool",
    "delivery",
    "limits",
    "metrics",
    "shutdown",
    "tls",
    "auth",
    "shield",
    "guard",
    "control",
    "relay",
    "dns",
    "checks",
    "proxy",
    "log",
    "dkim",
];

/// Parses `text` into a [`RawConfig`], pushing every syntax, type and unknown-key error to
/// `errors`. Returns `None` only if the text is not TOML at all (nothing could be read).
pub(super) fn parse(text: &str, errors: &mut Vec<ConfigError>) -> Option<RawConfig> {
    let mut table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => {
            errors.push(syntax_error(text, &e));
            return None;
        }
    };
    let mut raw = RawConfig {
        hostname: take(&mut table, "", "hostname", errors),
        local_domains: take(&mut table, "", "local_domains", errors),
        workers: take(&mut table, "", "workers", errors),
        user: take(&mut table, "", "user", errors),
        group: take(&mut table, "", "group", errors),
        spool: take(&mut table, "", "spool", errors),
        delivery: take(&mut table, "", "delivery", errors),
        limits: take(&mut table, "", "limits", errors),
        metrics: take(&mut table, "", "metrics", errors),
        shutdown: take(&mut table, "", "shutdown", errors),
        auth: take(&mut table, "", "auth", errors),
        guard: take(&mut table, "", "guard", errors),
        control: take(&mut table, "", "control", errors),
        relay: take(&mut table, "", "relay", errors),
        dns: take(&mut table, "", "dns", errors),
        checks: take(&mut table, "", "checks", errors),
        proxy: take(&mut table, "", "proxy", errors),
        log: take(&mut table, "", "log", errors),
        dkim: take(&mut table, "", "dkim", errors),
        tls: None,
        shield: None,
        listeners: Vec::new(),
    };
    raw.shield = table
        .remove("shield")
        .and_then(|value| parse_shield(value, errors));
    raw.tls = table
        .remove("tls")
        .and_then(|value| parse_tls(value, errors));
    match table.remove("listener") {
        None => {}
        Some(toml::Value::Array(entries)) => {
            for (i, entry) in entries.into_iter().enumerate() {
                let key = format!("listener[{i}]");
                raw.listeners.push(
                    RawListener::deserialize(entry)
                        .map_err(|e| errors.push(serde_error(&key, &e)))
                        .ok(),
                );
            }
        }
        Some(other) => errors.push(ConfigError::new(
            "listener",
            format!(
                "expected an array of tables ([[listener]]), found {}",
                other.type_str()
            ),
        )),
    }
    // Whatever is left was not taken above: misspelt or from a newer release. Refusing it
    // (rather than ignoring it) is the point of deny_unknown_fields: a typo in a limit must not
    // silently leave the default in force.
    for key in table.keys() {
        errors.push(ConfigError::new(
            key.clone(),
            format!("unknown key; expected one of {}", TOP_LEVEL_KEYS.join(", ")),
        ));
    }
    Some(raw)
}

/// `[tls]`, with its `[[tls.certificate]]` entries deserialized one by one.
fn parse_tls(value: toml::Value, errors: &mut Vec<ConfigError>) -> Option<RawTls> {
    let toml::Value::Table(mut table) = value else {
        errors.push(ConfigError::new(
            "tls",
            format!("expected a table ([tls]), found {}", value.type_str()),
        ));
        return None;
    };
    let mut certificates = Vec::new();
    match table.remove("certificate") {
        None => {}
        Some(toml::Value::Array(entries)) => {
            for (i, entry) in entries.into_iter().enumerate() {
                let key = format!("tls.certificate[{i}]");
                certificates.push(
                    RawCertificate::deserialize(entry)
                        .map_err(|e| errors.push(serde_error(&key, &e)))
                        .ok(),
                );
            }
        }
        Some(other) => errors.push(ConfigError::new(
            "tls.certificate",
            format!(
                "expected an array of tables ([[tls.certificate]]), found {}",
                other.type_str()
            ),
        )),
    }
    let mut tls = RawTls::deserialize(toml::Value::Table(table))
        .map_err(|e| errors.push(serde_error("tls", &e)))
        .ok()?;
    tls.certificates = certificates;
    Some(tls)
}

/// `[shield]`, noting whether `ports` was given.
fn parse_shield(value: toml::Value, errors: &mut Vec<ConfigError>) -> Option<RawShield> {
    let toml::Value::Table(table) = value else {
        errors.push(ConfigError::new(
            "shield",
            format!("expected a table ([shield]), found {}", value.type_str()),
        ));
        return None;
    };
    let ports_given = table.contains_key("ports");
    let config = ShieldConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| errors.push(serde_error("shield", &e)))
        .ok()?;
    Some(RawShield {
        config,
        ports_given,
    })
}

/// Removes `name` from `table` and deserializes it, reporting a failure under `prefix.name`.
fn take<T: DeserializeOwned>(
    table: &mut toml::Table,
    prefix: &str,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = table.remove(name)?;
    let key = join(prefix, name);
    T::deserialize(value)
        .map_err(|e| errors.push(serde_error(&key, &e)))
        .ok()
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A TOML syntax error. The document could not be parsed, so there is no key to name: it is
/// reported under `(file)` with the line and column of the span toml gives.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let problem = match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            // Quote the line itself: it usually shows the key (`workers = = 2`), which a
            // document that does not parse cannot otherwise give.
            let source = text.lines().nth(line - 1).unwrap_or_default().trim();
            format!(
                "line {line}, column {column}: {} (in `{source}`)",
                one_line(e.message())
            )
        }
        None => one_line(e.message()),
    };
    ConfigError::new(super::FILE_KEY, problem)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Maps a serde error raised while deserializing the section at `section` to the key it blames.
///
/// toml's value deserializer records the path below the section (the `in `a.b`` line of its
/// Display); serde's own messages name unknown and missing fields. Either gives a full key, so
/// the user reads `listener[1].adr: unknown key` and not "unknown field somewhere".
fn serde_error(section: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim_end();
    let rendered = e.to_string();
    let inner_path = rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    let mut key = match inner_path {
        Some(path) => join(section, path),
        None => section.to_owned(),
    };
    if let Some((field, rest)) = backticked_after(message, "unknown field `") {
        key = join(&key, field);
        let expected = rest.trim_start_matches(", ");
        let problem = if expected.is_empty() {
            "unknown key".to_owned()
        } else {
            format!("unknown key; {expected}")
        };
        return ConfigError::new(key, problem);
    }
    if let Some((field, _)) = backticked_after(message, "missing field `") {
        return ConfigError::new(join(&key, field), "required key is missing".to_owned());
    }
    // Raw integers are i64 only to give range errors our wording; say what the user must write.
    // Likewise, serde names our private structs ("expected struct RawLimits"); the user wrote
    // a section, so call it what it is in TOML.
    let mut problem = one_line(message).replace("expected i64", "expected an integer");
    if let Some(at) = problem.find("expected struct Raw") {
        problem.truncate(at);
        problem.push_str("expected a table");
    }
    ConfigError::new(key, problem)
}

/// toml's parser messages can span lines ("invalid table header\nexpected `.`, `]`"); a
/// [`ConfigError`] is one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// For `message = "<prefix>name` rest"`, returns `(name, rest)`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    message.strip_prefix(prefix)?.split_once('`')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_column("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_column("a\nbc\nd", 5), (3, 1));
    }
}

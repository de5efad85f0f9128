//! `smtp-edge config show`: the configuration in force, as TOML, with every default filled in
//! (Postfix's `postconf`; `--defaults` is its `postconf -d`).
//!
//! It is rendered from the validated [`Config`], not from the file: what is shown is what the
//! server runs with, relative paths resolved, derived defaults (`control.socket`,
//! `shield.ports`, each listener's `require_tls`) spelled out. Loading the output again gives
//! the same [`Config`] (the tests hold every key to that). Some paths are kept only as read
//! (`delivery.recipients`, `delivery.aliases`, `relay.smarthost_password_file`,
//! `dkim.sign[].key`: the typed configuration holds their contents) and are taken from the
//! file, resolved the same way.
//! `limits.max_connections` is left out when it is derived from the open-file limit at start
//! (TOML has no "unset").

use std::path::Path;

use toml::{Table, Value};

use super::{Config, ConfigError, ConfigErrors, TlsMode, FILE_KEY};
use crate::checks::CheckMode;
use crate::logging::LogFormat;
use crate::protocol::client::TlsPolicy;
use crate::protocol::Role;
use crate::tls::CertSource;

/// The keys every file must have; `--defaults` keeps only these.
const REQUIRED: &[(&str, &[&str])] = &[
    ("hostname", &[]),
    ("local_domains", &[]),
    ("listener", &["addr", "role"]),
    ("spool", &["dir"]),
    ("delivery", &["maildir"]),
];

/// The configuration `text` gives, as TOML; with `defaults`, the one it would give if it set
/// nothing but its required keys (and each listener's address and role).
pub fn show(text: &str, defaults: bool) -> Result<String, ConfigErrors> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigErrors(vec![ConfigError::new(FILE_KEY, e.message().trim())])
    })?;
    let table = if defaults {
        required_only(table)
    } else {
        table
    };
    let source = toml::to_string(&table)
        .map_err(|e| ConfigErrors(vec![ConfigError::new(FILE_KEY, e.to_string())]))?;
    let config = Config::from_toml_str(&source)?;
    let shown = render(&config, &table);
    toml::to_string(&shown)
        .map_err(|e| ConfigErrors(vec![ConfigError::new(FILE_KEY, e.to_string())]))
}

/// `table` without the keys a file may leave out.
fn required_only(mut table: Table) -> Table {
    let mut kept = Table::new();
    for (key, inner) in REQUIRED {
        let Some(value) = table.remove(*key) else {
            continue;
        };
        let value = match value {
            Value::Table(t) if !inner.is_empty() => Value::Table(keep(t, inner)),
            Value::Array(entries) if !inner.is_empty() => Value::Array(
                entries
                    .into_iter()
                    .map(|e| match e {
                        Value::Table(t) => Value::Table(keep(t, inner)),
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        };
        kept.insert((*key).to_owned(), value);
    }
    kept
}

fn keep(mut table: Table, keys: &[&str]) -> Table {
    keys.iter()
        .filter_map(|k| table.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect()
}

/// `config` as a TOML document; `file` is the table it was loaded from, for the paths the typed
/// configuration does not keep.
fn render(config: &Config, file: &Table) -> Table {
    let mut doc = Table::new();
    doc.insert("hostname".into(), config.hostname.clone().into());
    doc.insert("local_domains".into(), strings(&config.local_domains));
    doc.insert("workers".into(), int(config.workers as u64));
    if let Some(run_as) = &config.run_as {
        doc.insert("user".into(), run_as.user.clone().into());
        doc.insert("group".into(), run_as.group.clone().into());
    }
    let listeners = config
        .listeners
        .iter()
        .map(|l| {
            let mut t = Table::new();
            t.insert("addr".into(), l.addr.to_string().into());
            t.insert("role".into(), role(l.role).into());
            t.insert("tls".into(), tls_mode(l.tls).into());
            t.insert("require_tls".into(), l.require_tls.into());
            t.insert(
                "greet_delay_ms".into(),
                int(l.greet_delay.as_millis() as u64),
            );
            t.insert("proxy_protocol".into(), l.proxy_protocol.into());
            if let Some(name) = &l.name {
                t.insert("name".into(), name.clone().into());
            }
            Value::Table(t)
        })
        .collect();
    doc.insert("listener".into(), Value::Array(listeners));

    let mut spool = Table::new();
    spool.insert("dir".into(), path(&config.spool_dir));
    doc.insert("spool".into(), spool.into());

    let rewrite = config.rewrite.load();
    let mut delivery = Table::new();
    delivery.insert("maildir".into(), path(&config.maildir));
    for key in ["recipients", "aliases"] {
        if let Some(p) = file_path(file, "delivery", key) {
            delivery.insert(key.into(), p);
        }
    }
    delivery.insert("mode".into(), format!("{:04o}", config.maildir_mode).into());
    let catch_all: Table = rewrite
        .catch_all
        .iter()
        .map(|(domain, target)| (domain.clone(), Value::from(target.clone())))
        .collect();
    delivery.insert("catch_all".into(), catch_all.into());
    delivery.insert(
        "recipient_delimiter".into(),
        rewrite.delimiter.clone().into(),
    );
    doc.insert("delivery".into(), delivery.into());

    let l = &config.limits;
    let mut limits = Table::new();
    limits.insert("max_message_size".into(), int(l.max_message_size));
    limits.insert("max_recipients".into(), int(l.max_recipients as u64));
    limits.insert("max_bad_commands".into(), int(l.max_bad_commands.into()));
    limits.insert(
        "command_timeout_secs".into(),
        int(l.command_timeout.as_secs()),
    );
    limits.insert("data_timeout_secs".into(), int(l.data_timeout.as_secs()));
    limits.insert(
        "max_connections_per_ip".into(),
        int(l.max_connections_per_ip.into()),
    );
    if let Some(n) = l.max_connections {
        limits.insert("max_connections".into(), int(n.into()));
    }
    limits.insert("max_line_length".into(), int(l.max_line_length as u64));
    limits.insert("strict_envelopes".into(), l.strict_envelopes.into());
    doc.insert("limits".into(), limits.into());

    if let Some(addr) = config.metrics_addr {
        let mut metrics = Table::new();
        metrics.insert("addr".into(), addr.to_string().into());
        doc.insert("metrics".into(), metrics.into());
    }
    let mut shutdown = Table::new();
    shutdown.insert("grace_secs".into(), int(config.shutdown_grace.as_secs()));
    doc.insert("shutdown".into(), shutdown.into());

    let mut tls = Table::new();
    match &config.tls.default_cert {
        CertSource::Files(entry) => {
            tls.insert("cert".into(), path(&entry.cert));
            tls.insert("key".into(), path(&entry.key));
        }
        CertSource::SelfSigned { dir, .. } => {
            tls.insert("self_signed_dir".into(), path(dir));
        }
    }
    tls.insert("session_cache".into(), int(config.tls.session_cache as u64));
    tls.insert(
        "handshake_timeout_secs".into(),
        int(config.tls.handshake_timeout.as_secs()),
    );
    let certificates: Vec<Value> = config
        .tls
        .certificates
        .iter()
        .map(|c| {
            let mut t = Table::new();
            t.insert("cert".into(), path(&c.cert));
            t.insert("key".into(), path(&c.key));
            Value::Table(t)
        })
        .collect();
    if !certificates.is_empty() {
        tls.insert("certificate".into(), Value::Array(certificates));
    }
    doc.insert("tls".into(), tls.into());

    let a = &config.auth;
    let mut auth = Table::new();
    if let Some(users) = &a.users {
        auth.insert("users".into(), path(users));
    }
    if let Some(aliases) = &a.aliases {
        auth.insert("aliases".into(), path(aliases));
    }
    auth.insert("max_failures".into(), int(a.max_failures.into()));
    auth.insert(
        "failure_window_secs".into(),
        int(a.failure_window.as_secs()),
    );
    auth.insert("ban_secs".into(), int(a.ban.as_secs()));
    auth.insert("tarpit_max_ms".into(), int(a.tarpit_max.as_millis() as u64));
    auth.insert("verify_threads".into(), int(a.verify_threads as u64));
    auth.insert(
        "max_checks_per_source".into(),
        int(a.max_checks_per_source.into()),
    );
    auth.insert(
        "submission_networks".into(),
        strings(a.submission_networks.iter()),
    );
    auth.insert("trace_login".into(), a.trace_login.into());
    auth.insert("allow_plaintext".into(), a.allow_plaintext.into());
    doc.insert("auth".into(), auth.into());

    // Serializing a struct with plain fields cannot fail; an empty table is the harmless
    // fallback if it ever did.
    let shield = Value::try_from(&config.shield).unwrap_or_else(|_| Table::new().into());
    doc.insert("shield".into(), shield);

    let mut guard = Table::new();
    guard.insert("trusted".into(), strings(config.guard.trusted.iter()));
    doc.insert("guard".into(), guard.into());

    let mut control = Table::new();
    control.insert("socket".into(), path(&config.control.socket));
    doc.insert("control".into(), control.into());

    let r = &config.relay;
    let mut relay = Table::new();
    relay.insert("local".into(), r.local.to_string().into());
    relay.insert("remote".into(), r.remote.to_string().into());
    if let Some(credentials) = &r.smarthost_credentials {
        relay.insert("smarthost_user".into(), credentials.username.clone().into());
    }
    if let Some(p) = file_path(file, "relay", "smarthost_password_file") {
        relay.insert("smarthost_password_file".into(), p);
    }
    relay.insert("mx_port".into(), int(r.mx_port.into()));
    relay.insert("tls".into(), tls_policy(r.tls).into());
    relay.insert(
        "max_connections_per_domain".into(),
        int(r.max_connections_per_domain as u64),
    );
    relay.insert(
        "retry_secs".into(),
        Value::Array(r.retry.iter().map(|d| int(d.as_secs())).collect()),
    );
    relay.insert("max_age_secs".into(), int(r.max_age.as_secs()));
    relay.insert(
        "connect_timeout_secs".into(),
        int(r.connect_timeout.as_secs()),
    );
    relay.insert("idle_secs".into(), int(r.idle.as_secs()));
    doc.insert("relay".into(), relay.into());

    let c = &config.checks;
    let mut checks = Table::new();
    for (key, mode) in [
        ("spf", c.spf),
        ("dkim", c.dkim),
        ("dmarc", c.dmarc),
        ("arc", c.arc),
    ] {
        checks.insert(key.into(), check_mode(mode).into());
    }
    checks.insert(
        "dnsbl_threshold".into(),
        Value::Integer(c.dnsbl.threshold.into()),
    );
    let zones: Vec<Value> = c
        .dnsbl
        .zones
        .iter()
        .map(|z| {
            let mut t = Table::new();
            t.insert("zone".into(), z.zone.clone().into());
            t.insert("weight".into(), Value::Integer(z.weight.into()));
            Value::Table(t)
        })
        .collect();
    if !zones.is_empty() {
        checks.insert("dnsbl".into(), Value::Array(zones));
    }
    doc.insert("checks".into(), checks.into());

    // The keys are held loaded; their paths come from the file, resolved as loading does.
    if let Some(Value::Array(entries)) = file.get("dkim").and_then(|d| d.get("sign")) {
        let entries = entries
            .iter()
            .map(|entry| {
                let mut entry = entry.clone();
                if let Some(Value::String(key)) = entry.get_mut("key") {
                    if let Ok(absolute) = std::path::absolute(&*key) {
                        *key = absolute.display().to_string();
                    }
                }
                entry
            })
            .collect();
        let mut dkim = Table::new();
        dkim.insert("sign".into(), Value::Array(entries));
        doc.insert("dkim".into(), dkim.into());
    }

    let mut log = Table::new();
    let format = match config.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    log.insert("format".into(), format.into());
    doc.insert("log".into(), log.into());

    let mut proxy = Table::new();
    proxy.insert("trusted".into(), strings(config.proxy.trusted.iter()));
    proxy.insert(
        "header_timeout_secs".into(),
        int(config.proxy.header_timeout.as_secs()),
    );
    doc.insert("proxy".into(), proxy.into());

    let mut dns = Table::new();
    if !r.nameservers.is_empty() {
        dns.insert("nameservers".into(), strings(r.nameservers.iter()));
    }
    doc.insert("dns".into(), dns.into());
    doc
}

/// A path from the file (`section.key`), resolved against the current directory as loading
/// resolves it.
fn file_path(file: &Table, section: &str, key: &str) -> Option<Value> {
    let text = file.get(section)?.get(key)?.as_str()?;
    std::path::absolute(text).ok().map(|p| path(&p))
}

fn path(p: &Path) -> Value {
    p.display().to_string().into()
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|s| Value::String(s.to_string()))
            .collect(),
    )
}

/// TOML integers are i64; every value here was validated far below its limit.
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn role(role: Role) -> &'static str {
    match role {
        Role::Delivery => "delivery",
        Role::Submission => "submission",
    }
}

fn tls_mode(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::None => "none",
        TlsMode::StartTls => "starttls",
        TlsMode::Implicit => "implicit",
    }
}

fn check_mode(mode: CheckMode) -> &'static str {
    match mode {
        CheckMode::Off => "off",
        CheckMode::Tag => "tag",
        CheckMode::Enforce => "enforce",
    }
}

fn tls_policy(policy: TlsPolicy) -> &'static str {
    match policy {
        TlsPolicy::None => "none",
        TlsPolicy::Opportunistic => "opportunistic",
        TlsPolicy::Required => "required",
    }
}

//! Checks between keys, on the typed [`Config`]: no address or path is used twice, and a
//! submission listener does not carry passwords in the clear unless told to.

use std::net::SocketAddr;
use std::path::Path;

use super::{Config, ConfigError, TlsMode};
use crate::protocol::Role;
use crate::tls::CertSource;

/// Pushes every conflict in `config` to `errors`.
pub(super) fn check(config: &Config, errors: &mut Vec<ConfigError>) {
    metrics_address(config, errors);
    control_socket(config, errors);
    submission_without_tls(config, errors);
}

/// Whether binding `a` and then `b` would collide: the same port (not 0, which the kernel
/// picks) on the same address, or on a wildcard address that covers the other (`[::]`
/// covers IPv4 too unless the socket is IPv6-only, which ours are not).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |w: SocketAddr, other: SocketAddr| {
        w.ip().is_unspecified() && (w.is_ipv6() || other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

/// The metrics endpoint has its own socket (without `SO_REUSEPORT`): on a listener's address
/// it cannot be bound, and the server would not start.
fn metrics_address(config: &Config, errors: &mut Vec<ConfigError>) {
    let Some(metrics) = config.metrics_addr else {
        return;
    };
    for (i, l) in config.listeners.iter().enumerate() {
        if overlaps(metrics, l.addr) {
            errors.push(ConfigError::new(
                "metrics.addr",
                format!(
                    "{metrics} is also the address of listener[{i}] ({})",
                    l.addr
                ),
            ));
        }
    }
}

/// The control socket replaces a stale socket at its path at start: it must not be a path
/// the configuration uses for something else.
fn control_socket(config: &Config, errors: &mut Vec<ConfigError>) {
    let socket = config.control.socket.as_path();
    let mut others: Vec<(String, &Path)> = vec![
        ("spool.dir".into(), &config.spool_dir),
        ("delivery.maildir".into(), &config.maildir),
    ];
    if let Some(users) = &config.auth.users {
        others.push(("auth.users".into(), users));
    }
    if let Some(aliases) = &config.auth.aliases {
        others.push(("auth.aliases".into(), aliases));
    }
    match &config.tls.default_cert {
        CertSource::Files(e) => {
            others.push(("tls.cert".into(), &e.cert));
            others.push(("tls.key".into(), &e.key));
        }
        CertSource::SelfSigned { dir, .. } => others.push(("tls.self_signed_dir".into(), dir)),
    }
    for e in &config.tls.certificates {
        others.push((format!("{}.cert", e.config_key), &e.cert));
        others.push((format!("{}.key", e.config_key), &e.key));
    }
    for (key, path) in others {
        if socket == path {
            errors.push(ConfigError::new(
                "control.socket",
                format!("{} is also {key}", socket.display()),
            ));
        }
    }
}

/// Submission without TLS sends passwords in the clear, or (without AUTH) cannot be used by
/// anyone outside `submission_networks`: either way a mistake, unless said on purpose.
fn submission_without_tls(config: &Config, errors: &mut Vec<ConfigError>) {
    if config.auth.allow_plaintext {
        return;
    }
    for (i, l) in config.listeners.iter().enumerate() {
        if l.role == Role::Submission && l.tls == TlsMode::None {
            errors.push(ConfigError::new(
                format!("listener[{i}].tls"),
                "a submission listener needs tls = \"starttls\" or \"implicit\" (RFC 8314), \
                 or auth.allow_plaintext = true",
            ));
        }
    }
}

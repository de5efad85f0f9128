//! Where mail goes: the routes `[relay] local` and `[relay] remote` name, parsed from their
//! URL-like form.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::protocol::address::{parse_domain, Domain};

/// A host and port to connect to: a domain name (resolved with the relay's resolver at each
/// connection) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The host as configured: a lower-cased domain name or an IP address.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

/// The host part of a [`NextHop`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, lower-cased; its A and AAAA records are tried in turn.
    Name(String),
    /// An address, used as it is.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where the relay takes a recipient: the value of `relay.local` (any route but [`Route::Mx`])
/// or `relay.remote` ([`Route::Mx`] or [`Route::Smtp`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// `"maildir"`: a Maildir under `delivery.maildir`, written by the delivery stage itself
    /// (never handed to the relay).
    Maildir,
    /// `"lmtp://HOST:PORT"`: LMTP ([RFC 2033]) over TCP to a mail store.
    ///
    /// [RFC 2033]: https://www.rfc-editor.org/rfc/rfc2033
    Lmtp(NextHop),
    /// `"lmtp+unix:///PATH"`: LMTP over a Unix socket (Dovecot's `lmtp` listener).
    LmtpUnix(PathBuf),
    /// `"smtp://HOST:PORT"`: SMTP to a next hop (an internal MTA, or a smarthost for
    /// `relay.remote`), with STARTTLS by `relay.tls`.
    Smtp(NextHop),
    /// `"mx"`: the recipient domain's MX hosts from DNS ([RFC 5321 §5]).
    ///
    /// [RFC 5321 §5]: https://www.rfc-editor.org/rfc/rfc5321#section-5
    Mx,
}

impl fmt::Display for Route {
    /// The configuration form, which [`Route::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Maildir => f.write_str("maildir"),
            Route::Lmtp(hop) => write!(f, "lmtp://{hop}"),
            Route::LmtpUnix(path) => write!(f, "lmtp+unix://{}", path.display()),
            Route::Smtp(hop) => write!(f, "smtp://{hop}"),
            Route::Mx => f.write_str("mx"),
        }
    }
}

impl Route {
    /// Parses a route as written in the configuration. The error says what was expected, for
    /// the caller to report under its key.
    pub fn parse(text: &str) -> Result<Route, String> {
        const FORMS: &str = "\"maildir\", \"mx\", \"lmtp://HOST:PORT\", \
                             \"lmtp+unix:///PATH\" or \"smtp://HOST:PORT\"";
        match text {
            "maildir" => return Ok(Route::Maildir),
            "mx" => return Ok(Route::Mx),
            _ => {}
        }
        if let Some(path) = text.strip_prefix("lmtp+unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!(
                    "{text:?}: the socket path must be absolute (lmtp+unix:///run/dovecot/lmtp)"
                ));
            }
            return Ok(Route::LmtpUnix(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("lmtp://") {
            return next_hop(rest)
                .map(Route::Lmtp)
                .map_err(|e| format!("{text:?}: {e}"));
        }
        if let Some(rest) = text.strip_prefix("smtp://") {
            return next_hop(rest)
                .map(Route::Smtp)
                .map_err(|e| format!("{text:?}: {e}"));
        }
        Err(format!("{text:?} is not a route; expected {FORMS}"))
    }

    /// The `via` label of this route in logs and metrics.
    pub fn via(&self) -> Via {
        match self {
            Route::Maildir => Via::Maildir,
            Route::Lmtp(_) | Route::LmtpUnix(_) => Via::Lmtp,
            Route::Smtp(_) => Via::Smtp,
            Route::Mx => Via::Mx,
        }
    }
}

/// How a delivery went out, the `via` label of `smtp_edge_delivery_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Written to a local Maildir.
    Maildir,
    /// LMTP, over TCP or a Unix socket.
    Lmtp,
    /// SMTP to a configured next hop or smarthost.
    Smtp,
    /// SMTP to the recipient domain's MX.
    Mx,
}

impl Via {
    /// Every value, in the order metrics list them.
    pub const ALL: [Via; 4] = [Via::Maildir, Via::Lmtp, Via::Smtp, Via::Mx];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Maildir => "maildir",
            Via::Lmtp => "lmtp",
            Via::Smtp => "smtp",
            Via::Mx => "mx",
        }
    }
}

/// `HOST:PORT` with HOST a domain name, an IPv4 address or a bracketed IPv6 address.
fn next_hop(text: &str) -> Result<NextHop, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or("expected HOST:PORT (the port is required)")?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("port {port:?} is not 1..=65535")),
    };
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip = v6
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
        return Ok(NextHop {
            host: Host::Ip(IpAddr::V6(ip)),
            port,
        });
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(NextHop {
            host: Host::Ip(IpAddr::V4(ip)),
            port,
        });
    }
    match parse_domain(host) {
        Ok(Domain::Name(name)) => Ok(NextHop {
            host: Host::Name(name.to_ascii_lowercase()),
            port,
        }),
        _ => Err(format!(
            "{host:?} is not a domain name, an IPv4 address or a bracketed IPv6 address"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(host: Host, port: u16) -> NextHop {
        NextHop { host, port }
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        let v4 = Host::Ip("127.0.0.1".parse().unwrap());
        let v6 = Host::Ip("::1".parse().unwrap());
        let name = Host::Name("mail.example.test".into());
        let cases = [
            ("maildir", Route::Maildir),
            ("mx", Route::Mx),
            ("lmtp://127.0.0.1:24", Route::Lmtp(hop(v4.clone(), 24))),
            ("lmtp://[::1]:2424", Route::Lmtp(hop(v6.clone(), 2424))),
            (
                "lmtp+unix:///run/dovecot/lmtp",
                Route::LmtpUnix("/run/dovecot/lmtp".into()),
            ),
            ("smtp://mail.example.test:25", Route::Smtp(hop(name, 25))),
            ("smtp://[::1]:587", Route::Smtp(hop(v6, 587))),
        ];
        for (text, want) in cases {
            let got = Route::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
        }
        // Names are compared without case.
        assert_eq!(
            Route::parse("smtp://Mail.Example.TEST:25").unwrap(),
            Route::parse("smtp://mail.example.test:25").unwrap()
        );
    }

    #[test]
    fn malformed_routes_say_what_is_wrong() {
        for (text, needle) in [
            ("", "not a route"),
            ("MX", "not a route"),
            ("smtps://a.test:465", "not a route"),
            ("smtp://a.test", "port is required"),
            ("smtp://a.test:0", "not 1..=65535"),
            ("smtp://a.test:65536", "not 1..=65535"),
            ("lmtp://::1:24", "not a domain name"),
            ("lmtp://[zz]:24", "not an IPv6 address"),
            ("smtp://bad_host!:25", "not a domain name"),
            ("lmtp+unix://relative/sock", "must be absolute"),
            ("lmtp+unix://", "must be absolute"),
        ] {
            let err = Route::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn via_labels() {
        let labels: Vec<_> = Via::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(labels, ["maildir", "lmtp", "smtp", "mx"]);
        assert_eq!(Route::parse("lmtp+unix:///s").unwrap().via(), Via::Lmtp);
        assert_eq!(Route::Mx.via(), Via::Mx);
    }
}

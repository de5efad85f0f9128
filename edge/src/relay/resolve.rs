//! Finding the hosts of a destination: MX, then A and AAAA, by [RFC 5321 §5.1], with
//! hickory-resolver on the relay's runtime.
//!
//! [RFC 5321 §5.1]: https://www.rfc-editor.org/rfc/rfc5321#section-5.1

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};

use super::route::{Host, NextHop};
use super::Verdict;

/// One place to connect to, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// The host name (an MX exchange, the domain itself for an implicit MX, a next hop as
    /// configured), for logs and TLS SNI.
    pub host: String,
    /// The address and port.
    pub addr: SocketAddr,
}

/// Why a destination has no host to try: the verdict for every recipient, its RFC 3463
/// status, and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unreachable {
    pub verdict: Verdict,
    pub status: &'static str,
    pub detail: String,
}

impl Unreachable {
    fn deferred(status: &'static str, detail: String) -> Self {
        Unreachable {
            verdict: Verdict::Deferred,
            status,
            detail,
        }
    }

    fn failed(status: &'static str, detail: String) -> Self {
        Unreachable {
            verdict: Verdict::Failed,
            status,
            detail,
        }
    }
}

/// What a failed lookup means for delivery.
enum Negative {
    /// The name exists, without records of the type asked (NOERROR, no answer).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// Anything else (SERVFAIL, REFUSED, a timeout): try again later.
    Temporary(String),
}

fn classify(e: &ResolveError) -> Negative {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NoError => Negative::NoData,
            ResponseCode::NXDomain => Negative::NoSuchName,
            code => Negative::Temporary(format!("DNS server answered {code}")),
        },
        _ => Negative::Temporary(e.to_string()),
    }
}

/// The relay's DNS client: the configured nameservers, or the system's.
pub(super) struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver asking `nameservers` (UDP, then TCP for truncated answers), or the system
    /// resolver (`/etc/resolv.conf`) when the list is empty. Must be called on the relay's
    /// runtime.
    pub(super) fn new(nameservers: &[SocketAddr]) -> Resolver {
        let provider = TokioConnectionProvider::default();
        let builder = if nameservers.is_empty() {
            match TokioResolver::builder(provider.clone()) {
                Ok(builder) => builder,
                Err(e) => {
                    // Without /etc/resolv.conf there is nobody to ask: MX mail defers (and
                    // says why) until the file exists and the server restarts, while next
                    // hops given as addresses still work.
                    tracing::warn!(error = %e, "relay: no system resolver; set dns.nameservers");
                    TokioResolver::builder_with_config(ResolverConfig::new(), provider)
                }
            }
        } else {
            let mut config = ResolverConfig::new();
            for &addr in nameservers {
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let mut opts = ResolverOpts::default();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Names we look up are absolute: a search list must never turn a missing domain into
        // one of ours.
        opts.ndots = 0;
        Resolver {
            inner: builder.with_options(opts).build(),
        }
    }

    /// The hosts to try for mail to `domain`, with `port`: its MX hosts by preference
    /// (random order among equals, RFC 5321 §5.1), each with its IPv6 then IPv4 addresses;
    /// the domain's own addresses when it has no MX (the implicit MX). A null MX
    /// ([RFC 7505]) or a domain that does not exist fails at once; a lookup that fails for
    /// other reasons defers.
    ///
    /// [RFC 7505]: https://www.rfc-editor.org/rfc/rfc7505
    pub(super) async fn mx(&self, domain: &str, port: u16) -> Result<Vec<Target>, Unreachable> {
        let name = absolute(domain)?;
        let mut hosts: Vec<(u16, Name)> = match self.inner.mx_lookup(name.clone()).await {
            Ok(lookup) => lookup
                .iter()
                .map(|mx| (mx.preference(), mx.exchange().clone()))
                .collect(),
            Err(e) => match classify(&e) {
                Negative::NoData => Vec::new(),
                Negative::NoSuchName => {
                    return Err(Unreachable::failed(
                        "5.1.2",
                        format!("Host or domain name not found: {domain} does not exist"),
                    ))
                }
                Negative::Temporary(why) => {
                    return Err(Unreachable::deferred(
                        "4.4.3",
                        format!("MX lookup for {domain} failed: {why}"),
                    ))
                }
            },
        };
        // RFC 7505 §3: a single MX whose exchange is the root name: no mail is accepted.
        if hosts.len() == 1 && hosts.iter().all(|(_, host)| host.is_root()) {
            return Err(Unreachable::failed(
                "5.1.10",
                format!("{domain} accepts no mail (null MX, RFC 7505)"),
            ));
        }
        hosts.retain(|(_, host)| !host.is_root());
        if hosts.is_empty() {
            // RFC 5321 §5.1: no MX, so the domain itself is the host, at preference 0.
            return match self.addresses(&name, port).await {
                Ok(targets) if !targets.is_empty() => Ok(targets),
                Ok(_) | Err(Negative::NoData) | Err(Negative::NoSuchName) => {
                    Err(Unreachable::failed(
                        "5.1.2",
                        format!("{domain} has no MX and no address records"),
                    ))
                }
                Err(Negative::Temporary(why)) => Err(Unreachable::deferred(
                    "4.4.3",
                    format!("address lookup for {domain} failed: {why}"),
                )),
            };
        }
        shuffle_equal_preferences(&mut hosts, random_seed());
        let mut targets = Vec::new();
        let mut last = None;
        for (_, host) in &hosts {
            match self.addresses(host, port).await {
                Ok(found) => targets.extend(found),
                Err(Negative::Temporary(why)) => last = Some(why),
                Err(_) => {}
            }
        }
        if targets.is_empty() {
            let why = last.unwrap_or_else(|| "no addresses".to_owned());
            return Err(Unreachable::deferred(
                "4.4.3",
                format!("no MX host of {domain} could be resolved: {why}"),
            ));
        }
        Ok(targets)
    }

    /// The addresses of a next hop: an IP as it is, a name by A and AAAA.
    pub(super) async fn next_hop(&self, hop: &NextHop) -> Result<Vec<Target>, Unreachable> {
        let name = match &hop.host {
            Host::Ip(ip) => {
                return Ok(vec![Target {
                    host: ip.to_string(),
                    addr: SocketAddr::new(*ip, hop.port),
                }])
            }
            Host::Name(name) => name,
        };
        let absolute = absolute(name)?;
        match self.addresses(&absolute, hop.port).await {
            Ok(targets) if !targets.is_empty() => Ok(targets),
            Ok(_) | Err(Negative::NoData) | Err(Negative::NoSuchName) => Err(
                Unreachable::deferred("4.4.3", format!("next hop {name} has no address records")),
            ),
            Err(Negative::Temporary(why)) => Err(Unreachable::deferred(
                "4.4.3",
                format!("address lookup for {name} failed: {why}"),
            )),
        }
    }

    /// IPv6 addresses first, then IPv4, each with `port`.
    async fn addresses(&self, name: &Name, port: u16) -> Result<Vec<Target>, Negative> {
        let lookup = self
            .inner
            .lookup_ip(name.clone())
            .await
            .map_err(|e| classify(&e))?;
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort_by_key(|ip| ip.is_ipv4());
        ips.dedup();
        let host = name.to_utf8().trim_end_matches('.').to_owned();
        Ok(ips
            .into_iter()
            .map(|ip| Target {
                host: host.clone(),
                addr: SocketAddr::new(ip, port),
            })
            .collect())
    }
}

/// `domain` as an absolute DNS name (IDNA for UTF-8 names).
fn absolute(domain: &str) -> Result<Name, Unreachable> {
    let text = format!("{}.", domain.trim_end_matches('.'));
    Name::from_utf8(&text).map_err(|e| {
        Unreachable::failed(
            "5.1.2",
            format!("{domain:?} is not a valid domain name: {e}"),
        )
    })
}

/// Sorts by preference, and shuffles each run of equal preferences ([RFC 5321 §5.1]: the
/// sender "MUST randomize them to spread the load"). `seed` drives a small xorshift: load
/// spreading needs no cryptographic randomness.
///
/// [RFC 5321 §5.1]: https://www.rfc-editor.org/rfc/rfc5321#section-5.1
fn shuffle_equal_preferences<T>(hosts: &mut [(u16, T)], seed: u64) {
    hosts.sort_by_key(|(pref, _)| *pref);
    // splitmix64's finalizer spreads any seed (even 0, 1, 2, ...) over all 64 bits;
    // xorshift then must not start at zero.
    let mut state = {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) | 1
    };
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].0;
        let end = hosts[start..]
            .iter()
            .position(|(p, _)| *p != pref)
            .map_or(hosts.len(), |n| start + n);
        // Fisher-Yates over hosts[start..end].
        for i in (start + 1..end).rev() {
            let j = start + (next() % (i - start + 1) as u64) as usize;
            hosts.swap(i, j);
        }
        start = end;
    }
}

/// A seed that differs between calls: the std hasher's per-process random keys, over a
/// counter.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_order_holds_and_equals_are_shuffled() {
        let base = vec![(20, 'c'), (10, 'a'), (30, 'e'), (10, 'b'), (20, 'd')];
        let mut orders = std::collections::HashSet::new();
        for seed in 0..64 {
            let mut hosts = base.clone();
            shuffle_equal_preferences(&mut hosts, seed);
            let prefs: Vec<u16> = hosts.iter().map(|(p, _)| *p).collect();
            assert_eq!(prefs, [10, 10, 20, 20, 30]);
            let mut names: Vec<char> = hosts.iter().map(|(_, h)| *h).collect();
            orders.insert(names.clone());
            names.sort_unstable();
            assert_eq!(names, ['a', 'b', 'c', 'd', 'e']);
        }
        // Both orders of each pair of equals turn up: 2 x 2 arrangements.
        assert_eq!(orders.len(), 4, "{orders:?}");
    }

    #[test]
    fn names_are_absolute() {
        assert_eq!(
            absolute("example.test").unwrap().to_ascii(),
            "example.test."
        );
        assert_eq!(
            absolute("example.test.").unwrap().to_ascii(),
            "example.test."
        );
        assert!(absolute("bücher.example")
            .unwrap()
            .to_ascii()
            .starts_with("xn--"));
    }
}

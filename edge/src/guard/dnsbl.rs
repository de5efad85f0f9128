//! DNS block and allow lists ([RFC 5782]), scored as Postfix's postscreen scores them: each
//! `[[checks.dnsbl]]` zone that lists the client adds its weight (negative for allow lists),
//! and a sum at or over `checks.dnsbl_threshold` gets the client refused at `MAIL` and banned.
//!
//! The lookups start when a delivery session is admitted, one query per zone, all at once, on
//! the worker that owns the session (hickory's tokio resolver runs on the worker's runtime), and
//! the engine waits for the verdict only when the client says `MAIL`: a clean client never
//! waits, and a listed one has shown its HELO and sender in the log before it is refused.
//! Answers are cached by their TTL (positive and negative) in the worker's resolver. A list
//! that fails to answer in time counts as not listing: a DNS outage must not stop mail.
//!
//! [RFC 5782]: https://www.rfc-editor.org/rfc/rfc5782

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;

use crate::protocol::SourceVerdict;

/// Default `checks.dnsbl_threshold`: one list of weight 3, or lighter ones together, decide.
pub const DEFAULT_THRESHOLD: i32 = 3;

/// Most `[[checks.dnsbl]]` entries: each costs one query per new client.
pub const MAX_ZONES: usize = 32;

/// Largest weight, either sign.
pub const MAX_WEIGHT: i32 = 100;

/// How long the lookups of one client may take together.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

/// Answers kept per worker resolver (hickory's cache, by TTL).
const CACHE_ENTRIES: usize = 16 * 1024;

/// One `[[checks.dnsbl]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblZone {
    /// The list's zone (`zen.example`), lower-cased, without the trailing dot.
    pub zone: String,
    /// Added to the score when the zone lists the client; negative for allow lists.
    pub weight: i32,
}

/// `[[checks.dnsbl]]` and `checks.dnsbl_threshold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblConfig {
    /// The lists; none (the default) asks nothing.
    pub zones: Vec<DnsblZone>,
    /// Score at which a client is refused and banned.
    pub threshold: i32,
}

impl Default for DnsblConfig {
    fn default() -> Self {
        DnsblConfig {
            zones: Vec::new(),
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl DnsblConfig {
    /// Whether any list is configured.
    pub fn is_enabled(&self) -> bool {
        !self.zones.is_empty()
    }

    /// The verdict for a client listed by the zones whose indexes are in `listed`: the sum of
    /// their weights against the threshold, naming the heaviest listing zone.
    pub fn score(&self, listed: &[usize]) -> SourceVerdict {
        let zones: Vec<&DnsblZone> = listed.iter().filter_map(|&i| self.zones.get(i)).collect();
        let score: i32 = zones.iter().map(|z| z.weight).sum();
        let heaviest = zones
            .iter()
            .filter(|z| z.weight > 0)
            .max_by_key(|z| z.weight);
        match heaviest {
            Some(z) if score >= self.threshold => SourceVerdict::Listed {
                zone: z.zone.clone(),
            },
            _ => SourceVerdict::Clear,
        }
    }
}

/// Clients listed, per zone, since start, shared by every worker:
/// `smtp_edge_dnsbl_hits_total{zone}`. Keyed by name, so that zones a reload adds or removes
/// keep their counts. The lock is taken once per listing and once per scrape.
#[derive(Debug, Default)]
pub struct DnsblHits {
    zones: Mutex<BTreeMap<String, u64>>,
}

impl DnsblHits {
    /// Each zone that has listed a client, and how many.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        zones.iter().map(|(z, n)| (z.clone(), *n)).collect()
    }

    fn hit(&self, zone: &str) {
        let mut zones = self.zones.lock().unwrap_or_else(PoisonError::into_inner);
        *zones.entry(zone.to_owned()).or_insert(0) += 1;
    }
}

/// One worker's DNSBL lookups: its own resolver (and so its own cache) on its own runtime.
#[derive(Clone)]
pub struct DnsblChecker {
    hits: Arc<DnsblHits>,
    resolver: TokioResolver,
}

impl std::fmt::Debug for DnsblChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsblChecker").finish_non_exhaustive()
    }
}

impl DnsblChecker {
    /// A checker asking `nameservers` (`dns.nameservers`, shared with the relay), or the
    /// system's resolver when there are none. Build it on the worker's runtime; it opens no
    /// socket until the first lookup.
    pub fn new(hits: Arc<DnsblHits>, nameservers: &[SocketAddr]) -> DnsblChecker {
        let provider = TokioConnectionProvider::default();
        let builder = if nameservers.is_empty() {
            TokioResolver::builder(provider.clone()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "dnsbl: no system resolver; set dns.nameservers");
                TokioResolver::builder_with_config(ResolverConfig::new(), provider)
            })
        } else {
            let mut resolver = ResolverConfig::new();
            for &addr in nameservers {
                resolver.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                resolver.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(resolver, provider)
        };
        let mut opts = ResolverOpts::default();
        opts.cache_size = CACHE_ENTRIES;
        // The whole check is bounded by LOOKUP_DEADLINE; two tries of two seconds fit in it.
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        // List zones are absolute names; no search domains.
        opts.ndots = 0;
        let resolver = builder.with_options(opts).build();
        DnsblChecker { hits, resolver }
    }

    /// Asks every zone of `config` about `ip` at once and scores the answers; zones that have
    /// not answered within [`LOOKUP_DEADLINE`] count as not listing.
    pub async fn check(&self, ip: IpAddr, config: &DnsblConfig) -> SourceVerdict {
        let lookups = config.zones.iter().enumerate().map(|(i, zone)| {
            let name = query_name(ip, &zone.zone);
            let resolver = self.resolver.clone();
            async move {
                match resolver.ipv4_lookup(name.as_str()).await {
                    Ok(answer) => answer.iter().any(|a| is_listing(a.0)).then_some(i),
                    Err(e) => {
                        let nothing = matches!(
                            e.proto().map(|p| p.kind()),
                            Some(ProtoErrorKind::NoRecordsFound { .. })
                        );
                        if !nothing {
                            tracing::debug!(%ip, zone = %zone.zone, error = %e, "dnsbl: lookup failed");
                        }
                        None
                    }
                }
            }
        });
        let listed = gather(lookups, LOOKUP_DEADLINE).await;
        for zone in listed.iter().filter_map(|&i| config.zones.get(i)) {
            self.hits.hit(&zone.zone);
        }
        let verdict = config.score(&listed);
        if let SourceVerdict::Listed { zone } = &verdict {
            tracing::info!(%ip, zone = %zone, "dnsbl: listed at or over the threshold");
        }
        verdict
    }
}

/// Runs `lookups` (each the index of the zone that lists the client, or `None`) at once, and
/// collects those that list it within `deadline`. Each lookup has its own deadline: a list that
/// does not answer in time is left out on its own, and the answers that did come in still
/// count, as postscreen scores the replies that arrived before its DNSBL timeout.
async fn gather<F>(lookups: impl IntoIterator<Item = F>, deadline: Duration) -> Vec<usize>
where
    F: std::future::Future<Output = Option<usize>>,
{
    let bounded = lookups.into_iter().map(|lookup| async move {
        let answer = tokio::time::timeout(deadline, lookup).await;
        if answer.is_err() {
            tracing::debug!("dnsbl: a list did not answer in time; it counts as not listing");
        }
        answer.ok().flatten()
    });
    futures_util::future::join_all(bounded)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The name a list is asked about `ip` ([RFC 5782 §2.1, §2.4]): the IPv4 octets in reverse
/// order, or the 32 nibbles of an IPv6 address in reverse order, then the zone, absolute.
///
/// [RFC 5782 §2.1, §2.4]: https://www.rfc-editor.org/rfc/rfc5782#section-2.1
pub fn query_name(ip: IpAddr, zone: &str) -> String {
    let mut name = String::with_capacity(80 + zone.len());
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                name.push_str(&format!("{octet}."));
            }
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
        }
    }
    name.push_str(zone);
    name.push('.');
    name
}

/// Whether an A record in a list's answer means "listed": an address in 127.0.0.0/8
/// ([RFC 5782 §2.1]), except 127.255.255.0/24, which large lists use for errors (a refused or
/// over-quota query) rather than listings.
///
/// [RFC 5782 §2.1]: https://www.rfc-editor.org/rfc/rfc5782#section-2.1
fn is_listing(a: std::net::Ipv4Addr) -> bool {
    let [first, second, third, _] = a.octets();
    first == 127 && !(second == 255 && third == 255)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(zones: &[(&str, i32)]) -> DnsblConfig {
        DnsblConfig {
            zones: zones
                .iter()
                .map(|&(zone, weight)| DnsblZone {
                    zone: zone.to_owned(),
                    weight,
                })
                .collect(),
            threshold: DEFAULT_THRESHOLD,
        }
    }

    /// A list that never answers must not cost the answers of the others: a listing that came
    /// in counts, whatever a slower list does.
    #[test]
    fn a_silent_list_leaves_the_answers_of_the_others_standing() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let silent = || -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<usize>>>> {
            Box::pin(std::future::pending())
        };
        let answered = |zone: Option<usize>| -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Option<usize>>>,
        > { Box::pin(std::future::ready(zone)) };
        let deadline = Duration::from_millis(50);
        let listed = runtime.block_on(gather(
            vec![
                answered(Some(0)),
                silent(),
                answered(None),
                answered(Some(3)),
            ],
            deadline,
        ));
        assert_eq!(listed, [0, 3]);
        let listed = runtime.block_on(gather(vec![silent(), silent()], deadline));
        assert_eq!(listed, Vec::<usize>::new(), "no answer is no listing");
    }

    #[test]
    fn query_names_reverse_the_address() {
        let v4: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(query_name(v4, "bl.test"), "99.2.0.192.bl.test.");
        // RFC 5782 §2.4's example.
        let v6: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
        assert_eq!(
            query_name(v6, "bl.test"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test."
        );
        let mapped: IpAddr = "::ffff:192.0.2.99".parse().unwrap();
        assert_eq!(query_name(mapped, "bl.test"), "99.2.0.192.bl.test.");
    }

    #[test]
    fn only_loopback_answers_outside_the_error_range_list() {
        assert!(is_listing("127.0.0.2".parse().unwrap()));
        assert!(is_listing("127.0.0.10".parse().unwrap()));
        assert!(!is_listing("127.255.255.254".parse().unwrap()));
        assert!(!is_listing("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn weights_add_up_and_allow_lists_subtract() {
        let c = config(&[("strong.test", 3), ("weak.test", 1), ("allow.test", -5)]);
        let listed = |zone: &str| SourceVerdict::Listed {
            zone: zone.to_owned(),
        };
        assert_eq!(c.score(&[]), SourceVerdict::Clear);
        assert_eq!(c.score(&[1]), SourceVerdict::Clear, "1 < 3");
        assert_eq!(c.score(&[0]), listed("strong.test"), "at the threshold");
        assert_eq!(
            c.score(&[1, 0]),
            listed("strong.test"),
            "the heaviest is named"
        );
        assert_eq!(c.score(&[0, 2]), SourceVerdict::Clear, "allowed");
        let weak = config(&[("a.test", 1), ("b.test", 2)]);
        assert_eq!(
            weak.score(&[0, 1]),
            listed("b.test"),
            "two weak lists together"
        );
    }
}

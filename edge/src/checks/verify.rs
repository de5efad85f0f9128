//! The lookups: one [`Verifier`] per worker thread, asking DNS on that worker's runtime (the
//! io_uring workers run tokio underneath, so hickory's tokio resolver runs there without a
//! thread of its own) and caching what it learns ([`super::cache`]).
//!
//! The RFC's lookup limits are mail-auth's: at most 10 DNS-querying mechanisms and 2 void
//! lookups per SPF evaluation (RFC 7208 §4.6.4), and a 20-second cap on one evaluation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, MessageAuthenticator, SpfOutput};

use super::cache::Caches;
use super::result::{DkimSignature, DmarcPolicy, DmarcVerdict, Results, SpfVerdict, Verdict};
use super::ChecksConfig;
use crate::protocol::Mailbox;

/// How long one DNS query may take before it is sent again (once), then given up.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("checks: cannot build the DNS resolver: {0}")]
pub struct VerifierError(String);

/// The checks of one worker: the resolver, its caches, and what is on.
pub struct Verifier {
    auth: MessageAuthenticator,
    caches: Caches,
    config: ChecksConfig,
    /// Our host name: the `authserv-id` of the header, and the `%{r}` of SPF macros.
    hostname: String,
}

/// The SPF result of a transaction, kept from `MAIL` for the header and DMARC.
#[derive(Debug, Clone)]
pub struct SenderCheck {
    output: SpfOutput,
    identity: String,
}

impl SenderCheck {
    /// The result, in RFC 8601's words.
    pub fn verdict(&self) -> Verdict {
        Verdict::from_spf(self.output.result())
    }
}

impl Verifier {
    /// A verifier asking `nameservers` (UDP, then TCP for truncated answers), or the system
    /// resolver (`/etc/resolv.conf`) when the list is empty; the same servers as the relay's.
    /// Must be called on the worker's runtime.
    pub fn new(
        config: ChecksConfig,
        nameservers: &[SocketAddr],
        hostname: &str,
    ) -> Result<Verifier, VerifierError> {
        let mut opts = ResolverOpts::default();
        // Names we look up are absolute: a search list must never make a missing domain
        // exist.
        opts.ndots = 0;
        // A query that is not answered holds a client's MAIL or its end of data: 3 s, twice,
        // bounds it (then the check is `temperror`, which never refuses mail).
        opts.timeout = LOOKUP_TIMEOUT;
        opts.attempts = 2;
        let auth = if nameservers.is_empty() {
            MessageAuthenticator::new_system_conf()
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            MessageAuthenticator::new(ResolverConfig::from_name_servers(servers), opts)
        }
        .map_err(|e| VerifierError(e.to_string()))?;
        Ok(Verifier {
            auth,
            caches: Caches::default(),
            config,
            hostname: hostname.to_owned(),
        })
    }

    /// What is on.
    pub fn config(&self) -> &ChecksConfig {
        &self.config
    }

    /// SPF for a transaction ([RFC 7208 §2.4]): the MAIL FROM domain, or for the null sender
    /// the HELO name as `postmaster@helo`.
    ///
    /// [RFC 7208 §2.4]: https://www.rfc-editor.org/rfc/rfc7208#section-2.4
    pub async fn sender(&self, ip: IpAddr, helo: &str, mail_from: Option<&Mailbox>) -> SenderCheck {
        let (params, identity) = match mail_from {
            Some(m) => {
                let sender = m.to_string();
                let params = SpfParameters::verify_mail_from(ip, helo, &self.hostname, &sender);
                let output = self.auth.verify_spf(self.caches.parameters(params)).await;
                return SenderCheck {
                    output,
                    identity: sender,
                };
            }
            None => (
                SpfParameters::verify_ehlo(ip, helo, &self.hostname),
                format!("postmaster@{helo}"),
            ),
        };
        let output = self.auth.verify_spf(self.caches.parameters(params)).await;
        SenderCheck { output, identity }
    }

    /// Every check that is on, over the whole message as the client sent it (`message`, our
    /// `Received:` not yet on it). `sender` is the SPF result from `MAIL`, if it was looked up
    /// there; DMARC needs SPF, so it is looked up here otherwise.
    pub async fn message(
        &self,
        message: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: Option<&Mailbox>,
        sender: Option<SenderCheck>,
    ) -> Results {
        let cfg = &self.config;
        let sender = match sender {
            Some(s) => Some(s),
            None if cfg.spf.is_on() || cfg.dmarc.is_on() => {
                Some(self.sender(ip, helo, mail_from).await)
            }
            None => None,
        };
        let mut results = Results {
            spf: sender
                .as_ref()
                .filter(|_| cfg.spf.is_on())
                .map(|s| SpfVerdict {
                    verdict: s.verdict(),
                    identity: s.identity.clone(),
                }),
            ..Results::default()
        };
        let parsed = AuthenticatedMessage::parse(message);
        let Some(parsed) = parsed.as_ref() else {
            // No header section to speak of: nothing is signed, and there is no From:.
            if cfg.dkim.is_on() {
                results.dkim = Some(Vec::new());
            }
            if cfg.dmarc.is_on() {
                results.dmarc = Some(DmarcVerdict {
                    verdict: Verdict::None,
                    domain: String::new(),
                    policy: DmarcPolicy::None,
                });
            }
            if cfg.arc.is_on() {
                results.arc = Some(Verdict::None);
            }
            return results;
        };
        let dkim = if cfg.dkim.is_on() || cfg.dmarc.is_on() {
            self.auth.verify_dkim(self.caches.parameters(parsed)).await
        } else {
            Vec::new()
        };
        if cfg.dkim.is_on() {
            results.dkim = Some(
                dkim.iter()
                    .map(|out| {
                        let sig = out.signature();
                        DkimSignature {
                            verdict: Verdict::from_dkim(out.result()),
                            domain: sig.map(|s| s.d.clone()).unwrap_or_default(),
                            selector: sig.map(|s| s.s.clone()).unwrap_or_default(),
                            b: sig.map(|s| b_prefix(&s.b)).unwrap_or_default(),
                        }
                    })
                    .collect(),
            );
        }
        if cfg.arc.is_on() {
            let arc = self.auth.verify_arc(self.caches.parameters(parsed)).await;
            results.arc = Some(match arc.result() {
                // No ARC set at all.
                mail_auth::DkimResult::None => Verdict::None,
                other => Verdict::from_dkim(other),
            });
        }
        if let (true, Some(sender)) = (cfg.dmarc.is_on(), &sender) {
            // RFC 7489 §3.1.2: the SPF identity is the MAIL FROM domain, or the HELO name.
            let spf_domain = mail_from.map_or_else(|| helo.to_owned(), |m| m.domain.to_string());
            let params = DmarcParameters::new(parsed, &dkim, &spf_domain, &sender.output);
            let out = self.auth.verify_dmarc(self.caches.parameters(params)).await;
            results.dmarc = Some(DmarcVerdict {
                verdict: Verdict::from_dmarc(&out.result()),
                domain: out.domain().to_owned(),
                policy: match out.policy() {
                    Policy::Reject => DmarcPolicy::Reject,
                    Policy::Quarantine => DmarcPolicy::Quarantine,
                    Policy::None | Policy::Unspecified => DmarcPolicy::None,
                },
            });
        }
        results
    }
}

/// The first 8 characters of the base64 of `b=` ([RFC 6008 §4]).
///
/// [RFC 6008 §4]: https://www.rfc-editor.org/rfc/rfc6008#section-4
fn b_prefix(b: &[u8]) -> String {
    use base64::Engine as _;
    let mut text = base64::engine::general_purpose::STANDARD.encode(b);
    text.truncate(8);
    text
}

//! What a server offers, read from its EHLO or LHLO reply ([RFC 5321 §4.1.1.1]): one keyword
//! per line after the first, with parameters after a space.
//!
//! [RFC 5321 §4.1.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.1

use super::reply::ServerReply;

/// The service extensions the client uses; anything else the server lists is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `PIPELINING` ([RFC 2920]).
    ///
    /// [RFC 2920]: https://www.rfc-editor.org/rfc/rfc2920
    pub pipelining: bool,
    /// `SIZE` ([RFC 1870]): `Some(None)` when offered without a fixed limit (no number, or 0),
    /// `Some(Some(n))` with a limit of `n` octets.
    ///
    /// [RFC 1870]: https://www.rfc-editor.org/rfc/rfc1870
    pub size: Option<Option<u64>>,
    /// `8BITMIME` ([RFC 6152]).
    ///
    /// [RFC 6152]: https://www.rfc-editor.org/rfc/rfc6152
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` ([RFC 6531]).
    ///
    /// [RFC 6531]: https://www.rfc-editor.org/rfc/rfc6531
    pub smtputf8: bool,
    /// `STARTTLS` ([RFC 3207]).
    ///
    /// [RFC 3207]: https://www.rfc-editor.org/rfc/rfc3207
    pub starttls: bool,
    /// The SASL mechanisms of `AUTH` ([RFC 4954 §3]), upper-cased; empty when AUTH is not offered.
    ///
    /// [RFC 4954 §3]: https://www.rfc-editor.org/rfc/rfc4954#section-3
    pub auth: Vec<String>,
    /// `CHUNKING` ([RFC 3030]).
    ///
    /// [RFC 3030]: https://www.rfc-editor.org/rfc/rfc3030
    pub chunking: bool,
    /// `ENHANCEDSTATUSCODES` ([RFC 2034]).
    ///
    /// [RFC 2034]: https://www.rfc-editor.org/rfc/rfc2034
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// Reads the keywords of a successful EHLO/LHLO reply; the first line is the server's name.
    pub fn from_reply(reply: &ServerReply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            // `AUTH=PLAIN LOGIN` is the form some servers still send for old clients.
            let (keyword, first_param) = match keyword.split_once('=') {
                Some((k, p)) => (k, Some(p)),
                None => (keyword, None),
            };
            let params = first_param.into_iter().chain(words);
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    let limit = params
                        .into_iter()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok());
                    caps.size = Some(limit.filter(|&n| n > 0));
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => {
                    for mechanism in params {
                        let mechanism = mechanism.to_ascii_uppercase();
                        if !caps.auth.contains(&mechanism) {
                            caps.auth.push(mechanism);
                        }
                    }
                }
                "CHUNKING" => caps.chunking = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                _ => {}
            }
        }
        caps
    }

    /// Whether `AUTH` lists `mechanism` (upper case).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

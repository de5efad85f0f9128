//! `MAIL` and `RCPT` ([RFC 5321 §4.1.1.2, §4.1.1.3]): paths, ESMTP parameters, and the relay
//! decision of the delivery role.
//!
//! [RFC 5321 §4.1.1.2, §4.1.1.3]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1.2

use super::address::{self, AddressError, Domain, Mailbox};
use super::event::Rejection;
use super::policy::EngineConfig;
use super::reply::Reply;
use super::transaction::BodyType;

/// What `MAIL` established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// The reverse-path; `None` is `<>`.
    pub path: Option<Mailbox>,
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// A refusal: the reply, and the reason counted for it, if any.
pub type Refusal = (Reply, Option<Rejection>);

/// The path of a `MAIL FROM:` or `RCPT TO:` argument as the client wrote it, without its angle
/// brackets and parameters (`<a@b> NOTIFY=NEVER` gives `a@b`), for the driver's log lines. It
/// is client text: whoever writes it out must escape it.
pub fn path_text(arg: &str) -> &str {
    match arg.strip_prefix('<') {
        Some(rest) => rest.split('>').next().unwrap_or(rest),
        None => arg.split(' ').next().unwrap_or(arg),
    }
}

/// Parses `MAIL FROM:` arguments. `esmtp` is false after `HELO`, where no parameters exist.
pub fn mail(arg: &str, esmtp: bool, cfg: &EngineConfig) -> Result<MailFrom, Refusal> {
    let (path, params) = parse_path(arg, true, cfg).map_err(|e| (sender_error(e), None))?;
    let mut mail = MailFrom {
        path,
        body: BodyType::SevenBit,
        smtputf8: false,
    };
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        if !esmtp {
            return Err((Reply::unsupported_parameter(), None));
        }
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            // RFC 1870 §6: a declared size over our limit is refused here, before any data.
            let declared = parse_size(value)
                .ok_or_else(|| (Reply::syntax("MAIL FROM:<address> SIZE=octets"), None))?;
            if declared > cfg.max_message_size {
                return Err((Reply::too_large(), Some(Rejection::MessageTooLarge)));
            }
        } else if key.eq_ignore_ascii_case("BODY") {
            mail.body = if value.eq_ignore_ascii_case("7BIT") {
                BodyType::SevenBit
            } else if value.eq_ignore_ascii_case("8BITMIME") {
                BodyType::EightBitMime
            } else {
                return Err((Reply::bad_argument("BODY must be 7BIT or 8BITMIME"), None));
            };
        } else if key.eq_ignore_ascii_case("SMTPUTF8") && value.is_empty() {
            mail.smtputf8 = true;
        } else {
            return Err((Reply::unsupported_parameter(), None));
        }
    }
    if !mail.smtputf8 && mail.path.as_ref().is_some_and(Mailbox::is_utf8) {
        return Err((Reply::needs_smtputf8(), None));
    }
    Ok(mail)
}

/// Parses `RCPT TO:` arguments and applies the relay policy: unless `may_relay` (an
/// authenticated submission), only our own domains.
pub fn rcpt(
    arg: &str,
    mail: &MailFrom,
    cfg: &EngineConfig,
    may_relay: bool,
) -> Result<Mailbox, Refusal> {
    let bare_postmaster = !cfg.strict_envelopes && arg.eq_ignore_ascii_case("postmaster");
    if arg.eq_ignore_ascii_case("<postmaster>") || bare_postmaster {
        // RFC 5321 §4.5.1: <Postmaster> without a domain must be accepted.
        return Ok(Mailbox {
            local: "postmaster".into(),
            domain: Domain::Name(cfg.postmaster_domain.clone()),
            quoted: false,
            source_route: false,
        });
    }
    let (path, params) = parse_path(arg, false, cfg).map_err(|e| (recipient_error(e), None))?;
    let Some(path) = path else {
        return Err((recipient_error(AddressError::Syntax), None));
    };
    if !params.is_empty() {
        return Err((Reply::unsupported_parameter(), None));
    }
    if !mail.smtputf8 && path.is_utf8() {
        return Err((Reply::needs_smtputf8(), None));
    }
    if path.local_unquoted().is_empty() {
        // `""@domain` parses, but names no mailbox anyone could deliver to.
        return Err((Reply::empty_local_part(), Some(Rejection::UnknownRecipient)));
    }
    let local = matches!(&path.domain, Domain::Name(d) if cfg.local_domains.contains(d));
    if !may_relay || local {
        check_local(&path, cfg)?;
    }
    Ok(path)
}

/// Parses the path of `MAIL` or `RCPT` and returns it with the parameters after it.
///
/// RFC 5321 §4.1.1.2 puts the path in angle brackets, but many senders and scripts write
/// `MAIL FROM:a@b` or `RCPT TO: a@b`. Unless `limits.strict_envelopes` is set, such an address
/// runs to the first space and the parameters follow it (`MAIL FROM:a@b SIZE=10`), as Postfix
/// reads it with `strict_rfc821_envelopes = no`. Without brackets there is no null path and no
/// source route; the address itself is checked exactly as inside brackets.
fn parse_path<'a>(
    arg: &'a str,
    allow_null: bool,
    cfg: &EngineConfig,
) -> Result<(Option<Mailbox>, &'a str), AddressError> {
    if cfg.strict_envelopes || arg.starts_with('<') {
        return address::parse_path(arg, allow_null);
    }
    let (addr, params) = arg.split_once(' ').unwrap_or((arg, ""));
    if addr.len() + 2 > address::MAX_PATH {
        return Err(AddressError::TooLong);
    }
    let mailbox = address::parse_mailbox(addr)?;
    Ok((Some(mailbox), params.trim_start_matches(' ')))
}

/// The delivery role's rule: mail only for our own domains, and nothing that a downstream
/// system could read as another hop.
fn check_local(path: &Mailbox, cfg: &EngineConfig) -> Result<(), Refusal> {
    let relay_denied = || Err((Reply::relay_denied(), Some(Rejection::RelayDenied)));
    if path.source_route {
        // RFC 5321 §3.6.1 lets a server ignore source routes; a server that never relays refuses
        // them instead, so that no downstream hop ever acts on one.
        return relay_denied();
    }
    let domain = match &path.domain {
        Domain::Name(name) if cfg.local_domains.contains(name) => name,
        _ => return relay_denied(),
    };
    // The percent hack (`user%other@us`), bang paths (`other!user@us`) and a quoted `@` each
    // name another destination inside a local part, which some delivery agents honour.
    let local = path.local_unquoted();
    if local.contains(['%', '!', '@']) {
        return relay_denied();
    }
    if let Some(known) = &cfg.recipients {
        if !known.exists(&local, domain) {
            return Err((Reply::unknown_user(), Some(Rejection::UnknownRecipient)));
        }
    }
    Ok(())
}

/// `SIZE` values are `1*20DIGIT` (RFC 1870 §3); an overflowing one is refused, not wrapped.
fn parse_size(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn sender_error(e: AddressError) -> Reply {
    match e {
        AddressError::Syntax => Reply::bad_sender("Bad sender address syntax"),
        AddressError::TooLong => Reply::bad_sender("Sender address too long"),
    }
}

fn recipient_error(e: AddressError) -> Reply {
    match e {
        AddressError::Syntax => Reply::bad_recipient("Bad recipient address syntax"),
        AddressError::TooLong => Reply::bad_recipient("Recipient address too long"),
    }
}

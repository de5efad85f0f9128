//! The `Received:` trace header that the spool puts on top of every message ([RFC 5321 §4.4],
//! [RFC 5322 §3.6.7]), and the RFC 5322 date it carries.
//!
//! [RFC 5321 §4.4]: https://www.rfc-editor.org/rfc/rfc5321#section-4.4
//! [RFC 5322 §3.6.7]: https://www.rfc-editor.org/rfc/rfc5322#section-3.6.7

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use super::QueueId;
use crate::protocol::{Envelope, Greeting, Mailbox};

/// Longest HELO argument copied into the header; longer ones are cut (a domain is at most 255
/// octets, [RFC 5321 §4.5.3.1.2]), so the header line stays far below 998 octets.
///
/// [RFC 5321 §4.5.3.1.2]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.2
pub const MAX_TRACE_HELO: usize = 255;

/// What the trace header records about the session that delivered a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceInfo {
    /// The client's address; `from (... [ip])` names it.
    pub peer: SocketAddr,
    /// The `HELO`/`EHLO` argument as the client sent it.
    pub helo: String,
    /// Which greeting the client used.
    pub greeting: Greeting,
    /// `SMTPUTF8` was given on `MAIL`.
    pub smtputf8: bool,
    /// Our host name, for `by`.
    pub hostname: String,
    /// When the message was received (the end of `DATA`, or its start: the caller decides).
    pub received_at: SystemTime,
    /// The TLS session the message came over, if any.
    pub tls: Option<TlsTrace>,
    /// The client authenticated (SMTP AUTH): the `A` of `ESMTPSA` ([RFC 3848]). The login
    /// itself is never written here.
    ///
    /// [RFC 3848]: https://www.rfc-editor.org/rfc/rfc3848
    pub authenticated: bool,
    /// The login to name in the header, only where the operator allows it (`auth.trace_login`);
    /// by default the header says that the client authenticated, not as whom.
    pub login: Option<String>,
}

/// What the trace header says of the TLS session ([RFC 3848]: the `S` in `ESMTPS`).
///
/// [RFC 3848]: https://www.rfc-editor.org/rfc/rfc3848
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTrace {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}

impl TraceInfo {
    /// The trace fields of a transaction; `peer`, `hostname` and `received_at` come from the
    /// driver, the rest from the envelope.
    pub fn new(
        envelope: &Envelope,
        peer: SocketAddr,
        hostname: &str,
        received_at: SystemTime,
    ) -> Self {
        TraceInfo {
            peer,
            helo: envelope.helo.clone(),
            greeting: envelope.greeting,
            smtputf8: envelope.smtputf8,
            hostname: hostname.to_owned(),
            received_at,
            tls: None,
            authenticated: envelope.login.is_some(),
            login: None,
        }
    }

    /// The `with` protocol of the session.
    pub fn protocol(&self) -> WithProtocol {
        use WithProtocol::*;
        let (tls, auth) = (self.tls.is_some(), self.authenticated);
        match (self.greeting, self.smtputf8) {
            // SMTPUTF8 needs EHLO (RFC 6531 §3.1); a HELO session cannot have used it.
            // RFC 3848 registers no TLS or AUTH variant of plain SMTP.
            (Greeting::Helo, _) => Smtp,
            (Greeting::Ehlo, false) => match (tls, auth) {
                (false, false) => Esmtp,
                (true, false) => Esmtps,
                (false, true) => Esmtpa,
                (true, true) => Esmtpsa,
            },
            (Greeting::Ehlo, true) => match (tls, auth) {
                (false, false) => Utf8Smtp,
                (true, false) => Utf8Smtps,
                (false, true) => Utf8Smtpa,
                (true, true) => Utf8Smtpsa,
            },
        }
    }
}

/// The `with` clause of a trace header: the registered "Mail Transmission Types" of [RFC 3848]
/// and [RFC 6531 §3.7.3].
///
/// [RFC 3848]: https://www.rfc-editor.org/rfc/rfc3848
/// [RFC 6531 §3.7.3]: https://www.rfc-editor.org/rfc/rfc6531#section-3.7.3
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WithProtocol {
    /// `SMTP`: the client said `HELO`.
    Smtp,
    /// `ESMTP`: the client said `EHLO` ([RFC 3848 §2]).
    ///
    /// [RFC 3848 §2]: https://www.rfc-editor.org/rfc/rfc3848#section-2
    Esmtp,
    /// `UTF8SMTP`: `EHLO` and `SMTPUTF8` on `MAIL` ([RFC 6531 §3.7.3]).
    ///
    /// [RFC 6531 §3.7.3]: https://www.rfc-editor.org/rfc/rfc6531#section-3.7.3
    Utf8Smtp,
    /// `ESMTPS`: ESMTP over TLS ([RFC 3848 §3]).
    ///
    /// [RFC 3848 §3]: https://www.rfc-editor.org/rfc/rfc3848#section-3
    Esmtps,
    /// `UTF8SMTPS`: UTF8SMTP over TLS ([RFC 6531 §3.7.3]).
    ///
    /// [RFC 6531 §3.7.3]: https://www.rfc-editor.org/rfc/rfc6531#section-3.7.3
    Utf8Smtps,
    /// `ESMTPA`: ESMTP with SMTP AUTH ([RFC 3848 §4]).
    ///
    /// [RFC 3848 §4]: https://www.rfc-editor.org/rfc/rfc3848#section-4
    Esmtpa,
    /// `ESMTPSA`: ESMTP with TLS and SMTP AUTH ([RFC 3848 §5]).
    ///
    /// [RFC 3848 §5]: https://www.rfc-editor.org/rfc/rfc3848#section-5
    Esmtpsa,
    /// `UTF8SMTPA` ([RFC 6531 §3.7.3]).
    ///
    /// [RFC 6531 §3.7.3]: https://www.rfc-editor.org/rfc/rfc6531#section-3.7.3
    Utf8Smtpa,
    /// `UTF8SMTPSA` ([RFC 6531 §3.7.3]).
    ///
    /// [RFC 6531 §3.7.3]: https://www.rfc-editor.org/rfc/rfc6531#section-3.7.3
    Utf8Smtpsa,
}

impl WithProtocol {
    /// The keyword as written in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            WithProtocol::Smtp => "SMTP",
            WithProtocol::Esmtp => "ESMTP",
            WithProtocol::Utf8Smtp => "UTF8SMTP",
            WithProtocol::Esmtps => "ESMTPS",
            WithProtocol::Utf8Smtps => "UTF8SMTPS",
            WithProtocol::Esmtpa => "ESMTPA",
            WithProtocol::Esmtpsa => "ESMTPSA",
            WithProtocol::Utf8Smtpa => "UTF8SMTPA",
            WithProtocol::Utf8Smtpsa => "UTF8SMTPSA",
        }
    }
}

/// Renders the `Received:` header, folded, each line ending in CRLF:
///
/// ```text
/// Received: from <helo> ([<peer ip>])\r\n
/// \tby <hostname> (smtp-edge) with ESMTP id <qid>\r\n
/// \tfor <rcpt>; Sat, 28 Nov 2026 03:53:05 +0000\r\n
/// ```
///
/// `for` is written only when `rcpt_to` holds exactly one recipient: every recipient gets the same
/// copy, so naming one of several would show a (perhaps blind-copied) address to the others
/// ([RFC 5321 §7.2]). Client
/// text (the HELO argument) is cut to [`MAX_TRACE_HELO`] and every byte outside printable ASCII
/// becomes `?`, so a client can never end the header or add one.
///
/// [RFC 5321 §7.2]: https://www.rfc-editor.org/rfc/rfc5321#section-7.2
pub fn received_header(info: &TraceInfo, id: &QueueId, rcpt_to: &[Mailbox]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("Received: from ");
    push_sanitized(&mut out, &info.helo, MAX_TRACE_HELO);
    // TCP-info is an address literal (RFC 5321 §4.4, §4.1.3).
    match info.peer.ip().to_canonical() {
        IpAddr::V4(ip) => {
            let _ = write!(out, " ([{ip}])\r\n");
        }
        IpAddr::V6(ip) => {
            let _ = write!(out, " ([IPv6:{ip}])\r\n");
        }
    }
    if let Some(login) = &info.login {
        out.push_str("\t(Authenticated sender: ");
        push_sanitized_utf8(&mut out, login);
        out.push_str(")\r\n");
    }
    out.push_str("\tby ");
    push_sanitized(&mut out, &info.hostname, MAX_TRACE_HELO);
    let _ = write!(out, " (smtp-edge) with {}", info.protocol().as_str());
    if let Some(tls) = &info.tls {
        // A comment, as Postfix and others write it (RFC 5322 §3.2.2); the values are ours, not
        // the client's, but are sanitized all the same.
        out.push_str(" (");
        push_sanitized(&mut out, &tls.version, 32);
        out.push_str(" cipher ");
        push_sanitized(&mut out, &tls.cipher, 64);
        out.push(')');
    }
    let _ = write!(out, " id {id}");
    if let [rcpt] = rcpt_to {
        out.push_str("\r\n\tfor <");
        push_sanitized_utf8(&mut out, &rcpt.to_string());
        out.push('>');
    }
    out.push_str("; ");
    push_date_time(&mut out, info.received_at);
    out.push_str("\r\n");
    out
}

/// Appends `s` cut to `max` bytes, with anything outside `%x21-7E` replaced by `?`.
fn push_sanitized(out: &mut String, s: &str, max: usize) {
    out.extend(s.bytes().take(max).map(|b| {
        if (0x21..=0x7e).contains(&b) {
            b as char
        } else {
            '?'
        }
    }));
}

/// Appends a recipient address; UTF-8 is kept (it may only appear with SMTPUTF8, whose messages
/// may carry UTF-8 headers, RFC 6532), controls and spaces are not.
fn push_sanitized_utf8(out: &mut String, s: &str) {
    out.extend(
        s.chars()
            .map(|c| if c.is_control() || c == ' ' { '?' } else { c }),
    );
}

/// Appends `t` as an RFC 5322 `date-time` in UTC ([RFC 5322 §3.3]), e.g.
/// `Sat, 28 Nov 2026 03:53:05 +0000`. Times before 1970 are written as the epoch.
///
/// [RFC 5322 §3.3]: https://www.rfc-editor.org/rfc/rfc5322#section-3.3
pub fn push_date_time(out: &mut String, t: SystemTime) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01 was a Thursday
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month 1..=12, day 1..=31).
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>),
/// restricted to non-negative days: shift the epoch to 0000-03-01 so that the leap day ends each
/// 400-year era, then split the era into years and the year (starting in March) into months.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097; // days per 400 years
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn date(secs: u64) -> String {
        let mut s = String::new();
        push_date_time(&mut s, UNIX_EPOCH + Duration::from_secs(secs));
        s
    }

    #[test]
    fn known_dates() {
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 +0000"), // RFC 7231's example
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"), // 400-year leap day
            (1_709_164_799, "Wed, 28 Feb 2024 23:59:59 +0000"),
            (1_709_251_200, "Fri, 01 Mar 2024 00:00:00 +0000"),
            (1_795_837_985, "Sat, 28 Nov 2026 03:53:05 +0000"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 +0000"), // 2100 is not a leap year
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 +0000"),
        ] {
            assert_eq!(date(secs), want, "{secs}");
        }
    }

    #[test]
    fn before_epoch_is_the_epoch() {
        let mut s = String::new();
        push_date_time(&mut s, UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(s, "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn agrees_with_httpdate_every_few_hours_for_two_centuries() {
        // httpdate formats the same calendar as IMF-fixdate ("... GMT"); it is the oracle.
        let mut secs = 0u64;
        while secs < 7_258_118_400 {
            let want = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(date(secs), want.replace("GMT", "+0000"), "{secs}");
            secs += 3 * 3600 + 1_237;
        }
    }

    fn mbox(s: &str) -> Mailbox {
        crate::protocol::address::parse_mailbox(s).unwrap()
    }

    fn info(greeting: Greeting, smtputf8: bool, peer: &str) -> TraceInfo {
        TraceInfo {
            peer: peer.parse().unwrap(),
            helo: "client.example".into(),
            greeting,
            smtputf8,
            hostname: "mx.example.test".into(),
            received_at: UNIX_EPOCH + Duration::from_secs(1_795_837_985),
            tls: None,
            authenticated: false,
            login: None,
        }
    }

    #[test]
    fn header_with_one_recipient() {
        let id = QueueId::from_parts(1, 2, 3);
        let h = received_header(
            &info(Greeting::Ehlo, false, "192.0.2.7:4000"),
            &id,
            &[mbox("a@b.test")],
        );
        assert_eq!(
            h,
            format!(
                "Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (smtp-edge) \
                 with ESMTP id {id}\r\n\tfor <a@b.test>; Sat, 28 Nov 2026 03:53:05 +0000\r\n"
            )
        );
    }

    #[test]
    fn header_over_tls_names_esmtps_version_and_cipher() {
        let id = QueueId::from_parts(1, 2, 3);
        let mut t = info(Greeting::Ehlo, false, "192.0.2.7:4000");
        t.tls = Some(TlsTrace {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        });
        let h = received_header(&t, &id, &[]);
        assert!(
            h.contains(&format!(
                "\tby mx.example.test (smtp-edge) with ESMTPS (TLSv1.3 cipher TLS13_AES_256_GCM_SHA384) id {id};"
            )),
            "{h}"
        );
        t.smtputf8 = true;
        assert!(received_header(&t, &id, &[]).contains(" with UTF8SMTPS ("));
        t.smtputf8 = false;
        t.authenticated = true;
        assert!(received_header(&t, &id, &[]).contains(" with ESMTPSA ("));
        t.tls = None;
        assert!(received_header(&t, &id, &[]).contains(" with ESMTPA id"));
        assert!(!received_header(&t, &id, &[]).contains("Authenticated sender"));
        t.login = Some("alice@example.test".into());
        assert!(received_header(&t, &id, &[])
            .contains("])\r\n\t(Authenticated sender: alice@example.test)\r\n\tby "));
    }

    #[test]
    fn header_protocols_and_ipv6() {
        let id = QueueId::from_parts(1, 2, 3);
        let h = received_header(&info(Greeting::Helo, false, "[2001:db8::1]:25"), &id, &[]);
        assert!(
            h.starts_with("Received: from client.example ([IPv6:2001:db8::1])\r\n"),
            "{h}"
        );
        assert!(
            h.contains(&format!(" with SMTP id {id}; Sat, 28 Nov")),
            "{h}"
        );
        let h = received_header(
            &info(Greeting::Ehlo, true, "[::ffff:192.0.2.9]:25"),
            &id,
            &[],
        );
        assert!(h.contains("([192.0.2.9])"), "{h}");
        assert!(h.contains(" with UTF8SMTP id "), "{h}");
    }

    #[test]
    fn client_text_cannot_inject_headers() {
        let mut i = info(Greeting::Ehlo, false, "192.0.2.7:1");
        i.helo = format!("evil\r\nX-Injected: 1 {}", "x".repeat(1000));
        let h = received_header(&i, &QueueId::from_parts(1, 2, 3), &[]);
        assert_eq!(h.matches("\r\n").count(), 2, "{h}");
        assert!(h.lines().all(|l| l.len() < 400));
        assert!(h.contains("from evil??X-Injected:?1?xxx"));
    }
}

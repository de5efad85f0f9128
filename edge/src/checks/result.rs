//! Results in the words of RFC 8601 §2.7, and the one `Authentication-Results:` header that
//! carries them.
//!
//! mail-auth's own words differ in two places, and RFC 8601 is what readers of the header
//! (filters, mail clients, DMARC reports) understand: a DKIM signature whose body hash does not
//! match is `neutral` there but `fail` here (RFC 6376 §6.1.3: the signature does not verify),
//! and a DMARC record with no aligned pass is `fail` (RFC 7489 §11.2), which mail-auth's
//! per-mechanism results leave as `none` when neither SPF nor DKIM passed at all.

use std::fmt::Write as _;

use mail_auth::dkim::DkimError;
use mail_auth::{DkimResult, DmarcResult, SpfResult};

/// One of the checks, the `check` label of `smtp_edge_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// RFC 7208.
    Spf,
    /// RFC 6376.
    Dkim,
    /// RFC 7489.
    Dmarc,
    /// RFC 8617.
    Arc,
}

impl Check {
    /// Every check, in label order.
    pub const ALL: [Check; 4] = [Check::Spf, Check::Dkim, Check::Dmarc, Check::Arc];

    /// The method name of RFC 8601 §2.7, also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Spf => "spf",
            Check::Dkim => "dkim",
            Check::Dmarc => "dmarc",
            Check::Arc => "arc",
        }
    }
}

/// A result of one check, as RFC 8601 §2.7 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authorised or verified.
    Pass,
    /// Explicitly not authorised, or a signature that does not verify.
    Fail,
    /// SPF `~all`: probably not authorised.
    SoftFail,
    /// SPF `?all`, or a DKIM signature that could not be judged.
    Neutral,
    /// Nothing to check: no record, no signature.
    None,
    /// A transient failure, usually DNS; a retry may give another answer.
    TempError,
    /// A record that cannot be used (syntax, too many lookups).
    PermError,
}

impl Verdict {
    /// Every verdict, in label order.
    pub const ALL: [Verdict; 7] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::SoftFail,
        Verdict::Neutral,
        Verdict::None,
        Verdict::TempError,
        Verdict::PermError,
    ];

    /// The result keyword of RFC 8601 §2.7, also the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::SoftFail => "softfail",
            Verdict::Neutral => "neutral",
            Verdict::None => "none",
            Verdict::TempError => "temperror",
            Verdict::PermError => "permerror",
        }
    }

    /// RFC 7208 §2.6.
    pub fn from_spf(r: SpfResult) -> Verdict {
        match r {
            SpfResult::Pass => Verdict::Pass,
            SpfResult::Fail => Verdict::Fail,
            SpfResult::SoftFail => Verdict::SoftFail,
            SpfResult::Neutral => Verdict::Neutral,
            SpfResult::TempError => Verdict::TempError,
            SpfResult::PermError => Verdict::PermError,
            SpfResult::None => Verdict::None,
        }
    }

    /// RFC 6376 §6.1; a body hash mismatch is `fail` (see the module doc).
    pub fn from_dkim(r: &DkimResult) -> Verdict {
        match r {
            DkimResult::Pass => Verdict::Pass,
            DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => {
                Verdict::Fail
            }
            DkimResult::Neutral(_) => Verdict::Neutral,
            DkimResult::Fail(_) => Verdict::Fail,
            DkimResult::PermError(_) => Verdict::PermError,
            DkimResult::TempError(_) => Verdict::TempError,
            DkimResult::None => Verdict::None,
        }
    }

    /// RFC 7489 §11.2, from the crate's overall result (which is `fail` when a record exists
    /// and nothing aligned passed).
    pub fn from_dmarc(r: &DmarcResult) -> Verdict {
        match r {
            DmarcResult::Pass => Verdict::Pass,
            DmarcResult::Fail(_) => Verdict::Fail,
            DmarcResult::TempError(_) => Verdict::TempError,
            DmarcResult::PermError(_) => Verdict::PermError,
            DmarcResult::None => Verdict::None,
        }
    }
}

/// What one DKIM signature gave, with the tags RFC 8601 §2.7.1 reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimSignature {
    /// The result.
    pub verdict: Verdict,
    /// `d=`, the signing domain.
    pub domain: String,
    /// `s=`, the selector.
    pub selector: String,
    /// The first 8 characters of `b=` (RFC 6008 §4), to tell signatures of one domain apart.
    pub b: String,
}

/// The outcome of the DMARC check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcVerdict {
    /// The result.
    pub verdict: Verdict,
    /// The From: domain.
    pub domain: String,
    /// What the domain asks for mail that fails.
    pub policy: DmarcPolicy,
}

/// The `p=` (or `sp=`) of a DMARC record (RFC 7489 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcPolicy {
    /// `none`, or no record.
    None,
    /// `quarantine`: deliver as suspicious.
    Quarantine,
    /// `reject`: refuse in the SMTP dialogue.
    Reject,
}

impl DmarcPolicy {
    fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// The SPF result for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfVerdict {
    /// The result.
    pub verdict: Verdict,
    /// `smtp.mailfrom`: the reverse-path, or `postmaster@` the HELO name for the null sender
    /// (RFC 7208 §2.4).
    pub identity: String,
}

/// Every result of one message: what goes into its `Authentication-Results:` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results {
    /// SPF, when on.
    pub spf: Option<SpfVerdict>,
    /// One entry per signature when DKIM is on; empty with DKIM on means `dkim=none`.
    pub dkim: Option<Vec<DkimSignature>>,
    /// DMARC, when on.
    pub dmarc: Option<DmarcVerdict>,
    /// ARC, when on.
    pub arc: Option<Verdict>,
    /// Whether the message is quarantined (DMARC `enforce`, a `fail` under `p=quarantine`):
    /// the header then says so with [`QUARANTINED`], which is what Maildir delivery reads to
    /// put the message into `.Junk` ([`quarantined`]).
    pub quarantined: bool,
}

/// The property our DMARC result ends with when the message is quarantined: a `policy` ptype,
/// which RFC 8601 §2.3 leaves to local policy, named for the disposition of RFC 7489 §7.2
/// (what the receiver did: `none`, `quarantine` or `reject`).
pub const QUARANTINED: &str = "policy.disposition=quarantine";

/// How far into a spooled message [`quarantined`] looks: our `Received:` and our
/// `Authentication-Results:` fit many times over, and a hostile message costs no more.
const MAX_TRACE: usize = 8 * 1024;

/// Whether `message`, as spooled, was quarantined by our checks: its second header field (the
/// first is our `Received:`) is our `Authentication-Results:` and its DMARC result ends with
/// [`QUARANTINED`].
///
/// Why the message and not a flag in the queue: the decision is made while the message is
/// received, and the header is the one record of it that travels with the message, in the
/// spool's existing format. It can be trusted because of where it is: with checks on, we write
/// it right after our `Received:` and strip every other field claiming our host name; with
/// checks off, the sender can put such a field there, which only sends their own message to
/// the recipient's junk folder. Our header has one result per line (values never hold a line
/// break, [`pvalue`]), so a DMARC line that ends with the marker is ours, not a quoted value.
pub fn quarantined(message: &[u8]) -> bool {
    let head = message.get(..MAX_TRACE).unwrap_or(message);
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let folded = |l: &[u8]| l.first().is_some_and(|&b| b == b' ' || b == b'\t');
    // The first field, with its continuation lines.
    if lines.next().is_none_or(|l| l.is_empty()) {
        return false;
    }
    let mut lines = lines.skip_while(|l| folded(l));
    if !lines
        .next()
        .is_some_and(|l| l.starts_with(b"Authentication-Results: "))
    {
        return false;
    }
    let marker = format!(" {QUARANTINED}");
    lines.take_while(|l| folded(l)).any(|l| {
        let l = l.trim_ascii();
        let l = l.strip_suffix(b";").unwrap_or(l);
        l.starts_with(b"dmarc=fail ") && l.ends_with(marker.as_bytes())
    })
}

/// Longest value copied from the message or the envelope into the header: a domain is at most
/// 255 octets (RFC 5321 §4.5.3.1.2), an address 256 (§4.5.3.1.3).
const MAX_VALUE: usize = 256;

impl Results {
    /// The DMARC verdict under a `p=reject` policy, for `enforce`.
    pub fn dmarc_rejects(&self) -> Option<&DmarcVerdict> {
        self.dmarc
            .as_ref()
            .filter(|d| d.verdict == Verdict::Fail && d.policy == DmarcPolicy::Reject)
    }

    /// The DMARC verdict under a `p=quarantine` policy, for `enforce`.
    pub fn dmarc_quarantines(&self) -> Option<&DmarcVerdict> {
        self.dmarc
            .as_ref()
            .filter(|d| d.verdict == Verdict::Fail && d.policy == DmarcPolicy::Quarantine)
    }

    /// The header, folded, CRLF-terminated ([RFC 8601 §2.2]): `authserv_id`, then one
    /// `method=result` with its properties per check that ran, or `none` if none did.
    ///
    /// [RFC 8601 §2.2]: https://www.rfc-editor.org/rfc/rfc8601#section-2.2
    pub fn header(&self, authserv_id: &str) -> String {
        let mut out = format!("Authentication-Results: {authserv_id}");
        let mut any = false;
        let mut method = |out: &mut String, text: String| {
            any = true;
            let _ = write!(out, ";\r\n\t{text}");
        };
        if let Some(spf) = &self.spf {
            method(
                &mut out,
                format!(
                    "spf={} smtp.mailfrom={}",
                    spf.verdict.as_str(),
                    pvalue(&spf.identity)
                ),
            );
        }
        if let Some(dkim) = &self.dkim {
            if dkim.is_empty() {
                method(&mut out, "dkim=none".to_owned());
            }
            for sig in dkim {
                method(
                    &mut out,
                    format!(
                        "dkim={} header.d={} header.s={} header.b={}",
                        sig.verdict.as_str(),
                        pvalue(&sig.domain),
                        pvalue(&sig.selector),
                        pvalue(&sig.b)
                    ),
                );
            }
        }
        if let Some(dmarc) = &self.dmarc {
            let mut text = format!("dmarc={}", dmarc.verdict.as_str());
            if !dmarc.domain.is_empty() {
                let _ = write!(
                    text,
                    " header.from={} policy.dmarc={}",
                    pvalue(&dmarc.domain),
                    dmarc.policy.as_str()
                );
            }
            if self.quarantined {
                let _ = write!(text, " {QUARANTINED}");
            }
            method(&mut out, text);
        }
        if let Some(arc) = self.arc {
            method(&mut out, format!("arc={}", arc.as_str()));
        }
        if !any {
            out.push_str("; none");
        }
        out.push_str("\r\n");
        out
    }
}

/// A property value ([RFC 8601 §2.2] `pvalue`): a token as it is when it holds only safe
/// characters, else a quoted string with `\` and `"` escaped; control characters and what is
/// past [`MAX_VALUE`] are dropped, so a hostile value cannot break the header.
///
/// [RFC 8601 §2.2]: https://www.rfc-editor.org/rfc/rfc8601#section-2.2
fn pvalue(value: &str) -> String {
    let value: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_VALUE)
        .collect();
    let token = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_+=/".contains(c));
    if token {
        return value;
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lists_each_check_in_rfc_8601_words() {
        let r = Results {
            spf: Some(SpfVerdict {
                verdict: Verdict::Fail,
                identity: "a@spf.test".into(),
            }),
            dkim: Some(vec![DkimSignature {
                verdict: Verdict::Pass,
                domain: "d.test".into(),
                selector: "s1".into(),
                b: "abcdEFGH".into(),
            }]),
            dmarc: Some(DmarcVerdict {
                verdict: Verdict::Fail,
                domain: "d.test".into(),
                policy: DmarcPolicy::Reject,
            }),
            arc: Some(Verdict::None),
            quarantined: false,
        };
        assert_eq!(
            r.header("mx.example.test"),
            "Authentication-Results: mx.example.test;\r\n\
             \tspf=fail smtp.mailfrom=a@spf.test;\r\n\
             \tdkim=pass header.d=d.test header.s=s1 header.b=abcdEFGH;\r\n\
             \tdmarc=fail header.from=d.test policy.dmarc=reject;\r\n\
             \tarc=none\r\n"
        );
        assert!(r.dmarc_rejects().is_some());
    }

    #[test]
    fn nothing_checked_is_none_and_hostile_values_are_quoted() {
        assert_eq!(
            Results::default().header("mx.test"),
            "Authentication-Results: mx.test; none\r\n"
        );
        let r = Results {
            spf: Some(SpfVerdict {
                verdict: Verdict::Pass,
                identity: "\"a;b\\\"\r\nX-Evil: 1\"@spf.test".into(),
            }),
            ..Results::default()
        };
        let h = r.header("mx.test");
        assert_eq!(h.matches("\r\n").count(), 2, "{h}");
        assert!(
            h.contains("smtp.mailfrom=\"\\\"a;b\\\\\\\"X-Evil: 1\\\"@spf.test\""),
            "{h}"
        );
    }

    /// A spooled message: our `Received:`, then `auth` (our header, or none), then the rest.
    fn spooled(auth: &str, rest: &str) -> Vec<u8> {
        format!(
            "Received: from client.test (client.test [192.0.2.1])\r\n\
             \tby mx.test with ESMTP id abc; Sun, 29 Nov 2026 22:00:00 +0000\r\n\
             {auth}{rest}"
        )
        .into_bytes()
    }

    fn quarantine(verdict: Verdict, quarantined: bool) -> Results {
        Results {
            dmarc: Some(DmarcVerdict {
                verdict,
                domain: "q.test".into(),
                policy: DmarcPolicy::Quarantine,
            }),
            quarantined,
            ..Results::default()
        }
    }

    #[test]
    fn only_our_header_marked_quarantined_reads_as_quarantined() {
        let rest = "From: <a@q.test>\r\nSubject: x\r\n\r\nbody\r\n";
        let enforced = quarantine(Verdict::Fail, true);
        assert!(enforced.dmarc_quarantines().is_some());
        let h = enforced.header("mx.test");
        assert!(
            h.contains("dmarc=fail header.from=q.test policy.dmarc=quarantine policy.disposition=quarantine\r\n"),
            "{h}"
        );
        assert!(quarantined(&spooled(&h, rest)));
        // Under `tag` the same result is reported, not acted on.
        let tagged = quarantine(Verdict::Fail, false).header("mx.test");
        assert!(!quarantined(&spooled(&tagged, rest)));
        assert!(quarantine(Verdict::Pass, false)
            .dmarc_quarantines()
            .is_none());
        // Our header, but the marker only further down, in the sender's own fields.
        let forged = format!("X-A: 1\r\n{h}");
        assert!(!quarantined(&spooled(&tagged, &format!("{forged}{rest}"))));
        // A hostile From: domain quoted in our header cannot end the DMARC line with it.
        let hostile = Results {
            dmarc: Some(DmarcVerdict {
                verdict: Verdict::Fail,
                domain: format!("x {QUARANTINED}"),
                policy: DmarcPolicy::None,
            }),
            ..Results::default()
        }
        .header("mx.test");
        assert!(!quarantined(&spooled(&hostile, rest)), "{hostile}");
        // No header of ours at all, or a message cut short.
        assert!(!quarantined(&spooled("", rest)));
        assert!(!quarantined(b""));
        assert!(!quarantined(&spooled(&h, rest)[..60]));
    }
}

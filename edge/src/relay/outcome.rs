//! From the client engine's per-recipient outcomes (and the relay's own failures) to the
//! [`RcptOutcome`] the queue logs and bounces with.

use crate::protocol::client::{Cause, Outcome, ServerReply};

use super::{RcptOutcome, Verdict};

/// The outcome the engine reported for one recipient.
pub(super) fn from_engine(outcome: &Outcome) -> RcptOutcome {
    match outcome {
        Outcome::Delivered(reply) => RcptOutcome {
            verdict: Verdict::Delivered,
            status: status_of(reply, "2.0.0"),
            reply: Some(reply.to_string()),
            detail: reply.to_string(),
        },
        Outcome::Deferred(cause) => from_cause(Verdict::Deferred, cause),
        Outcome::Failed(cause) => from_cause(Verdict::Failed, cause),
    }
}

/// A recipient the engine never got to: `cause` says why (it becomes the detail as it is).
pub(super) fn local(verdict: Verdict, status: &str, detail: String) -> RcptOutcome {
    RcptOutcome {
        verdict,
        status: status.to_owned(),
        reply: None,
        detail,
    }
}

fn from_cause(verdict: Verdict, cause: &Cause) -> RcptOutcome {
    let class = if verdict == Verdict::Failed { '5' } else { '4' };
    // RFC 3463 codes for causes without a server reply.
    let own = |subject_detail: &str| format!("{class}.{subject_detail}");
    let (status, reply) = match cause {
        Cause::Reply { reply, .. } => {
            let fallback = if reply.is_permanent() {
                "5.0.0"
            } else {
                "4.0.0"
            };
            (status_of(reply, fallback), Some(reply.to_string()))
        }
        // X.4.2: bad connection; the host answered once, then stopped.
        Cause::Timeout(_) | Cause::ConnectionLost(_) => (own("4.2"), None),
        // X.5.0: other or undefined protocol status.
        Cause::Protocol(_) => (own("5.0"), None),
        // X.7.4: security features not supported.
        Cause::TlsUnavailable => (own("7.4"), None),
        Cause::AuthUnavailable => (own("7.0"), None),
        // X.6.7: the address or content needs SMTPUTF8 (RFC 6531 §3.5).
        Cause::Smtputf8Unsupported => (own("6.7"), None),
        // X.3.4: message too big for system.
        Cause::TooLarge { .. } => (own("3.4"), None),
        // X.1.3: bad destination mailbox address syntax.
        Cause::BadAddress => (own("1.3"), None),
    };
    RcptOutcome {
        verdict,
        status,
        reply,
        detail: cause.to_string(),
    }
}

/// The reply's enhanced status, or `fallback` when it carried none.
fn status_of(reply: &ServerReply, fallback: &str) -> String {
    reply
        .status
        .map_or_else(|| fallback.to_owned(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::client::{EnhancedStatus, Stage};

    fn reply(code: u16, status: Option<(u8, u16, u16)>, text: &str) -> ServerReply {
        ServerReply {
            code,
            status: status.map(|(class, subject, detail)| EnhancedStatus {
                class,
                subject,
                detail,
            }),
            lines: vec![text.to_owned()],
        }
    }

    #[test]
    fn server_replies_keep_their_status_and_text() {
        let ok = from_engine(&Outcome::Delivered(reply(250, Some((2, 0, 0)), "queued")));
        assert_eq!(ok.verdict, Verdict::Delivered);
        assert_eq!(ok.status, "2.0.0");
        assert_eq!(ok.reply.as_deref(), Some("250 2.0.0 queued"));

        let stage = Stage::Rcpt;
        let no_user = reply(550, Some((5, 1, 1)), "No such user");
        let failed = from_engine(&Outcome::Failed(Cause::Reply {
            stage,
            reply: no_user,
        }));
        assert_eq!(failed.verdict, Verdict::Failed);
        assert_eq!(failed.status, "5.1.1");
        assert_eq!(failed.reply.as_deref(), Some("550 5.1.1 No such user"));
        assert_eq!(
            failed.detail,
            "550 5.1.1 No such user (in reply to RCPT TO)"
        );

        // Without an enhanced code, the reply class gives one.
        let busy = from_engine(&Outcome::Deferred(Cause::Reply {
            stage: Stage::Mail,
            reply: reply(451, None, "try later"),
        }));
        assert_eq!(
            (busy.verdict, busy.status.as_str()),
            (Verdict::Deferred, "4.0.0")
        );
    }

    #[test]
    fn local_causes_get_rfc_3463_codes() {
        let cases = [
            (Outcome::Deferred(Cause::Timeout(Stage::Data)), "4.4.2"),
            (
                Outcome::Deferred(Cause::ConnectionLost(Stage::Body)),
                "4.4.2",
            ),
            (Outcome::Deferred(Cause::TlsUnavailable), "4.7.4"),
            (Outcome::Failed(Cause::Smtputf8Unsupported), "5.6.7"),
            (Outcome::Failed(Cause::TooLarge { limit: 10 }), "5.3.4"),
        ];
        for (outcome, status) in cases {
            let got = from_engine(&outcome);
            assert_eq!(got.status, status, "{outcome:?}");
            assert_eq!(got.reply, None);
            assert!(!got.detail.is_empty());
        }
    }
}

//! The per-recipient record of one queued message: what has become of each recipient, and when
//! the next attempt is due.
//!
//! A message without a record has never been attempted: every recipient of its envelope is
//! pending. The record is written (by [`Store::save`](super::Store::save)) after each attempt
//! that leaves something to do, and goes with the message once every recipient is delivered or
//! has failed and been reported.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::relay::{RelayConfig, DEFAULT_MAX_AGE_SECS, DEFAULT_RETRY_SECS};

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not attempted yet.
    Pending,
    /// Delivered (to the Maildir, or accepted by the next hop): never attempted again.
    Delivered,
    /// A temporary failure: attempted again at `next_attempt_ms`.
    Deferred,
    /// A permanent failure, or too old: reported to the sender, never attempted again.
    Failed,
}

impl State {
    /// The word in logs and `queue list`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Deferred => "deferred",
            State::Failed => "failed",
        }
    }

    /// Whether nothing more will be attempted for this recipient.
    pub fn is_final(self) -> bool {
        matches!(self, State::Delivered | State::Failed)
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Where it goes: the envelope recipient after alias expansion and `+tag` removal.
    pub address: String,
    /// The envelope recipient as the client gave it, when rewriting changed it (the DSN's
    /// `Original-Recipient`, RFC 3464 §2.3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// Where it stands.
    pub state: State,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The last reply or error, as logged (`451 4.3.0 try later`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    /// The enhanced status code of the last attempt ([RFC 3463]), when the route gave one
    /// (`5.1.1`): the DSN's `Status:`.
    ///
    /// [RFC 3463]: https://www.rfc-editor.org/rfc/rfc3463
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When a deferred recipient is due, in ms since the Unix epoch.
    #[serde(default)]
    pub next_attempt_ms: u64,
    /// Whether the sender was told of its failure (a DSN was queued, or none was owed).
    #[serde(default)]
    pub notified: bool,
}

impl Recipient {
    /// A recipient not attempted yet.
    pub fn pending(address: String, original: Option<String>) -> Recipient {
        Recipient {
            address,
            original,
            state: State::Pending,
            attempts: 0,
            last_reply: None,
            status: None,
            next_attempt_ms: 0,
            notified: false,
        }
    }

    /// Whether it should be attempted at `now_ms` (or at once, with `force`).
    pub fn is_due(&self, now_ms: u64, force: bool) -> bool {
        match self.state {
            State::Pending => true,
            State::Deferred => force || self.next_attempt_ms <= now_ms,
            State::Delivered | State::Failed => false,
        }
    }
}

/// A queued message's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When the message was first taken into the queue, in ms since the Unix epoch: retries
    /// stop `relay.max_age_secs` after it.
    pub arrival_ms: u64,
    /// Every recipient, in envelope order (an alias in place of its targets).
    pub recipients: Vec<Recipient>,
}

impl Record {
    /// When the earliest deferred recipient is due; `None` if none is waiting.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.recipients
            .iter()
            .filter(|r| matches!(r.state, State::Pending | State::Deferred))
            .map(|r| match r.state {
                State::Pending => 0,
                _ => r.next_attempt_ms,
            })
            .min()
    }

    /// Whether every recipient is delivered, or failed with the sender told: the message can go.
    pub fn is_done(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.state == State::Delivered || (r.state == State::Failed && r.notified))
    }

    /// The message's state for `queue list` and the `smtp_edge_queue_messages` gauge: `active`
    /// while some recipient was never attempted, else `deferred` while one waits for a retry,
    /// else `done`.
    pub fn summary(&self) -> &'static str {
        if self.recipients.iter().any(|r| r.state == State::Pending) {
            "active"
        } else if self.recipients.iter().any(|r| r.state == State::Deferred) {
            "deferred"
        } else {
            "done"
        }
    }
}

/// When to try again, and when to give up (`relay.retry_secs`, `relay.max_age_secs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first, second, ... failed attempt; the last repeats. Never empty.
    pub steps: Vec<Duration>,
    /// How long after arrival a deferred recipient fails instead.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            steps: DEFAULT_RETRY_SECS.map(Duration::from_secs).to_vec(),
            max_age: Duration::from_secs(DEFAULT_MAX_AGE_SECS),
        }
    }
}

impl RetryPolicy {
    /// The schedule of `relay.retry_secs` and `relay.max_age_secs`.
    pub fn of(relay: &RelayConfig) -> RetryPolicy {
        RetryPolicy {
            steps: relay.retry.clone(),
            max_age: relay.max_age,
        }
    }

    /// The wait after `attempts` failed attempts (at least 1).
    pub fn delay(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) - 1) as usize;
        self.steps
            .get(i)
            .or(self.steps.last())
            .copied()
            .unwrap_or(Duration::from_secs(DEFAULT_RETRY_SECS[0]))
    }

    /// Whether a message that arrived at `arrival_ms` is too old to retry at `now_ms`.
    pub fn expired(&self, arrival_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(arrival_ms) >= self.max_age.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_steps_and_repeats_the_last() {
        let p = RetryPolicy::default();
        let got: Vec<u64> = (1..=7).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(got, [60, 300, 900, 3600, 14400, 14400, 14400]);
        assert!(!p.expired(0, 432_000_000 - 1));
        assert!(p.expired(0, 432_000_000));
    }

    #[test]
    fn a_record_is_done_only_when_every_failure_was_reported() {
        let mut r = Record {
            arrival_ms: 0,
            recipients: vec![
                Recipient::pending("a@example.test".into(), None),
                Recipient::pending("b@example.test".into(), None),
            ],
        };
        assert_eq!((r.summary(), r.next_due_ms()), ("active", Some(0)));
        r.recipients[0].state = State::Delivered;
        r.recipients[1].state = State::Deferred;
        r.recipients[1].next_attempt_ms = 5000;
        assert_eq!((r.summary(), r.next_due_ms()), ("deferred", Some(5000)));
        assert!(!r.is_done());
        r.recipients[1].state = State::Failed;
        assert!(!r.is_done(), "a failure not yet reported keeps the message");
        r.recipients[1].notified = true;
        assert!(r.is_done());
        assert_eq!(r.next_due_ms(), None);
    }

    #[test]
    fn wire_form_round_trips() {
        let r = Record {
            arrival_ms: 1,
            recipients: vec![Recipient {
                address: "a@example.test".into(),
                original: Some("postmaster@example.test".into()),
                state: State::Deferred,
                attempts: 2,
                last_reply: Some("451 4.3.0 later".into()),
                status: Some("4.3.0".into()),
                next_attempt_ms: 9,
                notified: false,
            }],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""state":"deferred""#), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }
}

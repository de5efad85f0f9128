//! What travels on the control socket: one [`Request`] line from the client, one [`Response`]
//! line back, each a JSON object tagged by its kind.
//!
//! ```text
//! {"request":"ban_list"}
//! {"request":"ban_add","addr":"192.0.2.7","secs":600}      secs optional: shield.ban_secs
//! {"request":"ban_del","addr":"2001:db8:1:2::/64"}
//!
//! {"response":"bans","bans":[{"source":"192.0.2.7/32","secs":599}]}
//! {"response":"banned","source":"192.0.2.7/32","secs":600}
//! {"response":"unbanned","source":"192.0.2.7/32"}
//! {"response":"error","message":"192.0.2.7/32 is not banned"}
//!
//! {"request":"queue_list"}                                 also queue_show, queue_delete,
//! {"request":"queue_flush","id":"000SGMW79BH90000R00000001A"}   queue_bounce (id required);
//! {"response":"queue","messages":[{"id":...,"recipients":[...]}]}   flush without id: all
//! {"response":"queue_done","messages":1}
//!
//! {"request":"reload"}
//! {"response":"reloaded","restart_needed":["listener"]}   keys that kept their running value
//! {"response":"reload_refused","problems":["limits.max_recipients: must be ..."]}
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::queue::MessageInfo;

/// Longest request or response line, newline included: a ban list of the shield's 65,536
/// sources fits (about 50 octets each).
pub const MAX_LINE: usize = 8 << 20;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The bans in force.
    BanList {},
    /// Ban `addr`'s source (an IPv4 address, an IPv6 /64) for `secs`, or `shield.ban_secs`.
    BanAdd {
        /// Any address of the source.
        addr: IpAddr,
        /// How long; `None` for the server's `shield.ban_secs`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secs: Option<u64>,
    },
    /// Lift the ban on `addr`'s source.
    BanDel {
        /// Any address of the source.
        addr: IpAddr,
    },
    /// Every queued message, oldest first.
    QueueList {},
    /// One queued message.
    QueueShow {
        /// Its queue id.
        id: String,
    },
    /// Attempt a message (or, without `id`, every one) now, deferred recipients too.
    QueueFlush {
        /// Its queue id; `None` for all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Remove a message, without a notice to its sender.
    QueueDelete {
        /// Its queue id.
        id: String,
    },
    /// Fail every recipient of a message not yet delivered, with a notice to its sender.
    QueueBounce {
        /// Its queue id.
        id: String,
    },
    /// Read the configuration file again and apply it to new sessions.
    Reload {},
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// To [`Request::BanList`]: soonest to end first.
    Bans {
        /// The bans in force.
        bans: Vec<BanEntry>,
    },
    /// To [`Request::BanAdd`].
    Banned {
        /// The source banned, as a prefix (`192.0.2.7/32`, `2001:db8:1:2::/64`).
        source: String,
        /// For how long.
        secs: u64,
    },
    /// To [`Request::BanDel`].
    Unbanned {
        /// The source whose ban was lifted.
        source: String,
    },
    /// To [`Request::QueueList`] and [`Request::QueueShow`] (one message).
    Queue {
        /// The messages.
        messages: Vec<MessageInfo>,
    },
    /// To [`Request::QueueFlush`], [`Request::QueueDelete`] and [`Request::QueueBounce`].
    QueueDone {
        /// How many messages the request concerned.
        messages: usize,
    },
    /// To [`Request::Reload`]: the new configuration is in force.
    Reloaded {
        /// Keys the file changed that need a restart; they keep their running values.
        restart_needed: Vec<String>,
    },
    /// To [`Request::Reload`]: the file was refused and nothing changed.
    ReloadRefused {
        /// Each problem, `key: problem`.
        problems: Vec<String>,
    },
    /// The request could not be carried out (or parsed): why, in one line.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// One ban in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanEntry {
    /// The source, as a prefix (`192.0.2.7/32`, `2001:db8:1:2::/64`).
    pub source: String,
    /// Seconds left, rounded up.
    pub secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_one_tagged_object() {
        let cases = [
            (Request::BanList {}, r#"{"request":"ban_list"}"#),
            (
                Request::BanAdd {
                    addr: "192.0.2.7".parse().unwrap(),
                    secs: Some(60),
                },
                r#"{"request":"ban_add","addr":"192.0.2.7","secs":60}"#,
            ),
            (
                Request::BanAdd {
                    addr: "2001:db8::1".parse().unwrap(),
                    secs: None,
                },
                r#"{"request":"ban_add","addr":"2001:db8::1"}"#,
            ),
            (
                Request::BanDel {
                    addr: "192.0.2.7".parse().unwrap(),
                },
                r#"{"request":"ban_del","addr":"192.0.2.7"}"#,
            ),
        ];
        for (request, wire) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).unwrap(), request);
        }
        let r = Response::Bans {
            bans: vec![BanEntry {
                source: "192.0.2.7/32".into(),
                secs: 5,
            }],
        };
        let wire = r#"{"response":"bans","bans":[{"source":"192.0.2.7/32","secs":5}]}"#;
        assert_eq!(serde_json::to_string(&r).unwrap(), wire);
        assert_eq!(serde_json::from_str::<Response>(wire).unwrap(), r);
    }

    #[test]
    fn unknown_requests_and_fields_are_refused() {
        for wire in [
            r#"{"request":"queue_purge"}"#,
            r#"{"request":"queue_show"}"#,
            r#"{"request":"ban_list","x":1}"#,
            r#"{"request":"ban_add","addr":"not an address"}"#,
            r#"{"request":"ban_add"}"#,
            "ban list",
        ] {
            assert!(serde_json::from_str::<Request>(wire).is_err(), "{wire}");
        }
    }
}

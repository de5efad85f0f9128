//! The relay (`smtp_edge::relay`) through its API, against real peers nobody here wrote:
//! Python's aiosmtpd (`receiver.py`), Postfix's smtp-sink, Dovecot's LMTP server, and dnsmasq
//! serving MX, A and AAAA records for test domains on loopback.
//!
//! Run: `cargo test -p smtp-edge --test relay` (needs `python3` with `aiosmtpd`, `smtp-sink`
//! from Debian's `postfix`, `dovecot` from `dovecot-lmtpd` and `dnsmasq` from
//! `dnsmasq-base`; `.ci/run` installs them).

// Real processes and sockets: every wait here has a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

#[path = "../peers/receivers.rs"]
#[allow(dead_code)]
mod receivers;

#[path = "../dns/mod.rs"]
#[allow(dead_code)]
mod dns;
mod harness;

mod connections;
mod mx;
mod next_hop;

/// Content that trips a careless dot-stuffer, with 8-bit octets, in lines under 998 octets.
pub fn dotted_content() -> Vec<u8> {
    let mut body =
        "From: a@example.test\r\nSubject: caf\u{e9}\r\n\r\n.\r\n..\r\n.hidden\r\nd\u{e9}j\u{e0}.\r\n"
            .as_bytes()
            .to_vec();
    for i in 0..2000 {
        body.extend_from_slice(format!(".line {i} .......\r\nplain line {i}\r\n").as_bytes());
    }
    body.extend_from_slice(b"last line\r\n");
    body
}

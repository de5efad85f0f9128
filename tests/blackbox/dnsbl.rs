//! DNS block and allow lists scored before MAIL, against a real DNS server (dnsmasq on
//! loopback) serving the lists' A records for reversed-IP names; clients on distinct 127.0.0.x
//! source addresses are distinct hosts.

use std::net::IpAddr;

use crate::dns;
use crate::harness::{Opts, Server};
use crate::session::SmtpConn;

/// Listed in `bl.test` (weight 3, the threshold): refused and banned.
const LISTED: &str = "127.0.0.2";
/// Listed in `bl.test` and in the allow list `wl.test` (weight -5): served.
const ALLOWED: &str = "127.0.0.3";
/// In no list: served.
const UNLISTED: &str = "127.0.0.4";
/// Listed in `bl.test`, but in `guard.trusted`: never looked up, served.
const TRUSTED: &str = "127.0.0.5";

/// The record that lists `ip` in `zone` (RFC 5782 §2.1: reversed octets, an A in 127/8).
fn listing(ip: &str, zone: &str) -> String {
    let reversed: Vec<&str> = ip.split('.').rev().collect();
    format!("--host-record={}.{zone},127.0.0.2", reversed.join("."))
}

fn connect(source: &str, server: &Server) -> SmtpConn {
    let source: IpAddr = source.parse().unwrap();
    SmtpConn::connect_from(source, server.delivery()).expect("connect")
}

#[test]
fn listed_sources_get_554_at_mail_and_are_banned_allow_lists_outweigh() {
    let mut records = dns::authoritative(&["bl.test", "wl.test"]);
    records.extend([
        listing(LISTED, "bl.test"),
        listing(ALLOWED, "bl.test"),
        listing(ALLOWED, "wl.test"),
        listing(TRUSTED, "bl.test"),
    ]);
    let dns = dns::start(&records);
    let server = Server::start(Opts {
        metrics: true,
        trusted: Some(vec!["127.0.0.1/32", "127.0.0.5/32"]),
        nameservers: vec![dns.addr],
        // The lists alone: SPF, DKIM, DMARC and ARC are off.
        checks: ["spf", "dkim", "dmarc", "arc"]
            .iter()
            .map(|c| format!("{c} = \"off\""))
            .chain(["dnsbl_threshold = 3".to_owned()])
            .collect(),
        extra_toml: vec!["[[checks.dnsbl]]\nzone = \"bl.test\"\nweight = 3\n\n\
             [[checks.dnsbl]]\nzone = \"wl.test\"\nweight = -5"
            .to_owned()],
        ..Opts::default()
    });

    // Listed: greeted and EHLO answered (the lookups run meanwhile), MAIL refused naming the
    // list, the connection closed.
    let mut c = connect(LISTED, &server);
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO bot.test").code, 250);
    let r = c.cmd("MAIL FROM:<spam@bot.test>");
    assert_eq!(r.status(), "554 5.7.1", "{r:?}");
    assert!(
        r.lines.join(" ").contains("bl.test"),
        "the list is named: {r:?}"
    );
    c.expect_closed(std::time::Duration::from_secs(10));
    // ... and banned: its next connection is refused at once.
    let mut again = connect(LISTED, &server);
    assert_eq!(again.reply().status(), "421 4.7.0");

    // Listed but allowed, unlisted, and trusted-and-listed: all send mail.
    for source in [ALLOWED, UNLISTED, TRUSTED] {
        let mut c = connect(source, &server);
        assert_eq!(c.reply().code, 220, "{source}");
        assert_eq!(c.cmd("EHLO client.test").code, 250, "{source}");
        let r = c.send_mail(
            "a@client.test",
            &["b@example.test"],
            b"Subject: dnsbl\r\n\r\nhello\r\n",
        );
        assert_eq!(r.code, 250, "{source}: {r:?}");
        assert_eq!(c.cmd("QUIT").code, 221);
    }

    // Hits per zone: LISTED and ALLOWED in bl.test, ALLOWED in wl.test; the trusted source
    // was never looked up.
    assert_eq!(
        server.metric("smtp_edge_dnsbl_hits_total{zone=\"bl.test\"}"),
        2.0
    );
    assert_eq!(
        server.metric("smtp_edge_dnsbl_hits_total{zone=\"wl.test\"}"),
        1.0
    );
}

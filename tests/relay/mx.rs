//! MX delivery (RFC 5321 §5) with records served by dnsmasq: preference order, the next MX
//! when the first refuses connections or answers 421 at the greeting, the implicit MX, null MX (RFC 7505), a domain that
//! does not exist, and IPv6.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use smtp_edge::relay::{RelayConfig, Route, Verdict, Via};

use crate::dns::{self, DnsServer};
use crate::dotted_content;
use crate::harness::{aiosmtpd, config, start, stored, verdicts};
use crate::receivers::{wait_listening, Receiver};

/// The relay's configuration for MX delivery: `dns` as the nameserver, MX hosts on `port`.
fn mx_config(dns: &DnsServer, port: u16) -> RelayConfig {
    let mut cfg = config();
    cfg.nameservers = vec![dns.addr];
    cfg.mx_port = port;
    cfg
}

#[test]
fn lowest_preference_first_and_the_next_mx_when_the_first_refuses() {
    // order.test: MX 10 is A (127.0.0.3), MX 20 is B (127.0.0.4): all mail goes to A.
    // fallback.test: MX 5 at 127.0.0.5 where nobody listens, MX 50 is B.
    let a = aiosmtpd("127.0.0.3", 0, &[]);
    let port = a.addr.port();
    let b = aiosmtpd("127.0.0.4", port, &[]);
    let dns = dns::start(&[
        "--mx-host=order.test,mx-b.order.test,20".into(),
        "--mx-host=order.test,mx-a.order.test,10".into(),
        "--host-record=mx-a.order.test,127.0.0.3".into(),
        "--host-record=mx-b.order.test,127.0.0.4".into(),
        "--mx-host=fallback.test,dead.fallback.test,5".into(),
        "--mx-host=fallback.test,mx-b.order.test,50".into(),
        "--host-record=dead.fallback.test,127.0.0.5".into(),
    ]);
    let mut relay = start(mx_config(&dns, port));
    let content = dotted_content();
    for i in 0..3 {
        let to = format!("user{i}@order.test");
        relay.submit(&Route::Mx, "sender@example.test", &[&to], &content);
    }
    relay.submit(
        &Route::Mx,
        "sender@example.test",
        &["x@fallback.test"],
        &content,
    );
    let results = relay.results(4);
    for r in &results {
        assert_eq!(verdicts(r), [Verdict::Delivered], "{r:#?}");
    }
    let peer = |i: usize| results[i].peer.clone().unwrap();
    assert_eq!(peer(0).host, "mx-a.order.test");
    assert_eq!(peer(0).addr, Some(a.addr));
    assert_eq!(peer(3).host, "mx-b.order.test", "{:#?}", results[3]);
    let at_a = stored(a.dir.path(), 3);
    for m in &at_a {
        assert_eq!(m.content, content);
        assert!(m.rcpts()[0].ends_with("@order.test"));
    }
    let at_b = stored(b.dir.path(), 1);
    assert_eq!(at_b[0].rcpts(), ["x@fallback.test"]);
    assert_eq!(at_b[0].content, content);
}

#[test]
fn implicit_mx_null_mx_and_missing_domains() {
    let a = aiosmtpd("127.0.0.6", 0, &[]);
    let mut records: Vec<String> = vec![
        // No MX: the domain's own address is its mail host (RFC 5321 §5.1). Authoritative
        // for the zone, dnsmasq answers the MX query with no records (NOERROR) rather than
        // refusing it for want of an upstream server.
        "--host-record=implicit.test,127.0.0.6".into(),
        // RFC 7505: MX 0 "." (preference 0, the root name).
        "--dns-rr=null.test,15,000000".into(),
        "--host-record=null.test,127.0.0.6".into(),
    ];
    // A zone without missing.nx.test: NXDOMAIN.
    records.extend(dns::authoritative(&[
        "implicit.test",
        "null.test",
        "nx.test",
    ]));
    let dns = dns::start(&records);
    let mut relay = start(mx_config(&dns, a.addr.port()));
    let content = b"Subject: t\r\n\r\nhello\r\n";
    relay.submit(&Route::Mx, "s@example.test", &["u@implicit.test"], content);
    relay.submit(
        &Route::Mx,
        "s@example.test",
        &["u@null.test", "v@null.test"],
        content,
    );
    relay.submit(
        &Route::Mx,
        "s@example.test",
        &["u@missing.nx.test"],
        content,
    );
    let r = relay.results(3);
    assert_eq!(verdicts(&r[0]), [Verdict::Delivered], "{:#?}", r[0]);
    assert_eq!(r[0].peer.as_ref().unwrap().host, "implicit.test");
    assert!(r.iter().all(|r| r.via == Via::Mx));
    assert_eq!(
        verdicts(&r[1]),
        [Verdict::Failed, Verdict::Failed],
        "{:#?}",
        r[1]
    );
    assert_eq!(r[1].outcomes[0].status, "5.1.10");
    assert!(r[1].outcomes[0].detail.contains("null MX"), "{:#?}", r[1]);
    assert_eq!(r[1].peer, None, "null MX: no connection at all");
    assert_eq!(verdicts(&r[2]), [Verdict::Failed], "{:#?}", r[2]);
    assert_eq!(r[2].outcomes[0].status, "5.1.2");
    // Only the implicit-MX message arrived.
    assert_eq!(stored(a.dir.path(), 1)[0].rcpts(), ["u@implicit.test"]);
}

#[test]
fn ipv6_mx_host() {
    let a = aiosmtpd("::1", 0, &[]);
    let dns = dns::start(&[
        "--mx-host=six.test,mx.six.test,10".into(),
        "--host-record=mx.six.test,::1".into(),
    ]);
    let mut relay = start(mx_config(&dns, a.addr.port()));
    relay.submit(
        &Route::Mx,
        "s@example.test",
        &["u@six.test"],
        b"Subject: v6\r\n\r\nhi\r\n",
    );
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Delivered], "{r:#?}");
    assert_eq!(r.peer.unwrap().addr, Some(a.addr));
    assert_eq!(
        stored(a.dir.path(), 1)[0].get("peer").split(' ').next(),
        Some("::1")
    );
}

#[test]
fn a_host_that_answers_421_at_the_greeting_sends_the_mail_to_the_next_mx() {
    // busy.test: MX 10 is Postfix's smtp-sink answering 421 to every connection, MX 20 is A.
    let a = aiosmtpd("127.0.0.8", 0, &[]);
    let port = a.addr.port();
    let sink_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sink_dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sink_addr = SocketAddr::from(([127, 0, 0, 7], port));
    let log = sink_dir.path().join("sink.log");
    let mut child = Command::new("smtp-sink")
        .args(["-u", "nobody", "-Q", "CONNECT"])
        .arg(sink_addr.to_string())
        .arg("10")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("smtp-sink must be installed (Debian postfix, see .ci/run)");
    wait_listening(sink_addr, &mut child, "smtp-sink", &log);
    let _sink = Receiver {
        child,
        addr: sink_addr,
        dir: sink_dir,
    };
    let dns = dns::start(&[
        "--mx-host=busy.test,busy.busy.test,10".into(),
        "--mx-host=busy.test,ok.busy.test,20".into(),
        "--host-record=busy.busy.test,127.0.0.7".into(),
        "--host-record=ok.busy.test,127.0.0.8".into(),
    ]);
    let mut relay = start(mx_config(&dns, port));
    let content = dotted_content();
    relay.submit(&Route::Mx, "s@example.test", &["u@busy.test"], &content);
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Delivered], "{r:#?}");
    assert_eq!(r.peer.unwrap().host, "ok.busy.test");
    assert_eq!(stored(a.dir.path(), 1)[0].content, content);
}

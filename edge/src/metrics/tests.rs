//! Metrics tests: the exposition is parsed back, never compared as a blob.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::*;

/// A parsed exposition: sample (name with labels, as written) → value, plus the TYPE of each
/// family.
struct Exposition {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
    helps: HashMap<String, String>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition {
        samples: HashMap::new(),
        types: HashMap::new(),
        helps: HashMap::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                e.types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            e.helps.insert(name.into(), help.into());
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (sample, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            assert!(
                e.samples.insert(sample.into(), value).is_none(),
                "sample twice: {sample}"
            );
        }
    }
    e
}

/// One listener, named `mx`.
fn mx() -> Vec<String> {
    vec!["mx".to_owned()]
}

impl Exposition {
    fn get(&self, sample: &str) -> f64 {
        *self
            .samples
            .get(sample)
            .unwrap_or_else(|| panic!("no sample {sample}"))
    }
}

#[test]
fn render_sums_workers() {
    let m = Metrics::new(3, mx());
    m.worker(0).connection_accepted(0);
    m.worker(1).connection_accepted(0);
    m.worker(2).connection_accepted(0);
    m.worker(1).connection_closed(0);
    m.worker(0).message_accepted();
    m.worker(2).message_accepted();
    m.worker(1).recipient_rejected(RecipientReason::RelayDenied);
    m.worker(2).recipient_rejected(RecipientReason::RelayDenied);
    m.worker(2).message_rejected(RejectReason::BareNewline);
    m.worker(0).bytes_received(1000);
    m.worker(2).bytes_received(24);
    m.delivery_attempt(crate::relay::Via::Maildir, crate::relay::Verdict::Delivered);
    m.delivery_attempt(crate::relay::Via::Mx, crate::relay::Verdict::Delivered);
    m.delivery_attempt(crate::relay::Via::Mx, crate::relay::Verdict::Deferred);
    m.set_queue_size(3, 1);

    let e = parse(&m.render());
    assert_eq!(
        e.get("smtp_edge_connections_accepted_total{listener=\"mx\"}"),
        3.0
    );
    assert_eq!(e.get("smtp_edge_connections_active{listener=\"mx\"}"), 2.0);
    assert_eq!(e.get("smtp_edge_messages_accepted_total"), 2.0);
    assert_eq!(
        e.get("smtp_edge_recipients_rejected_total{reason=\"relay_denied\"}"),
        2.0
    );
    assert_eq!(
        e.get("smtp_edge_messages_rejected_total{reason=\"bare_newline\"}"),
        1.0
    );
    assert_eq!(e.get("smtp_edge_bytes_received_total"), 1024.0);
    assert_eq!(e.get("smtp_edge_messages_delivered_total"), 2.0);
    assert_eq!(
        e.get("smtp_edge_delivery_attempts_total{via=\"mx\",result=\"deferred\"}"),
        1.0
    );
    assert_eq!(
        e.get("smtp_edge_delivery_attempts_total{via=\"lmtp\",result=\"bounced\"}"),
        0.0
    );
    assert_eq!(e.get("smtp_edge_queue_messages{state=\"active\"}"), 3.0);
    assert_eq!(e.get("smtp_edge_queue_messages{state=\"deferred\"}"), 1.0);
}

#[test]
fn connection_counters_are_kept_per_listener() {
    let m = Metrics::new(2, vec!["mx".to_owned(), "127.0.0.1:587".to_owned()]);
    m.worker(0).connection_accepted(0);
    m.worker(1).connection_accepted(0);
    m.worker(1).connection_accepted(1);
    m.worker(1).connection_closed(0);
    m.worker(0).banned_refused(1);
    m.worker(1).connection_refused(0, RefuseReason::PerIp);
    // An index past the listeners is a caller bug: not counted, and no panic.
    m.worker(0).connection_accepted(2);
    let e = parse(&m.render());
    let sub = "listener=\"127.0.0.1:587\"";
    assert_eq!(
        e.get("smtp_edge_connections_accepted_total{listener=\"mx\"}"),
        2.0
    );
    assert_eq!(
        e.get(&format!("smtp_edge_connections_accepted_total{{{sub}}}")),
        1.0
    );
    assert_eq!(e.get("smtp_edge_connections_active{listener=\"mx\"}"), 1.0);
    assert_eq!(
        e.get(&format!("smtp_edge_connections_active{{{sub}}}")),
        1.0
    );
    assert_eq!(
        e.get("smtp_edge_banned_connections_total{listener=\"mx\"}"),
        0.0
    );
    assert_eq!(
        e.get(&format!("smtp_edge_banned_connections_total{{{sub}}}")),
        1.0
    );
    assert_eq!(
        e.get("smtp_edge_connections_refused_total{listener=\"mx\",reason=\"per_ip\"}"),
        1.0
    );
    assert_eq!(
        e.get(&format!(
            "smtp_edge_connections_refused_total{{{sub},reason=\"max_connections\"}}"
        )),
        0.0
    );
    let accepted = e
        .samples
        .keys()
        .filter(|k| k.starts_with("smtp_edge_connections_accepted_total"))
        .count();
    assert_eq!(accepted, 2, "one series per listener");
}

#[test]
fn listener_labels_are_escaped() {
    let m = Metrics::new(1, vec!["a\"b\\c\nd".to_owned()]);
    let text = m.render();
    assert!(
        text.contains("smtp_edge_connections_accepted_total{listener=\"a\\\"b\\\\c\\nd\"} 0\n"),
        "{text}"
    );
}

#[test]
fn tls_handshakes_by_version() {
    let m = Metrics::new(2, mx());
    m.worker(0).tls_handshake("TLSv1.3");
    m.worker(1).tls_handshake("TLSv1.3");
    m.worker(1).tls_handshake("TLSv1.2");
    m.worker(1).tls_handshake("SSLv3");
    m.worker(0).tls_handshake_failed();
    let e = parse(&m.render());
    assert_eq!(
        e.get("smtp_edge_tls_handshakes_total{version=\"TLSv1.3\"}"),
        2.0
    );
    assert_eq!(
        e.get("smtp_edge_tls_handshakes_total{version=\"TLSv1.2\"}"),
        1.0
    );
    assert_eq!(e.get("smtp_edge_tls_handshake_failures_total"), 1.0);
    assert_eq!(e.types["smtp_edge_tls_handshakes_total"], "counter");
}

#[test]
fn every_reason_is_exported_even_at_zero() {
    let e = parse(&Metrics::new(1, mx()).render());
    for reason in RejectReason::ALL {
        let sample = format!(
            "smtp_edge_messages_rejected_total{{reason=\"{}\"}}",
            reason.label()
        );
        assert_eq!(e.get(&sample), 0.0);
    }
    for reason in RecipientReason::ALL {
        let sample = format!(
            "smtp_edge_recipients_rejected_total{{reason=\"{}\"}}",
            reason.label()
        );
        assert_eq!(e.get(&sample), 0.0);
    }
    let count = |family: &str| e.samples.keys().filter(|k| k.starts_with(family)).count();
    assert_eq!(
        count("smtp_edge_messages_rejected_total"),
        RejectReason::ALL.len()
    );
    assert_eq!(
        count("smtp_edge_recipients_rejected_total"),
        RecipientReason::ALL.len()
    );
}

#[test]
fn checks_count_by_check_and_result() {
    use crate::checks::{Check, Verdict};
    let m = Metrics::new(2, vec!["smtp".to_owned()]);
    m.worker(0).check(Check::Spf, Verdict::Fail);
    m.worker(1).check(Check::Spf, Verdict::Fail);
    m.worker(1).check(Check::Dmarc, Verdict::Pass);
    let e = parse(&m.render());
    assert_eq!(
        e.get("smtp_edge_checks_total{check=\"spf\",result=\"fail\"}"),
        2.0
    );
    assert_eq!(
        e.get("smtp_edge_checks_total{check=\"dmarc\",result=\"pass\"}"),
        1.0
    );
    assert_eq!(
        e.get("smtp_edge_checks_total{check=\"arc\",result=\"permerror\"}"),
        0.0
    );
    let series = e
        .samples
        .keys()
        .filter(|k| k.starts_with("smtp_edge_checks_total"))
        .count();
    assert_eq!(series, Check::ALL.len() * Verdict::ALL.len());
}

#[test]
fn every_family_has_help_and_type() {
    let e = parse(&Metrics::new(1, mx()).render());
    let expected = [
        ("smtp_edge_connections_accepted_total", "counter"),
        ("smtp_edge_connections_active", "gauge"),
        ("smtp_edge_messages_accepted_total", "counter"),
        ("smtp_edge_messages_rejected_total", "counter"),
        ("smtp_edge_recipients_rejected_total", "counter"),
        ("smtp_edge_tls_handshakes_total", "counter"),
        ("smtp_edge_auth_total", "counter"),
        ("smtp_edge_banned_connections_total", "counter"),
        ("smtp_edge_connections_refused_total", "counter"),
        ("smtp_edge_tls_handshake_failures_total", "counter"),
        ("smtp_edge_checks_total", "counter"),
        ("smtp_edge_bytes_received_total", "counter"),
        ("smtp_edge_spool_fsync_seconds", "histogram"),
        ("smtp_edge_messages_delivered_total", "counter"),
        ("smtp_edge_delivery_attempts_total", "counter"),
        ("smtp_edge_queue_messages", "gauge"),
        ("smtp_edge_shield_packets_total", "counter"),
        ("smtp_edge_shield_bans_active", "gauge"),
        ("smtp_edge_build_info", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_start_time_seconds", "gauge"),
    ];
    assert_eq!(e.types.len(), expected.len());
    for (name, kind) in expected {
        assert_eq!(e.types.get(name).map(String::as_str), Some(kind), "{name}");
        assert!(e.helps.contains_key(name), "{name} has no HELP");
    }
    // Every sample belongs to a declared family.
    for sample in e.samples.keys() {
        let name = sample.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| e.types.contains_key(*f)))
            .unwrap_or(name);
        assert!(e.types.contains_key(family), "{sample} has no TYPE");
    }
}

#[test]
fn delivery_attempts_by_via_and_result_all_exported() {
    use crate::relay::{Verdict, Via};
    let m = Metrics::new(1, mx());
    m.delivery_attempt(Via::Mx, Verdict::Delivered);
    m.delivery_attempt(Via::Mx, Verdict::Delivered);
    m.delivery_attempt(Via::Lmtp, Verdict::Deferred);
    m.delivery_attempt(Via::Smtp, Verdict::Failed);
    let e = parse(&m.render());
    let get = |via: &str, result: &str| {
        e.get(&format!(
            "smtp_edge_delivery_attempts_total{{via=\"{via}\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(get("mx", "sent"), 2.0);
    assert_eq!(get("lmtp", "deferred"), 1.0);
    assert_eq!(get("smtp", "bounced"), 1.0);
    assert_eq!(get("maildir", "sent"), 0.0);
    let series = e
        .samples
        .keys()
        .filter(|k| k.starts_with("smtp_edge_delivery_attempts_total"))
        .count();
    assert_eq!(series, 12);
}

const SHIELD_ACTIONS: [&str; 4] = [
    "passed",
    "dropped_rate",
    "dropped_banned",
    "dropped_malformed",
];

#[test]
fn shield_series_are_zero_without_a_source() {
    let m = Metrics::new(1, mx());
    assert_eq!(m.shield_stats(), ShieldStats::default());
    let e = parse(&m.render());
    for action in SHIELD_ACTIONS {
        assert_eq!(
            e.get(&format!(
                "smtp_edge_shield_packets_total{{action=\"{action}\"}}"
            )),
            0.0
        );
    }
    assert_eq!(e.get("smtp_edge_shield_bans_active"), 0.0);
    let shield = e
        .samples
        .keys()
        .filter(|k| k.starts_with("smtp_edge_shield_"))
        .count();
    assert_eq!(shield, SHIELD_ACTIONS.len() + 1, "no other shield series");
}

#[test]
fn shield_source_is_read_on_every_scrape_and_set_once() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let m = Metrics::new(2, mx());
    let scrapes = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&scrapes);
    assert!(m.set_shield_source(Box::new(move || {
        let n = seen.fetch_add(1, Relaxed) + 1;
        ShieldStats {
            passed: 100 * n,
            dropped_rate: 7,
            dropped_banned: u64::MAX,
            dropped_malformed: 3,
            bans_active: 2,
        }
    })));
    assert!(
        !m.set_shield_source(Box::new(ShieldStats::default)),
        "the first source stays"
    );
    let e = parse(&m.render());
    assert_eq!(
        e.get("smtp_edge_shield_packets_total{action=\"passed\"}"),
        100.0
    );
    assert_eq!(
        e.get("smtp_edge_shield_packets_total{action=\"dropped_rate\"}"),
        7.0
    );
    assert_eq!(
        e.get("smtp_edge_shield_packets_total{action=\"dropped_banned\"}"),
        u64::MAX as f64
    );
    assert_eq!(
        e.get("smtp_edge_shield_packets_total{action=\"dropped_malformed\"}"),
        3.0
    );
    assert_eq!(e.get("smtp_edge_shield_bans_active"), 2.0);
    let e = parse(&m.render());
    assert_eq!(
        e.get("smtp_edge_shield_packets_total{action=\"passed\"}"),
        200.0,
        "read again on the second scrape"
    );
    assert_eq!(scrapes.load(Relaxed), 2, "once per scrape");
}

#[test]
fn connections_active_never_goes_negative() {
    let m = Metrics::new(1, mx());
    // A caller bug (close without accept) must not render as 2^64 - 1.
    m.worker(0).connection_closed(0);
    assert_eq!(
        parse(&m.render()).get("smtp_edge_connections_active{listener=\"mx\"}"),
        0.0
    );
}

#[test]
fn fsync_histogram_buckets_are_cumulative() {
    let m = Metrics::new(2, mx());
    let observed = [
        Duration::from_micros(10),  // ≤ 50µs
        Duration::from_micros(50),  // ≤ 50µs: bounds are inclusive
        Duration::from_micros(51),  // ≤ 100µs
        Duration::from_millis(3),   // ≤ 5ms
        Duration::from_millis(700), // ≤ 1s
        Duration::from_secs(2),     // +Inf only
    ];
    for (i, d) in observed.iter().enumerate() {
        m.worker(i % 2).observe_fsync(*d);
    }
    let e = parse(&m.render());
    let bucket = |le: &str| {
        e.get(&format!(
            "smtp_edge_spool_fsync_seconds_bucket{{le=\"{le}\"}}"
        ))
    };
    assert_eq!(bucket("0.00005"), 2.0);
    assert_eq!(bucket("0.0001"), 3.0);
    assert_eq!(bucket("0.0025"), 3.0);
    assert_eq!(bucket("0.005"), 4.0);
    assert_eq!(bucket("0.5"), 4.0);
    assert_eq!(bucket("1"), 5.0);
    assert_eq!(bucket("+Inf"), 6.0);
    assert_eq!(e.get("smtp_edge_spool_fsync_seconds_count"), 6.0);
    let sum: f64 = observed.iter().map(Duration::as_secs_f64).sum();
    assert!((e.get("smtp_edge_spool_fsync_seconds_sum") - sum).abs() < 1e-9);

    // Every bound is present, in order, and the counts never decrease.
    let mut counts = Vec::new();
    for le in FSYNC_BUCKETS
        .iter()
        .map(f64::to_string)
        .chain(["+Inf".into()])
    {
        counts.push(bucket(&le));
    }
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
}

/// Sends `request` and reads the whole response (the server always closes).
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    // A hung server fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (code, head.to_owned(), body.to_owned())
}

#[test]
fn http_serves_metrics_and_refuses_the_rest() {
    let m = Metrics::new(1, mx());
    m.worker(0).connection_accepted(0);
    let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    assert_ne!(addr.port(), 0);

    let (code, head, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200);
    assert!(
        head.lines()
            .any(|l| l
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
        "{head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
    assert_eq!(
        parse(&body).get("smtp_edge_connections_accepted_total{listener=\"mx\"}"),
        1.0
    );

    // The server reads the counters at each scrape.
    m.worker(0).connection_accepted(0);
    let (_, _, body) = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(
        parse(&body).get("smtp_edge_connections_accepted_total{listener=\"mx\"}"),
        2.0
    );

    let (code, _, body) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((code, body.as_str()), (200, ""));

    let cases: &[(&[u8], u16)] = &[
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /metrics HTTP/1.1\r\n\r\n", 400), // no Host (RFC 9112 §3.2)
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET  /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /metrics SMTP/1.0\r\n\r\n", 400),
        (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", 400),
    ];
    for (request, expected) in cases {
        let (code, _, _) = exchange(addr, request);
        assert_eq!(code, *expected, "{:?}", String::from_utf8_lossy(request));
    }
}

#[test]
fn http_caps_the_request_head() {
    let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), Metrics::new(1, mx())).unwrap();
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    request.resize(MAX_REQUEST_HEAD + 100, b'a');
    let (code, _, _) = exchange(addr, &request);
    assert_eq!(code, 431);
    // The server is still serving.
    let (code, _, _) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200);
}

#[test]
fn http_client_that_closes_early_gets_400_and_does_not_wedge() {
    let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), Metrics::new(1, mx())).unwrap();
    // Half a request, then the client stops sending.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /metr").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
    let (code, _, _) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200);
}

/// Whether the server still holds `stream` open: nothing to read yet, and no end of stream.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!(
        (&*stream).read(&mut byte),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).unwrap();
    open
}

#[test]
fn http_scrape_is_answered_while_idle_connections_hold_the_port() {
    let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), Metrics::new(1, mx())).unwrap();
    // Clients that connect and say nothing: each may hold its connection for the deadline.
    let idle: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (code, _, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200);
    assert!(body.contains("smtp_edge_build_info"), "{body}");
    // Answered while every idle client still held its connection: not after their deadlines
    // ran out one by one.
    for (i, stream) in idle.iter().enumerate() {
        assert!(
            still_open(stream),
            "idle connection {i} closed before the scrape was answered"
        );
    }
}

#[test]
fn http_over_the_connection_cap_gets_503_at_once() {
    let (addr, _thread) = serve("127.0.0.1:0".parse().unwrap(), Metrics::new(1, mx())).unwrap();
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Accepted in order after the ones above, while they still hold every place.
    let mut over = TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    over.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert!(response.contains("\r\nRetry-After: 1\r\n"), "{response}");
    assert!(
        still_open(&idle[0]),
        "the cap was reached by connections already closed"
    );
    // Once they go, scrapes are served again (each idle client's thread ends on its EOF).
    drop(idle);
    let scrape = || -> Option<u16> {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        // A 503 may arrive as a reset (the request was left unread): not served either way.
        stream.read_to_string(&mut response).ok()?;
        response.split(' ').nth(1)?.parse().ok()
    };
    let deadline = crate::clock::now() + Duration::from_secs(30);
    while scrape() != Some(200) {
        assert!(
            crate::clock::now() < deadline,
            "no scrape served after the idle clients left"
        );
        std::thread::yield_now();
    }
}

#[test]
fn build_info_names_the_version_and_commit() {
    let e = parse(&Metrics::new(1, mx()).render());
    let sample = format!(
        "smtp_edge_build_info{{version=\"{}\",commit=\"{}\"}}",
        crate::build_info::VERSION,
        crate::build_info::COMMIT
    );
    assert_eq!(e.get(&sample), 1.0);
    assert_eq!(e.types["smtp_edge_build_info"], "gauge");
    assert!(!crate::build_info::COMMIT.is_empty());
}

#[test]
fn process_series_come_from_this_process() {
    let e = parse(&Metrics::new(1, mx()).render());
    assert!(e.get("process_open_fds") >= 3.0);
    assert!(e.get("process_resident_memory_bytes") > f64::from(1u32 << 20));
    assert!(e.get("process_start_time_seconds") > 1.6e9);
    assert!(e.get("process_cpu_seconds_total") >= 0.0);
    assert_eq!(e.types["process_cpu_seconds_total"], "counter");
    assert_eq!(e.types["process_open_fds"], "gauge");
}

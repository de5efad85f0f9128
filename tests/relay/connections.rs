//! Connections to a next hop: kept for more mail for `relay.idle_secs`, then closed; and
//! `relay.connect_timeout_secs` bounding a connect that gets no answer.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use smtp_edge::relay::{Host, NextHop, Route, Verdict};
use socket2::{Domain, Socket, Type};

use crate::harness::{aiosmtpd, config, connections, open_connections, start, verdicts};
use crate::receivers::DEADLINE;

fn smtp(addr: SocketAddr) -> Route {
    Route::Smtp(NextHop {
        host: Host::Ip(addr.ip()),
        port: addr.port(),
    })
}

const BODY: &[u8] = b"Subject: reuse\r\n\r\nbody\r\n";

/// Polls the receiver's count of open connections until it is `want` (with a deadline).
fn wait_open(dir: &std::path::Path, want: u32) -> u32 {
    let until = Instant::now() + DEADLINE;
    loop {
        let open = open_connections(dir);
        if open == want || Instant::now() >= until {
            return open;
        }
        // The receiver rewrites its counts file on every open and close.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_connection_carries_mail_that_comes_within_idle_secs_then_quits() {
    let rx = aiosmtpd("127.0.0.1", 0, &[]);
    let mut cfg = config();
    // Long enough that the second submission, made as soon as the first result is in, always
    // finds the connection waiting, however loaded the machine.
    cfg.idle = Duration::from_secs(10);
    let mut relay = start(cfg);
    let route = smtp(rx.addr);
    relay.submit(&route, "s@example.test", &["one@remote.test"], BODY);
    assert_eq!(verdicts(&relay.result()), [Verdict::Delivered]);
    // Nothing waits now: the connection stays open for what may come.
    assert_eq!(open_connections(rx.dir.path()), 1, "kept open while idle");
    relay.submit(&route, "s@example.test", &["two@remote.test"], BODY);
    assert_eq!(verdicts(&relay.result()), [Verdict::Delivered]);
    assert_eq!(
        connections(rx.dir.path()),
        (1, 1),
        "the second message took the idle connection"
    );
    // Nothing more comes: after idle_secs the relay ends the session and the receiver sees
    // the connection close.
    assert_eq!(wait_open(rx.dir.path(), 0), 0, "closed after idle_secs");
}

#[test]
fn with_idle_secs_zero_a_connection_quits_as_soon_as_nothing_waits() {
    let rx = aiosmtpd("127.0.0.1", 0, &[]);
    let mut cfg = config();
    cfg.idle = Duration::ZERO;
    let mut relay = start(cfg);
    let route = smtp(rx.addr);
    relay.submit(&route, "s@example.test", &["one@remote.test"], BODY);
    assert_eq!(verdicts(&relay.result()), [Verdict::Delivered]);
    relay.submit(&route, "s@example.test", &["two@remote.test"], BODY);
    assert_eq!(verdicts(&relay.result()), [Verdict::Delivered]);
    assert_eq!(
        connections(rx.dir.path()),
        (2, 1),
        "one connection per message, one at a time"
    );
    assert_eq!(wait_open(rx.dir.path(), 0), 0);
}

#[test]
fn a_host_that_never_answers_the_connect_is_deferred_after_connect_timeout_secs() {
    // A listener with a backlog of 0 that never accepts: once its accept queue is full the
    // kernel drops further SYNs, so a connect to it gets no answer at all.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let silent =
        (0..8).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => {
                    fillers.push(s);
                    false
                }
                Err(e) => e.kind() == std::io::ErrorKind::TimedOut,
            },
        );
    assert!(
        silent,
        "the full listener should leave a connect unanswered"
    );

    let mut cfg = config();
    cfg.connect_timeout = Duration::from_secs(1);
    let mut relay = start(cfg);
    let started = Instant::now();
    relay.submit(&smtp(addr), "s@example.test", &["u@remote.test"], BODY);
    let r = relay.result();
    assert_eq!(verdicts(&r), [Verdict::Deferred], "{r:#?}");
    assert_eq!(r.outcomes[0].status, "4.4.1");
    let detail = &r.outcomes[0].detail;
    assert!(
        detail.contains(&addr.port().to_string()) && detail.contains("timed out"),
        "{detail}"
    );
    // The configured second, not the default 30: the deferral comes long before that.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "deferred after {:?}",
        started.elapsed()
    );
    drop(fillers);
}

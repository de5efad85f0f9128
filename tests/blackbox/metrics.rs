//! The Prometheus endpoint reflects what happened.

use std::io::Read;
use std::net::TcpStream;

use crate::harness::{
    metric_sum, metric_value, wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE,
    REPLY_DEADLINE,
};
use crate::maildir::{new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

/// The delivery listener's series: it is named `mx` in these tests.
const ACCEPTED_CONNS: &str = "smtp_edge_connections_accepted_total{listener=\"mx\"}";
const ACTIVE_CONNS: &str = "smtp_edge_connections_active{listener=\"mx\"}";
const ACCEPTED_MSGS: &str = "smtp_edge_messages_accepted_total";
const DELIVERED_MSGS: &str = "smtp_edge_messages_delivered_total";

/// Waits until `cond` holds on a fresh scrape; panics with the last scrape otherwise.
fn wait_metrics(server: &Server, what: &str, cond: impl Fn(&str) -> Option<bool>) {
    let ok = wait_until(REPLY_DEADLINE, || {
        cond(&server.metrics()).unwrap_or(false).then_some(())
    });
    assert!(ok.is_some(), "{what}; metrics:\n{}", server.metrics());
}

#[test]
fn delivered_message_moves_accepted_and_connection_counters() {
    let server = Server::start(Opts {
        listener_names: vec!["mx"],
        ..Opts::default()
    });
    let text = server.metrics();
    for name in [ACCEPTED_CONNS, ACCEPTED_MSGS] {
        assert!(
            metric_value(&text, name).is_some(),
            "{name} not exposed before any traffic:\n{text}"
        );
    }
    let conns_before = metric_value(&text, ACCEPTED_CONNS).unwrap_or(0.0);
    let msgs_before = metric_value(&text, ACCEPTED_MSGS).unwrap_or(0.0);
    let active_before = metric_value(&text, ACTIVE_CONNS).unwrap_or(0.0);

    let rcpt = "user@example.test";
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    wait_metrics(&server, "open session not counted", |t| {
        Some(
            metric_value(t, ACCEPTED_CONNS)? >= conns_before + 1.0
                && metric_value(t, ACTIVE_CONNS)? >= active_before + 1.0,
        )
    });
    let msg = sample_message("metrics", "sender@remote.test", rcpt);
    let r = c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
    c.expect_closed(REPLY_DEADLINE);

    wait_metrics(&server, "accepted message not counted", |t| {
        Some(metric_value(t, ACCEPTED_MSGS)? >= msgs_before + 1.0)
    });
    wait_metrics(&server, "closed session still counted as active", |t| {
        Some(metric_value(t, ACTIVE_CONNS)? <= active_before)
    });
    wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    wait_metrics(&server, "delivered message not counted", |t| {
        Some(metric_value(t, DELIVERED_MSGS)? >= 1.0)
    });
}

/// Whether the server still holds `stream` open: nothing to read, and no end of stream.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let open = matches!(
        (&*stream).read(&mut byte),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    );
    stream.set_nonblocking(false).expect("blocking");
    open
}

#[test]
fn scrape_succeeds_while_idle_connections_hold_the_metrics_port() {
    let server = Server::start(Opts::default());
    let addr = server.metrics_addr.expect("metrics address");
    // Clients that connect and send nothing; before, each held the only serving thread for its
    // whole deadline, so five delayed a scrape by ten seconds.
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let text = server.metrics();
    assert!(
        metric_value(&text, ACCEPTED_MSGS).is_some(),
        "scrape incomplete:\n{text}"
    );
    for (i, stream) in idle.iter().enumerate() {
        assert!(
            still_open(stream),
            "idle connection {i} was closed before the scrape was answered: it waited for them"
        );
    }
}

#[test]
fn build_info_and_process_metrics_describe_the_running_binary() {
    let server = Server::start(Opts::default());
    let text = server.metrics();
    let info = text
        .lines()
        .find(|l| l.starts_with("smtp_edge_build_info{"))
        .unwrap_or_else(|| panic!("no build_info:\n{text}"));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        info.starts_with(&format!(
            "smtp_edge_build_info{{version=\"{version}\",commit=\""
        )) && info.ends_with("\"} 1"),
        "{info}"
    );
    let commit = info
        .split("commit=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default();
    // Built from this checkout: the commit is HEAD's (or `unknown` where git is not at hand).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    assert_eq!(commit, head.as_deref().unwrap_or("unknown"), "{info}");

    // The server's own figures: its listeners, spool lock and control socket are open files,
    // and its start is recent.
    let fds = metric_value(&text, "process_open_fds").expect("process_open_fds");
    assert!(fds >= 6.0, "process_open_fds {fds}");
    let rss = metric_value(&text, "process_resident_memory_bytes").expect("rss");
    assert!(rss > 1e6, "process_resident_memory_bytes {rss}");
    let started = metric_value(&text, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        (now - 600.0..=now + 2.0).contains(&started),
        "process_start_time_seconds {started}, now {now}"
    );
    assert!(metric_value(&text, "process_cpu_seconds_total").is_some());
}

#[test]
fn connections_are_counted_per_listener_and_refused_recipients_apart_from_messages() {
    let server = Server::start(Opts::with_submission());
    // Unnamed listeners are labelled with the address they are bound to.
    let series =
        |family: &str, addr: std::net::SocketAddr| format!("{family}{{listener=\"{addr}\"}}");
    let delivery = series("smtp_edge_connections_accepted_total", server.delivery());
    let submission = series("smtp_edge_connections_accepted_total", server.submission());
    let text = server.metrics();
    assert_eq!(metric_value(&text, &delivery), Some(0.0), "{text}");
    assert_eq!(metric_value(&text, &submission), Some(0.0), "{text}");

    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@elsewhere.test>").status(), "550 5.7.1");
    assert_eq!(c.cmd("QUIT").code, 221);
    c.expect_closed(REPLY_DEADLINE);

    wait_metrics(&server, "refused recipient not counted", |t| {
        Some(
            metric_value(
                t,
                "smtp_edge_recipients_rejected_total{reason=\"relay_denied\"}",
            )? == 1.0,
        )
    });
    let text = server.metrics();
    assert_eq!(metric_value(&text, &delivery), Some(1.0), "{text}");
    assert_eq!(metric_value(&text, &submission), Some(0.0), "{text}");
    assert_eq!(
        metric_sum(&text, "smtp_edge_messages_rejected_total", ""),
        0.0,
        "a refused recipient is not a refused message:\n{text}"
    );
}

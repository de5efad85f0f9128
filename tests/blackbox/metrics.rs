//! The Prometheus endpoint reflects what happened.

use crate::harness::{
    metric_value, wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE,
};
use crate::maildir::{new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

const ACCEPTED_CONNS: &str = "smtp_edge_connections_accepted_total";
const ACTIVE_CONNS: &str = "smtp_edge_connections_active";
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
    let server = Server::start(Opts::default());
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

//! Real clients a user would point at the server: Python's smtplib (plain and pipelined), swaks
//! and curl. Each message must land in Maildir byte for byte as the client meant it.

use crate::client_runs::{curl, describe, smtplib, swaks, CLIENT_DEADLINE};
use crate::harness::{client_script, run_client, Opts, Server};
use crate::maildir::{assert_one_delivered, sample_message};

const FROM: &str = "sender@remote.test";

#[test]
fn smtplib_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let rcpt = "alice@example.test";
    let msg = sample_message("smtplib-plain", FROM, rcpt);
    let out = smtplib(&[], addr.port(), &[FROM, rcpt], &msg);
    assert!(
        out.status.success(),
        "smtplib send failed: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("data 250 2.0.0 Ok: queued as ")),
        "end-of-data reply is not `250 2.0.0 Ok: queued as <QID>`: {stdout}"
    );
    assert_one_delivered(&server.maildir, FROM, rcpt, &msg);
}

#[test]
fn smtplib_pipelined_transaction_gets_one_reply_per_command_in_order() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let (r1, r2) = ("bob@example.test", "carol@example.test");
    let msg = sample_message("smtplib-pipelined", FROM, r1);
    let out = run_client(
        "python3",
        &[
            &client_script("pipelining.py"),
            "127.0.0.1",
            &addr.port().to_string(),
            FROM,
            r1,
            r2,
        ],
        &msg,
        CLIENT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "pipelined send failed: {}",
        describe(&out)
    );
    for rcpt in [r1, r2] {
        assert_one_delivered(&server.maildir, FROM, rcpt, &msg);
    }
}

#[test]
fn swaks_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let rcpt = "user@example.test";
    let msg = sample_message("swaks", FROM, rcpt);
    let out = swaks(server.dir.path(), addr.port(), &[], FROM, rcpt, &msg);
    assert!(out.status.success(), "swaks failed: {}", describe(&out));
    assert_one_delivered(&server.maildir, FROM, rcpt, &msg);
}

#[test]
fn curl_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let rcpt = "dave@example.test";
    let msg = sample_message("curl", FROM, rcpt);
    let url = format!("smtp://127.0.0.1:{}/client.test", addr.port());
    let out = curl(server.dir.path(), &url, &[], FROM, rcpt, &msg);
    assert!(out.status.success(), "curl failed: {}", describe(&out));
    assert_one_delivered(&server.maildir, FROM, rcpt, &msg);
}

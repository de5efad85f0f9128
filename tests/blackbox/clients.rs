//! Real clients a user would point at the server: Python's smtplib (plain and pipelined), swaks
//! and curl. Each message must land in Maildir byte for byte as the client meant it.

use std::fs;
use std::time::Duration;

use crate::harness::{
    client_script, run_client, wait_for_maildir, Opts, Server, DELIVERY_DEADLINE,
};
use crate::maildir::{assert_delivered, new_dir, sample_message};

const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
const FROM: &str = "sender@remote.test";

fn describe(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn smtplib_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let rcpt = "alice@example.test";
    let msg = sample_message("smtplib-plain", FROM, rcpt);
    let out = run_client(
        "python3",
        &[
            &client_script("smtplib_send.py"),
            "127.0.0.1",
            &addr.port().to_string(),
            FROM,
            rcpt,
        ],
        &msg,
        CLIENT_DEADLINE,
    );
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
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_delivered(&files[0], FROM, rcpt, &msg);
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
        let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
        assert_eq!(files.len(), 1, "{rcpt}: {files:?}");
        assert_delivered(&files[0], FROM, rcpt, &msg);
    }
}

#[test]
fn swaks_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let rcpt = "user@example.test";
    let msg = sample_message("swaks", FROM, rcpt);
    // swaks appends CRLF to the data it is given, so it gets the message minus its last CRLF.
    let file = server.dir.path().join("swaks.eml");
    fs::write(&file, &msg[..msg.len() - 2]).unwrap();
    let out = run_client(
        "swaks",
        &[
            "--server",
            &format!("127.0.0.1:{}", addr.port()),
            "--helo",
            "client.test",
            "--from",
            FROM,
            "--to",
            rcpt,
            "--data",
            &format!("@{}", file.display()),
        ],
        b"",
        CLIENT_DEADLINE,
    );
    assert!(out.status.success(), "swaks failed: {}", describe(&out));
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_delivered(&files[0], FROM, rcpt, &msg);
}

#[test]
fn curl_message_arrives_byte_exact() {
    let server = Server::start(Opts::default());
    let addr = server.delivery();
    let rcpt = "dave@example.test";
    let msg = sample_message("curl", FROM, rcpt);
    let file = server.dir.path().join("curl.eml");
    fs::write(&file, &msg).unwrap();
    let out = run_client(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            &format!("smtp://127.0.0.1:{}/client.test", addr.port()),
            "--mail-from",
            FROM,
            "--mail-rcpt",
            rcpt,
            "--upload-file",
            &file.display().to_string(),
        ],
        b"",
        CLIENT_DEADLINE,
    );
    assert!(out.status.success(), "curl failed: {}", describe(&out));
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_delivered(&files[0], FROM, rcpt, &msg);
}

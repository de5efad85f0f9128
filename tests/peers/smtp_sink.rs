//! Postfix's `smtp-sink`: PIPELINING (or not, with `-p`), 8BITMIME, AUTH; it dumps each
//! message, after its own `X-*-Args:` and `Received:` headers, with LF line ends and a blank
//! line after the message.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use smtp_edge::protocol::client::{ClientConfig, ClientCredentials, Dialect, SessionEnd};
use smtp_edge::protocol::Secret;

use crate::dotted_content;
use crate::driver::{deliver, outgoing};
use crate::receivers::{free_port, lf, strip_trace, wait_files, wait_listening, Receiver};

fn start(extra: &[&str]) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = dir.path().join("sink.log");
    let mut cmd = Command::new("smtp-sink");
    // As root, smtp-sink must drop privileges (-u) before it writes the dumps; the directory is
    // open to `nobody` for that.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("-u").arg("nobody");
    }
    let mut child = cmd
        .args(extra)
        .arg("-d")
        .arg(dir.path().join("msg."))
        .arg(addr.to_string())
        .arg("10")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("smtp-sink must be installed (Debian postfix, `cargo xtask test` installs it)");
    wait_listening(addr, &mut child, "smtp-sink", &log);
    Receiver { child, addr, dir }
}

fn dumps(rx: &Receiver, count: usize) -> Vec<Vec<u8>> {
    let files = wait_files(rx.dir.path(), count, |p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("msg."))
    });
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// What smtp-sink writes for `content`: LF line ends and a blank line after it.
fn as_dumped(content: &[u8]) -> Vec<u8> {
    let mut want = lf(content);
    want.push(b'\n');
    want
}

fn two_messages() -> Vec<crate::driver::Outgoing> {
    vec![
        outgoing(
            "a@example.test",
            &["x@remote.test", "y@remote.test"],
            &dotted_content(),
        ),
        outgoing(
            "b@example.test",
            &["z@remote.test"],
            b"Subject: two\r\n\r\n.\r\n",
        ),
    ]
}

#[test]
fn pipelined_session_with_auth_carries_two_messages() {
    let rx = start(&[]);
    let mut cfg = ClientConfig::new(Dialect::Smtp, "relay.example.test");
    cfg.credentials = Some(ClientCredentials {
        username: "relay".into(),
        password: Secret::new(b"pw".to_vec()),
        // smtp-sink has no TLS; a test peer on loopback.
        allow_plaintext: true,
    });
    let messages = two_messages();
    let s = deliver(rx.addr, cfg, &messages, None);
    assert_eq!(s.end, SessionEnd::Quit, "{}", s.sent_text());
    assert!(s.capabilities.as_ref().unwrap().pipelining);
    assert_eq!(s.codes(0), ["sent 250", "sent 250"]);
    assert_eq!(s.codes(1), ["sent 250"]);
    // RFC 2920: each envelope leaves in one write, DATA last.
    let text = s.sent_text();
    // smtp-sink offers no SIZE, so MAIL has no parameter.
    let batch: &[u8] =
        b"MAIL FROM:<a@example.test>\r\nRCPT TO:<x@remote.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\n";
    let mails: Vec<String> = s
        .flights
        .iter()
        .filter(|f| f.starts_with(b"MAIL"))
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(mails[0].as_bytes(), batch, "{mails:?}");
    assert!(text.contains("AUTH PLAIN "), "{text}");
    let dumps = dumps(&rx, 2);
    let mut bodies: Vec<Vec<u8>> = dumps.iter().map(|d| strip_trace(d).to_vec()).collect();
    bodies.sort_by_key(|b| b.len());
    assert_eq!(bodies[0], as_dumped(&messages[1].content));
    assert_eq!(bodies[1], as_dumped(&messages[0].content));
}

#[test]
fn without_pipelining_one_command_per_write() {
    let rx = start(&["-p"]);
    let cfg = ClientConfig::new(Dialect::Smtp, "relay.example.test");
    let messages = two_messages();
    let s = deliver(rx.addr, cfg, &messages, None);
    assert_eq!(s.end, SessionEnd::Quit, "{}", s.sent_text());
    assert!(!s.capabilities.as_ref().unwrap().pipelining);
    assert_eq!(s.codes(0), ["sent 250", "sent 250"]);
    assert_eq!(s.codes(1), ["sent 250"]);
    // Every command write holds one command line.
    for f in s
        .flights
        .iter()
        .filter(|f| f.starts_with(b"MAIL") || f.starts_with(b"RCPT"))
    {
        assert_eq!(
            f.iter().filter(|&&b| b == b'\n').count(),
            1,
            "{}",
            String::from_utf8_lossy(f)
        );
    }
    let mut bodies: Vec<Vec<u8>> = dumps(&rx, 2)
        .iter()
        .map(|d| strip_trace(d).to_vec())
        .collect();
    bodies.sort_by_key(|b| b.len());
    assert_eq!(bodies[0], as_dumped(&messages[1].content));
    assert_eq!(bodies[1], as_dumped(&messages[0].content));
}

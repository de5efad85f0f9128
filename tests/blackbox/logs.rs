//! The INFO log answers an operator's questions: one line per session, per accepted message,
//! per refused recipient, per failed AUTH; as text or as one JSON object per line.

use serde_json::{Map, Value};

use crate::auth::{auth_server_with, plain, users, ALICE, MX};
use crate::harness::{wait_until, Opts, Server, REPLY_DEADLINE};
use crate::maildir::sample_message;
use crate::session::{dot_stuff, SmtpConn};
use crate::tls::TlsConn;

/// A password that must never reach the log.
const WRONG_PASSWORD: &str = "not-alices-Pa55word-4-logs";

/// Every line of stderr, each parsed as one JSON object; panics on a line that is not one.
fn json_lines(server: &Server) -> Vec<Map<String, Value>> {
    server
        .stderr_all()
        .lines()
        // The harness marks each start of the server in the file it collects stderr in.
        .filter(|line| !line.starts_with("===== "))
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("not one JSON object per line: {line:?} ({other:?})"),
        })
        .collect()
}

/// The lines whose `message` is `message`, waiting (with a deadline) until `count` are there:
/// a session's line is written as it ends, after the client has seen its last reply.
fn wait_for_lines(server: &Server, message: &str, count: usize) -> Vec<Map<String, Value>> {
    wait_until(REPLY_DEADLINE, || {
        let lines: Vec<_> = json_lines(server)
            .into_iter()
            .filter(|l| l.get("message").and_then(Value::as_str) == Some(message))
            .collect();
        (lines.len() >= count).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "fewer than {count} {message:?} lines:\n{}",
            server.stderr_tail()
        )
    })
}

fn text<'a>(line: &'a Map<String, Value>, field: &str) -> &'a str {
    line.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {field:?} in {line:?}"))
}

fn number(line: &Map<String, Value>, field: &str) -> u64 {
    line.get(field)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number {field:?} in {line:?}"))
}

#[test]
fn json_log_is_one_object_per_line_answering_what_happened() {
    let (server, _cert, _certs) = auth_server_with(
        &[("delivery", "none", None), ("submission", "implicit", None)],
        users(),
        |opts| {
            opts.log_format = Some("json");
            opts.listener_names = vec!["mx", "submission"];
        },
    );

    // Delivery: one recipient refused, one accepted, one message.
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<victim@other.test>").status(), "550 5.7.1");
    assert_eq!(c.cmd("RCPT TO:<user@example.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    let msg = sample_message("json log", "sender@remote.test", "user@example.test");
    c.send(&dot_stuff(&msg));
    c.send(b".\r\n");
    let queue_id = c.reply().queue_id();
    assert_eq!(c.cmd("QUIT").code, 221);
    c.expect_closed(REPLY_DEADLINE);

    // Submission: a wrong password.
    let mut s = TlsConn::connect_implicit(server.listener(1), Some(MX));
    assert_eq!(s.cmd("EHLO client.test").code, 250);
    let r = s.cmd(&format!("AUTH PLAIN {}", plain(ALICE, WRONG_PASSWORD)));
    assert_eq!(r.status(), "535 5.7.8", "{r:?}");
    assert_eq!(s.cmd("QUIT").code, 221);

    let sessions = wait_for_lines(&server, "session", 2);
    // Every line, the start-up lines included, has the same top-level keys.
    for line in json_lines(&server) {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(
                line.get(key).is_some_and(Value::is_string),
                "no {key}: {line:?}"
            );
        }
    }

    let accepted = wait_for_lines(&server, "message accepted", 1);
    let m = &accepted[0];
    assert_eq!(text(m, "level"), "INFO");
    assert_eq!(text(m, "queue_id"), queue_id);
    assert_eq!(text(m, "from"), "<sender@remote.test>");
    assert_eq!(text(m, "to"), "<user@example.test>");
    assert_eq!(number(m, "nrcpt"), 1);
    assert_eq!(number(m, "size"), msg.len() as u64);
    assert_eq!(text(m, "listener"), "mx");
    assert!(text(m, "peer").starts_with("127.0.0.1:"), "{m:?}");

    let refused = wait_for_lines(&server, "recipient rejected", 1);
    assert_eq!(text(&refused[0], "to"), "<victim@other.test>");
    assert_eq!(text(&refused[0], "reason"), "relay_denied");
    assert_eq!(text(&refused[0], "listener"), "mx");

    let failed = wait_for_lines(&server, "auth failed", 1);
    let f = &failed[0];
    assert_eq!(text(f, "mechanism"), "PLAIN");
    assert_eq!(text(f, "user"), ALICE);
    assert_eq!(text(f, "listener"), "submission");
    assert_eq!(f.get("banned"), Some(&Value::Bool(false)));
    assert!(text(f, "peer").starts_with("127.0.0.1:"), "{f:?}");
    assert!(
        !server.stderr_all().contains(WRONG_PASSWORD),
        "the password reached the log"
    );

    let mx = sessions
        .iter()
        .find(|l| text(l, "listener") == "mx")
        .unwrap_or_else(|| panic!("no session line for mx: {sessions:?}"));
    assert_eq!(text(mx, "local"), server.delivery().to_string());
    assert_eq!(text(mx, "helo"), "client.test");
    assert_eq!(text(mx, "outcome"), "quit");
    assert_eq!(text(mx, "queued"), queue_id);
    assert_eq!(number(mx, "rejected"), 1);
    assert_eq!(text(mx, "reasons"), "relay_denied");
    let sub = sessions
        .iter()
        .find(|l| text(l, "listener") == "submission")
        .unwrap_or_else(|| panic!("no session line for submission: {sessions:?}"));
    assert_eq!(text(sub, "tls"), "TLSv1.3");
    assert_eq!(text(sub, "login"), "", "a failed AUTH logs nobody in");
}

#[test]
fn text_log_names_the_listener_and_every_refusal() {
    let server = Server::start(Opts {
        recipients: Some(vec!["known@example.test".to_owned()]),
        ..Opts::default()
    });
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").status(), "550 5.1.1");
    assert_eq!(c.cmd("RCPT TO:<x@elsewhere.test>").status(), "550 5.7.1");
    assert_eq!(c.cmd("QUIT").code, 221);
    c.expect_closed(REPLY_DEADLINE);

    // Unnamed, the listener is called by its address.
    let listener = format!("listener={}", server.delivery());
    let session = wait_until(REPLY_DEADLINE, || {
        server
            .stderr_all()
            .lines()
            .find(|l| l.contains(": session "))
            .filter(|l| l.contains("outcome=\"quit\""))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no session line:\n{}", server.stderr_tail()));
    assert!(session.contains(&listener), "{session}");
    assert!(session.contains("rejected=2"), "{session}");
    assert!(
        session.contains("reasons=unknown_recipient,relay_denied"),
        "{session}"
    );
    let log = server.stderr_all();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recipient rejected"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(
        refused[0].contains("to=<nobody@example.test>")
            && refused[0].contains("reason=unknown_recipient"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].contains("to=<x@elsewhere.test>") && refused[1].contains("reason=relay_denied"),
        "{}",
        refused[1]
    );
}

//! The queue with a next hop (`relay.local` or `relay.remote` = `smtp://...`), against a scripted
//! aiosmtpd receiver (`next_hop.py`): a 451 retried on its schedule while other mail keeps
//! arriving, a 550 for one of two recipients bounced with a DSN a mail parser reads, no DSN for
//! the null sender, and SIGKILL while a slow receiver holds a delivery.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{
    run_bin, wait_for_maildir, wait_until, AuthOpts, Opts, Server, DELIVERY_DEADLINE,
    REPLY_DEADLINE,
};
use crate::maildir::{new_dir, read, sample_message, tokens_in};
use crate::session::{dot_stuff, SmtpConn};

/// A retry within `retry_secs = [1, 2]` plus the machine's load.
const RETRY_DEADLINE: Duration = Duration::from_secs(60);

/// `next_hop.py` running in its own directory; killed on drop.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Receiver {
    fn start(args: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/blackbox/next_hop.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (with aiosmtpd: cargo xtask test installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver did not start: {line:?}"));
        Receiver { child, dir, port }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Each stored message: its content and its recipients, in arrival order.
    fn stored(&self) -> Vec<(Vec<u8>, Vec<String>)> {
        let mut out = Vec::new();
        for n in 1.. {
            let base: PathBuf = self.dir.path().join(n.to_string());
            let Ok(rcpts) = fs::read_to_string(base.with_extension("rcpt")) else {
                break;
            };
            let content = fs::read(base.with_extension("eml")).unwrap();
            out.push((content, rcpts.lines().map(String::from).collect()));
        }
        out
    }

    /// DATA commands seen, accepted or not.
    fn attempts(&self) -> usize {
        fs::read_to_string(self.dir.path().join("attempts"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `content` (as the receiver stored it) is our trace headers then `msg`, byte for
/// byte (the receiver may drop the CRLF that precedes the final dot).
fn holds(content: &[u8], msg: &[u8]) -> bool {
    content.starts_with(b"Received: ")
        && (content.ends_with(msg) || content.ends_with(msg.strip_suffix(b"\r\n").unwrap_or(msg)))
}

/// Sends one message; returns its queue id and the message as sent.
fn send(addr: std::net::SocketAddr, tag: &str, from: &str, rcpts: &[&str]) -> (String, Vec<u8>) {
    let msg = sample_message(tag, from, rcpts[0]);
    let (mut c, _) = SmtpConn::connect_ehlo(addr);
    let r = c.send_mail(from, rcpts, &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{tag}: {r:?}");
    let id = r.lines[0].rsplit(' ').next().unwrap().to_owned();
    (id, msg)
}

/// The log lines of queue id `id`'s attempts.
fn attempt_lines(server: &Server, id: &str) -> Vec<String> {
    server
        .stderr_all()
        .lines()
        .filter(|l| l.contains(&format!("{id}: from=")))
        .map(String::from)
        .collect()
}

/// A server whose submission listener trusts loopback (no AUTH), remote mail to `relay`.
fn submission_server(relay: &str) -> Server {
    Server::start(Opts {
        auth: Some(AuthOpts {
            submission_networks: vec!["127.0.0.0/8".into()],
            ..AuthOpts::default()
        }),
        relay: vec![format!("remote = {relay:?}"), "retry_secs = [1, 2]".into()],
        ..Opts::with_submission()
    })
}

#[test]
fn a_451_is_retried_on_schedule_while_other_mail_keeps_arriving() {
    let receiver = Receiver::start(&["--defer-first", "1"]);
    let server = Server::start(Opts {
        relay: vec![
            format!("local = {:?}", receiver.url()),
            "retry_secs = [1, 2]".into(),
        ],
        ..Opts::default()
    });
    let (first, first_msg) = send(
        server.delivery(),
        "first",
        "a@remote.test",
        &["alice@example.test"],
    );
    let deferred = wait_until(REPLY_DEADLINE, || {
        attempt_lines(&server, &first)
            .iter()
            .any(|l| l.contains("status=deferred") && l.contains("451 4.3.0"))
            .then_some(())
    });
    assert!(
        deferred.is_some(),
        "no deferral logged:\n{}",
        server.stderr_tail()
    );
    // Other mail keeps arriving (bounded in count) and goes straight through; the deferred
    // message is retried by its timer, not by this traffic.
    let mut others = Vec::new();
    let arrived = wait_until(RETRY_DEADLINE, || {
        if others.len() < 40 {
            others.push(
                send(
                    server.delivery(),
                    &format!("other-{}", others.len()),
                    "b@remote.test",
                    &["bob@example.test"],
                )
                .0,
            );
        }
        receiver
            .stored()
            .iter()
            .any(|(content, _)| holds(content, &first_msg))
            .then_some(())
    });
    assert!(
        arrived.is_some(),
        "never retried:\n{}",
        server.stderr_tail()
    );
    let copies = receiver
        .stored()
        .iter()
        .filter(|(content, _)| holds(content, &first_msg))
        .count();
    assert_eq!(copies, 1, "the retried message arrived once");
    let lines = attempt_lines(&server, &first);
    assert!(lines[0].contains("status=deferred"), "{lines:?}");
    let sent = wait_until(REPLY_DEADLINE, || {
        attempt_lines(&server, &first)
            .iter()
            .any(|l| {
                l.contains("status=sent")
                    && l.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", receiver.port))
            })
            .then_some(())
    });
    assert!(sent.is_some(), "{:?}", attempt_lines(&server, &first));
    assert!(receiver.attempts() >= 2);
    // Every other message arrived too, each once.
    let all = wait_until(DELIVERY_DEADLINE, || {
        (receiver.stored().len() == others.len() + 1).then_some(())
    });
    assert!(
        all.is_some(),
        "{} stored of {}",
        receiver.stored().len(),
        others.len() + 1
    );
}

#[test]
fn a_550_for_one_of_two_recipients_bounces_that_one_with_a_dsn() {
    let receiver = Receiver::start(&["--reject", "nobody"]);
    let server = submission_server(&receiver.url());
    let alice = "alice@example.test";
    let (id, msg) = send(
        server.submission(),
        "dsn",
        alice,
        &["ok@remote.test", "nobody@remote.test"],
    );
    // One copy at the next hop, for the recipient it accepted.
    let stored = wait_until(DELIVERY_DEADLINE, || {
        let s = receiver.stored();
        (!s.is_empty()).then_some(s)
    })
    .expect("nothing arrived at the next hop");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, ["ok@remote.test"]);
    assert!(
        holds(&stored[0].0, &msg),
        "not byte-exact after the trace headers"
    );
    // One DSN in alice's Maildir, from the null sender, that Python's email reads as a report.
    let files = wait_for_maildir(&new_dir(&server.maildir, alice), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(read(&files[0]).return_path, "<>");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/blackbox/parse_dsn.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&files[0])
        .output()
        .unwrap();
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{parsed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = parsed.lines().collect();
    assert_eq!(
        lines[0], "type multipart/report delivery-status",
        "{parsed}"
    );
    assert_eq!(
        lines[1], "recipient rfc822; nobody@remote.test failed 5.1.1",
        "{parsed}"
    );
    // The returned header is the message's own (the queue reads it back for the notice).
    assert!(lines[2].starts_with("headers "), "{parsed}");
    assert!(lines[2].ends_with(" <dsn@client.test>"), "{parsed}");
    let logged = attempt_lines(&server, &id);
    assert!(
        logged
            .iter()
            .any(|l| l.contains("to=<ok@remote.test>") && l.contains("status=sent")),
        "{logged:?}"
    );
    assert!(
        logged
            .iter()
            .any(|l| l.contains("to=<nobody@remote.test>") && l.contains("status=bounced")),
        "{logged:?}"
    );
}

#[test]
fn a_failure_from_the_null_sender_is_logged_and_reported_to_nobody() {
    let receiver = Receiver::start(&["--reject", "nobody"]);
    let server = Server::start(Opts {
        relay: vec![format!("local = {:?}", receiver.url())],
        ..Opts::default()
    });
    let (id, _) = send(server.delivery(), "null", "", &["nobody@example.test"]);
    let bounced = wait_until(DELIVERY_DEADLINE, || {
        let lines = attempt_lines(&server, &id);
        lines
            .iter()
            .any(|l| {
                l.contains("from=<>, to=<nobody@example.test>") && l.contains("status=bounced")
            })
            .then_some(lines)
    });
    assert!(bounced.is_some(), "{}", server.stderr_tail());
    let config = server.config.as_ref().unwrap().to_str().unwrap().to_owned();
    let empty = wait_until(DELIVERY_DEADLINE, || {
        let out = run_bin(
            &["queue", "list", "--json", "--config", &config],
            REPLY_DEADLINE,
        );
        (String::from_utf8_lossy(&out.stdout).trim() == "[]").then_some(())
    });
    assert!(empty.is_some(), "the queue does not empty");
    assert!(
        server
            .stderr_all()
            .contains("no notice of failure: the sender is <>"),
        "{}",
        server.stderr_tail()
    );
    // Nothing went anywhere: no report was made, so none reached the next hop.
    assert!(
        receiver.stored().is_empty(),
        "{:?}",
        receiver.stored().len()
    );
    assert!(crate::harness::maildir_files(&server.maildir).is_empty());
}

#[test]
fn sigkill_during_a_slow_delivery_delivers_everything_and_the_maildir_once() {
    const MESSAGES: usize = 4;
    let receiver = Receiver::start(&["--slow-ms", "2000"]);
    let mut server = submission_server(&receiver.url());
    let mut sent = Vec::new();
    for n in 0..MESSAGES {
        let token = format!("slow-{n}");
        let msg = sample_message(&token, "carol@example.test", "alice@example.test");
        let (mut c, _) = SmtpConn::connect_ehlo(server.submission());
        let r = c.send_mail(
            "carol@example.test",
            &["alice@example.test", "far@remote.test"],
            &dot_stuff(&msg),
        );
        assert_eq!(r.code, 250, "{r:?}");
        sent.push(token);
    }
    // The receiver holds a DATA: kill the server in the middle of it.
    let busy = wait_until(DELIVERY_DEADLINE, || {
        (receiver.attempts() >= 1).then_some(())
    });
    assert!(busy.is_some(), "the relay never reached the receiver");
    server.sigkill();
    server.restart();
    let config = server.config.as_ref().unwrap().to_str().unwrap().to_owned();
    let empty = wait_until(RETRY_DEADLINE, || {
        let out = run_bin(
            &["queue", "list", "--json", "--config", &config],
            REPLY_DEADLINE,
        );
        (String::from_utf8_lossy(&out.stdout).trim() == "[]").then_some(())
    });
    assert!(
        empty.is_some(),
        "the queue does not empty:\n{}",
        server.stderr_tail()
    );
    // Every message reached the next hop (at least once: a copy accepted as the server died
    // may come again), and alice's Maildir holds each exactly once.
    let stored: Vec<String> = receiver
        .stored()
        .iter()
        .map(|(c, _)| String::from_utf8_lossy(c).into_owned())
        .collect();
    for token in &sent {
        assert!(
            stored.iter().any(|c| c.contains(token.as_str())),
            "{token} never reached the next hop"
        );
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tokens_in(&server.maildir) {
        *counts.entry(t).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = sent.iter().map(|t| (t.clone(), 1)).collect();
    assert_eq!(counts, want, "alice's Maildir");
}

/// Dovecot's LMTP server (Debian `dovecot-lmtpd`) as a throwaway mail store: its own config and
/// state in a temp dir, a loopback port, user `alice` with a Maildir; killed on drop.
struct Dovecot {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Dovecot {
    fn start() -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["run", "state", "home"] {
            fs::create_dir(d.join(sub)).unwrap();
        }
        // Dovecot refuses to store mail as root: as root, mail belongs to nobody.
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let (uid, gid) = if root {
            (65534, 65534)
        } else {
            // SAFETY: as above.
            unsafe { (libc::geteuid(), libc::getegid()) }
        };
        std::os::unix::fs::chown(d.join("home"), Some(uid), Some(gid)).unwrap();
        fs::write(
            d.join("users"),
            format!("alice::{uid}:{gid}::{}/home/alice::\n", d.display()),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut conf = String::new();
        if !root {
            let who = |flag: &str| {
                let out = Command::new("id").arg(flag).output().unwrap().stdout;
                String::from_utf8(out).unwrap().trim().to_owned()
            };
            let (user, group) = (who("-un"), who("-gn"));
            conf.push_str(&format!(
                "default_internal_user = {user}\ndefault_login_user = {user}\n\
                 default_internal_group = {group}\n"
            ));
        }
        let p = d.display();
        conf.push_str(&format!(
            "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\n\
             protocols = lmtp\nlisten = 127.0.0.1\nssl = no\nmail_location = maildir:~/Maildir\n\
             auth_username_format = %Ln\n\
             userdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\n\
             passdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\n\
             service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
        ));
        fs::write(d.join("dovecot.conf"), conf).unwrap();
        let mut child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot (Debian dovecot-lmtpd; cargo xtask test installs it)");
        let up = wait_until(REPLY_DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dovecot exited ({status}):\n{}",
                    fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "dovecot is not listening on {port}");
        Dovecot { child, dir, port }
    }

    /// Alice's messages as Dovecot stored them.
    fn alice(&self) -> Vec<Vec<u8>> {
        let new = self.dir.path().join("home/alice/Maildir/new");
        fs::read_dir(new)
            .map(|d| d.flatten().map(|e| fs::read(e.path()).unwrap()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What Dovecot stored after its trace lines (`Return-Path:`, `Delivered-To:`, `Received:`
/// and their folds), with CRLF as it writes Unix files.
fn after_dovecot_trace(stored: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(stored);
    let mut lines = text.split_inclusive('\n').peekable();
    let mut in_trace = false;
    while let Some(line) = lines.peek() {
        let trace = ["Return-Path:", "Delivered-To:", "Received:"]
            .iter()
            .any(|t| line.starts_with(t));
        let folded = in_trace && (line.starts_with(' ') || line.starts_with('\t'));
        if !trace && !folded {
            break;
        }
        in_trace = true;
        lines.next();
    }
    lines.collect::<String>().replace('\n', "\r\n").into_bytes()
}

#[test]
fn lmtp_to_dovecot_delivers_each_message_once_byte_exact() {
    let dovecot = Dovecot::start();
    let server = Server::start(Opts {
        relay: vec![format!("local = \"lmtp://127.0.0.1:{}\"", dovecot.port)],
        ..Opts::default()
    });
    let sent: Vec<Vec<u8>> = (0..3)
        .map(|n| {
            send(
                server.delivery(),
                &format!("lmtp-{n}"),
                "sender@remote.test",
                &["alice@example.test"],
            )
            .1
        })
        .collect();
    let stored = wait_until(DELIVERY_DEADLINE, || {
        let got = dovecot.alice();
        (got.len() >= sent.len()).then_some(got)
    })
    .unwrap_or_else(|| panic!("not all delivered:\n{}", server.stderr_tail()));
    assert_eq!(stored.len(), sent.len(), "each message once");
    for msg in &sent {
        let matching = stored
            .iter()
            .filter(|s| after_dovecot_trace(s) == *msg)
            .count();
        assert_eq!(
            matching,
            1,
            "not byte-exact once:\n{}",
            String::from_utf8_lossy(msg)
        );
    }
    // Nothing went to the local Maildir: the store is the mail store.
    assert!(crate::harness::maildir_files(&server.maildir).is_empty());
    // The store has the messages before the relay's verdict reaches the queue's log.
    let logged = wait_until(REPLY_DEADLINE, || {
        server.stderr_all().contains("status=sent").then_some(())
    });
    assert!(
        logged.is_some(),
        "no status=sent:\n{}",
        server.stderr_tail()
    );
}

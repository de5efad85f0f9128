//! Dovecot's LMTP server (Debian `dovecot-lmtpd`), as a throwaway instance: its own config,
//! base and state directories in a temp dir, listening on a loopback port, delivering to a
//! Maildir per user. Users come from a passwd-file: `alice` and `bob` exist; anyone else gets
//! 550 at RCPT. Bob's home is made inaccessible, so his delivery fails after the content while
//! Alice's succeeds: the per-recipient replies of RFC 2033 §4.2. Runs as root (mail stored as
//! `nobody`) or as any other user (mail stored as that user).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use smtp_edge::protocol::client::{ClientConfig, Dialect, SessionEnd};

use crate::dotted_content;
use crate::driver::{deliver, outgoing};
use crate::receivers::{free_port, lf, strip_trace, wait_files, wait_listening, Receiver};

/// Who stores the mail: `nobody` when we are root (Dovecot refuses uid 0 for mail), else us.
struct MailUser {
    uid: u32,
    gid: u32,
    /// Our user name when not root: Dovecot's own processes run as it.
    name: Option<String>,
}

fn mail_user() -> MailUser {
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return MailUser {
            uid: 65534,
            gid: 65534,
            name: None,
        };
    }
    let name = Command::new("id").arg("-un").output().unwrap().stdout;
    MailUser {
        uid,
        gid,
        name: Some(String::from_utf8(name).unwrap().trim().to_owned()),
    }
}

fn config(dir: &Path, port: u16, user: &MailUser) -> String {
    let d = dir.display();
    let mut c = String::new();
    if let Some(name) = &user.name {
        // Unprivileged: every Dovecot process runs as us.
        for key in ["default_internal_user", "default_login_user"] {
            writeln!(c, "{key} = {name}").unwrap();
        }
        let group = Command::new("id").arg("-gn").output().unwrap().stdout;
        writeln!(
            c,
            "default_internal_group = {}",
            String::from_utf8(group).unwrap().trim()
        )
        .unwrap();
    }
    for line in [
        format!("base_dir = {d}/run"),
        format!("state_dir = {d}/state"),
        format!("log_path = {d}/dovecot.log"),
        "protocols = lmtp".into(),
        "listen = 127.0.0.1".into(),
        "ssl = no".into(),
        "mail_location = maildir:~/Maildir".into(),
        // RCPT TO:<alice@example.test> is user `alice`.
        "auth_username_format = %Ln".into(),
        format!("userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}"),
        format!("passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}"),
        format!(
            "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  unix_listener lmtp {{\n    mode = 0600\n  }}\n}}"
        ),
    ] {
        writeln!(c, "{line}").unwrap();
    }
    c
}

fn start() -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["run", "state", "home"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    let user = mail_user();
    std::os::unix::fs::chown(d.join("home"), Some(user.uid), Some(user.gid)).unwrap();
    // Bob's home has mode 0: whoever stores his mail cannot enter it, so his Maildir cannot be
    // created (as root it also belongs to root, not to `nobody`).
    std::fs::create_dir(d.join("home/bob")).unwrap();
    std::fs::set_permissions(d.join("home/bob"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let users: String = ["alice", "bob"]
        .iter()
        .map(|u| {
            format!(
                "{u}::{}:{}::{}/home/{u}::\n",
                user.uid,
                user.gid,
                d.display()
            )
        })
        .collect();
    std::fs::write(d.join("users"), users).unwrap();
    let port = free_port();
    std::fs::write(d.join("dovecot.conf"), config(d, port, &user)).unwrap();
    let log = d.join("dovecot.log");
    let mut child = Command::new("dovecot")
        .arg("-F")
        .arg("-c")
        .arg(d.join("dovecot.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("master.err")).unwrap())
        .spawn()
        .expect("dovecot must be installed (Debian dovecot-lmtpd, `cargo xtask test` installs it)");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, &mut child, "dovecot", &log);
    Receiver { child, addr, dir }
}

#[test]
fn lmtp_replies_per_recipient_and_the_maildir_holds_the_bytes() {
    let rx = start();
    let content = dotted_content();
    let message = outgoing(
        "sender@remote.test",
        &[
            "alice@example.test",
            "bob@example.test",
            "nobody@example.test",
        ],
        &content,
    );
    let cfg = ClientConfig::new(Dialect::Lmtp, "mx.example.test");
    let s = deliver(rx.addr, cfg, &[message], None);
    assert_eq!(s.end, SessionEnd::Quit, "{}", s.sent_text());
    assert!(s.sent_text().starts_with("LHLO mx.example.test\r\n"));
    let codes = s.codes(0);
    // RFC 2033 §4.2: Alice's 250 and Bob's 451 both come after the one final dot.
    assert_eq!(codes[0], "sent 250", "{codes:?}");
    assert!(codes[1].starts_with("deferred 451 4.2.0 "), "{codes:?}");
    assert!(codes[1].ends_with("(in reply to end of data)"), "{codes:?}");
    assert!(codes[2].starts_with("failed 550 5.1.1 "), "{codes:?}");
    assert!(codes[2].ends_with("(in reply to RCPT TO)"), "{codes:?}");

    let new = rx.dir.path().join("home/alice/Maildir/new");
    let files = wait_files(&new, 1, |_| true);
    let stored = std::fs::read(&files[0]).unwrap();
    // Dovecot stores Unix line ends; the message after its trace headers is ours.
    assert_eq!(strip_trace(&stored), lf(&content).as_slice());
    assert!(stored.starts_with(b"Return-Path: <sender@remote.test>\n"));
}

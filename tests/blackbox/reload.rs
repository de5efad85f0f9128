//! Reloading the whole configuration of a running server, as an operator does: edit the file,
//! then SIGHUP or `smtp-edge reload`. New sessions get the new file; a session already open
//! keeps what it started with; keys that need a restart are named and keep their values; a
//! broken file changes nothing and says why.
//!
//! A reload runs asynchronously to the signal, so the tests wait for the server's log line
//! (or the `smtp-edge reload` answer) with a deadline before they look at its effect.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::{run_bin, wait_for_maildir, Opts, Server, DELIVERY_DEADLINE};
use crate::maildir::{assert_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

/// How long a reload may take to show.
const RELOAD_DEADLINE: Duration = Duration::from_secs(15);

/// The log line of a reload that applied.
const APPLIED: &str = "reload: configuration applied";
/// The log line of a reload that was refused.
const REFUSED: &str = "reload: configuration refused";

const FROM: &str = "sender@remote.test";

/// The server's configuration file.
fn config_path(server: &Server) -> &Path {
    server.config.as_deref().expect("started with --config")
}

/// Rewrites the server's configuration file, replacing `from` (which must occur) by `to`.
fn edit_config(server: &Server, from: &str, to: &str) {
    let path = config_path(server);
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config:\n{text}");
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Sends SIGHUP and waits until the log holds one more `needle` line than before.
fn sighup_and_wait(server: &Server, needle: &str) {
    let before = server.stderr_all().matches(needle).count();
    server.signal(libc::SIGHUP);
    server.wait_for_log(needle, before + 1, RELOAD_DEADLINE);
}

/// The reply to `RCPT TO:<rcpt>` on a new session.
fn rcpt_status(server: &Server, rcpt: &str) -> String {
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd(&format!("MAIL FROM:<{FROM}>")).code, 250);
    c.cmd(&format!("RCPT TO:<{rcpt}>")).status()
}

/// `smtp-edge reload --config FILE`: (exit code, stdout, stderr).
fn reload_command(server: &Server) -> (Option<i32>, String, String) {
    let config = config_path(server).display().to_string();
    let out = run_bin(&["reload", "--config", &config], RELOAD_DEADLINE);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sighup_adds_a_domain_and_a_recipient_then_mail_for_them_is_delivered() {
    let server = Server::start(Opts {
        recipients: Some(vec!["alice@example.test".into()]),
        ..Opts::default()
    });
    assert_eq!(rcpt_status(&server, "bob@example.test"), "550 5.1.1");
    assert_eq!(rcpt_status(&server, "carol@other.test"), "550 5.7.1");
    // A session open across the reload: it keeps the configuration it started with.
    let (mut before, _) = SmtpConn::connect_ehlo(server.delivery());

    edit_config(
        &server,
        r#"local_domains = ["example.test"]"#,
        r#"local_domains = ["example.test", "other.test"]"#,
    );
    fs::write(
        server.dir.path().join("recipients"),
        "alice@example.test\nbob@example.test\ncarol@other.test\n",
    )
    .unwrap();
    sighup_and_wait(&server, APPLIED);

    assert_eq!(before.cmd(&format!("MAIL FROM:<{FROM}>")).code, 250);
    assert_eq!(
        before.cmd("RCPT TO:<bob@example.test>").status(),
        "550 5.1.1",
        "a session open before the reload saw the new recipients"
    );
    drop(before);

    for rcpt in ["bob@example.test", "carol@other.test"] {
        let msg = sample_message(rcpt, FROM, rcpt);
        let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
        let r = c.send_mail(FROM, &[rcpt], &dot_stuff(&msg));
        assert_eq!(r.code, 250, "{rcpt} after the reload: {r:?}");
        // Delivered to Maildir: the queue knows the new domain is ours too.
        let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
        assert_delivered(&files[0], FROM, rcpt, &msg);
    }
    assert_eq!(rcpt_status(&server, "dave@other.test"), "550 5.1.1");
}

#[test]
fn reload_command_applies_limits_and_names_the_keys_that_need_a_restart() {
    let server = Server::start(Opts::default());
    let (_, ehlo) = SmtpConn::connect_ehlo(server.delivery());
    assert!(ehlo.lines.join("\n").contains("SIZE 26214400"), "{ehlo:?}");

    edit_config(
        &server,
        "max_message_size = 26214400",
        "max_message_size = 1048576",
    );
    edit_config(&server, "workers = 2", "workers = 1");
    let (code, stdout, stderr) = reload_command(&server);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("need a restart") && stdout.contains("workers"),
        "{stdout}"
    );
    assert!(!stdout.contains("limits"), "{stdout}");
    // One warning line in the log names the key.
    let warnings: Vec<String> = server
        .stderr_all()
        .lines()
        .filter(|l| l.contains("need a restart"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("workers"), "{warnings:?}");

    let (_, ehlo) = SmtpConn::connect_ehlo(server.delivery());
    assert!(
        ehlo.lines.join("\n").contains("SIZE 1048576"),
        "the new limit is not advertised: {ehlo:?}"
    );
    // The listener is the same socket: nothing was rebound.
    assert_eq!(rcpt_status(&server, "someone@example.test"), "250 2.1.5");
}

#[test]
fn a_broken_file_changes_nothing_and_says_why() {
    let server = Server::start(Opts {
        recipients: Some(vec!["alice@example.test".into()]),
        ..Opts::default()
    });
    // A valid recipient added together with an invalid limit: none of it applies.
    fs::write(
        server.dir.path().join("recipients"),
        "alice@example.test\nbob@example.test\n",
    )
    .unwrap();
    edit_config(&server, "max_recipients = 100", "max_recipients = 5");

    let (code, stdout, stderr) = reload_command(&server);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("configuration refused") && stderr.contains("limits.max_recipients"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&config_path(&server).display().to_string()),
        "the file is not named: {stderr}"
    );

    sighup_and_wait(&server, REFUSED);
    let line = server
        .stderr_all()
        .lines()
        .rfind(|l| l.contains(REFUSED))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("limits.max_recipients"), "{line}");
    assert_eq!(rcpt_status(&server, "bob@example.test"), "550 5.1.1");
    assert_eq!(rcpt_status(&server, "alice@example.test"), "250 2.1.5");

    // Fixed, the same file applies.
    edit_config(&server, "max_recipients = 5", "max_recipients = 100");
    let (code, stdout, stderr) = reload_command(&server);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "reloaded\n");
    assert_eq!(rcpt_status(&server, "bob@example.test"), "250 2.1.5");
}

#[test]
fn the_server_refuses_a_reload_that_check_config_would_refuse() {
    use crate::tls::{cert_dir, tls_opts, TestCert};
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let b = TestCert::generate(certs.path(), "b", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "starttls")], &a, &[]));
    // The file is valid TOML with valid keys, but names A's certificate with B's key: only
    // loading the pair tells, and the server does before it changes anything.
    edit_config(
        &server,
        &format!("key = {:?}", a.key.display().to_string()),
        &format!("key = {:?}", b.key.display().to_string()),
    );
    let config = config_path(&server).display().to_string();
    let check = run_bin(&["check-config", "--config", &config], RELOAD_DEADLINE);
    assert_eq!(check.status.code(), Some(2));
    let (code, stdout, stderr) = reload_command(&server);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("configuration refused") && stderr.contains("tls.key"),
        "{stderr}"
    );
    // Still serving, on the configuration it had.
    assert_eq!(rcpt_status(&server, "someone@example.test"), "250 2.1.5");
}

#[test]
fn a_reload_that_drops_proxy_keeps_serving_the_balancer_until_the_restart() {
    let server = Server::start(Opts {
        proxy_trusted: Some(vec!["127.0.0.1/32"]),
        ..Opts::default()
    });
    // PROXY off and its balancers gone, in one edit: the listener is bound at start and keeps
    // taking headers, so its balancers must stay until the restart too.
    edit_config(&server, "proxy_protocol = true", "proxy_protocol = false");
    edit_config(&server, r#"trusted = ["127.0.0.1/32"]"#, "trusted = []");
    let (code, stdout, stderr) = reload_command(&server);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("listener") && stdout.contains("proxy.trusted"),
        "{stdout}"
    );

    let mut s = std::net::TcpStream::connect(server.delivery()).unwrap();
    s.set_read_timeout(Some(RELOAD_DEADLINE)).unwrap();
    std::io::Write::write_all(&mut s, b"PROXY TCP4 192.0.2.9 127.0.0.1 1000 25\r\n").unwrap();
    let mut greeting = [0u8; 4];
    let got = std::io::Read::read_exact(&mut s, &mut greeting);
    assert!(
        got.is_ok() && &greeting == b"220 ",
        "the balancer was refused after the reload ({got:?}, {greeting:?})\n{}",
        server.stderr_tail()
    );
}

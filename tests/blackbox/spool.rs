//! The spool as an operator sees it: one server per spool, private files, and queue ids that
//! never repeat.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{run_bin, wait_for_maildir, Opts, Server, DELIVERY_DEADLINE};
use crate::maildir::{assert_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

const RCPT: &str = "user@example.test";
const FROM: &str = "sender@remote.test";

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The files in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Opens a transaction and sends part of its body: a message in flight (gathered by the
/// server, not yet committed).
fn half_sent(server: &Server) -> SmtpConn {
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    for (line, want) in [
        (format!("MAIL FROM:<{FROM}>"), 250),
        (format!("RCPT TO:<{RCPT}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        let r = c.cmd(&line);
        assert_eq!(r.code, want, "{line}: {r:?}");
    }
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    c
}

#[test]
fn a_second_server_on_the_same_spool_exits_2_and_leaves_the_first_ones_mail_alone() {
    let server = Server::start(Opts::default());
    let mut c = half_sent(&server);
    let config = server.config.clone().unwrap();
    let second = run_bin(
        &["serve", "--config", &config.display().to_string()],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "second server: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(
        lines[0].contains("spool.dir") && lines[0].contains("in use by another running smtp-edge"),
        "{stderr}"
    );
    assert!(
        second.stdout.is_empty(),
        "it must not listen: {:?}",
        second.stdout
    );

    // The first server's message in flight survived the attempt.
    c.send(b"second half\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "end of data after the second start: {r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, RCPT), 1, DELIVERY_DEADLINE);
    let body = fs::read(&files[0]).unwrap();
    assert!(
        body.ends_with(b"first half\r\nsecond half\r\n"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// A second server with its own spool but the first one's delivery address: `SO_REUSEPORT`
/// would let it bind and take part of the connections (and the mail); it must refuse to start.
#[test]
fn a_second_server_on_the_same_address_exits_2_and_takes_no_connection() {
    let server = Server::start(Opts::default());
    let first = server.delivery();
    let config = fs::read_to_string(server.config.as_ref().unwrap()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let spool = server.dir.path().join("spool").display().to_string();
    let maildir = server.maildir.display().to_string();
    assert!(
        config.contains(&spool) && config.contains(&maildir),
        "{config}"
    );
    let config = config
        .replacen("127.0.0.1:0", &first.to_string(), 1)
        .replace(&spool, &other.path().join("spool").display().to_string())
        .replace(&maildir, &other.path().join("mail").display().to_string());
    let path = other.path().join("second.toml");
    fs::write(&path, config).unwrap();
    let second = run_bin(
        &["serve", "--config", &path.display().to_string()],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "second server: {stderr}");
    assert!(
        stderr.contains(&format!("listener[0].addr: cannot bind {first}")),
        "{stderr}"
    );
    assert!(
        second.stdout.is_empty(),
        "it must not listen: {:?}",
        second.stdout
    );
    // Every connection still reaches the first server.
    for _ in 0..8 {
        let (mut c, _) = SmtpConn::connect_ehlo(first);
        assert_eq!(c.cmd("NOOP").code, 250);
    }
}

#[test]
fn spool_and_maildir_are_private_to_the_server() {
    let server = Server::start(Opts::default());
    let spool = server.dir.path().join("spool");
    let mut c = half_sent(&server);
    c.send(b".\r\n");
    assert_eq!(c.reply().code, 250);
    // The message is committed in a log segment.
    let segments = files_in(&spool.join("log"));
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(mode(&segments[0]), 0o600, "{}", segments[0].display());
    for dir in ["", "tmp", "queue", "state", "log"] {
        assert_eq!(mode(&spool.join(dir)), 0o700, "spool/{dir}");
    }
    assert_eq!(mode(&spool.join("generation")), 0o600);
    let files = wait_for_maildir(&new_dir(&server.maildir, RCPT), 1, DELIVERY_DEADLINE);
    assert_eq!(mode(&files[0]), 0o600, "{}", files[0].display());
    let mailbox = server.maildir.join("example.test/user");
    for dir in [
        server.maildir.clone(),
        server.maildir.join("example.test"),
        mailbox.clone(),
        mailbox.join("tmp"),
        mailbox.join("new"),
        mailbox.join("cur"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
}

#[test]
fn a_maildir_mode_for_a_mail_group_holds_whatever_the_umask() {
    // The test process's umask (022 as a rule) would turn 0660 into 0640 if the server relied
    // on the mode given at creation alone.
    let server = Server::start(Opts {
        maildir_mode: Some("0660"),
        ..Opts::default()
    });
    let msg = sample_message("group", FROM, RCPT);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.send_mail(FROM, &[RCPT], &dot_stuff(&msg)).code, 250);
    let files = wait_for_maildir(&new_dir(&server.maildir, RCPT), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], FROM, RCPT, &msg);
    assert_eq!(mode(&files[0]), 0o660);
    let mailbox = server.maildir.join("example.test/user");
    for dir in [
        server.maildir.join("example.test"),
        mailbox.clone(),
        mailbox.join("new"),
    ] {
        assert_eq!(mode(&dir), 0o770, "{}", dir.display());
    }
    // The spool stays private.
    assert_eq!(mode(&server.dir.path().join("spool")), 0o700);
}

/// libfaketime, from Debian's `faketime` package (installed by `cargo xtask test`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn queue_ids_never_repeat_across_restarts_even_when_the_clock_goes_back() {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} missing: apt-get install faketime (cargo xtask test installs it)"
    );
    // One worker, so every run's first message would get the same worker and counter: only
    // the top of the id tells runs apart.
    let mut server = Server::start(Opts {
        workers: 1,
        ..Opts::default()
    });
    let mut ids = Vec::new();
    // Run 1 on the real clock; runs 2 and 3 on a clock stopped at the same instant, months
    // earlier (a VM restored from a snapshot, a wrong clock corrected twice).
    for run in 0..3 {
        if run > 0 {
            server.sigkill();
            server.env = vec![
                ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
                ("FAKETIME".into(), "2026-01-01 00:00:00".into()),
                ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ];
            server.restart();
        }
        let msg = sample_message(&format!("run-{run}"), FROM, RCPT);
        let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
        let r = c.send_mail(FROM, &[RCPT], &dot_stuff(&msg));
        assert_eq!(r.code, 250, "run {run}: {r:?}");
        ids.push(r.queue_id());
        // Each run's message is in Maildir before the next run starts.
        wait_for_maildir(&new_dir(&server.maildir, RCPT), run + 1, DELIVERY_DEADLINE);
    }
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "ids not increasing: {ids:?}"
    );
    let files = crate::harness::maildir_files(&server.maildir);
    assert_eq!(files.len(), 3, "{files:?}");
}

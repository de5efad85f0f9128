//! Local recipient rewriting as a sender sees it: aliases with several targets (and aliases of
//! aliases), `user+tag@` delivered to `user@`, a catch-all instead of 550, a reload on SIGHUP,
//! and `check-config` refusing an alias loop.

use std::fs;

use crate::harness::{
    render_config, run_bin, wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE,
    REPLY_DEADLINE,
};
use crate::maildir::{assert_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, SmtpConn};

const FROM: &str = "sender@remote.test";

fn users() -> Option<Vec<String>> {
    Some(
        ["alice", "bob", "carol"]
            .map(|u| format!("{u}@example.test"))
            .to_vec(),
    )
}

/// Sends one message to `rcpts` and returns it as sent.
fn send(server: &Server, tag: &str, rcpts: &[&str]) -> Vec<u8> {
    let msg = sample_message(tag, FROM, rcpts[0]);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.send_mail(FROM, rcpts, &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{tag}: {r:?}");
    msg
}

#[test]
fn aliases_expand_to_every_target_and_tags_reach_the_user() {
    let tables = tempfile::tempdir().unwrap();
    let aliases = tables.path().join("aliases");
    fs::write(
        &aliases,
        "# staff\npostmaster@example.test: alice@example.test, bob@example.test\n\
         team@example.test: postmaster@example.test, carol@example.test\n",
    )
    .unwrap();
    let server = Server::start(Opts {
        recipients: users(),
        delivery_extra: vec![format!("aliases = {:?}", aliases.display().to_string())],
        ..Opts::default()
    });

    // An alias of an alias: one copy per final mailbox, alice reached twice over gets one.
    let msg = send(
        &server,
        "alias",
        &["team@example.test", "alice@example.test"],
    );
    for user in ["alice", "bob", "carol"] {
        let rcpt = format!("{user}@example.test");
        let files = wait_for_maildir(&new_dir(&server.maildir, &rcpt), 1, DELIVERY_DEADLINE);
        assert_eq!(files.len(), 1, "{rcpt}: {files:?}");
        assert_delivered(&files[0], FROM, &rcpt, &msg);
    }
    assert!(!new_dir(&server.maildir, "team@example.test").exists());
    assert!(!new_dir(&server.maildir, "postmaster@example.test").exists());

    // A tag reaches the user's own mailbox, addressed to the user.
    let msg = send(&server, "tag", &["Bob+Lists@example.test"]);
    let files = wait_for_maildir(
        &new_dir(&server.maildir, "bob@example.test"),
        2,
        DELIVERY_DEADLINE,
    );
    let tagged = files
        .iter()
        .find(|f| fs::read(f).unwrap().windows(3).any(|w| w == b"tag"))
        .expect("the tagged message in bob's mailbox");
    assert_delivered(tagged, FROM, "bob@example.test", &msg);
    assert!(!new_dir(&server.maildir, "bob+lists@example.test").exists());

    // Not a user, not an alias: 550. Then the alias appears, and SIGHUP makes it live.
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(c.cmd(&format!("MAIL FROM:<{FROM}>")).code, 250);
    assert_eq!(c.cmd("RCPT TO:<sales@example.test>").status(), "550 5.1.1");
    drop(c);
    fs::write(
        &aliases,
        "sales@example.test: carol@example.test\npostmaster@example.test: alice@example.test\n",
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let accepted = wait_until(REPLY_DEADLINE, || {
        let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
        assert_eq!(c.cmd(&format!("MAIL FROM:<{FROM}>")).code, 250);
        (c.cmd("RCPT TO:<sales@example.test>").code == 250).then_some(())
    });
    assert!(
        accepted.is_some(),
        "alias not live after SIGHUP:\n{}",
        server.stderr_tail()
    );
    let msg = send(&server, "reloaded", &["sales@example.test"]);
    let files = wait_for_maildir(
        &new_dir(&server.maildir, "carol@example.test"),
        2,
        DELIVERY_DEADLINE,
    );
    assert!(files.iter().any(|f| crate::maildir::read(f).message == msg));
}

#[test]
fn a_catch_all_takes_unknown_recipients_instead_of_550() {
    let server = Server::start(Opts {
        recipients: users(),
        delivery_extra: vec!["catch_all = { \"example.test\" = \"carol@example.test\" }".into()],
        ..Opts::default()
    });
    let msg = send(&server, "catch-all", &["nobody@example.test"]);
    let files = wait_for_maildir(
        &new_dir(&server.maildir, "carol@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    assert_delivered(&files[0], FROM, "carol@example.test", &msg);
    assert!(!new_dir(&server.maildir, "nobody@example.test").exists());
    // Known users still get their own mail.
    let msg = send(&server, "known", &["alice@example.test"]);
    let files = wait_for_maildir(
        &new_dir(&server.maildir, "alice@example.test"),
        1,
        DELIVERY_DEADLINE,
    );
    assert_delivered(&files[0], FROM, "alice@example.test", &msg);
}

#[test]
fn check_config_refuses_an_alias_loop_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let aliases = dir.path().join("aliases");
    fs::write(
        &aliases,
        "a@example.test: b@example.test\nb@example.test: a@example.test, carol@example.test\n",
    )
    .unwrap();
    let opts = Opts {
        delivery_extra: vec![format!("aliases = {:?}", aliases.display().to_string())],
        ..Opts::default()
    };
    let cfg = dir.path().join("smtp-edge.toml");
    fs::write(&cfg, render_config(&opts, dir.path())).unwrap();
    let out = run_bin(
        &["check-config", "--config", cfg.to_str().unwrap()],
        REPLY_DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "delivery.aliases: line 1: alias loop: a@example.test -> b@example.test -> a@example.test"
        ),
        "{stderr}"
    );
}

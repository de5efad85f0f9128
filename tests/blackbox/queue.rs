//! `smtp-edge queue list|show|flush|delete|bounce` against a running server, and what the
//! sender sees of a retried or bounced message.
//!
//! A mailbox whose directory is blocked (a file where `<maildir>/<domain>/<user>` belongs)
//! defers its recipient: a full disk or a permission problem looks the same to the queue.

use std::fs;
use std::path::Path;

use crate::harness::{
    run_bin, wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE,
};
use crate::maildir::{assert_delivered, new_dir, read, sample_message};
use crate::session::{dot_stuff, SmtpConn};

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

/// Runs `smtp-edge queue ARGS --config <server's>`: exit code and stdout.
fn queue(server: &Server, args: &[&str]) -> (Option<i32>, String) {
    let config = server.config.as_ref().expect("a config file");
    let mut all: Vec<&str> = vec!["queue"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config.to_str().unwrap()]);
    let out = run_bin(&all, REPLY_DEADLINE);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), format!("{text}{err}"))
}

fn send(server: &Server, tag: &str, from: &str, rcpts: &[&str]) -> (String, Vec<u8>) {
    let msg = sample_message(tag, from, rcpts[0]);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.send_mail(from, rcpts, &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{tag}: {r:?}");
    let id = r.lines[0]
        .rsplit(' ')
        .next()
        .expect("queue id in the 250")
        .to_owned();
    (id, msg)
}

/// `queue list --json` parsed.
fn listed(server: &Server) -> Vec<serde_json::Value> {
    let (code, out) = queue(server, &["list", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn state_of(server: &Server, id: &str) -> Option<String> {
    listed(server)
        .into_iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap_or("").to_owned())
}

fn block(maildir: &Path, user: &str) {
    let dir = maildir.join("example.test");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(user), b"in the way").unwrap();
}

#[test]
fn queue_commands_act_on_a_running_server() {
    let server = Server::start(Opts {
        // Retries an hour apart: only `flush` can bring one forward within the test.
        relay: vec!["retry_secs = [3600]".into()],
        ..Opts::default()
    });
    block(&server.maildir, "bob");
    let (flushed, flushed_msg) = send(&server, "flush-me", ALICE, &[BOB, ALICE]);
    let (deleted, _) = send(&server, "delete-me", ALICE, &[BOB]);
    let (bounced, _) = send(&server, "bounce-me", ALICE, &[BOB]);
    let all_deferred = wait_until(DELIVERY_DEADLINE, || {
        [&flushed, &deleted, &bounced]
            .iter()
            .all(|id| state_of(&server, id).as_deref() == Some("deferred"))
            .then_some(())
    });
    assert!(
        all_deferred.is_some(),
        "not all deferred: {:?}",
        listed(&server)
    );
    // alice got her copy of the first at once; bob's waits.
    wait_for_maildir(&new_dir(&server.maildir, ALICE), 1, DELIVERY_DEADLINE);
    // The gauge and the attempt counters say the same.
    assert_eq!(
        server.metric("smtp_edge_queue_messages{state=\"deferred\"}"),
        3.0
    );
    assert_eq!(
        server.metric("smtp_edge_delivery_attempts_total{via=\"maildir\",result=\"deferred\"}"),
        3.0
    );
    assert_eq!(
        server.metric("smtp_edge_delivery_attempts_total{via=\"maildir\",result=\"sent\"}"),
        1.0
    );
    assert_eq!(server.metric("smtp_edge_messages_delivered_total"), 1.0);

    // list (text): one line per message, one per recipient with its state and reason.
    let (code, text) = queue(&server, &["list"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("{flushed} ")), "{text}");
    assert!(
        text.contains(&format!("    {BOB} deferred attempts=1 (451 4.3.0")),
        "{text}"
    );
    assert!(text.contains(&format!("    {ALICE} delivered")), "{text}");
    assert!(text.contains("-- 3 message(s)"), "{text}");

    // show: every field of one message.
    let (code, shown) = queue(&server, &["show", &flushed]);
    assert_eq!(code, Some(0), "{shown}");
    let m: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (m["id"].as_str(), m["from"].as_str()),
        (Some(&*flushed), Some(ALICE))
    );
    assert_eq!(m["recipients"][0]["state"], "deferred");
    assert_eq!(m["recipients"][0]["attempts"], 1);

    // flush: the operator fixed the mailbox; the retry happens now, not in an hour.
    fs::remove_file(server.maildir.join("example.test/bob")).unwrap();
    let (code, out) = queue(&server, &["flush", &flushed]);
    assert_eq!((code, out.trim()), (Some(0), "flushed 1 message(s)"));
    let files = wait_for_maildir(&new_dir(&server.maildir, BOB), 1, DELIVERY_DEADLINE);
    assert_delivered(&files[0], ALICE, BOB, &flushed_msg);
    let gone = wait_until(DELIVERY_DEADLINE, || {
        state_of(&server, &flushed).is_none().then_some(())
    });
    assert!(gone.is_some(), "{:?}", listed(&server));
    assert_eq!(
        fs::read_dir(new_dir(&server.maildir, ALICE))
            .unwrap()
            .count(),
        1,
        "alice's copy was not delivered again"
    );

    // delete: gone without a trace, and never delivered.
    let (code, out) = queue(&server, &["delete", &deleted]);
    assert_eq!(
        (code, out.trim().to_owned()),
        (Some(0), format!("deleted {deleted}"))
    );
    assert_eq!(state_of(&server, &deleted), None);
    let (code, out) = queue(&server, &["delete", &deleted]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not in the queue"), "{out}");

    // bounce: the sender gets a DSN naming bob, from MAILER-DAEMON with the null sender.
    let (code, out) = queue(&server, &["bounce", &bounced]);
    assert_eq!(
        (code, out.trim().to_owned()),
        (Some(0), format!("bounced {bounced}"))
    );
    let files = wait_for_maildir(&new_dir(&server.maildir, ALICE), 2, DELIVERY_DEADLINE);
    let dsn = files
        .iter()
        .map(|f| read(f))
        .find(|d| d.return_path == "<>")
        .expect("a DSN in alice's mailbox");
    let text = String::from_utf8_lossy(&dsn.message);
    assert!(
        text.contains(&format!("Final-Recipient: rfc822; {BOB}")),
        "{text}"
    );
    assert!(text.contains("returned by the operator"), "{text}");
    let empty = wait_until(DELIVERY_DEADLINE, || {
        listed(&server).is_empty().then_some(())
    });
    assert!(empty.is_some(), "{:?}", listed(&server));

    // Bad ids are refused, and nothing is listed twice.
    let (code, out) = queue(&server, &["show", "nope"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not a queue id"), "{out}");
}

#[test]
fn queue_commands_without_a_server_say_so() {
    let mut server = Server::start(Opts::default());
    server.sigkill();
    let (code, out) = queue(&server, &["list"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no server is running"), "{out}");
}

/// A preloaded library whose `fdatasync` fails with EIO on the queue's own log segments (the
/// `-FFFF-` in their names: the queue's owner index), as on a disk that has started to fail;
/// every other file syncs as usual.
const FAILING_SYNC_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int fdatasync(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n > 0) {
        path[n] = 0;
        if (strstr(path, "/log/") && strstr(path, "-FFFF-")) {
            errno = EIO;
            return -1;
        }
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"#;

/// Builds [`FAILING_SYNC_C`] in `dir` with the system's C compiler; returns the library.
fn failing_sync_lib(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("failing_sync.c");
    let lib = dir.join("failing_sync.so");
    fs::write(&src, FAILING_SYNC_C).expect("write the shim");
    let out = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

#[test]
fn a_done_mark_that_cannot_be_synced_is_retried_without_spinning() {
    let shim = tempfile::tempdir().expect("tempdir");
    let lib = failing_sync_lib(shim.path());
    let server = Server::start(Opts {
        env: vec![("LD_PRELOAD".into(), lib.display().to_string())],
        ..Opts::default()
    });
    send(&server, "sync-fails", ALICE, &[ALICE]);
    wait_for_maildir(&new_dir(&server.maildir, ALICE), 1, DELIVERY_DEADLINE);
    let failures = |log: &str| log.matches("cannot sync done marks").count();
    let first = wait_until(DELIVERY_DEADLINE, || {
        (failures(&server.stderr_all()) > 0).then_some(())
    });
    assert!(
        first.is_some(),
        "the sync never failed\n{}",
        server.stderr_tail()
    );
    // Idle from here: nothing new arrives. A retry now and then is fine; a scheduler that
    // retries at once, again and again, burns a core and floods the log with this line.
    let before = failures(&server.stderr_all());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let during = failures(&server.stderr_all()) - before;
    assert!(
        during <= 40,
        "{during} failed syncs logged in 2 s of idling\n{}",
        server.stderr_tail()
    );
}

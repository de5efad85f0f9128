//! A full spool disk: clients get a temporary failure (never a 250 the spool cannot honour), the
//! server keeps answering, and once space is freed it accepts mail again.
//!
//! The spool lives on a 512 KiB tmpfs, so this needs root (CAP_SYS_ADMIN): the test is ignored
//! unless asked for (`--include-ignored`, which `cargo xtask test` passes as root).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::harness::{wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE};
use crate::maildir::{assert_delivered, new_dir, sample_message};
use crate::session::{dot_stuff, Reply, SmtpConn};

/// A tmpfs mounted on a fresh temporary directory; unmounted on drop.
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::Builder::new()
            .prefix("smtp-edge-tmpfs-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let target = CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        let src = CString::new("tmpfs").unwrap();
        let data = CString::new(format!("size={size},mode=0755")).unwrap();
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount -t tmpfs on {} failed: {}",
                dir.path().display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path. A lazy detach if something still holds the mount.
        unsafe {
            if libc::umount(target.as_ptr()) != 0 {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// Writes zeros to `path` until the filesystem is full; returns the path.
pub(crate) fn fill(path: PathBuf) -> PathBuf {
    let mut f = fs::File::create(&path).expect("create filler");
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

/// Runs one transaction; returns the first reply that is not the expected positive one.
fn attempt(c: &mut SmtpConn, rcpt: &str, wire: &[u8]) -> Reply {
    for (line, want) in [
        ("MAIL FROM:<sender@remote.test>".to_string(), 250),
        (format!("RCPT TO:<{rcpt}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        let r = c.cmd(&line);
        if r.code != want {
            return r;
        }
    }
    c.send(wire);
    c.send(b".\r\n");
    c.reply()
}

#[test]
#[ignore = "needs root: mounts a tmpfs for the spool"]
fn full_spool_gives_451_and_the_server_recovers_when_space_is_freed() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "mounting a tmpfs needs root");
    let tmpfs = Tmpfs::mount("512k").unwrap_or_else(|why| panic!("{why}"));
    // Declared after `tmpfs`, so it is dropped (killed) before the unmount.
    let server = Server::start(Opts {
        spool_dir: Some(tmpfs.path().join("spool")),
        ..Opts::default()
    });
    let addr = server.delivery();
    let rcpt = "user@example.test";

    // The spool works before the disk fills.
    let first = sample_message("before-full", "sender@remote.test", rcpt);
    let (mut c, _) = SmtpConn::connect_ehlo(addr);
    let r = c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&first));
    assert_eq!(r.code, 250, "spool on tmpfs, not yet full: {r:?}");
    wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);

    let filler = fill(tmpfs.path().join("filler"));
    let mut big = sample_message("while-full", "sender@remote.test", rcpt);
    for i in 0..1000 {
        big.extend_from_slice(format!("filler line {i:04} {}\r\n", "f".repeat(60)).as_bytes());
    }
    let r = attempt(&mut c, rcpt, &dot_stuff(&big));
    assert!(
        matches!(r.code, 451 | 452) && r.enhanced().is_some_and(|e| e.starts_with("4.3.")),
        "message while the spool disk is full: want 451 4.3.0 (or 452 4.3.1), got {r:?}\n{}",
        server.stderr_tail()
    );

    eprintln!("disk full: transaction refused with {r:?}");

    // The server still answers a fresh connection.
    let (mut fresh, _) = SmtpConn::connect_ehlo(addr);
    assert_eq!(
        fresh.cmd("NOOP").code,
        250,
        "NOOP on a fresh connection while full"
    );

    // Free the space: mail is accepted and delivered again.
    fs::remove_file(&filler).unwrap();
    let after = sample_message("after-free", "sender@remote.test", rcpt);
    let (mut c2, _) = SmtpConn::connect_ehlo(addr);
    let r = c2.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&after));
    assert_eq!(r.code, 250, "after freeing space: {r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 2, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 2, "{files:?}");
    let delivered_after = files
        .iter()
        .find(|f| fs::read(f).unwrap().windows(10).any(|w| w == b"after-free"))
        .expect("message sent after freeing space not found");
    assert_delivered(delivered_after, "sender@remote.test", rcpt, &after);
    // Nothing of the refused message was kept: not delivered, no file left in the spool, and
    // the log holds no record of it (a restart would find nothing to deliver).
    assert!(
        !files
            .iter()
            .any(|f| fs::read(f).unwrap().windows(10).any(|w| w == b"while-full")),
        "the refused message was delivered"
    );
    let spool = tmpfs.path().join("spool");
    for dir in ["tmp", "queue"] {
        let left: Vec<_> = fs::read_dir(spool.join(dir)).unwrap().flatten().collect();
        assert!(left.is_empty(), "spool/{dir}: {left:?}");
    }
    for segment in fs::read_dir(spool.join("log")).unwrap().flatten() {
        let bytes = fs::read(segment.path()).unwrap();
        assert!(
            !bytes.windows(10).any(|w| w == b"while-full"),
            "{} holds the refused message",
            segment.path().display()
        );
    }
    drop(server);
}

/// Bytes free on the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs for the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0, "statvfs");
        st.f_bavail * st.f_frsize
    }
}

/// Every file under `root` whose parent directory is `tmp`.
fn maildir_tmp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if dir.file_name().is_some_and(|n| n == "tmp") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root: mounts a tmpfs for the Maildir"]
fn a_maildir_write_that_fails_leaves_no_partial_file() {
    let tmpfs = Tmpfs::mount("1m").expect("tmpfs");
    let maildir = tmpfs.path().join("mail");
    let server = Server::start(Opts {
        maildir: Some(maildir.clone()),
        ..Opts::default()
    });
    let rcpt = "user@example.test";
    // The mailbox exists (one delivery), then the disk fills up but for 48 KiB.
    let first = sample_message("first", "sender@remote.test", rcpt);
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    assert_eq!(
        c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&first))
            .code,
        250
    );
    wait_for_maildir(&new_dir(&maildir, rcpt), 1, DELIVERY_DEADLINE);
    let filler = fill(tmpfs.path().join("filler"));
    let len = fs::metadata(&filler).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len - 48 * 1024)
        .unwrap();
    let free_before = free_bytes(tmpfs.path());

    // A 106 KB message: the spool (elsewhere) takes it, the Maildir write runs out of space.
    let mut big = sample_message("too-big-for-the-maildir", "sender@remote.test", rcpt);
    for i in 0..1500 {
        big.extend_from_slice(format!("filler line {i:04} {}\r\n", "f".repeat(50)).as_bytes());
    }
    assert!(big.len() > 100_000);
    let r = c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&big));
    assert_eq!(r.code, 250, "the spool is not full: {r:?}");
    wait_until(DELIVERY_DEADLINE, || {
        server
            .stderr_all()
            .contains("status=deferred")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no deferred delivery logged\n{}", server.stderr_tail()));

    let partial = maildir_tmp_files(&maildir);
    assert!(partial.is_empty(), "partial entries left: {partial:?}");
    assert!(
        free_bytes(tmpfs.path()) >= free_before,
        "space not given back: {} free before, {} after",
        free_before,
        free_bytes(tmpfs.path())
    );
    // The message is not lost: it waits in the queue for a retry, with its record.
    let state = server.dir.path().join("spool/state");
    assert_eq!(fs::read_dir(&state).unwrap().count(), 1);
    drop(server);
}

#[test]
#[ignore = "needs root: mounts a tmpfs for the spool"]
fn a_restart_with_less_room_than_the_queued_mail_still_delivers_it() {
    const MESSAGES: usize = 10;
    let tmpfs = Tmpfs::mount("1m").unwrap_or_else(|why| panic!("{why}"));
    let mut server = Server::start(Opts {
        spool_dir: Some(tmpfs.path().join("spool")),
        workers: 1,
        relay: vec!["retry_secs = [1]".into()],
        ..Opts::default()
    });
    let rcpt = "user@example.test";
    // Delivery is deferred while the domain's Maildir directory is a file: the mail stays
    // queued in the spool.
    let blocker = server.maildir.join("example.test");
    fs::write(&blocker, b"not a directory").unwrap();
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let mut tokens = Vec::new();
    for i in 0..MESSAGES {
        let token = format!("queued-{i:02}");
        let mut msg = sample_message(&token, "sender@remote.test", rcpt);
        for n in 0..400 {
            msg.extend_from_slice(format!("line {n:04} {}\r\n", "q".repeat(60)).as_bytes());
        }
        let r = c.send_mail("sender@remote.test", &[rcpt], &dot_stuff(&msg));
        assert_eq!(r.code, 250, "{token}: {r:?}");
        tokens.push(token);
    }
    server.wait_for_log("status=deferred", MESSAGES, DELIVERY_DEADLINE);
    server.sigkill();

    // Less room than the queued mail takes, but some: the disk a busy server is left with.
    let filler = fill(tmpfs.path().join("filler"));
    let size = fs::metadata(&filler).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(size.saturating_sub(64 << 10))
        .unwrap();
    let free = free_bytes(tmpfs.path());
    assert!(
        free < (MESSAGES as u64) * 25_000,
        "{free} octets free: room enough to copy the queued mail"
    );

    fs::remove_file(&blocker).unwrap();
    server.restart();
    wait_for_maildir(&new_dir(&server.maildir, rcpt), MESSAGES, DELIVERY_DEADLINE);
    let mut delivered = crate::maildir::tokens_in(&server.maildir);
    delivered.sort();
    assert_eq!(delivered, tokens, "{}", server.stderr_tail());
    drop(server);
}

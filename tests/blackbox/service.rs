//! Running as a service: the privilege drop (every thread's ids in /proc, the files it owns)
//! and the sd_notify messages systemd waits for.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::{wait_for_maildir, Opts, Server, TlsOpts, DELIVERY_DEADLINE, LOCAL_DOMAIN};
use crate::session::SmtpConn;

/// How long systemd's next message may take.
const NOTIFY_DEADLINE: Duration = Duration::from_secs(30);

/// `nobody` on Debian: uid 65534, primary group `nogroup` (65534).
const NOBODY: u32 = 65534;

/// One field (`Uid:`, `Gid:`, `Groups:`, `CapEff:`) of a thread's status file.
fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
        .to_owned()
}

#[test]
#[ignore = "needs root: the server starts as root and switches to nobody"]
fn root_drops_to_user_on_every_thread_and_hands_it_its_files() {
    let server = Server::start(Opts {
        user: Some("nobody"),
        // TLS too, so that the self-signed certificate directory is the user's as well.
        listener_tls: vec![crate::harness::ListenerTls {
            mode: "starttls",
            require_tls: None,
        }],
        tls: Some(TlsOpts::default()),
        ..Opts::default()
    });
    let pid = server.pid();
    // Every thread: workers, queue, relay, guard, control, metrics, auth, the rings' own.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() > 4, "expected the server's threads: {tasks:?}");
    for task in &tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = status_field(&status, "Name:");
        let ids = |field| {
            status_field(&status, field)
                .split_whitespace()
                .map(|n| n.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids("Uid:"),
            [NOBODY; 4],
            "{name}: real, effective, saved, fs uid"
        );
        assert_eq!(
            ids("Gid:"),
            [NOBODY; 4],
            "{name}: real, effective, saved, fs gid"
        );
        assert!(!ids("Groups:").contains(&0), "{name}: no root group");
        assert_eq!(
            status_field(&status, "CapEff:"),
            "0000000000000000",
            "{name}: no capability left"
        );
        assert_eq!(
            status_field(&status, "CapPrm:"),
            "0000000000000000",
            "{name}"
        );
    }
    // Its files are the user's: spool, control socket, Maildir root, certificate directory.
    let root = server.dir.path();
    for path in ["spool", "spool/queue", "spool/control.sock", "mail", "tls"] {
        let meta = std::fs::metadata(root.join(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{path}");
    }
    // And it still takes mail: the message lands in Maildir, written by the user.
    let mut conn = SmtpConn::connect(server.delivery());
    conn.cmd("EHLO client.example");
    let reply = conn.send_mail(
        "sender@example.org",
        &[&format!("alice@{LOCAL_DOMAIN}")],
        b"Subject: dropped\r\n\r\nhello\r\n",
    );
    assert_eq!(reply.code, 250, "{reply:?}");
    let files = wait_for_maildir(&server.maildir, 1, DELIVERY_DEADLINE);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().uid(), NOBODY);
    assert!(
        !server.stderr_all().contains("running as root"),
        "no warning when `user` is set"
    );
}

#[test]
#[ignore = "needs root: the warning is for a server running as root"]
fn running_as_root_without_user_warns_once() {
    let server = Server::start(Opts::default());
    let stderr = server.stderr_all();
    assert_eq!(
        stderr.matches("running as root: set `user`").count(),
        1,
        "{stderr}"
    );
}

/// The next sd_notify datagram that is not a watchdog ping; counts the pings in `pings`.
fn next_state(socket: &UnixDatagram, pings: &mut u32) -> String {
    let deadline = Instant::now() + NOTIFY_DEADLINE;
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "no sd_notify message");
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no sd_notify message within {NOTIFY_DEADLINE:?}: {e}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message == "WATCHDOG=1\n" {
            *pings += 1;
            continue;
        }
        return message;
    }
}

/// The monotonic clock in µs, as systemd and the server read it.
fn monotonic_usec() -> u64 {
    // SAFETY: timespec is plain data that clock_gettime fills in.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn systemd_hears_ready_reloading_stopping_and_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(NOTIFY_DEADLINE)).unwrap();
    let mut server = Server::start(Opts {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            // A ping every half second.
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ],
        ..Opts::default()
    });
    let mut pings = 0;
    // `ready` is on stdout, so the listeners accept by now.
    assert_eq!(next_state(&socket, &mut pings), "READY=1\n");

    let before = monotonic_usec();
    server.signal(libc::SIGHUP);
    let reloading = next_state(&socket, &mut pings);
    let stamp: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        (before..=monotonic_usec()).contains(&stamp),
        "MONOTONIC_USEC={stamp} is the time of the reload (sent after {before})"
    );
    assert_eq!(next_state(&socket, &mut pings), "READY=1\n", "reload done");

    // The pings go on while the server runs.
    let seen = pings;
    let deadline = Instant::now() + NOTIFY_DEADLINE;
    while pings == seen {
        assert!(Instant::now() < deadline, "no WATCHDOG=1");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
        pings += 1;
    }

    server.signal(libc::SIGTERM);
    assert_eq!(next_state(&socket, &mut pings), "STOPPING=1\n");
    assert!(server.wait(Duration::from_secs(60)).success());
}

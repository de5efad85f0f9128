//! What a client sees first: the greeting and the EHLO extensions it relies on.

use crate::harness::{wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE};
use crate::maildir::new_dir;
use crate::session::SmtpConn;
use crate::shield_lab::require;

#[test]
fn greeting_and_ehlo_advertise_what_clients_rely_on() {
    let server = Server::start(Opts::default());
    let mut c = SmtpConn::connect_raw(server.delivery()).unwrap();
    let greeting = c.reply();
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert!(
        greeting.lines[0].starts_with("mx.example.test"),
        "greeting does not start with the configured hostname: {greeting:?}"
    );
    let ehlo = c.cmd("EHLO client.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(ehlo.lines[0].starts_with("mx.example.test"), "{ehlo:?}");
    for ext in ["PIPELINING", "ENHANCEDSTATUSCODES", "SIZE", "8BITMIME"] {
        assert!(
            ehlo.has_keyword(ext),
            "EHLO does not advertise {ext}: {ehlo:?}"
        );
    }
    // HELO works too (RFC 5321 §4.1.1.1), and QUIT ends the session.
    let helo = c.cmd("HELO client.test");
    assert_eq!(helo.code, 250, "{helo:?}");
    let quit = c.cmd("QUIT");
    assert_eq!(quit.code, 221, "{quit:?}");
    c.expect_closed(REPLY_DEADLINE);
}

/// The only test that binds fixed ports: those of the embedded default. It runs in a network
/// namespace of its own, so that nothing else on the machine (another test run, a real server)
/// can hold them.
#[test]
#[ignore = "needs root: a network namespace of its own, where the fixed ports are free"]
fn embedded_default_serves_documented_ports_and_delivers_to_localhost() {
    in_own_netns(embedded_default_delivers);
}

/// Runs `f` on a thread moved into a fresh network namespace with loopback up; processes the
/// thread spawns (the server) and sockets it opens live there too.
fn in_own_netns(f: fn()) {
    std::thread::spawn(move || {
        // SAFETY: unshare has no memory preconditions; CLONE_NEWNET changes only this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) needs root: {}",
            std::io::Error::last_os_error()
        );
        require("ip", "iproute2");
        let out = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip link set lo up: {out:?}");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn embedded_default_delivers() {
    let server = Server::start_embedded();
    assert_eq!(server.delivery().to_string(), "127.0.0.1:2525");
    assert_eq!(server.submission().to_string(), "127.0.0.1:2587");
    assert_eq!(
        server.metrics_addr.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9125")
    );
    let rcpt = "user@localhost";
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let msg = b"Subject: default\r\n\r\nhello localhost\r\n";
    let r = c.send_mail("sender@remote.test", &[rcpt], msg);
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    // The default tags delivery mail: our Authentication-Results (with no DNS in this
    // namespace, the lookups fail: temperror), then the message as sent.
    let delivered = crate::maildir::read(&files[0]);
    let text = String::from_utf8(delivered.message).unwrap();
    let (results, message) = text.split_once("\r\nSubject: ").unwrap();
    assert!(
        results.starts_with("Authentication-Results: localhost;\r\n\tspf=temperror"),
        "{text}"
    );
    assert_eq!(format!("Subject: {message}").as_bytes(), msg);
}

#[test]
fn ehlo_with_terminal_escapes_is_refused_and_never_echoed_or_logged_raw() {
    let server = Server::start(Opts::default());
    let mut c = SmtpConn::connect(server.delivery());
    let r = c.cmd("EHLO a\x1b[31mred\x07");
    assert_eq!(r.status(), "501 5.5.4", "{r:?}");
    assert!(
        r.lines
            .iter()
            .all(|l| !l.contains('\x1b') && !l.contains('\x07')),
        "{r:?}"
    );
    // Hosts real clients use still pass: underscores, bare names.
    let r = c.cmd("HELO my_pc");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
    drop(c);
    // The session line is written when the session ends; wait for it.
    server.wait_for_log("my_pc", 1, REPLY_DEADLINE);
    let log = server.stderr_all();
    assert!(
        !log.contains('\x1b') && !log.contains('\x07'),
        "raw control octets in the log: {log:?}"
    );
}

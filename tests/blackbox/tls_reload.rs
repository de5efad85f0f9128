//! SIGHUP reloads the certificates for new handshakes: sessions already in TLS stay up, a
//! renewed certificate is served to the next client, and a broken one is refused while the
//! current one stays in service.
//!
//! The reload runs asynchronously to the signal, so the tests wait for its effect (a new
//! connection presenting the new certificate) or for the server's log line saying it kept the
//! old one, each with a deadline.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::{render_config, wait_until, Server, REPLY_DEADLINE};
use crate::tls::{cert_dir, tls_opts, TestCert, TlsConn};

/// How long a reload may take to show.
const RELOAD_DEADLINE: Duration = Duration::from_secs(15);

/// The certificate a new implicit-TLS client is shown.
fn served_cert(server: &Server) -> Vec<u8> {
    let mut c = TlsConn::connect_implicit(server.listener(0), Some("mx.a.test"));
    let der = c.peer_cert();
    let _ = c.cmd("QUIT");
    der
}

/// Polls with new connections until one is shown `want`, or panics at the deadline.
fn wait_served(server: &Server, want: &TestCert, what: &str) {
    let want_der = want.der();
    wait_until(RELOAD_DEADLINE, || {
        (served_cert(server) == want_der).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: new connections still not shown {} within {RELOAD_DEADLINE:?}\n{}",
            want.cert.display(),
            server.stderr_tail()
        )
    });
}

/// Two certificates A and B for `mx.a.test`, and `live`, the pair of files the config names,
/// holding A.
fn two_certs_a_live(dir: &Path) -> (TestCert, TestCert, TestCert) {
    let a = TestCert::generate(dir, "a", "mx.a.test");
    let b = TestCert::generate(dir, "b", "mx.a.test");
    let live = TestCert {
        name: "mx.a.test".into(),
        cert: dir.join("live.pem"),
        key: dir.join("live.key"),
    };
    a.install_as(&live);
    (a, b, live)
}

#[test]
fn sighup_serves_a_renewed_certificate_and_keeps_open_sessions() {
    let certs = cert_dir();
    let (a, b, live) = two_certs_a_live(certs.path());
    let server = Server::start(tls_opts(
        &[("delivery", "implicit"), ("delivery", "starttls")],
        &live,
        &[],
    ));
    let mut old_implicit = TlsConn::connect_implicit(server.listener(0), Some("mx.a.test"));
    assert_eq!(
        old_implicit.peer_cert(),
        a.der(),
        "certificate before reload"
    );
    let (mut old_starttls, _) = TlsConn::connect_starttls(server.listener(1), Some("mx.a.test"));
    assert_eq!(old_starttls.peer_cert(), a.der());

    b.install_as(&live);
    server.signal(libc::SIGHUP);
    wait_served(&server, &b, "after renewing the files and SIGHUP");
    // STARTTLS handshakes use the new certificate too.
    let (c, _) = TlsConn::connect_starttls(server.listener(1), Some("mx.a.test"));
    assert_eq!(c.peer_cert(), b.der(), "STARTTLS after reload");

    // Sessions that were in TLS before the reload carry on.
    assert_eq!(old_implicit.cmd("NOOP").status(), "250 2.0.0");
    assert_eq!(old_starttls.cmd("NOOP").status(), "250 2.0.0");
    assert_eq!(old_implicit.cmd("EHLO client.test").code, 250);
    assert_eq!(old_implicit.cmd("MAIL FROM:<sender@remote.test>").code, 250);
    assert_eq!(old_implicit.cmd("RCPT TO:<alice@example.test>").code, 250);
    assert_eq!(old_implicit.cmd("QUIT").code, 221);
    old_implicit.expect_closed(REPLY_DEADLINE);
}

#[test]
fn sighup_follows_a_config_file_pointing_at_another_certificate() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let b = TestCert::generate(certs.path(), "b", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "implicit")], &a, &[]));
    let mut old = TlsConn::connect_implicit(server.listener(0), Some("mx.a.test"));
    assert_eq!(old.peer_cert(), a.der());

    let config = server.config.clone().expect("config file");
    let text = render_config(
        &tls_opts(&[("delivery", "implicit")], &b, &[]),
        server.dir.path(),
    );
    fs::write(&config, text).expect("rewrite config");
    server.signal(libc::SIGHUP);
    wait_served(&server, &b, "after pointing the config at B and SIGHUP");
    assert_eq!(old.cmd("NOOP").status(), "250 2.0.0");
}

#[test]
fn sighup_with_a_broken_key_keeps_the_current_certificate() {
    let certs = cert_dir();
    let (a, b, live) = two_certs_a_live(certs.path());
    let server = Server::start(tls_opts(&[("delivery", "implicit")], &live, &[]));
    let mut old = TlsConn::connect_implicit(server.listener(0), Some("mx.a.test"));

    // A renewal gone wrong: the new certificate, but the key file is not a key.
    fs::copy(&b.cert, &live.cert).unwrap();
    fs::write(
        &live.key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let needle = "configuration refused";
    let before = server.stderr_all().matches(needle).count();
    server.signal(libc::SIGHUP);
    server.wait_for_log(needle, before + 1, RELOAD_DEADLINE);
    assert_eq!(
        served_cert(&server),
        a.der(),
        "a failed reload changed the certificate served"
    );
    assert_eq!(old.cmd("NOOP").status(), "250 2.0.0");

    // A mismatched pair (B's certificate with A's key) is refused as well.
    fs::copy(&a.key, &live.key).unwrap();
    let before = server.stderr_all().matches(needle).count();
    server.signal(libc::SIGHUP);
    server.wait_for_log(needle, before + 1, RELOAD_DEADLINE);
    assert_eq!(
        served_cert(&server),
        a.der(),
        "a reload with a key that does not match the certificate changed the certificate"
    );

    // Once the files are right, the next SIGHUP takes them.
    b.install_as(&live);
    server.signal(libc::SIGHUP);
    wait_served(&server, &b, "after fixing the files and SIGHUP");
    assert_eq!(old.cmd("NOOP").status(), "250 2.0.0");
}

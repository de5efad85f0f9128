//! Real TLS clients against the server: `openssl s_client` (handshake, chain verification, SNI
//! certificate selection), Python's smtplib (`starttls()` and `SMTP_SSL`), swaks (`--tls`,
//! `--tlsc`) and curl (`--ssl-reqd smtp://`, `smtps://`). Every client verifies the server's
//! certificate against the test's own self-signed certificate, and every message must land in
//! Maildir byte for byte, with a `Received:` header that says it came over TLS.

use std::process::Output;

use crate::client_runs::{curl, curl_tls, describe, smtplib, swaks, swaks_tls, CLIENT_DEADLINE};
use crate::harness::{run_client, Server};
use crate::maildir::{assert_one_delivered, sample_message};
use crate::tls::{cert_dir, tls_opts, TestCert};

const FROM: &str = "sender@remote.test";

/// `openssl s_client` with `args`, sending `EHLO client.test` and `QUIT` once connected
/// (`-crlf` turns the LFs into CRLFs; `-ign_eof` keeps reading until the server closes after
/// QUIT). Returns stdout and stderr together, as s_client splits its report between them.
fn s_client(args: &[&str]) -> (Output, String) {
    let mut all = vec!["s_client", "-crlf", "-ign_eof"];
    all.extend_from_slice(args);
    let out = run_client(
        "openssl",
        &all,
        b"EHLO client.test\nQUIT\n",
        CLIENT_DEADLINE,
    );
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// The `subject=` line of an s_client report, e.g. `subject=CN = mx.a.test`.
fn subject(report: &str) -> &str {
    report
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject= line in s_client output:\n{report}"))
}

fn assert_verified_session(out: &Output, report: &str, cn: &str) {
    assert!(out.status.success(), "s_client failed: {}", describe(out));
    assert_eq!(subject(report), format!("subject=CN = {cn}"), "{report}");
    assert!(
        report.contains("Verify return code: 0 (ok)"),
        "chain not verified:\n{report}"
    );
    // After the handshake the SMTP dialogue goes on inside TLS: the EHLO reply names the
    // server and QUIT is answered.
    assert!(
        report.contains("250-mx.example.test"),
        "no EHLO reply inside TLS:\n{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("221 ")),
        "no 221 for QUIT inside TLS:\n{report}"
    );
}

#[test]
fn openssl_starttls_handshake_verifies_the_certificate() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "starttls")], &a, &[]));
    let port = server.listener(0).port().to_string();
    let (out, report) = s_client(&[
        "-starttls",
        "smtp",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "mx.a.test",
        "-verify_hostname",
        "mx.a.test",
        "-CAfile",
        &a.cert.display().to_string(),
        "-verify_return_error",
    ]);
    assert_verified_session(&out, &report, "mx.a.test");
    assert!(
        report.contains("New, TLSv1.3, Cipher is"),
        "not TLSv1.3:\n{report}"
    );
}

#[test]
fn openssl_implicit_tls_greets_inside_tls() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "implicit")], &a, &[]));
    let port = server.listener(0).port().to_string();
    let (out, report) = s_client(&[
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        "mx.a.test",
        "-verify_hostname",
        "mx.a.test",
        "-CAfile",
        &a.cert.display().to_string(),
        "-verify_return_error",
    ]);
    assert_verified_session(&out, &report, "mx.a.test");
    // s_client prints the application data it reads after its handshake report: the 220
    // greeting must be there, i.e. it came inside TLS.
    let after_handshake = report
        .split_once("Verify return code: 0 (ok)\n---\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no handshake report:\n{report}"));
    assert!(
        after_handshake.starts_with("220 mx.example.test"),
        "first thing inside TLS is not the 220 greeting:\n{report}"
    );
}

#[test]
fn openssl_rejects_the_certificate_for_another_name() {
    // The negative of the checks above: the verification is real, so the tests that pass it
    // mean something. A client that expects mx.other.test must refuse mx.a.test's certificate.
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", "implicit")], &a, &[]));
    let (out, report) = s_client(&[
        "-connect",
        &server.listener(0).to_string(),
        "-servername",
        "mx.other.test",
        "-verify_hostname",
        "mx.other.test",
        "-CAfile",
        &a.cert.display().to_string(),
        "-verify_return_error",
    ]);
    assert!(
        !out.status.success() && !report.contains("250-mx.example.test"),
        "s_client accepted a certificate for the wrong name:\n{report}"
    );
}

#[test]
fn sni_selects_the_certificate_for_the_name_asked() {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let b = TestCert::generate(certs.path(), "b", "mx.b.test");
    let server = Server::start(tls_opts(
        &[("delivery", "implicit"), ("delivery", "starttls")],
        &a,
        &[&b],
    ));
    let implicit = server.listener(0).to_string();
    let starttls = server.listener(1).to_string();
    // (listener, SNI, expected certificate)
    let cases: [(&str, Option<&str>, &TestCert); 6] = [
        (&implicit, Some("mx.b.test"), &b),
        (&implicit, Some("mx.a.test"), &a),
        (&implicit, None, &a),
        (&starttls, Some("mx.b.test"), &b),
        (&starttls, Some("mx.a.test"), &a),
        (&starttls, None, &a),
    ];
    for (addr, sni, want) in cases {
        let ca = want.cert.display().to_string();
        let mut args = Vec::new();
        if addr == starttls {
            args.extend(["-starttls", "smtp"]);
        }
        args.extend(["-connect", addr, "-CAfile", &ca, "-verify_return_error"]);
        match sni {
            Some(name) => args.extend(["-servername", name, "-verify_hostname", name]),
            None => args.push("-noservername"),
        }
        let (out, report) = s_client(&args);
        let what = format!("{addr} with SNI {sni:?}");
        assert!(
            out.status.success(),
            "{what}: s_client failed: {}",
            describe(&out)
        );
        assert_eq!(
            subject(&report),
            format!("subject=CN = {}", want.name),
            "{what}"
        );
        assert!(
            report.contains("Verify return code: 0 (ok)"),
            "{what}:\n{report}"
        );
    }
}

/// The `with ESMTPS (...)` a `Received:` header must show for a session that negotiated
/// `version`/`cipher` as OpenSSL names them (`TLSv1.3`, `TLS_AES_256_GCM_SHA384`); the server
/// names TLS 1.3 suites as rustls does (`TLS13_AES_256_GCM_SHA384`).
fn esmtps_clause(version: &str, cipher: &str) -> String {
    assert_eq!(
        version, "TLSv1.3",
        "expected TLS 1.3 to be negotiated, got {version} {cipher}"
    );
    let suite = cipher.replacen("TLS_", "TLS13_", 1);
    format!("with ESMTPS ({version} cipher {suite})")
}

fn smtplib_tls_send(mode: &'static str) {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", mode)], &a, &[]));
    let rcpt = "alice@example.test";
    let msg = sample_message(&format!("smtplib-{mode}"), FROM, rcpt);
    let ca = a.cert.display().to_string();
    let tls = ["--tls", mode, "--servername", "mx.a.test", "--cafile", &ca];
    let out = smtplib(&tls, server.listener(0).port(), &[FROM, rcpt], &msg);
    assert!(
        out.status.success(),
        "smtplib over {mode} TLS failed: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let tls_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tls "))
        .unwrap_or_else(|| panic!("no tls line: {stdout}"));
    let (version, cipher) = tls_line.split_once(' ').unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("data 250 2.0.0 Ok: queued as ")),
        "end-of-data reply is not `250 2.0.0 Ok: queued as <QID>`: {stdout}"
    );
    let received = assert_one_delivered(&server.maildir, FROM, rcpt, &msg);
    let want = esmtps_clause(version, cipher);
    assert!(
        received.contains(&want),
        "Received header does not say {want:?}: {received:?}"
    );
}

#[test]
fn smtplib_starttls_message_arrives_byte_exact_with_esmtps_received() {
    smtplib_tls_send("starttls");
}

#[test]
fn smtplib_smtp_ssl_message_arrives_byte_exact_with_esmtps_received() {
    smtplib_tls_send("implicit");
}

/// Asserts that the `Received:` header (unfolded) says ESMTPS over TLS 1.3.
fn assert_esmtps_tls13(received: &str) {
    assert!(
        received.contains("with ESMTPS (TLSv1.3 cipher TLS13_"),
        "Received header does not say ESMTPS over TLS 1.3: {received:?}"
    );
}

fn swaks_tls_send(mode: &'static str, flag: &str) {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", mode)], &a, &[]));
    let rcpt = "user@example.test";
    let msg = sample_message(&format!("swaks-{mode}"), FROM, rcpt);
    let ca = a.cert.display().to_string();
    let out = swaks(
        server.dir.path(),
        server.listener(0).port(),
        &swaks_tls(flag, &ca, "mx.a.test"),
        FROM,
        rcpt,
        &msg,
    );
    assert!(
        out.status.success(),
        "swaks {flag} failed: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("TLS started with cipher TLSv1.3"),
        "swaks {flag} did not report TLS 1.3: {}",
        describe(&out)
    );
    assert_esmtps_tls13(&assert_one_delivered(&server.maildir, FROM, rcpt, &msg));
}

#[test]
fn swaks_starttls_message_arrives_byte_exact() {
    swaks_tls_send("starttls", "--tls");
}

#[test]
fn swaks_tls_on_connect_message_arrives_byte_exact() {
    swaks_tls_send("implicit", "--tlsc");
}

fn curl_tls_send(mode: &'static str, scheme: &str, extra: &[&str]) {
    let certs = cert_dir();
    let a = TestCert::generate(certs.path(), "a", "mx.a.test");
    let server = Server::start(tls_opts(&[("delivery", mode)], &a, &[]));
    let port = server.listener(0).port();
    let rcpt = "dave@example.test";
    let msg = sample_message(&format!("curl-{mode}"), FROM, rcpt);
    let mut options = curl_tls("mx.a.test", port, &a.cert);
    options.extend(extra.iter().map(|s| s.to_string()));
    let url = format!("{scheme}://mx.a.test:{port}/client.test");
    let out = curl(server.dir.path(), &url, &options, FROM, rcpt, &msg);
    assert!(
        out.status.success(),
        "curl {scheme} {extra:?} failed: {}",
        describe(&out)
    );
    assert_esmtps_tls13(&assert_one_delivered(&server.maildir, FROM, rcpt, &msg));
}

#[test]
fn curl_ssl_reqd_starttls_message_arrives_byte_exact() {
    curl_tls_send("starttls", "smtp", &["--ssl-reqd"]);
}

#[test]
fn curl_smtps_message_arrives_byte_exact() {
    curl_tls_send("implicit", "smtps", &[]);
}

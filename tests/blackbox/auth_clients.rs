//! Real clients logging in to submission: Python's smtplib (`login()` and `send_message()`, after
//! `starttls()` and with `SMTP_SSL`), swaks (`--auth PLAIN` with `--tls`, `--auth LOGIN` with
//! `--tlsc`) and curl (`--user` over `smtps://` and `smtp://` with `--ssl-reqd`). Each verifies
//! the server's certificate, and each message must land in Maildir byte for byte with a
//! `Received:` header that says `ESMTPSA` and does not name the login. Wrong passwords must fail
//! in each client and deliver nothing.

use std::process::Output;

use crate::auth::{auth_server, users, ALICE, ALICE_PW, BOB, MX};
use crate::client_runs::{curl_tls, describe, swaks_tls};
use crate::harness::{maildir_files, Server};
use crate::maildir::{assert_one_delivered, sample_message};
use crate::tls::TestCert;

/// Waits for the one message to `rcpt` and checks it: `msg` from `from` byte for byte, traced
/// as an authenticated TLS submission, without the login in the trace.
fn assert_submitted(server: &Server, from: &str, rcpt: &str, msg: &[u8]) {
    let received = assert_one_delivered(&server.maildir, from, rcpt, msg);
    assert!(
        received.contains("with ESMTPSA (TLSv1."),
        "Received does not say ESMTPSA over TLS: {received:?}"
    );
    assert!(
        !received.to_ascii_lowercase().contains("alice"),
        "Received names the login (trace_login is off): {received:?}"
    );
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"success\"}"),
        1.0
    );
}

fn smtplib(server: &Server, cert: &TestCert, mode: &str, password: &str, msg: &[u8]) -> Output {
    let ca = cert.cert.display().to_string();
    let options = [
        "--tls",
        mode,
        "--servername",
        MX,
        "--cafile",
        &ca,
        "--login",
        ALICE,
        password,
    ];
    crate::client_runs::smtplib(&options, server.listener(0).port(), &[], msg)
}

fn smtplib_login_send(mode: &'static str) {
    let (server, cert, _certs) = auth_server(&[("submission", mode, None)], users());
    let msg = sample_message(&format!("auth-smtplib-{mode}"), ALICE, BOB);
    let out = smtplib(&server, &cert, mode, ALICE_PW, &msg);
    assert!(
        out.status.success(),
        "smtplib login + send_message over {mode} failed: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |step: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(step))
            .unwrap_or_else(|| panic!("no `{step}` line: {stdout}"))
            .to_owned()
    };
    if mode == "starttls" {
        assert_eq!(
            line("auth-before-tls "),
            "",
            "AUTH offered before TLS: {stdout}"
        );
    }
    assert_eq!(line("auth "), "PLAIN LOGIN", "{stdout}");
    assert!(line("login ").starts_with("235 2.7.0"), "{stdout}");
    assert_eq!(line("sent "), "{}", "{stdout}");
    assert_submitted(&server, ALICE, BOB, &msg);
}

#[test]
fn smtplib_starttls_login_send_message_arrives_as_esmtpsa() {
    smtplib_login_send("starttls");
}

#[test]
fn smtplib_smtp_ssl_login_send_message_arrives_as_esmtpsa() {
    smtplib_login_send("implicit");
}

#[test]
fn smtplib_login_with_a_wrong_password_raises_535() {
    let (server, cert, _certs) = auth_server(&[("submission", "starttls", None)], users());
    let msg = sample_message("auth-smtplib-wrong", ALICE, BOB);
    let out = smtplib(&server, &cert, "starttls", "not-the-password", &msg);
    assert_eq!(
        out.status.code(),
        Some(3),
        "smtplib login should raise SMTPAuthenticationError: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("login 535 5.7.8")),
        "{stdout}"
    );
    assert!(maildir_files(&server.maildir).is_empty());
    // smtplib's login() tries each offered mechanism it knows (PLAIN, then LOGIN) before
    // giving up: two failed logins.
    assert_eq!(
        server.metric("smtp_edge_auth_total{result=\"failure\"}"),
        2.0
    );
}

fn swaks(server: &Server, cert: &TestCert, tls_flag: &str, mech: &str, password: &str) -> Output {
    let msg = sample_message(&format!("auth-swaks-{mech}"), ALICE, BOB);
    let ca = cert.cert.display().to_string();
    let mut options = swaks_tls(tls_flag, &ca, MX).to_vec();
    options.extend([
        "--auth",
        mech,
        "--auth-user",
        ALICE,
        "--auth-password",
        password,
    ]);
    crate::client_runs::swaks(
        server.dir.path(),
        server.listener(0).port(),
        &options,
        ALICE,
        BOB,
        &msg,
    )
}

fn swaks_login_send(mode: &'static str, tls_flag: &str, mech: &str) {
    let (server, cert, _certs) = auth_server(&[("submission", mode, None)], users());
    let out = swaks(&server, &cert, tls_flag, mech, ALICE_PW);
    assert!(
        out.status.success(),
        "swaks {tls_flag} --auth {mech} failed: {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("AUTH {mech}")) && stdout.contains("235 2.7.0"),
        "swaks did not log in with {mech}: {}",
        describe(&out)
    );
    let msg = sample_message(&format!("auth-swaks-{mech}"), ALICE, BOB);
    assert_submitted(&server, ALICE, BOB, &msg);
    // A wrong password: swaks reports the 535 and fails, nothing more is delivered.
    let out = swaks(&server, &cert, tls_flag, mech, "not-the-password");
    assert!(
        !out.status.success(),
        "swaks logged in with a wrong password: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("535 5.7.8"),
        "{}",
        describe(&out)
    );
    assert_eq!(maildir_files(&server.maildir).len(), 1);
}

#[test]
fn swaks_starttls_auth_plain_arrives_as_esmtpsa() {
    swaks_login_send("starttls", "--tls", "PLAIN");
}

#[test]
fn swaks_tls_on_connect_auth_login_arrives_as_esmtpsa() {
    swaks_login_send("implicit", "--tlsc", "LOGIN");
}

fn curl(server: &Server, cert: &TestCert, scheme: &str, extra: &[&str], password: &str) -> Output {
    let port = server.listener(0).port();
    let msg = sample_message(&format!("auth-curl-{scheme}"), ALICE, BOB);
    let mut options = curl_tls(MX, port, &cert.cert);
    options.extend(["--user".to_owned(), format!("{ALICE}:{password}")]);
    options.extend(extra.iter().map(|s| s.to_string()));
    let url = format!("{scheme}://{MX}:{port}/client.test");
    crate::client_runs::curl(server.dir.path(), &url, &options, ALICE, BOB, &msg)
}

fn curl_login_send(mode: &'static str, scheme: &str, extra: &[&str]) {
    let (server, cert, _certs) = auth_server(&[("submission", mode, None)], users());
    let out = curl(&server, &cert, scheme, extra, ALICE_PW);
    assert!(
        out.status.success(),
        "curl --user {scheme} {extra:?} failed: {}",
        describe(&out)
    );
    let msg = sample_message(&format!("auth-curl-{scheme}"), ALICE, BOB);
    assert_submitted(&server, ALICE, BOB, &msg);
    // A wrong password: curl exits 67 (CURLE_LOGIN_DENIED) and nothing more is delivered.
    let out = curl(&server, &cert, scheme, extra, "not-the-password");
    assert_eq!(
        out.status.code(),
        Some(67),
        "curl with a wrong password: {}",
        describe(&out)
    );
    assert_eq!(maildir_files(&server.maildir).len(), 1);
}

#[test]
fn curl_smtps_user_arrives_as_esmtpsa() {
    curl_login_send("implicit", "smtps", &[]);
}

#[test]
fn curl_ssl_reqd_starttls_user_arrives_as_esmtpsa() {
    curl_login_send("starttls", "smtp", &["--ssl-reqd"]);
}

//! Real clients logging in to submission: Python's smtplib (`login()` and `send_message()`, after
//! `starttls()` and with `SMTP_SSL`), swaks (`--auth PLAIN` with `--tls`, `--auth LOGIN` with
//! `--tlsc`) and curl (`--user` over `smtps://` and `smtp://` with `--ssl-reqd`). Each verifies
//! the server's certificate, and each message must land in Maildir byte for byte with a
//! `Received:` header that says `ESMTPSA` and does not name the login. Wrong passwords must fail
//! in each client and deliver nothing.

use std::fs;
use std::process::Output;
use std::time::Duration;

use crate::auth::{auth_server, users, ALICE, ALICE_PW, BOB, MX};
use crate::harness::{
    client_script, maildir_files, run_client, wait_for_maildir, Server, DELIVERY_DEADLINE,
};
use crate::maildir::{assert_delivered, new_dir, read, sample_message};
use crate::tls::TestCert;

const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for the one message to `rcpt` and checks it: `msg` from `from` byte for byte, traced
/// as an authenticated TLS submission, without the login in the trace.
fn assert_submitted(server: &Server, from: &str, rcpt: &str, msg: &[u8]) {
    let files = wait_for_maildir(&new_dir(&server.maildir, rcpt), 1, DELIVERY_DEADLINE);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_delivered(&files[0], from, rcpt, msg);
    let received = read(&files[0]).received.replace("\r\n", "");
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
    run_client(
        "python3",
        &[
            &client_script("smtplib_auth_send.py"),
            mode,
            "127.0.0.1",
            &server.listener(0).port().to_string(),
            MX,
            &cert.cert.display().to_string(),
            ALICE,
            password,
        ],
        msg,
        CLIENT_DEADLINE,
    )
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
    // swaks appends CRLF to the data it is given, so it gets the message minus its last CRLF.
    let file = server.dir.path().join("swaks.eml");
    fs::write(&file, &msg[..msg.len() - 2]).unwrap();
    run_client(
        "swaks",
        &[
            "--server",
            "127.0.0.1",
            "--port",
            &server.listener(0).port().to_string(),
            tls_flag,
            "--tls-verify",
            "--tls-ca-path",
            &cert.cert.display().to_string(),
            "--tls-sni",
            MX,
            "--helo",
            "client.test",
            "--auth",
            mech,
            "--auth-user",
            ALICE,
            "--auth-password",
            password,
            "--from",
            ALICE,
            "--to",
            BOB,
            "--data",
            &format!("@{}", file.display()),
        ],
        b"",
        CLIENT_DEADLINE,
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
    let file = server.dir.path().join("curl.eml");
    fs::write(&file, &msg).unwrap();
    // --resolve lets curl check the certificate against the name while connecting to loopback.
    let mut args = vec![
        "--silent".to_owned(),
        "--show-error".to_owned(),
        "--max-time".to_owned(),
        "30".to_owned(),
        "--resolve".to_owned(),
        format!("{MX}:{port}:127.0.0.1"),
        "--cacert".to_owned(),
        cert.cert.display().to_string(),
        "--user".to_owned(),
        format!("{ALICE}:{password}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        format!("{scheme}://{MX}:{port}/client.test"),
        "--mail-from".to_owned(),
        ALICE.to_owned(),
        "--mail-rcpt".to_owned(),
        BOB.to_owned(),
        "--upload-file".to_owned(),
        file.display().to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_client("curl", &args, b"", CLIENT_DEADLINE)
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

//! How the tests run real clients (Python's smtplib, swaks, curl) to send one message, so that
//! `clients.rs`, `tls_clients.rs` and `auth_clients.rs` differ only in the options they add.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::harness::{client_script, run_client};

pub const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// A client's exit status and output, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `tests/clients/smtplib_send.py` with `options` (TLS, login), to 127.0.0.1:`port`, then
/// `envelope` (FROM and RCPT, unless it logs in), with `msg` on stdin.
pub fn smtplib(options: &[&str], port: u16, envelope: &[&str], msg: &[u8]) -> Output {
    let script = client_script("smtplib_send.py");
    let port = port.to_string();
    let mut args = vec![script.as_str()];
    args.extend_from_slice(options);
    args.extend(["127.0.0.1", &port]);
    args.extend_from_slice(envelope);
    run_client("python3", &args, msg, CLIENT_DEADLINE)
}

/// swaks sending `msg` from `from` to `rcpt` through 127.0.0.1:`port` with `options` (TLS,
/// AUTH). swaks appends CRLF to the data it is given, so it gets the message minus its last
/// CRLF, from a file in `dir`.
pub fn swaks(
    dir: &Path,
    port: u16,
    options: &[&str],
    from: &str,
    rcpt: &str,
    msg: &[u8],
) -> Output {
    let file = dir.join("swaks.eml");
    fs::write(&file, &msg[..msg.len() - 2]).unwrap();
    let port = port.to_string();
    let data = format!("@{}", file.display());
    let mut args = vec!["--server", "127.0.0.1", "--port", &port];
    args.extend_from_slice(options);
    args.extend([
        "--helo",
        "client.test",
        "--from",
        from,
        "--to",
        rcpt,
        "--data",
        &data,
    ]);
    run_client("swaks", &args, b"", CLIENT_DEADLINE)
}

/// swaks options for TLS (`flag` is `--tls` or `--tlsc`), verifying the certificate in `ca`
/// for `name`, which is also sent as SNI.
pub fn swaks_tls<'a>(flag: &'a str, ca: &'a str, name: &'a str) -> [&'a str; 6] {
    [flag, "--tls-verify", "--tls-ca-path", ca, "--tls-sni", name]
}

/// curl uploading `msg` (from a file in `dir`) to `url`, from `from` to `rcpt`, with `options`
/// before the URL.
pub fn curl(
    dir: &Path,
    url: &str,
    options: &[String],
    from: &str,
    rcpt: &str,
    msg: &[u8],
) -> Output {
    let file = dir.join("curl.eml");
    fs::write(&file, msg).unwrap();
    let file = file.display().to_string();
    let mut args = vec!["--silent", "--show-error", "--max-time", "30"];
    args.extend(options.iter().map(String::as_str));
    args.extend([
        url,
        "--mail-from",
        from,
        "--mail-rcpt",
        rcpt,
        "--upload-file",
        &file,
    ]);
    run_client("curl", &args, b"", CLIENT_DEADLINE)
}

/// curl options to reach `name`:`port` on loopback and verify its certificate against `ca`:
/// `--resolve` lets curl check the certificate against the name while connecting to loopback.
pub fn curl_tls(name: &str, port: u16, ca: &Path) -> Vec<String> {
    vec![
        "--resolve".to_owned(),
        format!("{name}:{port}:127.0.0.1"),
        "--cacert".to_owned(),
        ca.display().to_string(),
    ]
}

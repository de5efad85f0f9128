//! `check-config` and `serve` on bad input: exit 2, say what is wrong, never panic.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::harness::{render_config, run_bin, run_client, ListenerTls, Opts, TlsOpts};

const DEADLINE: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_panic(out: &Output) {
    let t = text(out);
    assert!(
        !t.contains("panicked") && !t.contains("RUST_BACKTRACE"),
        "the binary panicked:\n{t}"
    );
}

/// Every line the binary printed ends with a newline (a last line without one runs into the
/// shell prompt).
fn assert_lines_terminated(out: &Output) {
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            stream.is_empty() || stream.ends_with(b"\n"),
            "{name} does not end with a newline: {:?}",
            String::from_utf8_lossy(stream)
        );
    }
}

fn write_config(dir: &tempfile::TempDir, body: &str) -> String {
    let path = dir.path().join("smtp-edge.toml");
    fs::write(&path, body).unwrap();
    path.display().to_string()
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(&dir, &render_config(&Opts::with_submission(), dir.path()));
    let out = run_bin(&["check-config", "--config", &cfg], DEADLINE);
    assert_no_panic(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "valid config refused:\n{}",
        text(&out)
    );
}

#[test]
fn check_config_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = render_config(&Opts::default(), dir.path());
    // Two problems that a validating pass can both see: a size of 0 and fewer recipients than
    // RFC 5321 §4.5.3.1.8 requires.
    let bad = good
        .replace("max_message_size = 26214400", "max_message_size = 0")
        .replace("max_recipients = 100", "max_recipients = 5");
    assert_ne!(bad, good);
    let cfg = write_config(&dir, &bad);
    let out = run_bin(&["check-config", "--config", &cfg], DEADLINE);
    assert_no_panic(&out);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "bad config: exit code\n{t}");
    assert_lines_terminated(&out);
    // On stderr, each `FILE: key: problem`.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in ["max_message_size", "max_recipients"] {
        let line = stderr.lines().find(|l| l.contains(key));
        let line = line.unwrap_or_else(|| panic!("no line names `{key}`:\n{t}"));
        let rest = line
            .strip_prefix(&format!("{cfg}: "))
            .unwrap_or_else(|| panic!("line does not name the file: {line:?}"));
        let (k, problem) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("line is not `file: key: problem`: {line:?}"));
        assert!(k.contains(key), "key part {k:?} of {line:?}");
        assert!(!problem.trim().is_empty(), "empty problem in {line:?}");
    }
}

#[test]
fn check_config_on_bad_role_and_bad_toml_exits_2_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = render_config(&Opts::default(), dir.path());
    let cases = [
        (
            "unknown role",
            good.replace("role = \"delivery\"", "role = \"relay\""),
            "role",
        ),
        (
            "TOML syntax",
            good.replace("workers = 2", "workers = = 2"),
            "workers",
        ),
        ("missing file", String::new(), ""),
    ];
    for (what, body, mention) in cases {
        let cfg = if body.is_empty() {
            dir.path().join("does-not-exist.toml").display().to_string()
        } else {
            write_config(&dir, &body)
        };
        let out = run_bin(&["check-config", "--config", &cfg], DEADLINE);
        assert_no_panic(&out);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: exit code\n{t}");
        assert!(
            t.contains(mention),
            "{what}: output does not mention `{mention}`:\n{t}"
        );
    }
}

#[test]
fn serve_with_bad_config_exits_2_with_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = render_config(&Opts::default(), dir.path())
        .replace("max_recipients = 100", "max_recipients = 5");
    let cfg = write_config(&dir, &bad);
    let out = run_bin(&["serve", "--config", &cfg], DEADLINE);
    assert_no_panic(&out);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "serve on a bad config:\n{t}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ready"),
        "said ready:\n{t}"
    );
    // One problem, one line, and that line names the key.
    let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want a one-line error, got:\n{t}");
    assert!(
        lines[0].contains("limits.max_recipients"),
        "error does not name the key:\n{t}"
    );
    assert_lines_terminated(&out);
}

#[test]
fn serve_on_a_port_in_use_exits_2_with_a_one_line_error() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let body = render_config(&Opts::default(), dir.path()).replacen(
        "addr = \"127.0.0.1:0\"",
        &format!("addr = \"127.0.0.1:{port}\""),
        1,
    );
    let cfg = write_config(&dir, &body);
    let out = run_bin(&["serve", "--config", &cfg], DEADLINE);
    assert_no_panic(&out);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "serve on a busy port:\n{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("ready"), "said ready on a busy port:\n{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&port.to_string()))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "want one error line naming port {port}, stderr:\n{stderr}"
    );
    drop(busy);
}

/// libfaketime, from Debian's `faketime` package (installed by `cargo xtask test`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A self-signed certificate for `mx.example.test` valid for 30 days, as `dir/<file>.pem`
/// and `dir/<file>.key`; made `ago` in the past (`"-60d"`: through libfaketime, so it has
/// expired) or now.
fn certificate(dir: &Path, file: &str, ago: Option<&str>) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    let mut args: Vec<String> = Vec::new();
    if let Some(ago) = ago {
        assert!(
            Path::new(FAKETIME_LIB).exists(),
            "{FAKETIME_LIB} missing: apt-get install faketime (cargo xtask test installs it)"
        );
        args.extend([
            format!("LD_PRELOAD={FAKETIME_LIB}"),
            format!("FAKETIME={ago}"),
        ]);
    }
    args.extend(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=mx.example.test",
            "-keyout",
        ]
        .map(String::from),
    );
    args.push(key.display().to_string());
    args.push("-out".into());
    args.push(cert.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_client("env", &args, b"", DEADLINE);
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A delivery listener with STARTTLS serving `cert` and `key`.
fn tls_config(dir: &Path, cert: &Path, key: &Path) -> String {
    let opts = Opts {
        listener_tls: vec![ListenerTls {
            mode: "starttls",
            require_tls: None,
        }],
        tls: Some(TlsOpts {
            cert_key: Some((cert.to_owned(), key.to_owned())),
            ..TlsOpts::default()
        }),
        ..Opts::default()
    };
    render_config(&opts, dir)
}

/// A port free now, for a test that needs two keys to name the same one.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Each of these used to pass `check-config` and then stop `serve`: now `check-config` names
/// the file and the key on stderr and exits 2, and `serve` refuses the same file with the
/// same key before it binds anything.
#[test]
fn check_config_catches_what_serve_would_hit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (a_cert, a_key) = certificate(root, "a", None);
    let (_, b_key) = certificate(root, "b", None);
    let (old_cert, old_key) = certificate(root, "old", Some("-60d"));
    let plain = render_config(&Opts::default(), root);
    let a_file = root.join("a-file");
    fs::write(&a_file, "not a directory").unwrap();
    let port = free_port();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "certificate and key swapped",
            tls_config(root, &a_key, &a_cert),
            "tls.cert",
        ),
        (
            "the key of another certificate",
            tls_config(root, &a_cert, &b_key),
            "tls.key",
        ),
        (
            "an expired certificate",
            tls_config(root, &old_cert, &old_key),
            "tls.cert",
        ),
        (
            "a spool that is a file",
            plain.replace(
                &format!("dir = {:?}", root.join("spool").display().to_string()),
                &format!("dir = {:?}", a_file.display().to_string()),
            ),
            "spool.dir",
        ),
        (
            "a Maildir under a file",
            plain.replace(
                &format!("maildir = {:?}", root.join("mail").display().to_string()),
                &format!("maildir = {:?}", a_file.join("mail").display().to_string()),
            ),
            "delivery.maildir",
        ),
        (
            "metrics on a listener's address",
            plain
                .replacen(
                    "addr = \"127.0.0.1:0\"",
                    &format!("addr = \"127.0.0.1:{port}\""),
                    1,
                )
                .replace(
                    "[metrics]\naddr = \"127.0.0.1:0\"",
                    &format!("[metrics]\naddr = \"0.0.0.0:{port}\""),
                ),
            "metrics.addr",
        ),
        (
            "a control socket path taken by a file",
            format!(
                "{plain}\n[control]\nsocket = {:?}\n",
                a_file.display().to_string()
            ),
            "control.socket",
        ),
        (
            "submission without TLS",
            render_config(&Opts::with_submission(), root).replace("allow_plaintext = true\n", ""),
            "listener[1].tls",
        ),
    ];
    for (what, body, key) in cases {
        let cfg = write_config(&dir, &body);
        let out = run_bin(&["check-config", "--config", &cfg], DEADLINE);
        assert_no_panic(&out);
        let t = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: check-config passed\n{t}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{cfg}: {key}: "))),
            "{what}: no `{cfg}: {key}: ...` line on stderr:\n{t}"
        );
        assert_lines_terminated(&out);

        let out = run_bin(&["serve", "--config", &cfg], DEADLINE);
        assert_no_panic(&out);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: serve\n{t}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ready"),
            "{what}: serve said ready:\n{t}"
        );
        assert!(t.contains(key), "{what}: serve does not name {key}:\n{t}");
    }
    // And the same file with the problem fixed passes both ways: `allow_plaintext` makes a
    // plaintext submission listener deliberate.
    let cfg = write_config(&dir, &render_config(&Opts::with_submission(), root));
    let out = run_bin(&["check-config", "--config", &cfg], DEADLINE);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{cfg}: ok\n"));
}

/// What does not stop the server is a warning: the file still passes.
#[test]
fn check_config_warns_of_a_certificate_near_its_end_and_of_aliases_that_lead_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Made 20 days ago and valid for 30: ten days left.
    let (cert, key) = certificate(root, "soon", Some("-20d"));
    let aliases = root.join("aliases");
    fs::write(&aliases, "sales@example.test: nobody@example.test\n").unwrap();
    fs::write(root.join("recipients"), "alice@example.test\n").unwrap();
    let body = tls_config(root, &cert, &key).replace(
        "[delivery]\n",
        &format!(
            "[delivery]\nrecipients = {:?}\naliases = {:?}\n",
            root.join("recipients").display().to_string(),
            aliases.display().to_string()
        ),
    );
    let cfg = write_config(&dir, &body);
    let out = run_bin(&["check-config", "--config", &cfg], DEADLINE);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = |key: &str, says: &str| {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("{cfg}: warning: {key}: ")) && l.contains(says)),
            "no warning on {key} saying {says:?}:\n{t}"
        );
    };
    // Ten days, give or take the rounding of the faked clock.
    warning("tls.cert", "expires in ");
    warning("delivery.aliases", "nobody@example.test is not a recipient");
    assert_lines_terminated(&out);
}

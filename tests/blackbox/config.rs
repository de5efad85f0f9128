//! `check-config` and `serve` on bad input: exit 2, say what is wrong, never panic.

use std::fs;
use std::net::TcpListener;
use std::process::Output;
use std::time::Duration;

use crate::harness::{render_config, run_bin, Opts};

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
    for key in ["max_message_size", "max_recipients"] {
        let line = t.lines().find(|l| l.contains(key));
        let line = line.unwrap_or_else(|| panic!("no line names `{key}`:\n{t}"));
        let (k, problem) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("line is not `key: problem`: {line:?}"));
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

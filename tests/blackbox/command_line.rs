//! The command line itself: `--help` on every command, `--version`, and usage errors as one
//! line on stderr with exit status 2.

use std::time::Duration;

use crate::harness::run_bin;

const DEADLINE: Duration = Duration::from_secs(20);

fn out(args: &[&str]) -> (Option<i32>, String, String) {
    let o = run_bin(args, DEADLINE);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_command_and_version_names_the_release() {
    let (code, stdout, _) = out(&["--help"]);
    assert_eq!(code, Some(0));
    for cmd in ["serve", "check-config", "user", "shield"] {
        assert!(stdout.contains(cmd), "--help lacks {cmd}:\n{stdout}");
    }
    for args in [
        &["serve", "--help"][..],
        &["check-config", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["shield", "--help"],
        &["shield", "ban", "--help"],
    ] {
        let (code, stdout, _) = out(args);
        assert_eq!(code, Some(0), "{args:?}");
        assert!(stdout.contains("Usage: smtp-edge"), "{args:?}:\n{stdout}");
    }
    let (code, stdout, _) = out(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout.trim(),
        format!("smtp-edge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["serve", "--config"],
        &["serve", "--verbose"],
        &["check-config"],
        &["user", "add", "alice@example.test"],
        &[
            "user",
            "add",
            "--users",
            "/nonexistent/users",
            "not-an-address",
        ],
        &["shield", "ban"],
    ] {
        let (code, stdout, stderr) = out(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("smtp-edge"), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

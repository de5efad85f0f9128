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
    for cmd in [
        "serve",
        "check-config",
        "config",
        "user",
        "ban",
        "queue",
        "shield",
    ] {
        assert!(stdout.contains(cmd), "--help lacks {cmd}:\n{stdout}");
    }
    for args in [
        &["serve", "--help"][..],
        &["check-config", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["user", "list", "--help"],
        &["config", "--help"],
        &["config", "show", "--help"],
        &["ban", "--help"],
        &["queue", "--help"],
        &["shield", "--help"],
        &["shield", "ban", "--help"],
    ] {
        let (code, stdout, _) = out(args);
        assert_eq!(code, Some(0), "{args:?}");
        assert!(stdout.contains("Usage: smtp-edge"), "{args:?}:\n{stdout}");
    }
    // The release and the commit the binary was built from, as git names it here.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    for flag in ["--version", "-V"] {
        let (code, stdout, _) = out(&[flag]);
        assert_eq!(code, Some(0));
        assert_eq!(
            stdout.trim(),
            format!("smtp-edge {} (commit {commit})", env!("CARGO_PKG_VERSION"))
        );
    }
}

/// `config show`: what the server runs with, defaults filled in and paths absolute, as a file
/// `check-config` accepts; `--defaults` without what the file set.
#[test]
fn config_show_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("smtp-edge.toml");
    std::fs::write(
        &config,
        "hostname = \"mx.example.test\"\nlocal_domains = [\"example.test\"]\n\
         [[listener]]\naddr = \"127.0.0.1:25\"\nrole = \"delivery\"\n\
         [spool]\ndir = \"spool\"\n[delivery]\nmaildir = \"/var/mail/x\"\n\
         [limits]\nmax_recipients = 500\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let (code, shown, stderr) = out(&["config", "show", "--config", c]);
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "max_recipients = 500".to_owned(),
        "max_message_size = 26214400".to_owned(),
        "data_timeout_secs = 180".to_owned(),
        // Relative paths are resolved against the working directory, as `serve` does.
        format!(
            "socket = \"{}/spool/control.sock\"",
            std::env::current_dir().unwrap().display()
        ),
        "ports = [25]".to_owned(),
    ] {
        assert!(shown.contains(&line), "{line:?} not in:\n{shown}");
    }
    let again = dir.path().join("shown.toml");
    std::fs::write(&again, &shown).unwrap();
    let (code, stdout, _) = out(&["check-config", "--config", again.to_str().unwrap()]);
    assert_eq!(
        code,
        Some(0),
        "the output is a valid configuration: {stdout}"
    );
    let (code, reshown, _) = out(&["config", "show", "--config", again.to_str().unwrap()]);
    assert_eq!((code, reshown), (Some(0), shown.clone()), "a fixed point");

    let (code, defaults, _) = out(&["config", "show", "--config", c, "--defaults"]);
    assert_eq!(code, Some(0));
    assert!(defaults.contains("max_recipients = 100"), "{defaults}");
    assert!(
        defaults.contains("hostname = \"mx.example.test\""),
        "{defaults}"
    );
    // Without --config: the embedded default the bare `serve` runs.
    let (code, embedded, _) = out(&["config", "show"]);
    assert_eq!(code, Some(0));
    assert!(embedded.contains("addr = \"127.0.0.1:2525\""), "{embedded}");

    std::fs::write(&config, "hostname = \"mx.example.test\"\nworkers = -1\n").unwrap();
    let (code, stdout, stderr) = out(&["config", "show", "--config", c]);
    assert_eq!(code, Some(2));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("workers: "), "{stderr}");
    assert!(stderr.contains(c), "names the file: {stderr}");
}

/// `user add` refuses short passwords and addresses outside local_domains; `user list` shows
/// who may log in.
#[test]
fn user_add_checks_and_user_list() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let u = users.to_str().unwrap();
    let config = dir.path().join("smtp-edge.toml");
    std::fs::write(
        &config,
        format!("local_domains = [\"example.org\"]\n[auth]\nusers = {u:?}\n"),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let add = |args: &[&str], password: &str| {
        let o = crate::harness::run_client(
            crate::harness::BIN,
            args,
            format!("{password}\n").as_bytes(),
            DEADLINE,
        );
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, stderr) = add(
        &["user", "add", "--config", c, "alice@example.org"],
        "too-short",
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("at least 12"), "{stderr}");
    assert!(!users.exists(), "nothing written");
    let (code, stderr) = add(
        &["user", "add", "--config", c, "alice@example.test"],
        "long enough password",
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("example.test is not in local_domains"),
        "{stderr}"
    );
    for login in ["alice@example.org", "Bob@Example.ORG"] {
        let (code, stderr) = add(
            &["user", "add", "--config", c, login],
            "long enough password",
        );
        assert_eq!(code, Some(0), "{stderr}");
    }
    let (code, listed, _) = out(&["user", "list", "--config", c]);
    assert_eq!(code, Some(0));
    assert_eq!(listed, "alice@example.org\nbob@example.org\n");
    let (code, listed, _) = out(&["user", "list", "--users", u]);
    assert_eq!((code, listed.lines().count()), (Some(0), 2));
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

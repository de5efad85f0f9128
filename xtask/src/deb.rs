//! `cargo xtask deb [--profile NAME] [--install-test]`: the Debian package, with cargo-deb.
//!
//! 1. cargo-deb, installed into `target/tools/` (`cargo install cargo-deb --locked`) unless
//!    one is on the PATH;
//! 2. the binary in the chosen profile, then its man page (`smtp-edge man`, gzipped into
//!    `target/man/`);
//! 3. `cargo deb --no-build` with `edge/Cargo.toml`'s `[package.metadata.deb]`: the binary,
//!    the systemd unit, `/etc/smtp-edge/smtp-edge.toml`, the man page, and the maintainer
//!    scripts in `edge/debian/` (postinst creates the `smtp-edge` system user).
//!
//! `--install-test` (root) then does what an operator does, and undoes it: `dpkg -i`,
//! `systemd-analyze verify` of the installed unit, the unit's `ExecStart=` run as the unit
//! would (as root, from the packaged configuration) inside a network namespace of its own (so
//! port 25 is its own, whatever the host runs), every thread checked to run as `smtp-edge`, a
//! message sent and found in the packaged Maildir, SIGTERM, `dpkg --purge`. It refuses to run
//! where smtp-edge is already installed or configured, so it never touches a real
//! installation.

// The install test waits on a real server with wall-clock deadlines.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::{cargo, tools};

/// `cargo xtask deb` options.
#[derive(clap::Args)]
pub struct Args {
    /// The cargo profile to package (`release`, or `dev` to reuse the test build).
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// As root: install the package, run the server from it, send it a message, purge it.
    #[arg(long)]
    pub install_test: bool,
}

/// How long each step of the install test may take.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// Builds the package; returns its path.
pub fn main(args: &Args) -> Result<PathBuf> {
    let root = workspace_root();
    let cargo_deb = ensure_cargo_deb(&root)?;
    cargo(&["build", "-p", "smtp-edge", "--profile", &args.profile])?;
    let dir = if args.profile == "dev" {
        "debug"
    } else {
        &args.profile
    };
    let binary = root.join("target").join(dir).join("smtp-edge");
    man_page(&root, &binary)?;
    eprintln!(
        "$ cargo deb -p smtp-edge --no-build --profile {}",
        args.profile
    );
    let out = Command::new(&cargo_deb)
        .args([
            "deb",
            "-p",
            "smtp-edge",
            "--no-build",
            "--fast",
            "--profile",
        ])
        .arg(&args.profile)
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo deb")?;
    ensure!(out.status.success(), "cargo deb failed ({})", out.status);
    // cargo-deb prints the package's path last.
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("cargo deb did not name the package it built")?;
    println!("{}", deb.display());
    if args.install_test {
        ensure!(
            tools::is_root(),
            "--install-test installs a package: run it as root"
        );
        install_test(&deb)?;
    }
    Ok(deb)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// cargo-deb from the PATH, else from `target/tools/`, installed there if missing.
fn ensure_cargo_deb(root: &Path) -> Result<PathBuf> {
    let on_path = Command::new("cargo-deb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return Ok(PathBuf::from("cargo-deb"));
    }
    let tools_dir = root.join("target/tools");
    let local = tools_dir.join("bin/cargo-deb");
    if !local.exists() {
        let tools_dir = tools_dir.to_str().context("target/tools is not UTF-8")?;
        cargo(&["install", "cargo-deb", "--locked", "--root", tools_dir])?;
    }
    Ok(local)
}

/// `target/man/smtp-edge.1.gz`, from the binary's own command line.
fn man_page(root: &Path, binary: &Path) -> Result<()> {
    let dir = root.join("target/man");
    std::fs::create_dir_all(&dir)?;
    let out = Command::new(binary)
        .arg("man")
        .output()
        .context("running smtp-edge man")?;
    ensure!(
        out.status.success(),
        "smtp-edge man failed ({})",
        out.status
    );
    let page = dir.join("smtp-edge.1");
    std::fs::write(&page, &out.stdout)?;
    // -n: no name or time stamp in the header, so the same page gives the same bytes.
    run(Command::new("gzip").args(["-9nf"]).arg(&page))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The packaged paths the install test reads.
const CONFIG: &str = "/etc/smtp-edge/smtp-edge.toml";
const UNIT: &str = "/lib/systemd/system/smtp-edge.service";
const MAILDIR: &str = "/var/lib/smtp-edge/mail";

fn install_test(deb: &Path) -> Result<()> {
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "smtp-edge"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("installed"));
    let user_existed = Command::new("getent")
        .args(["passwd", "smtp-edge"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed || user_existed || Path::new("/etc/smtp-edge").exists() {
        bail!(
            "smtp-edge is already installed or configured here (package, user or \
             /etc/smtp-edge): the install test only runs on a machine without it"
        );
    }
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let result = exercise_installed();
    // Undo whatever happened: purge, the Maildir we filled, the user postinst made.
    let purged = run(Command::new("dpkg").args(["--purge", "smtp-edge"]));
    let _ = std::fs::remove_dir_all(Path::new(MAILDIR).join("localhost"));
    let _ = std::fs::remove_dir(MAILDIR);
    let _ = std::fs::remove_dir("/var/lib/smtp-edge");
    let _ = Command::new("userdel").arg("smtp-edge").status();
    let _ = Command::new("groupdel")
        .arg("smtp-edge")
        .stderr(Stdio::null())
        .status();
    result?;
    purged?;
    for left in [
        "/usr/bin/smtp-edge",
        "/etc/smtp-edge",
        UNIT,
        "/var/spool/smtp-edge",
    ] {
        ensure!(
            !Path::new(left).exists(),
            "{left} is left after dpkg --purge"
        );
    }
    eprintln!("install test: ok (installed, served a message as smtp-edge, purged)");
    Ok(())
}

fn exercise_installed() -> Result<()> {
    let uid: u32 = output(Command::new("id").args(["-u", "smtp-edge"]))?
        .trim()
        .parse()
        .context("id -u smtp-edge")?;
    for path in [
        "/usr/bin/smtp-edge",
        CONFIG,
        UNIT,
        "/usr/share/man/man1/smtp-edge.1.gz",
    ] {
        ensure!(
            Path::new(path).exists(),
            "the package did not install {path}"
        );
    }
    let verify = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .context("running systemd-analyze verify")?;
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    ensure!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify {UNIT}: {complaints}"
    );
    run(Command::new("/usr/bin/smtp-edge").args(["check-config", "--config", CONFIG]))?;

    // ExecStart as the unit has it, run as the unit would: as root with only the unit's
    // capability bounding set and no new privileges, in a network of its own. Twice: the
    // second start finds the spool and certificate the first one gave to smtp-edge.
    let unit = std::fs::read_to_string(UNIT)?;
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in the unit"))
    };
    let exec_start: Vec<String> = setting("ExecStart=")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let bounding: Vec<String> = setting("CapabilityBoundingSet=")?
        .split_whitespace()
        .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", bounding.join(","));
    for start in 1..=2 {
        let mut server = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$@\"",
                "sh",
            ])
            .args([
                "setpriv",
                "--no-new-privs",
                "--bounding-set",
                &bounding,
                "--",
            ])
            .args(&exec_start)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the packaged server")?;
        let result = exercise_server(&mut server, uid, start);
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
        let status = wait_child(&mut server)?;
        result?;
        ensure!(
            status.success(),
            "the packaged server exited with {status} on SIGTERM"
        );
    }
    Ok(())
}

/// Waits for `ready`, checks every thread's uid, sends message number `n` and finds it in
/// Maildir.
fn exercise_server(server: &mut Child, uid: u32, n: usize) -> Result<()> {
    let pid = server.id();
    let stdout = server.stdout.take().context("server stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("the packaged server did not print `ready`")?;
        if line == "ready" {
            break;
        }
    }
    // Every thread runs as smtp-edge.
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .context("no Uid: line")?
            .split_whitespace()
            .map(|n| n.parse().unwrap_or(u32::MAX))
            .collect();
        ensure!(
            uids == [uid; 4],
            "a thread runs as {uids:?}, not smtp-edge ({uid})"
        );
    }
    // A message to the packaged domain, on port 25 of the server's own loopback.
    let netns = format!("--net=/proc/{pid}/ns/net");
    let subject = format!("Subject: packaged {n}");
    run(Command::new("nsenter").args([
        netns.as_str(),
        "swaks",
        "--server",
        "127.0.0.1:25",
        "--from",
        "someone@example.org",
        "--to",
        "postmaster@localhost",
        "--header",
        subject.as_str(),
        "--silent",
        "2",
    ]))?;
    let new = Path::new(MAILDIR).join("localhost/postmaster/new");
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let delivered: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        // Each start sends its own subject; an earlier start's message may be there too.
        let this_run = delivered.iter().find(|file| {
            std::fs::read_to_string(file).is_ok_and(|text| text.contains(subject.as_str()))
        });
        if let Some(file) = this_run {
            use std::os::unix::fs::MetadataExt;
            ensure!(
                std::fs::metadata(file)?.uid() == uid,
                "not written by smtp-edge"
            );
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no message in {} after {STEP_DEADLINE:?}",
            new.display()
        );
        // Polling a directory: the server offers no event to wait on from outside.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_child(child: &mut Child) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("the packaged server did not stop within {STEP_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

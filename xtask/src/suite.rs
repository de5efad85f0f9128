//! `cargo xtask test`: the README's test command and CI's, one sequence for both.
//!
//! 1. the system tools the tests need ([`tools`](super::tools)), installed when it can;
//! 2. the checked-in XDP object matches its source (`build-ebpf --check`);
//! 3. `cargo fmt --check` and clippy with warnings denied: the lints that keep `protocol/` free
//!    of I/O, clocks and unwraps are only worth something if the run fails on them;
//! 4. every test of the workspace, `--no-fail-fast`; as root with `--include-ignored`, so the
//!    tests marked `#[ignore = "needs root: ..."]` run too. Otherwise it says how many were
//!    skipped and why.
//!
//! 5. the Debian package (`deb.rs`): built, and as root installed, run from its own
//!    configuration, sent a message and purged.
//!
//! It ends with the totals over every test binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{cargo, cargo_bin, deb, ebpf, tools};

/// Runs the sequence; fails on the first failing step, or on any failing test.
pub fn run() -> Result<()> {
    let root = tools::is_root();
    tools::put_sbin_on_path();
    section("tools");
    tools::ensure(root)?;
    tools::ensure_components()?;

    section("ebpf object matches its source");
    ebpf::main(true)?;

    section("format and lints");
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;

    section("tests");
    let mut args = vec!["test", "--workspace", "--no-fail-fast"];
    if root {
        args.extend(["--", "--include-ignored"]);
    }
    let (ok, totals) = cargo_test(&args)?;

    // The package as an operator installs it: built from the test build, and as root
    // installed, run and purged (on a machine without smtp-edge installed).
    section("debian package");
    let deb = deb::main(&deb::Args {
        profile: "dev".to_owned(),
        install_test: root,
    });

    section("summary");
    println!("total: {} passed, {} failed", totals.passed, totals.failed);
    if !totals.skipped.is_empty() {
        let n: usize = totals.skipped.values().map(Vec::len).sum();
        println!("skipped {n} tests (not root; run as root to include them):");
        for (why, tests) in &totals.skipped {
            println!("  {} {why}: {}", tests.len(), tests.join(", "));
        }
    }
    if totals.failed > 0 {
        bail!("tests failed");
    }
    deb.context("the Debian package")?;
    if let Err(status) = ok {
        // No failed test, yet cargo failed: a test binary that did not build or was killed.
        bail!("cargo test failed ({status}) without a failed test; see its output above");
    }
    Ok(())
}

fn section(name: &str) {
    eprintln!("\n==== {name} ====");
}

/// Totals over every test binary's `test result:` line, and the ignored tests by reason.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    skipped: BTreeMap<String, Vec<String>>,
}

impl Totals {
    /// Reads one line of libtest's output.
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("test result: ") {
            // test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; ...
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        } else if let Some((name, why)) = line
            .strip_prefix("test ")
            .and_then(|l| l.split_once(" ... ignored"))
        {
            // test shield::ban ... ignored, needs root: network namespaces
            let why = why.trim_start_matches(',').trim();
            let why = if why.is_empty() { "#[ignore]" } else { why };
            self.skipped
                .entry(why.to_owned())
                .or_default()
                .push(name.to_owned());
        }
    }
}

/// Runs `cargo ARGS`, echoing its output as it comes, and totals libtest's result lines.
fn cargo_test(args: &[&str]) -> Result<(Result<(), std::process::ExitStatus>, Totals)> {
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(cargo_bin())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((
        if status.success() {
            Ok(())
        } else {
            Err(status)
        },
        totals,
    ))
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn totals_add_up_result_lines_and_group_ignored_tests_by_reason() {
        let mut t = Totals::default();
        for line in [
            "test a::x ... ok",
            "test shield::ban ... ignored, needs root: network namespaces",
            "test disk_full::full ... ignored, needs root: mounts a tmpfs",
            "test shield::flood ... ignored, needs root: network namespaces",
            "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            "test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s",
        ] {
            t.line(line);
        }
        assert_eq!((t.passed, t.failed), (17, 2));
        assert_eq!(
            t.skipped["needs root: network namespaces"],
            ["shield::ban", "shield::flood"]
        );
        assert_eq!(t.skipped["needs root: mounts a tmpfs"], ["disk_full::full"]);
    }
}

//! The system tools the checks and tests need, in one list, and how to get the missing ones.
//!
//! This list is the one place that names them: `.ci/run` installs only what cargo itself needs
//! and then runs `cargo xtask test`, which installs the rest from here. A test that starts a
//! new program adds a row.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// How to tell that a tool is present.
enum Probe {
    /// A program on the PATH.
    Program(&'static str),
    /// A Perl module (`perl -MModule -e1`).
    PerlModule(&'static str),
    /// A file (headers, certificates).
    File(&'static str),
    /// A Python module (`python3 -c 'import module'`).
    PythonModule(&'static str),
}

/// Where a tool comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A Debian 12 package.
    Apt(&'static str),
    /// A Python package from PyPI, installed with pip after the Debian packages (Debian ships
    /// no package for it).
    Pip(&'static str),
}

/// One tool: how to find it, where it comes from, and who needs it.
struct Tool {
    probe: Probe,
    package: Source,
    needed_by: &'static str,
    /// Needed only by tests marked `#[ignore = "needs root: ..."]`, which run only as root.
    root_only: bool,
}

const TOOLS: &[Tool] = &[
    Tool {
        probe: Probe::Program("swaks"),
        package: Source::Apt("swaks"),
        needed_by: "tests/blackbox/client_runs.rs (a real SMTP client)",
        root_only: false,
    },
    Tool {
        probe: Probe::PerlModule("Net::SSLeay"),
        package: Source::Apt("libnet-ssleay-perl"),
        needed_by: "swaks --tls / --tlsc in the TLS tests",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("curl"),
        package: Source::Apt("curl"),
        needed_by: "tests/blackbox/client_runs.rs and the metrics tests",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("python3"),
        package: Source::Apt("python3"),
        needed_by: "tests/clients/*.py (smtplib, ssl)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("openssl"),
        package: Source::Apt("openssl"),
        needed_by: "tests/blackbox/tls*.rs (s_client, test certificates)",
        root_only: false,
    },
    Tool {
        probe: Probe::File("/etc/ssl/certs"),
        package: Source::Apt("ca-certificates"),
        needed_by: "curl and openssl's default trust store",
        root_only: false,
    },
    Tool {
        probe: Probe::File("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
        package: Source::Apt("faketime"),
        needed_by: "tests/blackbox/spool.rs (a server whose clock goes back)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("clang-19"),
        package: Source::Apt("clang-19"),
        needed_by: "cargo xtask build-ebpf --check (the checked-in XDP object)",
        root_only: false,
    },
    Tool {
        probe: Probe::File("/usr/include/bpf/bpf_helpers.h"),
        package: Source::Apt("libbpf-dev"),
        needed_by: "cargo xtask build-ebpf --check (ebpf/shield.c includes libbpf headers)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("smtp-sink"),
        package: Source::Apt("postfix"),
        needed_by: "tests/peers (the client engine against a real receiver)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("dovecot"),
        package: Source::Apt("dovecot-lmtpd"),
        needed_by: "tests/peers and tests/blackbox/next_hop.rs (Dovecot LMTP as a mail store)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("haproxy"),
        package: Source::Apt("haproxy"),
        needed_by: "tests/blackbox/proxy.rs (PROXY protocol v1 and v2 from a real balancer)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("dnsmasq"),
        package: Source::Apt("dnsmasq-base"),
        needed_by: "tests/relay (MX, A and AAAA records for MX delivery)",
        root_only: false,
    },
    Tool {
        probe: Probe::PythonModule("pip"),
        package: Source::Apt("python3-pip"),
        needed_by: "installing aiosmtpd and dkimpy",
        root_only: false,
    },
    Tool {
        probe: Probe::PythonModule("aiosmtpd"),
        package: Source::Pip("aiosmtpd"),
        needed_by: "tests/peers and tests/blackbox/next_hop.rs (aiosmtpd receivers)",
        root_only: false,
    },
    Tool {
        probe: Probe::PythonModule("dkim"),
        package: Source::Pip("dkimpy"),
        needed_by: "tests/blackbox/dkim.rs (verifying the signatures of submitted mail)",
        root_only: false,
    },
    Tool {
        probe: Probe::PythonModule("nacl"),
        package: Source::Pip("pynacl"),
        needed_by: "tests/blackbox/dkim.rs (dkimpy's ed25519-sha256, RFC 8463)",
        root_only: false,
    },
    Tool {
        probe: Probe::Program("ip"),
        package: Source::Apt("iproute2"),
        needed_by: "the shield and embedded-default tests (network namespaces)",
        root_only: true,
    },
    Tool {
        probe: Probe::Program("hping3"),
        package: Source::Apt("hping3"),
        needed_by: "the shield's SYN-flood tests",
        root_only: true,
    },
    Tool {
        probe: Probe::Program("systemd-analyze"),
        package: Source::Apt("systemd"),
        needed_by: "cargo xtask deb --install-test (systemd-analyze verify of the packaged unit)",
        root_only: true,
    },
    Tool {
        probe: Probe::Program("man"),
        package: Source::Apt("man-db"),
        needed_by: "systemd-analyze verify (the unit's Documentation=man:smtp-edge(1))",
        root_only: true,
    },
    Tool {
        probe: Probe::Program("unshare"),
        package: Source::Apt("util-linux"),
        needed_by: "cargo xtask deb --install-test (the packaged server in its own network)",
        root_only: true,
    },
    Tool {
        probe: Probe::PythonModule("scapy"),
        package: Source::Pip("scapy"),
        needed_by: "tests/blackbox/shield_frames.rs (tests/clients/evasive_syns.py)",
        root_only: true,
    },
];

impl Probe {
    fn present(&self) -> bool {
        match self {
            Probe::Program(p) => Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Probe::PerlModule(m) => Command::new("perl")
                .args([&format!("-M{m}"), "-e1"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Probe::File(f) => Path::new(f).exists(),
            Probe::PythonModule(m) => Command::new("python3")
                .args(["-c", &format!("import {m}")])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Probe::Program(n) | Probe::PerlModule(n) | Probe::File(n) | Probe::PythonModule(n) => n,
        }
    }
}

/// Debian installs `smtp-sink`, `dovecot` and `ip` in /usr/sbin, which is on root's PATH but
/// not on other users': puts the sbin directories on this process's PATH (and so on that of
/// the probes and the tests it starts), so that an installed tool is neither reported missing
/// nor missed by a test.
pub fn put_sbin_on_path() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(path) = with_sbin(&path) {
        std::env::set_var("PATH", path);
    }
}

/// `path` with /usr/local/sbin, /usr/sbin and /sbin appended where absent; `None` if it
/// cannot be joined (a directory with `:` in its name).
fn with_sbin(path: &OsStr) -> Option<OsString> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(path).collect();
    for sbin in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == Path::new(sbin)) {
            dirs.push(sbin.into());
        }
    }
    std::env::join_paths(dirs).ok()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Checks every tool (as root: also those of the root-only tests); installs the missing ones
/// with apt-get when root on Debian, otherwise fails with the one command that would.
pub fn ensure(root: bool) -> Result<()> {
    let wanted: Vec<&Tool> = TOOLS.iter().filter(|t| root || !t.root_only).collect();
    let missing: Vec<&Tool> = wanted
        .iter()
        .copied()
        .filter(|t| !t.probe.present())
        .collect();
    for t in &wanted {
        let state = if missing.iter().any(|m| std::ptr::eq(*m, *t)) {
            "MISSING"
        } else {
            "ok"
        };
        eprintln!("  {:<32} {:<8} {}", t.probe.name(), state, t.needed_by);
    }
    if missing.is_empty() {
        return Ok(());
    }
    let apt: Vec<&str> = missing
        .iter()
        .filter_map(|t| match t.package {
            Source::Apt(p) => Some(p),
            Source::Pip(_) => None,
        })
        .collect();
    let pip: Vec<&str> = missing
        .iter()
        .filter_map(|t| match t.package {
            Source::Pip(p) => Some(p),
            Source::Apt(_) => None,
        })
        .collect();
    let steps = install_steps(&apt, &pip);
    let have_apt = Path::new("/usr/bin/apt-get").exists();
    if !(root && have_apt) {
        let one = steps
            .iter()
            .map(|argv| match argv.as_slice() {
                [only] if only == "debconf-set-selections" => format!(
                    "echo \"{}\" | debconf-set-selections",
                    POSTFIX_PRESEED.trim_end()
                ),
                _ => argv.join(" "),
            })
            .collect::<Vec<_>>()
            .join(" && ");
        let sudo = if root { "" } else { "sudo " };
        bail!(
            "missing tools; install them with:\n  {sudo}sh -c '{one}'\n(Debian 12 package names)"
        );
    }
    for argv in &steps {
        eprintln!("$ {}", argv.join(" "));
        let (program, args) = argv.split_first().context("empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let status = if *program == "debconf-set-selections" {
            // Its input is the answer, not an argument.
            let mut child = cmd
                .stdin(Stdio::piped())
                .spawn()
                .context("running debconf-set-selections")?;
            use std::io::Write as _;
            child
                .stdin
                .take()
                .context("debconf-set-selections stdin")?
                .write_all(POSTFIX_PRESEED.as_bytes())?;
            child.wait()
        } else {
            cmd.status()
        }
        .with_context(|| format!("running {program}"))?;
        if !status.success() {
            bail!("{} failed ({status})", argv.join(" "));
        }
    }
    let still: Vec<&str> = missing
        .iter()
        .filter(|t| !t.probe.present())
        .map(|t| t.probe.name())
        .collect();
    if !still.is_empty() {
        bail!("still missing after installing: {}", still.join(", "));
    }
    Ok(())
}

/// Installing the `postfix` package (for `smtp-sink`) must not set up or start a system
/// Postfix: debconf is told "No configuration" first.
const POSTFIX_PRESEED: &str = "postfix postfix/main_mailer_type select No configuration\n";

/// The commands that install `apt` and `pip` packages, in order.
fn install_steps(apt: &[&str], pip: &[&str]) -> Vec<Vec<String>> {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let mut steps = Vec::new();
    if !apt.is_empty() {
        if apt.contains(&"postfix") {
            steps.push(own(&["debconf-set-selections"]));
        }
        steps.push(own(&["apt-get", "update", "-qq"]));
        let mut install = own(&["apt-get", "install", "-y", "-qq", "--no-install-recommends"]);
        install.extend(own(apt));
        steps.push(install);
    }
    if !pip.is_empty() {
        // --break-system-packages: Debian's python3 is externally managed (PEP 668); these are
        // test tools only.
        let mut install = own(&[
            "python3",
            "-m",
            "pip",
            "install",
            "--quiet",
            "--break-system-packages",
        ]);
        install.extend(own(pip));
        steps.push(install);
    }
    steps
}

/// rustfmt and clippy, which `cargo fmt` and `cargo clippy` need: added with rustup when absent.
pub fn ensure_components() -> Result<()> {
    let cargo = super::cargo_bin();
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(sub, _)| {
            !Command::new(&cargo)
                .args([sub, "--version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!("rustup component add {}", missing.join(" "));
    eprintln!("$ {cmd}");
    let status = Command::new("rustup")
        .args(["component", "add"])
        .args(&missing)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("{} missing; install with: {cmd}", missing.join(" and ")),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::with_sbin;

    #[test]
    fn a_users_path_gets_the_sbin_directories_once() {
        let user = with_sbin(OsStr::new("/usr/local/bin:/usr/bin:/bin")).unwrap();
        assert_eq!(
            user,
            "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
        );
        let root = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        assert_eq!(with_sbin(OsStr::new(root)).unwrap(), root);
    }
}

//! Project tasks: `cargo xtask <task>`; `cargo xtask --help` lists them.
//!
//! - `test` (alias `ci`): the README's test command and CI's: tools, the eBPF object check,
//!   formatting, clippy with warnings denied, then every test. See `suite.rs`.
//! - `build-ebpf [--check]`: rebuild (or check) the checked-in XDP object. See `ebpf.rs`.
//! - `deb [--profile NAME] [--install-test]`: the Debian package (cargo-deb), and as root its
//!   install, run and purge. See `deb.rs`.
//! - `bench`: release build, then smtp-edge under load on loopback (optionally beside a
//!   throwaway Postfix and smtp-sink); one table, JSON under `target/bench/`. See `bench/mod.rs`.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod bench;
mod deb;
mod ebpf;
mod suite;
mod tools;

/// Project tasks for smtp-edge.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Check (and install, as root on Debian) the tools the tests need, check the eBPF object,
    /// formatting and clippy, then run every test (as root, the root-only ones too).
    #[command(alias = "ci")]
    Test,
    /// Rebuild ebpf/shield.o from ebpf/shield.c with clang-19.
    BuildEbpf {
        /// Rebuild into target/ebpf/ and fail if it differs from the checked-in object.
        #[arg(long)]
        check: bool,
    },
    /// Measure throughput, latency and memory on loopback (see BENCHMARKS.md); fails when any
    /// run had errors or Maildir does not hold exactly the messages accepted.
    Bench(bench::Args),
    /// Build the Debian package (cargo-deb; binary, systemd unit, configuration, man page);
    /// with --install-test, as root, install it, serve a message from it, and purge it.
    Deb(deb::Args),
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test => suite::run(),
        Task::BuildEbpf { check } => ebpf::main(check),
        Task::Bench(args) => bench::main(args),
        Task::Deb(args) => deb::main(&args).map(|_| ()),
    }
}

/// The cargo that runs this task (so `cargo +toolchain xtask` keeps its toolchain).
fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs `cargo ARGS`, echoing the command; fails when it does.
fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo_bin())
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

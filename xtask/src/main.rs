//! Project tasks: `cargo xtask <task>`.
//!
//! - `ci`: what CI checks, in order: formatting, clippy with warnings denied, every test.
//! - `bench`: release build, then smtp-edge under load on loopback (optionally beside a
//!   throwaway Postfix and smtp-sink); one table, JSON under `target/bench/`. See `bench/mod.rs`.

use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod ebpf;

const USAGE: &str = "usage: cargo xtask ci | cargo xtask bench [--help]";

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("build-ebpf") => ebpf::main(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("bench") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            bench::main(&args)
        }
        _ => bail!("{USAGE}"),
    }
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace"])
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

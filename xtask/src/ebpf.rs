//! `cargo xtask build-ebpf [--check]`: compiles `ebpf/shield.c` into the checked-in
//! `ebpf/shield.o` that `edge/src/shield` embeds.
//!
//! The object must be byte-identical to a rebuild from source, so the flags are fixed and
//! deterministic: no build-directory path reaches the object (`-fdebug-prefix-map` and
//! `-ffile-prefix-map` rewrite the workspace root to `.`, and the source is named relative to
//! it). `--check` rebuilds into `target/ebpf/` and fails if the result differs from the
//! checked-in object. The compiler is Debian 12's `clang-19` (package `clang-19`, headers from
//! `libbpf-dev`); set `CLANG` to use another binary, but expect a different object from a
//! different clang.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The compiler the checked-in object was built with.
const DEFAULT_CLANG: &str = "clang-19";
/// The clang major version whose output is checked in.
const CLANG_MAJOR: &str = "19";
const SOURCE: &str = "ebpf/shield.c";
const OBJECT: &str = "ebpf/shield.o";

/// Rebuilds the object; with `check`, into `target/ebpf/`, failing if it differs.
pub fn main(check: bool) -> Result<()> {
    let root = workspace_root()?;
    let clang = std::env::var("CLANG").unwrap_or_else(|_| DEFAULT_CLANG.into());
    let version = clang_version(&clang)?;
    eprintln!("$ {clang}: {version}");
    if !version.contains(&format!("version {CLANG_MAJOR}.")) {
        eprintln!(
            "warning: {OBJECT} is built with clang {CLANG_MAJOR}; another version gives a \
             different object"
        );
    }
    if check {
        let out_dir = root.join("target/ebpf");
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;
        let fresh = out_dir.join("shield.o");
        compile(&clang, &root, &fresh)?;
        let built =
            std::fs::read(&fresh).with_context(|| format!("reading {}", fresh.display()))?;
        let checked_in = std::fs::read(root.join(OBJECT))
            .with_context(|| format!("reading {OBJECT} (run `cargo xtask build-ebpf`)"))?;
        if built != checked_in {
            bail!(
                "{OBJECT} ({} bytes) differs from a rebuild of {SOURCE} ({} bytes, in {}): run \
                 `cargo xtask build-ebpf` and check in the result",
                checked_in.len(),
                built.len(),
                fresh.display()
            );
        }
        eprintln!("{OBJECT} matches a rebuild of {SOURCE}");
    } else {
        compile(&clang, &root, &root.join(OBJECT))?;
        eprintln!("wrote {OBJECT}");
    }
    Ok(())
}

/// The flags, in full. Everything that varies between machines is mapped away.
fn compile(clang: &str, root: &Path, out: &Path) -> Result<()> {
    let multiarch = multiarch()?;
    let root_str = root
        .to_str()
        .context("workspace path is not UTF-8")?
        .to_owned();
    let args: Vec<String> = vec![
        "-O2".into(),
        "-g".into(),
        "-target".into(),
        "bpf".into(),
        "-mcpu=v3".into(),
        "-Wall".into(),
        "-Werror".into(),
        format!("-fdebug-prefix-map={root_str}=."),
        format!("-ffile-prefix-map={root_str}=."),
        // <linux/*.h> include <asm/*.h>, which Debian keeps under the multiarch directory; the
        // bpf target does not search it by itself.
        format!("-I/usr/include/{multiarch}"),
        "-c".into(),
        SOURCE.into(),
        "-o".into(),
        out.to_str().context("output path is not UTF-8")?.into(),
    ];
    eprintln!("$ {clang} {}", args.join(" "));
    let status = Command::new(clang)
        .args(&args)
        .current_dir(root)
        .status()
        .with_context(|| {
            format!("running {clang} (on Debian 12: apt-get install clang-19 libbpf-dev)")
        })?;
    if !status.success() {
        bail!("{clang} failed ({status})");
    }
    Ok(())
}

fn clang_version(clang: &str) -> Result<String> {
    let out = Command::new(clang)
        .arg("--version")
        .output()
        .with_context(|| {
            format!("running {clang} --version (on Debian 12: apt-get install clang-19 libbpf-dev)")
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// Debian's multiarch tuple for this machine (`x86_64-linux-gnu`), where `asm/types.h` lives.
fn multiarch() -> Result<String> {
    let arch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let probe = Path::new("/usr/include").join(&arch).join("asm/types.h");
    if !probe.exists() {
        bail!(
            "{} not found (on Debian 12: apt-get install linux-libc-dev libbpf-dev)",
            probe.display()
        );
    }
    Ok(arch)
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .context("xtask has no parent directory")?
        .canonicalize()
        .context("resolving the workspace root")?;
    Ok(root)
}

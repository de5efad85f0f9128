//! Sets `SMTP_EDGE_COMMIT`, the short git commit the binary is built from, for `--version` and
//! the `smtp_edge_build_info` metric (read through `smtp_edge::build_info`).
//!
//! Without git or outside a checkout (a source tarball, a package build) it is `unknown`; a
//! packager who knows the commit may set `SMTP_EDGE_COMMIT` in the environment instead.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SMTP_EDGE_COMMIT");
    let commit = std::env::var("SMTP_EDGE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SMTP_EDGE_COMMIT={commit}");
    watch_head();
}

/// Re-runs this script when HEAD moves: the file HEAD itself (a checkout), the branch it names
/// (a commit) and packed-refs (a branch packed by gc). Only files that exist are named, since
/// cargo treats a missing one as always changed.
fn watch_head() {
    let mut paths = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(branch);
    }
    for path in paths {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]).map(PathBuf::from) {
            if file.is_file() {
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
    }
}

/// The trimmed stdout of `git ARGS` run in this crate's directory, if it succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

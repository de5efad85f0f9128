//! What this binary is: its version and the commit it was built from, in one place for
//! `--version` and the `smtp_edge_build_info` metric.

/// The crate version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit the binary was built from (`git rev-parse --short HEAD`, by
/// `edge/build.rs`), or `unknown` when it was built outside a git checkout.
pub const COMMIT: &str = env!("SMTP_EDGE_COMMIT");

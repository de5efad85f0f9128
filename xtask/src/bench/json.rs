//! smtp-bench's `--json` object, read with serde_json, and the helpers the report needs.

use anyhow::{Context, Result};

pub use serde_json::Value as Json;

/// Parses one `smtp-bench --json` object.
pub fn parse(text: &str) -> Result<Json> {
    serde_json::from_str(text).with_context(|| format!("smtp-bench output: {text:?}"))
}

/// Dotted-path access (`data_latency_us.p50`).
pub trait Fields {
    /// The number at `path`, or 0 when absent.
    fn num(&self, path: &str) -> f64;
}

impl Fields for Json {
    fn num(&self, path: &str) -> f64 {
        self.pointer(&format!("/{}", path.replace('.', "/")))
            .and_then(Json::as_f64)
            .unwrap_or(0.0)
    }
}

/// Everything that went wrong in one smtp-bench run: the per-kind error counts plus the
/// messages the server refused.
pub fn errors(bench: &Json) -> u64 {
    let listed: f64 = bench
        .get("errors")
        .and_then(Json::as_object)
        .map_or(0.0, |m| m.values().filter_map(Json::as_f64).sum());
    (listed + bench.num("messages_failed")) as u64
}

/// `s` as a JSON string literal.
pub fn quote(s: &str) -> String {
    Json::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_errors_and_quoting() {
        let b = parse(
            r#"{"messages_ok": 10, "messages_failed": 2, "data_latency_us": {"p50": 1.5},
               "errors": {"454 4.7.0": 3, "connect": 1}}"#,
        )
        .unwrap();
        assert_eq!(b.num("messages_ok"), 10.0);
        assert_eq!(b.num("data_latency_us.p50"), 1.5);
        assert_eq!(b.num("missing.path"), 0.0);
        assert_eq!(errors(&b), 6);
        assert_eq!(quote("a\"b\n"), r#""a\"b\n""#);
        assert!(parse("{").is_err());
    }
}

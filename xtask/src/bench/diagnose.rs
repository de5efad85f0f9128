//! What the server says about a run that failed: the distinct warnings and errors in its log
//! (queue ids folded, so one cause is one line with a count) and, for smtp-edge, what its queue
//! still holds (`smtp-edge queue list` over the control socket). Read before the run's
//! directory is removed, so a failed run explains itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::servers::{Kind, Server};

/// Distinct log lines shown per run.
const LINES: usize = 6;
/// `queue list` lines shown per run.
const QUEUE_LINES: usize = 8;

/// The diagnosis of a failed run of `server` (its directory is `dir`).
pub fn run(server: &Server, edge: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let log = match server.kind {
        Kind::Edge => dir.join("stderr.log"),
        Kind::Postfix => dir.join("maillog"),
        Kind::Sink => return out,
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for (line, n) in distinct(&text, server.kind) {
        out.push(format!("log ({n}x): {line}"));
    }
    if server.kind == Kind::Edge && server.backlog() > 0 {
        let list = Command::new(edge)
            .args(["queue", "list", "--config"])
            .arg(dir.join("smtp-edge.toml"))
            .stdin(Stdio::null())
            .output();
        if let Ok(list) = list {
            let text = String::from_utf8_lossy(&list.stdout);
            out.extend(
                text.lines()
                    .take(QUEUE_LINES)
                    .map(|l| format!("queue: {}", l.trim())),
            );
        }
    }
    out
}

/// The most frequent warnings and errors of a log, each with its count.
fn distinct(text: &str, kind: Kind) -> Vec<(String, usize)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let wanted = match kind {
            Kind::Edge => line.contains(" ERROR ") || line.contains(" WARN "),
            _ => [
                "warning:",
                "error:",
                "fatal:",
                "panic:",
                "status=deferred",
                "status=bounced",
            ]
            .iter()
            .any(|w| line.contains(w)),
        };
        if wanted {
            *seen.entry(fold(line)).or_default() += 1;
        }
    }
    let mut v: Vec<(String, usize)> = seen.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(LINES);
    v
}

/// A log line without its timestamp, with every queue id (a word of 10 or more letters and
/// digits that has a digit) as `<id>`, so that lines differing only there fold together.
fn fold(line: &str) -> String {
    let body = match line.split_once(' ') {
        // smtp-edge: `2026-11-29T20:54:02.019766Z  ERROR ...`; Postfix: `Nov 29 20:54:02 HOST ...`.
        Some((first, rest)) if first.contains('T') && first.ends_with('Z') => rest.trim_start(),
        _ => line.splitn(5, ' ').nth(4).unwrap_or(line),
    };
    let mut out = String::with_capacity(body.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() >= 10 && word.bytes().any(|b| b.is_ascii_digit()) {
            out.push_str("<id>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in body.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.chars().take(240).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_differ_only_in_ids_fold_into_one_with_a_count() {
        let log = "\
2026-11-29T20:54:02.019755Z ERROR smtp_edge::driver::session::events: spool: write failed error=spool write /s/tmp/000SGQ0ZFBHNFG0000000000W3: No space left on device (os error 28)
2026-11-29T20:54:02.019756Z ERROR smtp_edge::driver::session::events: spool: write failed error=spool write /s/tmp/000SGQ0ZFBHNFG0000000000W4: No space left on device (os error 28)
2026-11-29T20:54:02.019757Z  INFO smtp_edge::queue: 000SGQ0ZFBHNFG008000000000: status=sent
2026-11-29T20:54:02.019758Z  WARN smtp_edge::queue: something else
";
        let d = distinct(log, Kind::Edge);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].1, 2);
        assert_eq!(
            d[0].0,
            "ERROR smtp_edge::driver::session::events: spool: write failed error=spool write \
             /s/tmp/<id>: No space left on device (os error 28)"
        );
        assert_eq!(
            d[1],
            ("WARN smtp_edge::queue: something else".to_owned(), 1)
        );
    }

    #[test]
    fn postfix_deferrals_fold_without_their_queue_ids() {
        let log = "\
Nov 29 20:54:02 bench postfix/smtp[1]: 4ABCDEF12345: to=<u@example.test>, status=deferred (connect refused)
Nov 29 20:54:03 bench postfix/smtp[1]: 4ABCDEF12346: to=<u@example.test>, status=deferred (connect refused)
Nov 29 20:54:03 bench postfix/smtp[1]: 4ABCDEF12347: to=<u@example.test>, status=sent (250 ok)
";
        let d = distinct(log, Kind::Postfix);
        assert_eq!(
            d,
            [(
                "postfix/smtp[1]: <id>: to=<u@example.test>, status=deferred (connect refused)"
                    .to_owned(),
                2
            )]
        );
    }
}

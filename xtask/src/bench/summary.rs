//! What a bench run concludes: mean ± standard deviation over rounds, the checks that make a
//! run fail (errors, or Maildir not holding exactly what was accepted), and the Markdown table
//! BENCHMARKS.md is made from.

use std::fmt::Write as _;

use super::json::Fields as _;
use super::servers::Kind;
use super::{Run, Scenario};

/// Mean and sample standard deviation of `v` (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, 0.0);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `mean ± sd` with `digits` decimals.
pub fn pm(v: &[f64], digits: usize) -> String {
    let (mean, sd) = mean_sd(v);
    format!("{mean:.digits$} ± {sd:.digits$}")
}

/// Free space below which a failed run is said to have met a full disk (MiB).
const LOW_DISK_MIB: u64 = 64;

/// Why a run does not count: it had errors, or the messages delivered are not the messages
/// accepted (Maildir files; for a next hop or smtp-sink itself, what smtp-sink counted). Each
/// problem is followed by the server's own account ([`Run::diagnosis`]) and, when the disk
/// nearly filled during the run, says so: a 451 then is the server keeping its promise.
pub fn problems(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        let what = format!("{} / {} / round {}", r.scenario, r.server.name(), r.round);
        let errors = r.errors();
        if errors > 0 {
            out.push(format!("{what}: {errors} errors ({})", error_kinds(r)));
        }
        let accepted = r.bench.num("messages_ok") as usize * r.rcpts;
        if r.delivered != accepted {
            let place = if r.next_hop {
                "at the next hop"
            } else if r.server == Kind::Sink {
                "counted by smtp-sink"
            } else {
                "in Maildir"
            };
            out.push(format!(
                "{what}: {} messages {place}, {accepted} accepted",
                r.delivered
            ));
        }
        if errors > 0 || r.delivered != accepted {
            if r.min_free_mib < LOW_DISK_MIB {
                out.push(format!(
                    "{what}: the disk nearly filled during the run ({} MiB free at the lowest)",
                    r.min_free_mib
                ));
            }
            out.extend(r.diagnosis.iter().map(|d| format!("{what}: {d}")));
        }
    }
    out
}

fn error_kinds(r: &Run) -> String {
    r.bench
        .get("errors")
        .and_then(|e| e.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{} messages refused", r.bench.num("messages_failed")))
}

/// One row per scenario and server: mean ± sd over its rounds.
pub fn markdown(scenarios: &[Scenario], runs: &[Run], rounds: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| scenario | server | rounds | msg/s | sessions/s | p50 ms | p99 ms | server µs/msg | peak RSS MiB | errors | delivered = accepted |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    for sc in scenarios {
        for kind in [Kind::Edge, Kind::Postfix, Kind::Sink] {
            let rs: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == sc.key && r.server == kind)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&Run) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let errors: u64 = rs.iter().map(|r| r.errors()).sum();
            let ok = rs
                .iter()
                .all(|r| r.delivered == r.bench.num("messages_ok") as usize * r.rcpts);
            let stored = match (ok, sc.next_hop || kind == Kind::Sink) {
                (true, true) => "yes (counted by smtp-sink)",
                (true, false) => "yes",
                (false, _) => "**no**",
            };
            let _ = writeln!(
                t,
                "| {} | {} | {}/{rounds} | {} | {} | {} | {} | {} | {} | {} | {stored} |",
                sc.title,
                kind.name(),
                rs.len(),
                pm(&col(&|r| r.bench.num("messages_per_s")), 0),
                pm(&col(&|r| r.bench.num("sessions_per_s")), 1),
                pm(&col(&|r| r.bench.num("data_latency_us.p50") / 1e3), 2),
                pm(&col(&|r| r.bench.num("data_latency_us.p99") / 1e3), 2),
                pm(&col(&|r| r.server_us_per_msg()), 0),
                pm(&col(&|r| r.peak_rss_kib as f64 / 1024.0), 1),
                if errors > 0 {
                    format!("**{errors}**")
                } else {
                    "0".into()
                },
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation() {
        assert_eq!(mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).0, 5.0);
        let (_, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((sd - 2.138).abs() < 1e-3, "{sd}");
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
        assert_eq!(pm(&[1.0, 3.0], 1), "2.0 ± 1.4");
    }
}

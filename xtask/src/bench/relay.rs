//! Scenario r: relaying. smtp-edge with `relay.local = "smtp://..."` and Postfix with
//! `relay_transport` hand every accepted message to a next hop, a fresh `smtp-sink` per run
//! that counts what it answers `.` for. Two figures per run: intake (messages/s while the
//! client sends, as scenario a) and end to end (accepted messages / (load time + time until the
//! sink has them all)), side by side, pair by pair within a round.

use std::fmt::Write as _;

use super::json::Fields as _;
use super::servers::Kind;
use super::summary::pm;
use super::{median, Run, Scenario};

fn relay_runs<'a>(scenarios: &[Scenario], runs: &'a [Run]) -> Vec<&'a Run> {
    runs.iter()
        .filter(|r| scenarios.iter().any(|s| s.key == r.scenario && s.next_hop))
        .collect()
}

/// The per-run table and the ratios to Postfix (intake, end to end), appended to `t`.
pub fn render(t: &mut String, scenarios: &[Scenario], runs: &[Run], rounds: usize) {
    let rs = relay_runs(scenarios, runs);
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\nr relay: acceptance to the next hop's 250 (a fresh smtp-sink per run counts arrivals):\n\
         {:<10} {:>3} {:>12} {:>8} {:>9} {:>16} {:>8} {:>8} {:>11}",
        "server", "rnd", "intake msg/s", "load s", "drain s", "end-to-end msg/s", "srv CPU", "us/msg", "at next hop"
    );
    for r in &rs {
        let _ = writeln!(
            t,
            "{:<10} {:>3} {:>12.0} {:>8.2} {:>9.2} {:>16.0} {:>7.2}s {:>8.0} {:>5}/{:<5}",
            r.server.name(),
            r.round,
            r.bench.num("messages_per_s"),
            r.load_s,
            r.drain_s,
            r.end_to_end_per_s(),
            r.server_cpu_s,
            r.server_us_per_msg(),
            r.delivered,
            r.msgs()
        );
    }
    for (what, f) in [
        (
            "intake",
            (&|r: &Run| r.bench.num("messages_per_s")) as &dyn Fn(&Run) -> f64,
        ),
        ("end to end", &|r: &Run| r.end_to_end_per_s()),
    ] {
        let v = ratios(&rs, rounds, f);
        if !v.is_empty() {
            let _ = writeln!(
                t,
                "  smtp-edge / postfix, {what}: {:.2}x (runs {})",
                median(v.clone()),
                v.iter()
                    .map(|x| format!("{x:.2}x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// smtp-edge / Postfix of `f`, round by round.
fn ratios(rs: &[&Run], rounds: usize, f: &dyn Fn(&Run) -> f64) -> Vec<f64> {
    (1..=rounds)
        .filter_map(|round| {
            let find = |k: Kind| rs.iter().find(|r| r.server == k && r.round == round);
            let (e, p) = (find(Kind::Edge)?, find(Kind::Postfix)?);
            Some(f(e) / f(p).max(1e-9))
        })
        .collect()
}

/// The Markdown table of scenario r: mean ± sd over rounds per server.
pub fn markdown(scenarios: &[Scenario], runs: &[Run]) -> String {
    let rs = relay_runs(scenarios, runs);
    if rs.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "\n| relay to smtp-sink | rounds | intake msg/s | end-to-end msg/s | drain s | server µs/msg | errors | at the next hop = accepted |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for kind in [Kind::Edge, Kind::Postfix] {
        let k: Vec<&Run> = rs.iter().copied().filter(|r| r.server == kind).collect();
        if k.is_empty() {
            continue;
        }
        let col = |f: &dyn Fn(&Run) -> f64| k.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let errors: u64 = k.iter().map(|r| r.errors()).sum();
        let all = k.iter().all(|r| r.delivered == r.msgs() as usize);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            k.len(),
            pm(&col(&|r| r.bench.num("messages_per_s")), 0),
            pm(&col(&|r| r.end_to_end_per_s()), 0),
            pm(&col(&|r| r.drain_s), 2),
            pm(&col(&|r| r.server_us_per_msg()), 0),
            if errors > 0 {
                format!("**{errors}**")
            } else {
                "0".into()
            },
            if all { "yes" } else { "**no**" }
        );
    }
    t
}

//! Scenario h: durable intake with the handoff to a next hop, against a server that stores
//! nothing. Postfix's `smtp-source -d -s 50 -l 10240 -m N` (50 sessions, each reused for
//! message after message, lock-step) sends to smtp-edge, whose `relay.local = "smtp://..."` is a
//! second `smtp-sink`; then, in the same round, to `smtp-sink` itself. Rounds alternate the two.
//!
//! Per run: intake = N / the client's wall time; for smtp-edge also the drain (until the next
//! hop has all N and the spool queue is empty) and the server's CPU (utime + stime from
//! `/proc/PID/stat`, from before the load to the end of the drain, so it includes the handoff)
//! per message. Every message must arrive: the count at the sink (the next hop's for smtp-edge)
//! must be N, and smtp-source must exit 0, or the run fails.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::json::quote;
use super::servers::{self, EdgeSetup, Kind, Server};
use super::summary::pm;
use super::{diagnose, measured, median, procfs, DRAIN_LIMIT};

/// Goal for the intake ratio smtp-edge / smtp-sink.
const GOAL_RATIO: f64 = 0.8;
/// Goal for smtp-edge's CPU per message, the handoff included (µs).
const GOAL_US: f64 = 150.0;

/// One run: smtp-source into one server.
pub struct HandoffRun {
    server: Kind,
    round: usize,
    messages: u64,
    load_s: f64,
    drain_s: f64,
    server_cpu_s: f64,
    /// Messages counted by the receiving smtp-sink (the next hop, for smtp-edge).
    received: usize,
    /// smtp-source exited 0.
    client_ok: bool,
    /// smtp-source's complaints (its stderr), and the server's account of a failed run.
    diagnosis: Vec<String>,
}

impl HandoffRun {
    fn intake_per_s(&self) -> f64 {
        self.messages as f64 / self.load_s.max(1e-9)
    }
    fn end_to_end_per_s(&self) -> f64 {
        self.messages as f64 / (self.load_s + self.drain_s).max(1e-9)
    }
    fn us_per_msg(&self) -> f64 {
        self.server_cpu_s * 1e6 / (self.messages as f64).max(1.0)
    }
    fn failed(&self) -> bool {
        !self.client_ok || self.received as u64 != self.messages
    }
}

/// Scenario h's runs.
pub struct Handoff {
    runs: Vec<HandoffRun>,
    messages: u64,
    rounds: usize,
}

/// Runs `rounds` rounds of `messages`, smtp-edge (relaying) then smtp-sink; `step` reports
/// progress before each run.
pub fn run(
    edge: &Path,
    dir: &Path,
    messages: u64,
    rounds: usize,
    step: &mut dyn FnMut(&str),
) -> Result<Handoff> {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for kind in [Kind::Edge, Kind::Sink] {
            step(&format!(
                "h smtp-source -d -s 50 -l 10240 -m {messages} / {} / round {round}",
                kind.name()
            ));
            let d = dir.join(format!("{}-{round}", kind.name()));
            runs.push(one(edge, &d, kind, round, messages)?);
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    Ok(Handoff {
        runs,
        messages,
        rounds,
    })
}

fn one(edge: &Path, dir: &Path, kind: Kind, round: usize, messages: u64) -> Result<HandoffRun> {
    let hop = match kind {
        Kind::Edge => Some(Server::sink(&dir.join("next-hop"))?),
        _ => None,
    };
    let server = match &hop {
        Some(hop) => {
            let setup = EdgeSetup {
                relay_local: Some(format!("smtp://127.0.0.1:{}", hop.port)),
                ..EdgeSetup::default()
            };
            Server::edge_with(edge, dir, &setup)?
        }
        None => Server::sink(dir)?,
    };
    let counter = hop.as_ref().unwrap_or(&server);
    let cpu0 = server.cpu();
    let stderr = dir.join("smtp-source.stderr");
    let mut src = Command::new(servers::SMTP_SOURCE);
    src.args(["-d", "-s", "50", "-l", "10240", "-m", &messages.to_string()])
        .args(["-f", "bench@smtp-source.invalid", "-t", "user@example.test"])
        .arg(format!("127.0.0.1:{}", server.port))
        .stderr(std::fs::File::create(&stderr)?);
    let m = measured(&mut src, || {}).context("smtp-source")?;
    let arrived = || counter.delivered() as u64 >= messages;
    // smtp-sink counts at each `.`, so after the client's last reply only its counter thread
    // can lag; smtp-edge's next hop gets the mail when the relay carries it.
    let drain = server.drain_until(
        if hop.is_some() {
            DRAIN_LIMIT
        } else {
            Duration::from_secs(10)
        },
        arrived,
    );
    let server_cpu_s = server.cpu() - cpu0;
    let received = counter.delivered();
    let mut diagnosis: Vec<String> = std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .lines()
        .take(5)
        .map(|l| format!("smtp-source: {l}"))
        .collect();
    let run = HandoffRun {
        server: kind,
        round,
        messages,
        load_s: m.wall.as_secs_f64(),
        drain_s: if hop.is_some() {
            drain.as_secs_f64()
        } else {
            0.0
        },
        server_cpu_s,
        received,
        client_ok: m.ok,
        diagnosis: Vec::new(),
    };
    if run.failed() {
        let free = procfs::free_mib(dir);
        diagnosis.push(format!("{free} MiB free on the run's file system"));
        diagnosis.extend(diagnose::run(&server, edge, dir));
    }
    Ok(HandoffRun { diagnosis, ..run })
}

impl Handoff {
    fn pairs(&self, f: &dyn Fn(&HandoffRun, &HandoffRun) -> f64) -> Vec<f64> {
        (1..=self.rounds)
            .filter_map(|round| {
                let find = |k: Kind| self.runs.iter().find(|r| r.server == k && r.round == round);
                Some(f(find(Kind::Edge)?, find(Kind::Sink)?))
            })
            .collect()
    }

    fn edge(&self) -> impl Iterator<Item = &HandoffRun> {
        self.runs.iter().filter(|r| r.server == Kind::Edge)
    }

    /// The per-run table, the ratios and the goals.
    pub fn render(&self) -> String {
        let mut t = format!(
            "\nh handoff: smtp-source -d -s 50 -l 10240 -m {} into smtp-edge (relay.local = smtp-sink) and into smtp-sink:\n\
             {:<10} {:>3} {:>12} {:>8} {:>9} {:>16} {:>8} {:>8} {:>13}\n",
            self.messages,
            "server",
            "rnd",
            "intake msg/s",
            "load s",
            "drain s",
            "end-to-end msg/s",
            "srv CPU",
            "us/msg",
            "received"
        );
        for r in &self.runs {
            let _ = writeln!(
                t,
                "{:<10} {:>3} {:>12.0} {:>8.2} {:>9.2} {:>16.0} {:>7.2}s {:>8.0} {:>6}/{:<6}{}",
                r.server.name(),
                r.round,
                r.intake_per_s(),
                r.load_s,
                r.drain_s,
                r.end_to_end_per_s(),
                r.server_cpu_s,
                r.us_per_msg(),
                r.received,
                r.messages,
                if r.client_ok {
                    ""
                } else {
                    "  smtp-source FAILED"
                }
            );
        }
        let ratio = self.pairs(&|e, s| e.intake_per_s() / s.intake_per_s().max(1e-9));
        let us: Vec<f64> = self.edge().map(HandoffRun::us_per_msg).collect();
        let list = |v: &[f64], unit: &str| {
            v.iter()
                .map(|x| format!("{x:.2}{unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        let _ = writeln!(
            t,
            "  durable intake smtp-edge / smtp-sink: {:.2}x median (rounds {}) [goal >= {GOAL_RATIO}x: {}]",
            median(ratio.clone()),
            list(&ratio, "x"),
            verdict(ratio.iter().all(|&r| r >= GOAL_RATIO))
        );
        let _ = writeln!(
            t,
            "  smtp-edge CPU per message, handoff included: {:.0} us median (rounds {}) [goal <= {GOAL_US}: {}]",
            median(us.clone()),
            list(&us, ""),
            verdict(us.iter().all(|&u| u <= GOAL_US))
        );
        t
    }

    /// The Markdown table: mean ± sd over rounds, with the ratio.
    pub fn markdown(&self) -> String {
        let mut t = format!(
            "\n| handoff, smtp-source -d -s 50 -l 10240 -m {} | rounds | intake msg/s | end-to-end msg/s | server µs/msg | all received |\n\
             |---|---|---|---|---|---|\n",
            self.messages
        );
        for (kind, label) in [
            (Kind::Edge, "smtp-edge, relay.local = smtp-sink"),
            (Kind::Sink, "smtp-sink"),
        ] {
            let rs: Vec<&HandoffRun> = self.runs.iter().filter(|r| r.server == kind).collect();
            let col = |f: &dyn Fn(&HandoffRun) -> f64| rs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let _ = writeln!(
                t,
                "| {label} | {} | {} | {} | {} | {} |",
                rs.len(),
                pm(&col(&HandoffRun::intake_per_s), 0),
                pm(&col(&HandoffRun::end_to_end_per_s), 0),
                pm(&col(&HandoffRun::us_per_msg), 0),
                if rs.iter().any(|r| r.failed()) {
                    "**no**"
                } else {
                    "yes"
                }
            );
        }
        let ratio = self.pairs(&|e, s| e.intake_per_s() / s.intake_per_s().max(1e-9));
        let _ = writeln!(
            t,
            "\nDurable intake smtp-edge / smtp-sink, round by round: {}.",
            ratio
                .iter()
                .map(|x| format!("{x:.2}x"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        t
    }

    /// The runs' results as JSON.
    pub fn json(&self) -> String {
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|r| {
                format!(
                    "{{\"server\":{},\"round\":{},\"messages\":{},\"load_s\":{:.3},\"drain_s\":{:.3},\
                     \"intake_per_s\":{:.1},\"end_to_end_per_s\":{:.1},\"server_cpu_s\":{:.3},\
                     \"server_cpu_us_per_message\":{:.1},\"received\":{},\"client_ok\":{},\"diagnosis\":{}}}",
                    quote(r.server.name()),
                    r.round,
                    r.messages,
                    r.load_s,
                    r.drain_s,
                    r.intake_per_s(),
                    r.end_to_end_per_s(),
                    r.server_cpu_s,
                    r.us_per_msg(),
                    r.received,
                    r.client_ok,
                    super::json::Json::from(r.diagnosis.clone())
                )
            })
            .collect();
        format!("[{}]", runs.join(","))
    }

    /// Runs that lost or refused mail: their figures are not figures.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.runs.iter().filter(|r| r.failed()) {
            let what = format!("h / {} / round {}", r.server.name(), r.round);
            out.push(format!(
                "{what}: {} of {} messages received{}",
                r.received,
                r.messages,
                if r.client_ok {
                    ""
                } else {
                    "; smtp-source exited non-zero"
                }
            ));
            out.extend(r.diagnosis.iter().map(|d| format!("{what}: {d}")));
        }
        out
    }
}

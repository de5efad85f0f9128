//! `cargo xtask bench`: builds release binaries, runs smtp-edge on loopback under `smtp-bench`
//! load, optionally beside a throwaway Postfix and `smtp-sink`, and prints one table; the results
//! also go to `target/bench/` as JSON, and with `--markdown FILE` the summary (mean ± standard
//! deviation over rounds) as the Markdown table BENCHMARKS.md is made from.
//!
//! The task fails (after printing everything) when any run had errors, or when the messages in
//! Maildir are not the messages accepted: figures from a run that lost or refused mail are not
//! figures. Progress (step n of m, elapsed, ETA) goes to stderr.
//!
//! Scenarios:
//! - a: durable throughput: 50 sessions, 10 KiB messages, pipelined, 100 messages per session;
//! - b: a over STARTTLS beside a in plaintext, alternating, on one server config (a delivery
//!   listener with `tls = "starttls"` and a self-signed certificate, checked with `--ca`);
//! - b2: implicit-TLS submission with AUTH PLAIN (a users file made by `smtp-edge user add`):
//!   connections reused (messages/s) and one message per session (AUTHs/s: argon2id-bound);
//! - c: connection churn: one message per session;
//! - d: idle connections: server RSS per held session, at each count of `--idle` (10,000 and
//!   100,000 by default; see `idle.rs` for the descriptor and port limits in the way); smtp-edge
//!   only: Postfix runs one process per session, capped by `default_process_limit`;
//! - e: shield (root, trafgen): legitimate throughput while a SYN flood hits the delivery port
//!   from a second address, shield on vs off, in network namespaces (see `shield.rs`);
//! - f: TLS handshake rate: sessions with no message (`-m 0`), implicit TLS, full (`--no-resume`)
//!   and resumed, beside plaintext; per core = handshakes / server CPU seconds;
//! - t: a's load, one DKIM-signed message sent over and over, into smtp-edge with every
//!   `[checks]` entry off, then at `tag` against a dnsmasq on loopback (SPF, DKIM, DMARC, ARC),
//!   then Postfix; a checks-on run counts only if every message passed SPF, DKIM and DMARC
//!   (see `trust.rs`; skipped without dnsmasq or dkimpy);
//! - client cost: smtp-bench against `smtp-source`, both driving `smtp-sink`, CPU per message.
//!
//! Peak memory is `VmHWM` for smtp-edge and smtp-sink; for Postfix, the highest sum of PSS over
//! the instance's processes sampled every ~20 ms (RSS would count shared pages once per process).
//!
//! Every server starts fresh for every run (so peak RSS is per run), and with `--vs` the runs
//! alternate, smtp-edge then the other, round after round, so machine noise hits both. A run's
//! server CPU is taken from `/proc` from just before the load to the end of the delivery drain,
//! so it includes getting every accepted message into Maildir.

mod diagnose;
mod dnsmasq;
mod handoff;
mod idle;
mod json;
mod procfs;
mod relay;
mod servers;
mod shield;
mod summary;
mod trust;

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use json::{quote, Fields as _, Json};
use servers::{EdgeSetup, Kind, Server};

/// Longest a single load run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Longest wait for the delivery stage to empty its queue after a run.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// `cargo xtask bench`: smtp-edge under load on loopback, optionally beside Postfix and
/// smtp-sink. Exits non-zero when any run had errors or when Maildir does not hold exactly the
/// messages accepted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also run a throwaway Postfix (durable queue + Maildir via virtual(8)), or smtp-sink
    /// (stores nothing: the protocol-only ceiling).
    #[arg(long, value_name = "postfix|smtp-sink", value_parser = kind)]
    vs: Vec<Kind>,
    /// Alternating rounds per comparison (default 2 with --vs, else 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: Option<u64>,
    /// Scenario a: messages per run.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    messages: u64,
    /// Scenario r: messages per run (relayed to a next hop).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    relay: u64,
    /// Scenario h: messages per round (smtp-source into smtp-edge relaying to smtp-sink,
    /// alternating with smtp-sink itself).
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    handoff: u64,
    /// Scenario h: rounds.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    handoff_rounds: u64,
    /// Run only these scenarios (comma-separated: a, r, b, b2, f, c, d, e, h, t, client).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = ["a", "r", "b", "b2", "f", "c", "d", "e", "h", "t", "client"])]
    only: Vec<String>,
    /// Scenario c: messages (= sessions) per run.
    #[arg(long, value_name = "N", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..=25_000))]
    churn: u64,
    /// Scenario d: idle sessions held, one run per count (comma-separated).
    #[arg(long, value_name = "N,...", default_value = "10000,100000", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=200_000))]
    idle: Vec<u64>,
    /// Scenario f: sessions per run.
    #[arg(long, value_name = "N", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    handshakes: u64,
    /// Skip scenario e (the SYN flood in network namespaces).
    #[arg(long)]
    no_shield: bool,
    /// Use the release binaries already built.
    #[arg(long)]
    no_build: bool,
    /// Also write the summary (mean ± sd over rounds) as a Markdown table to FILE.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
}

impl Args {
    /// Whether scenario group `group` runs (every one unless `--only` names others).
    fn runs(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }

    fn rounds(&self) -> usize {
        match self.rounds {
            Some(n) => n as usize,
            None if self.vs.is_empty() => 1,
            None => 2,
        }
    }
}

fn kind(v: &str) -> Result<Kind, String> {
    match v {
        "postfix" => Ok(Kind::Postfix),
        "smtp-sink" => Ok(Kind::Sink),
        _ => Err("postfix or smtp-sink".into()),
    }
}

/// One load scenario. `{ca}` in `args` becomes the server's self-signed certificate.
struct Scenario {
    key: &'static str,
    /// Scenarios of one group alternate within a round (b: plaintext, then STARTTLS).
    group: &'static str,
    title: String,
    args: Vec<String>,
    /// smtp-edge's configuration.
    setup: EdgeSetup,
    /// Which of smtp-edge's listeners to load.
    listener: usize,
    /// Not run against `--vs` servers.
    edge_only: bool,
    /// Local mail goes to a next hop, a fresh `smtp-sink` per run, instead of Maildir:
    /// smtp-edge with `relay.local = "smtp://..."`, Postfix with `relay_transport`. The run
    /// ends when the sink has every accepted message.
    next_hop: bool,
}

/// The user of scenario b2, created with `smtp-edge user add`.
const BENCH_USER: &str = "bench@example.test";
/// Its password (a throwaway users file under the run's temporary directory).
const BENCH_PASSWORD: &str = "bench-password-not-secret";

/// One server's run of one scenario.
struct Run {
    scenario: &'static str,
    server: Kind,
    round: usize,
    bench: Json,
    bench_raw: String,
    server_cpu_s: f64,
    drain_s: f64,
    peak_rss_kib: u64,
    delivered: usize,
    /// Recipients per message: each accepted message is this many Maildir files.
    rcpts: usize,
    /// Wall time of the load (the client's run).
    load_s: f64,
    /// Whether the messages went to a next hop ([`Scenario::next_hop`]): `delivered` is
    /// then what the next hop received.
    next_hop: bool,
    /// Free space on the run's file system, lowest seen during the load and the drain (MiB).
    min_free_mib: u64,
    /// Why the run failed, in the server's words (its log, its queue), when it did.
    diagnosis: Vec<String>,
    /// smtp-edge's account of its checks, for runs that configure them (scenario t).
    checks: Option<trust::Observed>,
}

impl Run {
    fn msgs(&self) -> f64 {
        self.bench.num("messages_ok")
    }
    /// Server CPU per accepted message; per session for runs without messages (`-m 0`).
    fn server_us_per_msg(&self) -> f64 {
        let n = if self.msgs() > 0.0 {
            self.msgs()
        } else {
            self.bench.num("sessions_done")
        };
        self.server_cpu_s * 1e6 / n.max(1.0)
    }
    fn errors(&self) -> u64 {
        json::errors(&self.bench)
    }
    /// Accepted messages per second from the start of the load until the last one was
    /// delivered (in Maildir, or at the next hop): intake and delivery together.
    fn end_to_end_per_s(&self) -> f64 {
        self.msgs() / (self.load_s + self.drain_s).max(1e-9)
    }
    fn json(&self) -> String {
        format!(
            "{{\"scenario\":{},\"server\":{},\"round\":{},\"server_cpu_s\":{:.3},\
             \"server_cpu_us_per_message\":{:.1},\"drain_s\":{:.3},\"peak_rss_kib\":{},\
             \"delivered\":{},\"next_hop\":{},\"load_s\":{:.3},\"end_to_end_per_s\":{:.1},\
             \"min_free_mib\":{},\"diagnosis\":{},\"checks\":{},\"bench\":{}}}",
            quote(self.scenario),
            quote(self.server.name()),
            self.round,
            self.server_cpu_s,
            self.server_us_per_msg(),
            self.drain_s,
            self.peak_rss_kib,
            self.delivered,
            self.next_hop,
            self.load_s,
            self.end_to_end_per_s(),
            self.min_free_mib,
            Json::from(self.diagnosis.clone()),
            trust::json(self.checks.as_ref()),
            self.bench_raw.trim()
        )
    }
}

struct Bins {
    edge: PathBuf,
    bench: PathBuf,
}

/// Runs `cargo xtask bench ARGS`.
pub fn main(mut args: Args) -> Result<()> {
    args.vs.dedup();
    let rounds = args.rounds();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    if !args.no_build {
        super::cargo(&["build", "--release", "-p", "smtp-edge", "-p", "smtp-bench"])?;
    }
    let bins = Bins {
        edge: target.join("release/smtp-edge"),
        bench: target.join("release/smtp-bench"),
    };
    for b in [&bins.edge, &bins.bench] {
        if !b.exists() {
            bail!("{} is missing; run without --no-build", b.display());
        }
    }
    for k in &args.vs {
        let bin = match k {
            Kind::Postfix => servers::POSTFIX,
            _ => servers::SMTP_SINK,
        };
        if !Path::new(bin).exists() {
            bail!(
                "--vs {}: {bin} is not installed (this task installs nothing)",
                k.name()
            );
        }
    }
    let tmp = TempDir::new()?;
    let machine = machine();
    eprintln!("machine: {machine}");

    let users = tmp.0.join("users");
    add_user(&bins.edge, &users)?;
    let a_args = |n: u64| {
        strings(&[
            "-c",
            "50",
            "-n",
            &n.to_string(),
            "-s",
            "10240",
            "-m",
            "100",
            "--pipelining",
            "on",
        ])
    };
    let with = |mut v: Vec<String>, more: &[&str]| {
        v.extend(strings(more));
        v
    };
    let starttls = EdgeSetup {
        listeners: vec![("delivery", "starttls")],
        ..EdgeSetup::default()
    };
    let submission = EdgeSetup {
        listeners: vec![("submission", "implicit")],
        users: Some(users.clone()),
        ..EdgeSetup::default()
    };
    let implicit = EdgeSetup {
        listeners: vec![("delivery", "implicit"), ("delivery", "none")],
        ..EdgeSetup::default()
    };
    let auth = [
        "--tls",
        "--ca",
        "{ca}",
        "--auth",
        "PLAIN",
        "--user",
        BENCH_USER,
        "--password",
        BENCH_PASSWORD,
    ];
    let hs = |extra: &[&str]| {
        with(
            strings(&["-c", "50", "-n", &args.handshakes.to_string(), "-m", "0"]),
            extra,
        )
    };
    let mut scenarios = vec![
        Scenario {
            key: "a",
            group: "a",
            setup: EdgeSetup::default(),
            listener: 0,
            edge_only: false,
            next_hop: false,
            title: "a durable, 50 sessions, 10 KiB".into(),
            args: strings(&[
                "-c",
                "50",
                "-n",
                &args.messages.to_string(),
                "-s",
                "10240",
                "-m",
                "100",
                "--pipelining",
                "on",
            ]),
        },
        Scenario {
            key: "r",
            group: "r",
            setup: EdgeSetup::default(),
            listener: 0,
            edge_only: false,
            next_hop: true,
            title: "r relay to smtp-sink, as a".into(),
            args: a_args(args.relay),
        },
        Scenario {
            key: "b-plain",
            group: "b",
            title: "b plaintext (as a)".into(),
            args: a_args(args.messages),
            setup: starttls.clone(),
            listener: 0,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "b-starttls",
            group: "b",
            title: "b STARTTLS (as a)".into(),
            args: with(a_args(args.messages), &["--starttls", "--ca", "{ca}"]),
            setup: starttls,
            listener: 0,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "b2-reuse",
            group: "b2",
            title: "b2 TLS+AUTH PLAIN, 100 msg/sess".into(),
            args: with(
                strings(&["-c", "10", "-n", "2000", "-s", "10240", "-m", "100"]),
                &auth,
            ),
            setup: submission.clone(),
            listener: 0,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "b2-churn",
            group: "b2",
            title: "b2 TLS+AUTH PLAIN, 1 msg/session".into(),
            args: with(
                strings(&["-c", "8", "-n", "200", "-s", "10240", "-m", "1"]),
                &auth,
            ),
            setup: submission,
            listener: 0,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "f-plain",
            group: "f",
            title: "f plaintext connect, no message".into(),
            args: hs(&[]),
            setup: implicit.clone(),
            listener: 1,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "f-full",
            group: "f",
            title: "f TLS full handshakes, no message".into(),
            args: hs(&["--tls", "--ca", "{ca}", "--no-resume"]),
            setup: implicit.clone(),
            listener: 0,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "f-resumed",
            group: "f",
            title: "f TLS resumed, no message".into(),
            args: hs(&["--tls", "--ca", "{ca}"]),
            setup: implicit,
            listener: 0,
            edge_only: true,
            next_hop: false,
        },
        Scenario {
            key: "c",
            group: "c",
            setup: EdgeSetup::default(),
            listener: 0,
            edge_only: false,
            next_hop: false,
            title: "c churn, 1 msg/session, 50 conc.".into(),
            args: strings(&[
                "-c",
                "50",
                "-n",
                &args.churn.to_string(),
                "-s",
                "10240",
                "-m",
                "1",
                "--pipelining",
                "on",
            ]),
        },
    ];
    // Scenario t: its zone (dnsmasq, the signed message) lives until the end of the bench.
    let zone = if args.runs("t") {
        match trust::prepare(&bins.edge, &root, &tmp.0.join("t-zone"))? {
            trust::Prepared::Ready(zone) => Some(zone),
            trust::Prepared::Skipped(why) => {
                eprintln!("t: skipped, {why}");
                None
            }
        }
    } else {
        None
    };
    if let Some(zone) = &zone {
        let load = with(
            strings(&[
                "-c",
                "50",
                "-n",
                &args.messages.to_string(),
                "-m",
                "100",
                "--pipelining",
                "on",
                "--from",
                trust::SENDER,
                "--message",
            ]),
            &[&zone.message.display().to_string()],
        );
        for (key, checks, title, edge_only) in [
            (
                trust::OFF,
                trust::CHECKS_OFF,
                "t checks off (a, signed 10 KiB)",
                true,
            ),
            (
                trust::TAG,
                trust::CHECKS_TAG,
                "t checks at tag (a, signed 10 KiB)",
                false,
            ),
        ] {
            scenarios.push(Scenario {
                key,
                group: "t",
                title: title.into(),
                args: load.clone(),
                setup: EdgeSetup {
                    checks: Some(checks.into()),
                    nameservers: vec![zone.nameserver()],
                    ..EdgeSetup::default()
                },
                listener: 0,
                edge_only,
                next_hop: false,
            });
        }
    }
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| args.runs(s.group))
        .collect();
    let mut groups: Vec<&str> = scenarios.iter().map(|s| s.group).collect();
    groups.dedup();
    let postfix_tools =
        Path::new(servers::SMTP_SINK).exists() && Path::new(servers::SMTP_SOURCE).exists();
    let client_cost_runs = postfix_tools && args.runs("client");
    let handoff_runs = postfix_tools && args.runs("h");
    let load_runs: usize = scenarios
        .iter()
        .map(|sc| 1 + if sc.edge_only { 0 } else { args.vs.len() })
        .sum::<usize>()
        * rounds;
    // Load runs, then d (one step per count), then e (one step), then h (one step per run), then the client cost.
    let mut progress = Progress::new(
        load_runs
            + if args.runs("d") { args.idle.len() } else { 0 }
            + usize::from(args.runs("e"))
            + if handoff_runs {
                2 * args.handoff_rounds as usize
            } else {
                0
            }
            + usize::from(client_cost_runs),
    );
    let mut runs = Vec::new();
    for group in groups {
        for round in 1..=rounds {
            for sc in scenarios.iter().filter(|s| s.group == group) {
                let others = if sc.edge_only { &[][..] } else { &args.vs[..] };
                for kind in std::iter::once(Kind::Edge).chain(others.iter().copied()) {
                    let dir = tmp.0.join(format!("{}-{}-{round}", sc.key, kind.name()));
                    progress.step(&format!("{} / {} / round {round}", sc.title, kind.name()));
                    let run = load_run(&bins, kind, &dir, sc, round)?;
                    let _ = std::fs::remove_dir_all(&dir);
                    if run.errors() > 0 {
                        eprintln!("  {} errors", run.errors());
                    }
                    runs.push(run);
                }
            }
        }
    }
    let mut idle = Vec::new();
    if args.runs("d") {
        for &n in &args.idle {
            progress.step(&format!("d idle {n} sessions / smtp-edge"));
            idle.push(idle::run(&bins, &tmp.0.join("d-idle"), n)?);
        }
    }
    let shield = if !args.runs("e") {
        shield::Outcome::Skipped("--only".into())
    } else if args.no_shield {
        progress.step("e shield / smtp-edge in network namespaces");
        shield::Outcome::Skipped("--no-shield".into())
    } else {
        progress.step("e shield / smtp-edge in network namespaces");
        shield::run(&bins.edge, &bins.bench, &tmp.0.join("e-shield"), rounds)?
    };
    let handoff = if handoff_runs {
        let rounds = args.handoff_rounds as usize;
        let dir = tmp.0.join("h-handoff");
        Some(handoff::run(
            &bins.edge,
            &dir,
            args.handoff,
            rounds,
            &mut |what| progress.step(what),
        )?)
    } else {
        if args.runs("h") {
            eprintln!("h: skipped, smtp-source or smtp-sink is not installed");
        }
        None
    };
    let client = if client_cost_runs {
        progress.step("client cost, smtp-bench vs smtp-source against smtp-sink");
        Some(client_cost(&bins, &tmp.0.join("client"))?)
    } else {
        None
    };
    progress.done();

    let mut table = render(&scenarios, &runs, &idle, &shield, client.as_deref(), &args);
    relay::render(&mut table, &scenarios, &runs, rounds);
    let t_rounds = trust::rounds(&runs, rounds);
    trust::render(&mut table, &t_rounds, zone.as_ref());
    if let Some(h) = &handoff {
        table.push_str(&h.render());
    }
    print!("{table}");
    let mut summary = summary::markdown(&scenarios, &runs, rounds);
    summary.push_str(&relay::markdown(&scenarios, &runs));
    summary.push_str(&trust::markdown(&t_rounds));
    if let Some(h) = &handoff {
        summary.push_str(&h.markdown());
    }
    println!("\nmean ± standard deviation over rounds:\n\n{summary}");

    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let stamp = unix_time();
    let doc = format!(
        "{{\"unix_time\":{stamp},\"machine\":{},\"rounds\":{},\"runs\":[{}],\"idle\":[{}],\
         \"shield\":{},\"handoff\":{},\"client_cost\":[{}],\"table\":{}}}\n",
        quote(&machine),
        rounds,
        runs.iter().map(Run::json).collect::<Vec<_>>().join(","),
        idle.iter()
            .map(idle::Idle::json)
            .collect::<Vec<_>>()
            .join(","),
        shield.json(),
        handoff
            .as_ref()
            .map_or("null".into(), handoff::Handoff::json),
        client
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(ClientCost::json)
            .collect::<Vec<_>>()
            .join(","),
        quote(&table)
    );
    let file = out_dir.join(format!("bench-{stamp}.json"));
    std::fs::write(&file, &doc)?;
    std::fs::write(out_dir.join("latest.json"), &doc)?;
    eprintln!("results: {}", file.display());
    if let Some(md) = &args.markdown {
        if let Some(parent) = md.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(md, &summary).with_context(|| format!("writing {}", md.display()))?;
        eprintln!("markdown: {}", md.display());
    }

    let mut problems = summary::problems(&runs);
    problems.extend(trust::problems(&runs));
    problems.extend(shield.problems());
    if let Some(h) = &handoff {
        problems.extend(h.problems());
    }
    for d in &idle {
        if d.skipped.is_none() && d.established < d.target {
            problems.push(format!(
                "d idle: {} of {} sessions established",
                d.established, d.target
            ));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        bail!(
            "{} problems: the figures above are not a clean run",
            problems.len()
        );
    }
    Ok(())
}

/// "scenario n of m, elapsed, ETA" on stderr; the ETA assumes the remaining steps take as long
/// as the finished ones did on average.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: now(),
        }
    }

    fn step(&mut self, what: &str) {
        let elapsed = now() - self.started;
        let eta = if self.done == 0 {
            "?".to_owned()
        } else {
            let per = elapsed.as_secs_f64() / self.done as f64;
            format!("{:.0} s", per * (self.total - self.done) as f64)
        };
        self.done += 1;
        eprintln!(
            "[{} of {}, {:.0} s elapsed, ETA {eta}] {what}",
            self.done,
            self.total,
            elapsed.as_secs_f64()
        );
    }

    fn done(&self) {
        eprintln!(
            "[{} steps in {:.0} s]",
            self.done,
            (now() - self.started).as_secs_f64()
        );
    }
}

/// Creates `users` with [`BENCH_USER`], through the real binary (`user add`, password on stdin).
fn add_user(edge: &Path, users: &Path) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(edge)
        .args(["user", "add", "--users"])
        .arg(users)
        .arg(BENCH_USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("smtp-edge user add")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{BENCH_PASSWORD}\n").as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("smtp-edge user add failed ({status})");
    }
    Ok(())
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

fn start(bins: &Bins, kind: Kind, dir: &Path, setup: &EdgeSetup) -> Result<Server> {
    match kind {
        Kind::Edge => Server::edge_with(&bins.edge, dir, setup),
        Kind::Postfix => Server::postfix(dir),
        Kind::Sink => Server::sink(dir),
    }
}

/// A child's stdout and its CPU seconds (read from `/proc` while it is a zombie, before reaping).
struct Measured {
    stdout: String,
    cpu_s: f64,
    wall: Duration,
    ok: bool,
}

/// Runs `cmd` to completion (killed after `RUN_LIMIT`), calling `sample` every ~20 ms.
fn measured(cmd: &mut Command, mut sample: impl FnMut()) -> Result<Measured> {
    let t0 = now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let pid = child.id();
    let mut ticks = 0u32;
    while !procfs::is_zombie(pid) {
        if now() - t0 > RUN_LIMIT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        ticks += 1;
        if ticks.is_multiple_of(10) {
            sample();
        }
    }
    let wall = now() - t0;
    let cpu_s = procfs::cpu(pid);
    let status = child.wait()?;
    let stdout = reader.join().unwrap_or_default();
    Ok(Measured {
        stdout,
        cpu_s,
        wall,
        ok: status.success(),
    })
}

fn load_run(bins: &Bins, kind: Kind, dir: &Path, sc: &Scenario, round: usize) -> Result<Run> {
    // smtp-sink relays nothing: against it, a next-hop scenario is its own intake.
    let hop = if sc.next_hop && kind != Kind::Sink {
        Some(Server::sink(&dir.join("next-hop"))?)
    } else {
        None
    };
    let server = match (&hop, kind) {
        (Some(hop), Kind::Edge) => {
            let setup = EdgeSetup {
                relay_local: Some(format!("smtp://127.0.0.1:{}", hop.port)),
                ..sc.setup.clone()
            };
            Server::edge_with(&bins.edge, dir, &setup)?
        }
        (Some(hop), Kind::Postfix) => Server::postfix_relay(dir, hop.port)?,
        _ => start(bins, kind, dir, &sc.setup)?,
    };
    let cpu0 = server.cpu();
    let mut peak = server.rss_kib();
    let mut min_free = procfs::free_mib(dir);
    let mut cmd = Command::new(&bins.bench);
    let ca = server.cert.display().to_string();
    let port = server
        .ports
        .get(sc.listener)
        .copied()
        .unwrap_or(server.port);
    cmd.args(sc.args.iter().map(|a| if a == "{ca}" { &ca } else { a }))
        .arg("--json")
        .arg(format!("127.0.0.1:{port}"));
    let m = measured(&mut cmd, || {
        peak = peak.max(server.rss_kib());
        min_free = min_free.min(procfs::free_mib(dir));
    })?;
    let bench = json::parse(m.stdout.trim())
        .with_context(|| format!("smtp-bench output: {:?}", m.stdout))?;
    let accepted = bench.num("messages_ok") as usize;
    let drain = match &hop {
        Some(hop) => server.drain_until(DRAIN_LIMIT, || hop.delivered() >= accepted),
        None => server.drain(DRAIN_LIMIT, accepted),
    };
    let server_cpu_s = server.cpu() - cpu0;
    min_free = min_free.min(procfs::free_mib(dir));
    let peak_rss_kib = match kind {
        Kind::Postfix => peak.max(server.rss_kib()),
        _ => procfs::status_kib(server.pid, "VmHWM"),
    };
    let delivered = hop
        .as_ref()
        .map_or_else(|| server.delivered(), Server::delivered);
    if kind != Kind::Sink && server.backlog() > 0 {
        eprintln!(
            "  warning: {} messages still queued after {DRAIN_LIMIT:?}",
            server.backlog()
        );
    }
    // A run that configures the checks is a figure of them only if they ran (scenario t).
    let checks =
        (kind == Kind::Edge && sc.setup.checks.is_some()).then(|| trust::observe(&server, dir));
    let failed = json::errors(&bench) > 0 || delivered != accepted || server.backlog() > 0;
    let diagnosis = if failed {
        diagnose::run(&server, &bins.edge, dir)
    } else {
        Vec::new()
    };
    let hop_used = hop.is_some();
    drop(server);
    drop(hop);
    Ok(Run {
        scenario: sc.key,
        server: kind,
        round,
        bench,
        bench_raw: m.stdout,
        server_cpu_s,
        drain_s: drain.as_secs_f64(),
        peak_rss_kib,
        delivered,
        rcpts: 1,
        load_s: m.wall.as_secs_f64(),
        next_hop: hop_used,
        min_free_mib: min_free,
        diagnosis,
        checks,
    })
}

/// One client's cost against smtp-sink.
struct ClientCost {
    client: String,
    mode: &'static str,
    messages: f64,
    cpu_s: f64,
    wall_s: f64,
}

impl ClientCost {
    fn us_per_msg(&self) -> f64 {
        self.cpu_s * 1e6 / self.messages.max(1.0)
    }
    fn json(&self) -> String {
        format!(
            "{{\"client\":{},\"mode\":{},\"messages\":{},\"cpu_s\":{:.3},\"wall_s\":{:.3},\
             \"cpu_us_per_message\":{:.2}}}",
            quote(&self.client),
            quote(self.mode),
            self.messages,
            self.cpu_s,
            self.wall_s,
            self.us_per_msg()
        )
    }
}

/// smtp-bench against `smtp-source`, both driving `smtp-sink` with 50 sessions of 10 KiB
/// messages, alternating, two rounds each: CPU per message of the client process.
fn client_cost(bins: &Bins, dir: &Path) -> Result<Vec<ClientCost>> {
    const N: u64 = 10_000;
    let sink = Server::sink(dir)?;
    let addr = format!("127.0.0.1:{}", sink.port);
    let n = N.to_string();
    let mut out = Vec::new();
    for (mode, reuse) in [("reuse, lock-step", true), ("churn, lock-step", false)] {
        for _round in 0..2 {
            let mut src = Command::new(servers::SMTP_SOURCE);
            src.args([
                "-s",
                "50",
                "-m",
                &n,
                "-l",
                "10240",
                "-f",
                "bench@smtp-bench.invalid",
            ])
            .args(["-t", "user@example.test"]);
            if reuse {
                src.arg("-d");
            }
            src.arg(&addr);
            let m = measured(&mut src, || {})?;
            if !m.ok {
                bail!("smtp-source failed against smtp-sink");
            }
            out.push(ClientCost {
                client: "smtp-source".into(),
                mode,
                messages: N as f64,
                cpu_s: m.cpu_s,
                wall_s: m.wall.as_secs_f64(),
            });
            for threads in ["1", "2"] {
                let mut b = Command::new(&bins.bench);
                b.args(["-c", "50", "-n", &n, "-s", "10240", "--pipelining", "off"])
                    .args(["-m", if reuse { "100000" } else { "1" }])
                    .args(["--threads", threads, "--json", &addr]);
                let m = measured(&mut b, || {})?;
                let j = json::parse(m.stdout.trim()).context("smtp-bench output")?;
                out.push(ClientCost {
                    client: format!("smtp-bench --threads {threads}"),
                    mode,
                    messages: j.num("messages_ok"),
                    cpu_s: m.cpu_s,
                    wall_s: m.wall.as_secs_f64(),
                });
            }
        }
    }
    let mut b = Command::new(&bins.bench);
    b.args([
        "-c", "50", "-n", &n, "-s", "10240", "-m", "100", "--json", &addr,
    ]);
    let m = measured(&mut b, || {})?;
    let j = json::parse(m.stdout.trim()).context("smtp-bench output")?;
    out.push(ClientCost {
        client: "smtp-bench".into(),
        mode: "reuse, pipelined",
        messages: j.num("messages_ok"),
        cpu_s: m.cpu_s,
        wall_s: m.wall.as_secs_f64(),
    });
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn render(
    scenarios: &[Scenario],
    runs: &[Run],
    idle: &[idle::Idle],
    shield: &shield::Outcome,
    client: Option<&[ClientCost]>,
    args: &Args,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{:<34} {:<10} {:>3} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>7}",
        "scenario",
        "server",
        "rnd",
        "msg/s",
        "sess/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "srv CPU",
        "us/msg",
        "RSS MiB",
        "drain s"
    );
    for sc in scenarios {
        for r in runs.iter().filter(|r| r.scenario == sc.key) {
            let b = &r.bench;
            let _ = writeln!(
                t,
                "{:<34} {:<10} {:>3} {:>8.0} {:>8.1} {:>7.1} {:>8.2} {:>8.2} {:>6} {:>7.2}s {:>8.0} {:>8.1} {:>7.2}",
                sc.title,
                r.server.name(),
                r.round,
                b.num("messages_per_s"),
                b.num("sessions_per_s"),
                b.num("mb_per_s"),
                b.num("data_latency_us.p50") / 1e3,
                b.num("data_latency_us.p99") / 1e3,
                r.errors(),
                r.server_cpu_s,
                r.server_us_per_msg(),
                r.peak_rss_kib as f64 / 1024.0,
                r.drain_s
            );
        }
    }
    for d in idle {
        t.push_str(&d.render());
    }
    let _ = write!(t, "{}", shield.render());
    render_tls(&mut t, scenarios, runs, args.rounds());
    for other in &args.vs {
        let _ = writeln!(
            t,
            "\nsmtp-edge / {} (pair by pair, same round):",
            other.name()
        );
        for sc in scenarios.iter().filter(|s| !s.edge_only) {
            let mut tput = Vec::new();
            let mut cpu = Vec::new();
            for round in 1..=args.rounds() {
                let find = |k: Kind| {
                    runs.iter()
                        .find(|r| r.scenario == sc.key && r.server == k && r.round == round)
                };
                if let (Some(e), Some(o)) = (find(Kind::Edge), find(*other)) {
                    tput.push(
                        e.bench.num("messages_per_s") / o.bench.num("messages_per_s").max(1e-9),
                    );
                    cpu.push(o.server_us_per_msg() / e.server_us_per_msg().max(1e-9));
                }
            }
            let list = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.2}x"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let goal = if *other == Kind::Postfix && (sc.key == "a" || sc.key == trust::TAG) {
                let m = median(tput.clone());
                format!(
                    "  [goal >= 2x: {}]",
                    if m >= 2.0 { "met" } else { "NOT met" }
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "  {:<34} throughput edge/other {:.2}x (runs {}); server CPU per message other/edge {:.2}x (runs {}){goal}",
                sc.title,
                median(tput.clone()),
                list(&tput),
                median(cpu.clone()),
                list(&cpu)
            );
        }
    }
    if let Some(client) = client {
        let _ = writeln!(
            t,
            "\nclient cost against smtp-sink (50 sessions, 10 KiB, {} messages per run; CPU of the client process):",
            client.first().map_or(0.0, |c| c.messages)
        );
        for c in client {
            let _ = writeln!(
                t,
                "  {:<28} {:<18} {:>7.3} s CPU  {:>6.1} us/msg  wall {:>6.3} s",
                c.client,
                c.mode,
                c.cpu_s,
                c.us_per_msg(),
                c.wall_s
            );
        }
    }
    t
}

/// Scenarios b, b2 and f: TLS handshakes and AUTH per run, then the ratios and per-core rates.
fn render_tls(t: &mut String, scenarios: &[Scenario], runs: &[Run], rounds: usize) {
    let tls: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.key.starts_with('b') || s.key.starts_with('f'))
        .collect();
    if tls.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\nTLS and AUTH (smtp-edge; {} workers; hs = TLS handshakes):\n{:<34} {:>3} {:>7} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}  groups",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        "scenario",
        "rnd",
        "msg/s",
        "sess/s",
        "full/s",
        "resum/s",
        "hs p50",
        "hs p99",
        "auth/s",
        "auth p50",
        "srv CPU",
        "hs/CPU-s"
            );
    for sc in &tls {
        for r in runs.iter().filter(|r| r.scenario == sc.key) {
            let b = &r.bench;
            let hs = b.num("tls_full") + b.num("tls_resumed");
            let groups = match b.get("tls_groups") {
                Some(Json::Object(m)) => m
                    .iter()
                    .map(|(k, v)| match v.as_f64() {
                        Some(n) => format!("{k}: {n}"),
                        None => k.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            };
            let per_cpu = if hs > 0.0 {
                format!("{:.0}", hs / r.server_cpu_s.max(0.01))
            } else {
                "-".into()
            };
            let _ = writeln!(
                t,
                "{:<34} {:>3} {:>7.0} {:>8.1} {:>8.1} {:>8.1} {:>6.2}m {:>6.2}m {:>7.1} {:>7.1}m {:>7.2}s {:>9}  {groups}{}",
                sc.title,
                r.round,
                b.num("messages_per_s"),
                b.num("sessions_per_s"),
                b.num("tls_full_per_s"),
                b.num("tls_resumed_per_s"),
                b.num("tls_handshake_us.p50") / 1e3,
                b.num("tls_handshake_us.p99") / 1e3,
                b.num("auth_per_s"),
                b.num("auth_latency_us.p50") / 1e3,
                r.server_cpu_s,
                per_cpu,
                if r.errors() > 0 {
                    format!("  ERRORS {}", r.errors())
                } else {
                    String::new()
                }
            );
        }
    }
    let pair = |a: &str, b: &str, what: &str, f: &dyn Fn(&Run, &Run) -> f64| {
        let v: Vec<f64> = (1..=rounds)
            .filter_map(|round| {
                let find = |k: &str| runs.iter().find(|r| r.scenario == k && r.round == round);
                Some(f(find(a)?, find(b)?))
            })
            .collect();
        if v.is_empty() {
            return String::new();
        }
        format!(
            "  {what} {:.2}x (runs {})\n",
            median(v.clone()),
            v.iter()
                .map(|x| format!("{x:.2}x"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    t.push_str(&pair(
        "b-starttls",
        "b-plain",
        "b STARTTLS / plaintext throughput",
        &|tls, plain| tls.bench.num("messages_per_s") / plain.bench.num("messages_per_s").max(1e-9),
    ));
    t.push_str(&pair(
        "b-starttls",
        "b-plain",
        "b STARTTLS / plaintext server CPU per message",
        &|tls, plain| tls.server_us_per_msg() / plain.server_us_per_msg().max(1e-9),
    ));
    for (key, what) in [
        ("f-full", "full"),
        ("f-resumed", "resumed"),
        ("f-plain", "plaintext"),
    ] {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.scenario == key).collect();
        if rs.is_empty() {
            continue;
        }
        let sess = median(rs.iter().map(|r| r.bench.num("sessions_per_s")).collect());
        let per_cpu = median(
            rs.iter()
                .map(|r| r.bench.num("sessions_done") / r.server_cpu_s.max(0.01))
                .collect(),
        );
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let _ = writeln!(
            t,
            "  f {what:<9} sessions {sess:>7.0}/s (median); per server CPU-second {per_cpu:>7.0} (= per core); per worker {:>7.0}/s (÷{workers} workers, client on the same cores)",
            sess / workers
        );
    }
}

/// `nproc`, kernel and CPU model, for the record.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} cpus, {model}, Linux {}", kernel.trim())
}

#[allow(clippy::disallowed_methods)]
fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The run's scratch directory, removed on drop (after the servers in it are stopped).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("smtp-edge-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Postfix's daemons (postfix, nobody) must traverse it.
        std::process::Command::new("chmod")
            .args(["755"])
            .arg(&dir)
            .status()?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

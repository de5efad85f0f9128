//! Scenario e: legitimate mail while a SYN flood hits the delivery port, with the XDP shield on
//! and off. Needs root (network namespaces, XDP) and `hping3`; otherwise it is skipped with the
//! reason.
//!
//! ```text
//!   netns SRV: smtp-edge on 10.203.0.1:2525, shield on veth S      (metrics on its own loopback)
//!        │ veth S ─── veth C │
//!   netns CLI: 10.203.0.2 = smtp-bench (legitimate),  10.203.0.3 = hping3 -S (the flood)
//! ```
//!
//! Each round runs three loads on a fresh server: no flood (shield off), flood with the shield
//! off, flood with the shield on. The legitimate client is scenario a's load for a fixed time
//! (`-d`); the flood is bounded in count and rate (`-c`, `-i`) and killed if it outlives the run.
//! The shield's `syn_rate`/`syn_burst` are raised above the legitimate client's connection rate
//! (it reconnects every 100 messages), so only the flooding address is limited. Dropped packets
//! per second come from `smtp_edge_shield_packets_total{action="dropped_rate"}`, read inside
//! the server's namespace before and after the legitimate load. The namespaces (and with them
//! the veth pair) are deleted on every exit path.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::json::{quote, Json};
use super::servers::{run as run_cmd, EdgeSetup, Server};
use super::{measured, now};

/// The server's address, the legitimate client's, and the flood's (all on one /24).
const SERVER_IP: &str = "10.203.0.1";
const LEGIT_IP: &str = "10.203.0.2";
const FLOOD_IP: &str = "10.203.0.3";
const PORT: u16 = 2525;
/// The flood: SYNs sent, and the gap between them (hping3 `-i u10`: at most 100,000/s).
const FLOOD_COUNT: &str = "200000";
const FLOOD_GAP: &str = "u10";
/// How long the legitimate client starts messages.
const LEGIT_SECS: &str = "4";
/// Longest the flood may run on after the legitimate load before it is killed.
const FLOOD_LIMIT: Duration = Duration::from_secs(30);
const HPING3: [&str; 2] = ["/usr/sbin/hping3", "/usr/bin/hping3"];

/// What scenario e produced.
pub enum Outcome {
    /// Not run, and why.
    Skipped(String),
    /// The runs.
    Ran(Vec<ShieldRun>),
}

/// One legitimate load, with or without flood and shield.
pub struct ShieldRun {
    round: usize,
    flood: bool,
    shield: bool,
    bench: Json,
    /// Packets dropped by rate per second over the legitimate load.
    dropped_per_s: f64,
    /// SYNs hping3 sent, and over how long.
    flood_sent: u64,
    flood_s: f64,
    server_cpu_s: f64,
}

impl ShieldRun {
    fn label(&self) -> String {
        match (self.flood, self.shield) {
            (false, _) => "no flood, shield off".into(),
            (true, false) => "SYN flood, shield off".into(),
            (true, true) => "SYN flood, shield on".into(),
        }
    }
}

impl Outcome {
    /// Lines for the table.
    pub fn render(&self) -> String {
        let mut t = String::new();
        match self {
            Outcome::Skipped(why) => {
                let _ = writeln!(t, "{:<34} skipped: {why}", "e shield");
            }
            Outcome::Ran(runs) => {
                for r in runs {
                    let b = &r.bench;
                    let flood = if r.flood {
                        format!(
                            "; flood {} SYNs in {:.1} s ({:.0}/s)",
                            r.flood_sent,
                            r.flood_s,
                            r.flood_sent as f64 / r.flood_s.max(1e-9)
                        )
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        t,
                        "{:<34} rnd {} legit {:>6.0} msg/s, p99 {:>7.2} ms, errors {}; dropped_rate {:>8.0} pkt/s; srv CPU {:.2} s{flood}",
                        format!("e {}", r.label()),
                        r.round,
                        b.num("messages_per_s"),
                        b.num("data_latency_us.p99") / 1e3,
                        b.num("messages_failed") as u64
                            + match b.get("errors") {
                                Some(Json::Obj(m)) => m.len() as u64,
                                _ => 0,
                            },
                        r.dropped_per_s,
                        r.server_cpu_s,
                    );
                }
            }
        }
        t
    }

    /// The JSON record.
    pub fn json(&self) -> String {
        match self {
            Outcome::Skipped(why) => format!("{{\"skipped\":{}}}", quote(why)),
            Outcome::Ran(runs) => format!(
                "{{\"runs\":[{}]}}",
                runs.iter()
                    .map(|r| format!(
                        "{{\"round\":{},\"flood\":{},\"shield\":{},\"dropped_rate_per_s\":{:.1},\
                         \"flood_sent\":{},\"flood_s\":{:.3},\"server_cpu_s\":{:.3},\
                         \"legit_messages_per_s\":{:.2},\"legit_p99_us\":{:.1}}}",
                        r.round,
                        r.flood,
                        r.shield,
                        r.dropped_per_s,
                        r.flood_sent,
                        r.flood_s,
                        r.server_cpu_s,
                        r.bench.num("messages_per_s"),
                        r.bench.num("data_latency_us.p99"),
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// Runs scenario e, or says why not.
pub fn run(edge: &Path, bench: &Path, dir: &Path, rounds: usize) -> Result<Outcome> {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false);
    if !root {
        return Ok(Outcome::Skipped(
            "not root (network namespaces and XDP need it)".into(),
        ));
    }
    let Some(hping3) = HPING3.iter().find(|p| Path::new(p).exists()) else {
        return Ok(Outcome::Skipped("hping3 is not installed".into()));
    };
    std::fs::create_dir_all(dir)?;
    let net = Netns::create()?;
    let mut out = Vec::new();
    for round in 1..=rounds {
        for (flood, shield) in [(false, false), (true, false), (true, true)] {
            let d = dir.join(format!("{round}-{flood}-{shield}"));
            eprintln!("  e: round {round}, flood {flood}, shield {shield}");
            out.push(one(&net, edge, bench, hping3, &d, round, flood, shield)?);
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    drop(net);
    Ok(Outcome::Ran(out))
}

#[allow(clippy::too_many_arguments)]
fn one(
    net: &Netns,
    edge: &Path,
    bench: &Path,
    hping3: &str,
    dir: &Path,
    round: usize,
    flood: bool,
    shield: bool,
) -> Result<ShieldRun> {
    let setup = EdgeSetup {
        listeners: vec![("delivery", "none")],
        addr: format!("{SERVER_IP}:{PORT}"),
        users: None,
        shield: Some(if shield {
            format!(
                "enabled = true\nrequired = true\ninterfaces = [\"{}\"]\nsyn_rate = 100\nsyn_burst = 200\n",
                net.server_if
            )
        } else {
            "enabled = false\n".into()
        }),
        netns: Some(net.server.clone()),
    };
    let server = Server::edge_with(edge, dir, &setup)?;
    let metrics = server
        .metrics
        .clone()
        .context("smtp-edge metrics address")?;
    let mut hping = if flood {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.client, hping3])
            .args(["-S", "-p", &PORT.to_string(), "-a", FLOOD_IP])
            .args(["-c", FLOOD_COUNT, "-i", FLOOD_GAP, SERVER_IP])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting hping3")?;
        let stderr = child.stderr.take().context("hping3 stderr")?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
            s
        });
        std::thread::sleep(Duration::from_millis(300));
        Some(Flood {
            child,
            reader: Some(reader),
            started: now(),
        })
    } else {
        None
    };
    let dropped0 = dropped_rate(&net.server, &metrics);
    let t0 = now();
    let cpu0 = server.cpu();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.client])
        .arg(bench)
        .args(["-c", "50", "-n", "1000000", "-s", "10240", "-m", "100"])
        .args(["-d", LEGIT_SECS, "--json"])
        .arg(format!("{SERVER_IP}:{PORT}"));
    let m = measured(&mut cmd, || {})?;
    let dropped1 = dropped_rate(&net.server, &metrics);
    let elapsed = (now() - t0).as_secs_f64();
    let server_cpu_s = server.cpu() - cpu0;
    let (flood_sent, flood_s) = match hping.as_mut() {
        Some(f) => f.finish(),
        None => (0, 0.0),
    };
    let _ = server.drain(Duration::from_secs(60));
    drop(server);
    let bench =
        Json::parse(m.stdout.trim()).with_context(|| format!("smtp-bench: {:?}", m.stdout))?;
    Ok(ShieldRun {
        round,
        flood,
        shield,
        bench,
        dropped_per_s: dropped1.saturating_sub(dropped0) as f64 / elapsed.max(1e-9),
        flood_sent,
        flood_s,
        server_cpu_s,
    })
}

/// A running hping3.
struct Flood {
    child: Child,
    reader: Option<std::thread::JoinHandle<String>>,
    started: std::time::Instant,
}

impl Flood {
    /// Waits for the flood to end (killing it after [`FLOOD_LIMIT`]); returns SYNs sent and
    /// the seconds it ran, from its closing statistics.
    fn finish(&mut self) -> (u64, f64) {
        let deadline = now() + FLOOD_LIMIT;
        while now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = (now() - self.started).as_secs_f64() + 0.3;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        // "200000 packets transmitted, 0 packets received, 100% packet loss"
        let sent = text
            .lines()
            .find_map(|l| l.split_once(" packets transmitted"))
            .and_then(|(n, _)| n.trim().parse().ok())
            .unwrap_or(0);
        (sent, secs)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shield's `dropped_rate` counter, read inside the server's namespace (0 without it).
fn dropped_rate(ns: &str, metrics: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", "5"])
        .arg(format!("http://{metrics}/metrics"))
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("smtp_edge_shield_packets_total{action=\"dropped_rate\"}"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Two network namespaces joined by a veth pair; deleted on drop.
struct Netns {
    server: String,
    client: String,
    server_if: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        let tag = std::process::id() % 100_000;
        let net = Netns {
            server: format!("smtpbench-srv-{tag}"),
            client: format!("smtpbench-cli-{tag}"),
            server_if: format!("sbs{tag}"),
        };
        // `net` is dropped (and what was made is deleted) on any error below.
        net.setup(&format!("sbc{tag}"))?;
        Ok(net)
    }

    fn setup(&self, client_if: &str) -> Result<()> {
        let net = self;
        run_cmd("ip", &["netns", "add", &net.server])?;
        run_cmd("ip", &["netns", "add", &net.client])?;
        run_cmd(
            "ip",
            &[
                "link",
                "add",
                &net.server_if,
                "type",
                "veth",
                "peer",
                "name",
                client_if,
            ],
        )?;
        run_cmd("ip", &["link", "set", &net.server_if, "netns", &net.server])?;
        run_cmd("ip", &["link", "set", client_if, "netns", &net.client])?;
        let ns = |ns: &str, args: &[&str]| -> Result<()> {
            let mut all = vec!["netns", "exec", ns, "ip"];
            all.extend_from_slice(args);
            run_cmd("ip", &all)
        };
        let s_addr = format!("{SERVER_IP}/24");
        let l_addr = format!("{LEGIT_IP}/24");
        let f_addr = format!("{FLOOD_IP}/24");
        ns(
            &net.server,
            &["addr", "add", &s_addr, "dev", &net.server_if],
        )?;
        ns(&net.server, &["link", "set", &net.server_if, "up"])?;
        ns(&net.server, &["link", "set", "lo", "up"])?;
        ns(&net.client, &["addr", "add", &l_addr, "dev", client_if])?;
        ns(&net.client, &["addr", "add", &f_addr, "dev", client_if])?;
        ns(&net.client, &["link", "set", client_if, "up"])?;
        ns(&net.client, &["link", "set", "lo", "up"])?;
        // Wait (bounded) for the carrier on the server's end.
        let deadline = now() + Duration::from_secs(5);
        while now() < deadline {
            let up = Command::new("ip")
                .args([
                    "-n",
                    &net.server,
                    "-o",
                    "link",
                    "show",
                    "dev",
                    &net.server_if,
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LOWER_UP"));
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("veth {} did not come up", net.server_if)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair in them.
        let _ = run_cmd("ip", &["netns", "del", &self.server]);
        let _ = run_cmd("ip", &["netns", "del", &self.client]);
    }
}

//! Scenario e: legitimate mail while a SYN flood hits the delivery port, with the XDP shield on
//! and off. Needs root (network namespaces, XDP) and `trafgen` (Debian package `netsniff-ng`);
//! otherwise it is skipped with the reason.
//!
//! ```text
//!   netns SRV: smtp-edge on 10.203.0.1:2525, shield on veth S      (metrics on its own loopback)
//!        │ veth S ─── veth C │
//!   netns CLI: 10.203.0.2 = smtp-bench (legitimate),  10.203.0.3 = trafgen SYNs (the flood)
//! ```
//!
//! The flood is `trafgen` on one core: SYNs with random source ports and sequence numbers from
//! 10.203.0.3, written straight into the client veth through a packet mmap ring, several times
//! what `hping3` (one `sendto` per SYN, ~22k/s here, which the kernel's SYN cookies absorb
//! unaided) reaches. On a veth the receiver's softirq work runs on the sending CPU, so the
//! flood's rate also says what each SYN costs the server's kernel (BENCHMARKS.md, e).
//!
//! Each round runs three loads on a fresh server: no flood (shield off), flood with the shield
//! off, flood with the shield on. The legitimate client is scenario a's load for a fixed time
//! (`-d`); the flood is bounded in count (`--num`) and in time (stopped with SIGINT as soon as
//! the legitimate load ends, killed if it does not stop).
//! The shield's `syn_rate`/`syn_burst` are raised above the legitimate client's connection rate
//! (it reconnects every 100 messages), so only the flooding address is limited. Dropped packets
//! per second come from `smtp_edge_shield_packets_total{action="dropped_rate"}`, read inside
//! the server's namespace before and after the legitimate load. The namespaces (and with them
//! the veth pair) are deleted on every exit path.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::json::{self, quote, Fields as _, Json};
use super::servers::{run as run_cmd, EdgeSetup, Server};
use super::{measured, now};

/// The server's address, the legitimate client's, and the flood's (all on one /24).
const SERVER_IP: &str = "10.203.0.1";
const LEGIT_IP: &str = "10.203.0.2";
const FLOOD_IP: &str = "10.203.0.3";
const PORT: u16 = 2525;
/// Most SYNs the flood sends: a bound in count (at ~1M/s, longer than any run).
const FLOOD_COUNT: &str = "20000000";
/// How long the legitimate client starts messages.
const LEGIT_SECS: &str = "4";
/// How long the flood may take to stop after SIGINT before it is killed.
const FLOOD_STOP: Duration = Duration::from_secs(5);
const TRAFGEN: [&str; 2] = ["/usr/sbin/trafgen", "/usr/bin/trafgen"];

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
    /// SYNs trafgen sent, and over how long.
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
                        json::errors(b),
                        r.dropped_per_s,
                        r.server_cpu_s,
                    );
                }
            }
        }
        t
    }

    /// Runs whose legitimate load had errors.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Outcome::Skipped(_) => Vec::new(),
            Outcome::Ran(runs) => runs
                .iter()
                .filter(|r| json::errors(&r.bench) > 0)
                .map(|r| {
                    format!(
                        "e {} / round {}: {} errors in the legitimate load",
                        r.label(),
                        r.round,
                        json::errors(&r.bench)
                    )
                })
                .collect(),
        }
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
    let Some(trafgen) = TRAFGEN.iter().find(|p| Path::new(p).exists()) else {
        return Ok(Outcome::Skipped(
            "trafgen is not installed (apt-get install netsniff-ng)".into(),
        ));
    };
    std::fs::create_dir_all(dir)?;
    let net = Netns::create()?;
    let mut out = Vec::new();
    for round in 1..=rounds {
        for (flood, shield) in [(false, false), (true, false), (true, true)] {
            let d = dir.join(format!("{round}-{flood}-{shield}"));
            eprintln!("  e: round {round}, flood {flood}, shield {shield}");
            out.push(one(&net, edge, bench, trafgen, &d, round, flood, shield)?);
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
    trafgen: &str,
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
        relay_local: None,
        checks: None,
        nameservers: Vec::new(),
        max_connections: None,
    };
    let server = Server::edge_with(edge, dir, &setup)?;
    let metrics = server
        .metrics
        .clone()
        .context("smtp-edge metrics address")?;
    let mut flood_run = if flood {
        Some(Flood::start(net, trafgen, dir)?)
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
    let (flood_sent, flood_s) = match flood_run.as_mut() {
        Some(f) => f.finish(),
        None => (0, 0.0),
    };
    let bench =
        json::parse(m.stdout.trim()).with_context(|| format!("smtp-bench: {:?}", m.stdout))?;
    let _ = server.drain(Duration::from_secs(60), bench.num("messages_ok") as usize);
    drop(server);
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

/// A running trafgen.
struct Flood {
    child: Child,
    reader: Option<std::thread::JoinHandle<String>>,
    /// trafgen's stderr, read to the end: shown if the flood stops before it is told to.
    errors: Option<std::thread::JoinHandle<String>>,
    started: std::time::Instant,
}

impl Flood {
    /// Starts the flood on the client's veth, towards the server veth's MAC address, and
    /// gives it 0.3 s to reach full rate.
    fn start(net: &Netns, trafgen: &str, dir: &Path) -> Result<Flood> {
        // Attaching XDP to a veth restarts it: wait (bounded) for the carrier on the
        // client's end, or trafgen fails to send on a link that is down.
        let deadline = now() + Duration::from_secs(5);
        while !link_up(&net.client, &net.client_if) && now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let server_mac = mac(&net.server, &net.server_if)?;
        let client_mac = mac(&net.client, &net.client_if)?;
        // One SYN template; drnd() draws a fresh source port and sequence number per packet
        // (so every SYN is a new request to the listener), and trafgen recomputes the IPv4
        // and TCP checksums for each. DF is set as a real stack would.
        let conf = dir.join("flood.trafgen");
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            &conf,
            format!(
                "{{\n  eth(da={server_mac}, sa={client_mac}),\n  \
                 ipv4(sa={FLOOD_IP}, da={SERVER_IP}, ttl=64, df),\n  \
                 tcp(sp=drnd(), dp={PORT}, seq=drnd(), syn, win=64240)\n}}\n"
            ),
        )?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.client, trafgen])
            .args(["--dev", &net.client_if, "--conf"])
            .arg(&conf)
            // One core for the flood; leave the machine's socket memory and IRQ affinity
            // alone.
            .args(["--num", FLOOD_COUNT, "--cpus", "1"])
            .args(["--no-sock-mem", "--notouch-irq"])
            // trafgen sends from a forked worker that ignores a signal to its parent: a
            // process group of their own lets finish() and drop() stop both.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting trafgen")?;
        let read_all = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let reader = read_all(Box::new(child.stdout.take().context("trafgen stdout")?));
        let errors = read_all(Box::new(child.stderr.take().context("trafgen stderr")?));
        std::thread::sleep(Duration::from_millis(300));
        Ok(Flood {
            child,
            reader: Some(reader),
            errors: Some(errors),
            started: now(),
        })
    }

    /// Stops the flood (SIGINT, then a kill after [`FLOOD_STOP`]); returns SYNs sent and the
    /// seconds it ran, from its closing statistics.
    fn finish(&mut self) -> (u64, f64) {
        let secs = (now() - self.started).as_secs_f64() + 0.3;
        let early = self.child.try_wait().ok().flatten();
        // `ip netns exec` execs trafgen in place: the child leads the group, and trafgen
        // prints its totals once its worker stops on SIGINT.
        self.signal("-INT");
        let deadline = now() + FLOOD_STOP;
        while now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
        let text = self
            .reader
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_default();
        // "   12345678 packets outgoing"
        let sent = text
            .lines()
            .find_map(|l| l.trim().strip_suffix(" packets outgoing"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if early.is_some() || sent == 0 {
            let errors = self
                .errors
                .take()
                .and_then(|r| r.join().ok())
                .unwrap_or_default();
            eprintln!(
                "  e: trafgen stopped on its own ({early:?}) or sent nothing; its stderr:\n{errors}"
            );
        }
        (sent, secs)
    }
}

impl Flood {
    /// Sends `sig` to trafgen's process group (its forked worker included).
    fn signal(&self, sig: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args([sig, "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

/// Whether `dev` in namespace `ns` has its carrier.
fn link_up(ns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("LOWER_UP"))
}

/// The MAC address of `dev` in namespace `ns`.
fn mac(ns: &str, dev: &str) -> Result<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", dev])
        .output()
        .context("ip link show")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no MAC address for {dev} in {ns}: {text}"))
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
    client_if: String,
}

impl Netns {
    fn create() -> Result<Netns> {
        let tag = std::process::id() % 100_000;
        let net = Netns {
            server: format!("smtpbench-srv-{tag}"),
            client: format!("smtpbench-cli-{tag}"),
            server_if: format!("sbs{tag}"),
            client_if: format!("sbc{tag}"),
        };
        // `net` is dropped (and what was made is deleted) on any error below.
        net.setup(&net.client_if)?;
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

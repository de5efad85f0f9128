//! Scenario d: idle connections. smtp-edge holds N sessions that have sent EHLO and then wait;
//! the figure is the server's RSS per held session.
//!
//! At 100,000 sessions two limits of one machine get in the way, and both are handled here:
//! descriptors (an idle session holds one in the server and one in the client: both inherit a
//! raised RLIMIT_NOFILE, and the server is given `limits.max_connections`, since the cap it
//! derives keeps a second descriptor per connection for DATA) and the ephemeral port range
//! (about 28,000 connections from one source address to one server port), so the client
//! spreads its connections over several loopback source addresses. Raising the hard limit
//! needs CAP_SYS_RESOURCE; without it a count the limit cannot hold is skipped, with the reason.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::servers::{EdgeSetup, Server};
use super::{now, procfs, Bins};

/// Connections per client source address: below the default ephemeral range (32768-60999).
const PER_SOURCE: u64 = 20_000;
/// Descriptors needed beside one per connection: the server's own (its reserve is 256 + 8 per
/// worker), the client's few.
const NOFILE_SPARE: u64 = 512;
/// Connections the server admits beyond the held ones (the bench's own probes).
const CONNECTIONS_SPARE: u64 = 64;

/// One scenario d run's result.
pub struct Idle {
    pub target: u64,
    /// Why the run did not happen, if it did not.
    pub skipped: Option<String>,
    pub established: u64,
    base_kib: u64,
    held_kib: u64,
    hwm_kib: u64,
    server_cpu_s: f64,
    setup_s: f64,
}

impl Idle {
    fn per_conn_kib(&self) -> f64 {
        self.held_kib.saturating_sub(self.base_kib) as f64 / self.established.max(1) as f64
    }

    pub fn json(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!(
                "{{\"target\":{},\"skipped\":{}}}",
                self.target,
                super::json::quote(why)
            );
        }
        format!(
            "{{\"target\":{},\"established\":{},\"base_rss_kib\":{},\"held_rss_kib\":{},\
             \"peak_rss_kib\":{},\"kib_per_connection\":{:.2},\"server_cpu_s\":{:.3},\"setup_s\":{:.3}}}",
            self.target,
            self.established,
            self.base_kib,
            self.held_kib,
            self.hwm_kib,
            self.per_conn_kib(),
            self.server_cpu_s,
            self.setup_s
        )
    }

    /// Its line in the table.
    pub fn render(&self) -> String {
        let title = format!("d idle {} sessions", self.target);
        if let Some(why) = &self.skipped {
            return format!("{title:<34} skipped: {why}\n");
        }
        format!(
            "{:<34} smtp-edge: {} of {} established in {:.1} s; RSS {:.1} -> {:.1} MiB = {:.2} KiB/connection (goal <= 4); peak {:.1} MiB; CPU {:.2} s\n",
            title,
            self.established,
            self.target,
            self.setup_s,
            self.base_kib as f64 / 1024.0,
            self.held_kib as f64 / 1024.0,
            self.per_conn_kib(),
            self.hwm_kib as f64 / 1024.0,
            self.server_cpu_s
        )
    }
}

/// The open-file limit of this process while it lives; restored on drop. The server and the
/// client started meanwhile inherit it.
struct NofileRaised(libc::rlimit);

impl NofileRaised {
    /// Raises the limit (soft and hard) to at least `n`; the error says why it cannot be.
    fn to(n: u64) -> Result<NofileRaised, String> {
        // SAFETY: `old` and `new` are valid rlimit structs for the calls.
        unsafe {
            let mut old: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) != 0 {
                return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
            }
            if old.rlim_max < n {
                let new = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &new) != 0 {
                    return Err(format!(
                        "needs RLIMIT_NOFILE >= {n}; the hard limit is {} and cannot be raised \
                         ({}: root with CAP_SYS_RESOURCE can)",
                        old.rlim_max,
                        std::io::Error::last_os_error()
                    ));
                }
            } else if old.rlim_cur < n {
                let new = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: old.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &new);
            }
            Ok(NofileRaised(old))
        }
    }
}

impl Drop for NofileRaised {
    fn drop(&mut self) {
        // SAFETY: restores the limit read in `to`.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

/// Holds `n` idle sessions against a fresh smtp-edge and measures its RSS.
pub fn run(bins: &Bins, dir: &Path, n: u64) -> Result<Idle> {
    let _nofile = match NofileRaised::to(n + NOFILE_SPARE) {
        Ok(raised) => raised,
        Err(why) => {
            return Ok(Idle {
                target: n,
                skipped: Some(why),
                established: 0,
                base_kib: 0,
                held_kib: 0,
                hwm_kib: 0,
                server_cpu_s: 0.0,
                setup_s: 0.0,
            })
        }
    };
    let setup = EdgeSetup {
        max_connections: Some(n + CONNECTIONS_SPARE),
        ..EdgeSetup::default()
    };
    let server = Server::edge_with(&bins.edge, dir, &setup)?;
    std::thread::sleep(Duration::from_millis(200));
    let base_kib = server.rss_kib();
    let cpu0 = server.cpu();
    let t0 = now();
    let mut cmd = Command::new(&bins.bench);
    cmd.args(["--idle", &n.to_string(), "--hold", "3"]);
    // 127.0.0.0/8 is all loopback: each address is one more ephemeral port range.
    for k in 0..n.div_ceil(PER_SOURCE) {
        cmd.args(["--source", &format!("127.0.1.{}", k + 1)]);
    }
    let mut child = cmd
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("smtp-bench --idle")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut established = 0;
    for line in lines.by_ref().take(4) {
        if let Some(v) = line?.strip_prefix("established ") {
            established = v.trim().parse().unwrap_or(0);
            break;
        }
    }
    let setup_s = (now() - t0).as_secs_f64();
    // Let the server settle (buffers returned, allocator quiet) before measuring.
    std::thread::sleep(Duration::from_millis(1000));
    let held_kib = server.rss_kib();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    if established < n {
        eprintln!(
            "  warning: only {established} of {n} idle sessions; {}",
            rest.join(" | ")
        );
    }
    let server_cpu_s = server.cpu() - cpu0;
    let hwm_kib = procfs::status_kib(server.pid, "VmHWM");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
    Ok(Idle {
        target: n,
        skipped: None,
        established,
        base_kib,
        held_kib,
        hwm_kib,
        server_cpu_s,
        setup_s,
    })
}

//! The `smtp-bench` command: see `smtp-bench --help`.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser as _;
use smtp_bench::client::Script;
use smtp_bench::driver::{self, Job, Shared, Stats, TlsJob};
use smtp_bench::message::Corpus;
use smtp_bench::now;
use smtp_bench::options::{Cli, Options};
use smtp_bench::report::{Cpu, Report};
use smtp_bench::tls;

/// Idle mode: how long establishing every session may take before the hold starts anyway.
const IDLE_SETUP: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    // Usage errors: clap prints them and exits 2; --help and --version exit 0.
    let options = match Options::from_cli(Cli::parse()) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("smtp-bench: {msg} (see `smtp-bench --help`)");
            return ExitCode::from(2);
        }
    };
    raise_nofile();
    match run(&options) {
        Ok(report) => {
            let text = if options.json {
                report.json() + "\n"
            } else {
                report.text()
            };
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let failed = report.stats.failed > 0 || !report.stats.errors.is_empty();
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("smtp-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(o: &Options) -> std::io::Result<Report<'_>> {
    let rcpts = o.recipients();
    let corpus = match &o.message {
        Some(content) => Corpus::from_content(content),
        None => Corpus::build(&o.size, &o.from, &rcpts[0]),
    };
    let script = Script {
        helo: o.helo.clone(),
        from: o.from.clone(),
        rcpts,
        pipelining: o.pipelining,
        starttls: o
            .tls
            .as_ref()
            .is_some_and(|t| t.mode == tls::Mode::StartTls),
        auth: o.auth.clone(),
    };
    let idle = o.idle.is_some();
    let total_sessions = o.idle.unwrap_or(o.sessions);
    let threads = o.threads.min(total_sessions).max(1);
    // One TLS config per thread (its own session cache), built before the clock starts.
    let mut tls_jobs = Vec::new();
    if let Some(t) = &o.tls {
        for _ in 0..threads {
            let config = tls::client_config(t).map_err(std::io::Error::other)?;
            tls_jobs.push(TlsJob {
                mode: t.mode,
                config,
                server_name: t.server_name.clone(),
            });
        }
    }
    let mut tls_jobs = tls_jobs.into_iter();
    let start = now();
    let cpu0 = Cpu::now();
    let shared = Shared {
        budget: AtomicI64::new(if idle { 0 } else { o.messages as i64 }),
        deadline: start
            + if idle {
                IDLE_SETUP + o.hold
            } else {
                o.duration
            },
        stop: AtomicBool::new(false),
        held: AtomicUsize::new(0),
        started: AtomicU64::new(0),
    };
    let fair_share = o.messages.div_ceil(o.sessions as u64).max(1);
    let per_session = o.per_session.min(fair_share);
    let mut established = None;
    let mut elapsed = Duration::ZERO;
    let results: Vec<std::io::Result<Stats>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let sessions = total_sessions / threads + usize::from(t < total_sessions % threads);
                let job = Job {
                    server: o.server,
                    sources: &o.sources,
                    thread: t,
                    sessions,
                    per_session,
                    idle,
                    script: &script,
                    corpus: &corpus,
                    shared: &shared,
                    tls: tls_jobs.next(),
                };
                std::thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn_scoped(scope, move || driver::run(&job))
                    .expect("spawn an I/O thread")
            })
            .collect();
        if idle {
            // Wait (bounded) until every session is up, say so, hold, then stop.
            let setup_end = start + IDLE_SETUP;
            while shared.held.load(Ordering::Relaxed) < total_sessions
                && now() < setup_end
                && !handles.iter().all(|h| h.is_finished())
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            elapsed = now() - start;
            let held = shared.held.load(Ordering::Relaxed);
            established = Some(held);
            if !o.json {
                println!("established {held}");
            } else {
                println!("{{\"established\":{held}}}");
            }
            let _ = std::io::stdout().flush();
            let hold_end = now() + o.hold;
            while now() < hold_end && !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(Duration::from_millis(10));
            }
            shared.stop.store(true, Ordering::Relaxed);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("I/O thread panicked")))
            })
            .collect()
    });
    if !idle {
        elapsed = now() - start;
    }
    let cpu = Cpu::now().since(cpu0);
    let mut stats = Stats::default();
    for r in results {
        stats.merge(&r?);
    }
    Ok(Report {
        options: o,
        elapsed,
        stats,
        cpu,
        established,
    })
}

/// Raises the soft open-file limit to the hard one: idle mode holds one descriptor per session.
fn raise_nofile() {
    // SAFETY: `lim` is a valid in/out pointer.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

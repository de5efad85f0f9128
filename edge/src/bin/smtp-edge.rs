//! The `smtp-edge` command: `serve` and `check-config`; `user`, `ban` and `shield` are
//! dispatched to their modules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use smtp_edge::auth::CredentialStore;
use smtp_edge::config::Config;
use smtp_edge::driver;
use smtp_edge::protocol::Role;
use smtp_edge::tls::TlsContext;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: smtp-edge serve [--config FILE]
       smtp-edge check-config --config FILE
       smtp-edge user add|passwd|del --users FILE ADDRESS
       smtp-edge ban list|add ADDR [--secs N]|del ADDR [--config FILE]
       smtp-edge shield status|list|ban ADDR [--secs N]|unban ADDR

serve          run the server; without --config, on the embedded default
               (delivery 127.0.0.1:2525, submission 127.0.0.1:2587, ./var)
check-config   report every problem in FILE as `key: problem`
user           edit a users file; the password is read from stdin (or a prompt)
ban            list, add or lift a running server's bans (its control socket)
shield         inspect or change a running server's XDP shield (pinned maps)";

/// Exit status for bad usage, a bad config, or a start failure.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("user") => return smtp_edge::auth::cli::run(&args[1..]),
        Some("shield") => return smtp_edge::shield::cli::run(&args[1..]),
        Some("ban") => return smtp_edge::control::cli::run(&args[1..]),
        _ => {}
    }
    let (command, config) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("smtp-edge: {msg}\n{USAGE}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match command.as_str() {
        "serve" => serve(config),
        "check-config" => {
            let Some(path) = config else {
                eprintln!("smtp-edge: check-config needs --config FILE\n{USAGE}");
                return ExitCode::from(EXIT_CONFIG);
            };
            match Config::load(&path) {
                Ok(_) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors.0 {
                        println!("{e}");
                    }
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("smtp-edge: unknown command {other:?}\n{USAGE}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn parse_args(args: &[String]) -> Result<(String, Option<PathBuf>), String> {
    let mut command = None;
    let mut config = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                let file = it.next().ok_or("--config needs a FILE")?;
                config = Some(PathBuf::from(file));
            }
            s if s.starts_with("--config=") => {
                config = Some(PathBuf::from(&s["--config=".len()..]));
            }
            s if command.is_none() && !s.starts_with('-') || s == "--help" || s == "-h" => {
                command = Some(s.to_owned());
            }
            s => return Err(format!("unexpected argument {s:?}")),
        }
    }
    Ok((command.ok_or("no command given")?, config))
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = match &config {
        Some(path) => match Config::load(path) {
            Ok(cfg) => cfg,
            Err(errors) => {
                // One line, however many problems: `check-config` lists them one per line.
                let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                eprintln!("smtp-edge: {}: {}", path.display(), all.join("; "));
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => Config::embedded_default(),
    };
    let running = match driver::start(&cfg) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("smtp-edge: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Machine-readable readiness on stdout: tests and supervisors read the real ports here.
    let mut stdout = std::io::stdout().lock();
    for (role, addr) in &running.listeners {
        let role = match role {
            Role::Delivery => "delivery",
            Role::Submission => "submission",
        };
        let _ = writeln!(stdout, "listening {role} {addr}");
    }
    if let Some(addr) = running.metrics {
        let _ = writeln!(stdout, "metrics {addr}");
    }
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    drop(stdout);
    tracing::info!(
        workers = cfg.worker_count(),
        listeners = running.listeners.len(),
        "smtp-edge ready"
    );

    let stop = running.stop_handle();
    let tls = running.tls_context();
    let credentials = running.credentials();
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        reload(config.as_deref(), &cfg, tls.as_deref(), &credentials);
                        continue;
                    }
                    tracing::info!(signal = sig, "stopping");
                    stop.stop();
                    break;
                }
            });
        }
        Err(e) => {
            eprintln!("smtp-edge: cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    match running.wait() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smtp-edge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP: reads the configuration file again, then loads its TLS certificates for new
/// handshakes and its users and aliases for the next AUTH. Anything that fails leaves what is
/// running in place, and says why.
fn reload(
    path: Option<&std::path::Path>,
    running: &Config,
    tls: Option<&TlsContext>,
    credentials: &CredentialStore,
) {
    let fresh;
    let cfg = match path {
        Some(path) => match Config::load(path) {
            Ok(cfg) => {
                fresh = cfg;
                &fresh
            }
            Err(errors) => {
                let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                tracing::error!(
                    problems = %all.join("; "),
                    "SIGHUP: configuration invalid; keeping the current certificates"
                );
                return;
            }
        },
        None => running,
    };
    match credentials.reload(&cfg.auth) {
        Ok(()) => tracing::info!("SIGHUP: users and aliases reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: users not reloaded; keeping the current ones")
        }
    }
    let Some(tls) = tls else {
        return;
    };
    match tls.reload(&cfg.tls) {
        Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: reload failed; keeping the current certificates")
        }
    }
}

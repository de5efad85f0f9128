//! The `smtp-edge` command: `serve` and `check-config` here; `user`, `ban` and `shield` in their
//! modules. The command line is clap's derive: a new subcommand is one variant of [`Command`]
//! (its arguments a `clap::Args` struct next to the code that runs it) and one arm in `main`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use smtp_edge::config::{Config, ConfigError};
use smtp_edge::driver;
use smtp_edge::protocol::Role;
use smtp_edge::service::notify::Notifier;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An SMTP edge for inbound MX and authenticated submission, on io_uring.
///
/// A bad configuration or a port that cannot be bound is one line on stderr and exit status 2,
/// as is a command line that does not parse.
#[derive(Parser)]
#[command(name = "smtp-edge", version = VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--version`: the release and the commit it was built from (`edge/build.rs`, as
/// [`smtp_edge::build_info`]; "unknown" when built outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SMTP_EDGE_COMMIT"),
    ")"
);

/// The subcommands; each is one variant here and one arm in `main`.
#[derive(Subcommand)]
enum Command {
    /// Run the server; without --config, on the embedded default (delivery 127.0.0.1:2525,
    /// submission 127.0.0.1:2587, state under ./var).
    Serve {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Report every problem in FILE as `key: problem`; exit 2 if any.
    CheckConfig {
        /// The configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the configuration in force, defaults filled in.
    Config(smtp_edge::config::cli::ConfigArgs),
    /// List or edit a users file; passwords are read from stdin (or a prompt).
    User(smtp_edge::auth::cli::UserArgs),
    /// List, add or lift a running server's bans (its control socket).
    Ban(smtp_edge::control::cli::BanArgs),
    /// List, show, retry, delete or bounce a running server's queued mail (its control socket).
    Queue(smtp_edge::queue::cli::QueueArgs),
    /// Inspect or change a running server's XDP shield (pinned maps).
    Shield(smtp_edge::shield::cli::ShieldArgs),
    /// Make a running server read its configuration file again (as SIGHUP does), and say
    /// whether it applied.
    Reload(smtp_edge::control::reload::ReloadArgs),
    /// Make a DKIM signing key and print the DNS record to publish.
    Dkim(smtp_edge::dkim::cli::DkimArgs),
    /// Print the man page (roff), generated from this command line; for packaging.
    #[command(hide = true)]
    Man,
}

/// Exit status for bad usage, a bad config, or a start failure.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Config(args) => smtp_edge::config::cli::run(&args),
        Command::User(args) => smtp_edge::auth::cli::run(&args),
        Command::Ban(args) => smtp_edge::control::cli::run(&args),
        Command::Queue(args) => smtp_edge::queue::cli::run(&args),
        Command::Shield(args) => smtp_edge::shield::cli::run(&args),
        Command::Reload(args) => smtp_edge::control::reload::run(&args),
        Command::Dkim(args) => smtp_edge::dkim::cli::run(&args),
        Command::Man => man(),
    }
}

/// `smtp-edge man`: smtp-edge(1) in roff on stdout: the command and its list of subcommands,
/// then each subcommand's synopsis, description and options.
fn man() -> ExitCode {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.build();
    let mut out = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .and_then(|()| man_subcommands(&command, "smtp-edge", &mut out));
    if let Err(e) = rendered.and_then(|()| std::io::stdout().lock().write_all(&out)) {
        eprintln!("smtp-edge man: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Appends each visible subcommand of `command` (depth first), named in full
/// (`smtp-edge user add`).
fn man_subcommands(command: &clap::Command, path: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{path} {}", sub.get_name());
        if sub.get_name() == "help" {
            continue;
        }
        let page = clap_mangen::Man::new(sub.clone().bin_name(&name));
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        page.render_synopsis_section(out)?;
        page.render_description_section(out)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.render_options_section(out)?;
        }
        man_subcommands(sub, &name, out)?;
    }
    Ok(())
}

/// `--help` and `--version` print in full (exit 0); a command line that does not parse is one
/// line on stderr, like every other startup error, and exit status 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let problem = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        "a command is needed".to_owned()
    } else {
        // clap's message runs up to the first blank line (the usage follows): fold it into one.
        let text = e.to_string();
        let message: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let message = message.join(" ");
        message
            .strip_prefix("error: ")
            .unwrap_or(&message)
            .to_owned()
    };
    eprintln!("smtp-edge: {problem} (see `smtp-edge --help`)");
    ExitCode::from(EXIT_CONFIG)
}

/// `check-config`: the file, then what `serve` would meet on disk ([`Config::preflight`]).
/// Each problem is one `FILE: key: problem` line on stderr, warnings marked as such; exit 2 if
/// any is an error.
fn check_config(path: &Path) -> ExitCode {
    let file = path.display();
    let findings = match Config::load(path) {
        Ok(cfg) => cfg.preflight(smtp_edge::clock::wall()),
        Err(errors) => smtp_edge::config::Findings {
            errors: errors.0,
            warnings: Vec::new(),
        },
    };
    for w in &findings.warnings {
        eprintln!("{file}: warning: {w}");
    }
    for e in &findings.errors {
        eprintln!("{file}: {e}");
    }
    if findings.errors.is_empty() {
        println!("{file}: ok");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

/// The configuration `serve` runs on, checked as `check-config` checks it, with the warnings
/// to log once logging is set up; `None` (after one line on stderr) if it has errors.
fn serve_config(path: Option<&Path>) -> Option<(Config, Vec<ConfigError>)> {
    let (cfg, origin) = match path {
        Some(path) => match Config::load(path) {
            Ok(cfg) => (cfg, path.display().to_string()),
            Err(errors) => {
                // One line, however many problems: `check-config` lists them one per line.
                let all: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                eprintln!("smtp-edge: {}: {}", path.display(), all.join("; "));
                return None;
            }
        },
        None => (Config::embedded_default(), "(embedded default)".to_owned()),
    };
    let findings = cfg.preflight(smtp_edge::clock::wall());
    if !findings.errors.is_empty() {
        let all: Vec<String> = findings.errors.iter().map(ToString::to_string).collect();
        eprintln!("smtp-edge: {origin}: {}", all.join("; "));
        return None;
    }
    Some((cfg, findings.warnings))
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    // First, while no other thread can read the environment: it takes systemd's variables out.
    let notify = match Notifier::from_env() {
        Ok(notify) => Arc::new(notify),
        Err(e) => {
            eprintln!("smtp-edge: NOTIFY_SOCKET: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some((cfg, warnings)) = serve_config(config.as_deref()) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    // After the configuration, which says in what form; its errors are the one line above.
    smtp_edge::logging::init(cfg.log.format);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let running = match driver::start(&cfg, config.as_deref()) {
        Ok(running) => running,
        Err(e) => {
            eprintln!("smtp-edge: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Handlers before `ready`: a supervisor (or a test) may signal the server as soon as it reads
    // that line, and a SIGTERM that found no handler would kill the process instead of stopping
    // it. Signals that arrive before the thread below starts wait in the iterator.
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("smtp-edge: cannot install signal handlers: {e}");
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
    notify.ready();
    if let Some(every) = notify.watchdog_interval() {
        watchdog(notify.clone(), every);
    }
    tracing::info!(
        workers = cfg.worker_count(),
        listeners = running.listeners.len(),
        "smtp-edge ready"
    );

    let stop = running.stop_handle();
    let reloader = running.reloader();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                // The reloader logs the outcome: applied, or refused and why.
                notify.reloading();
                let _ = reloader.reload();
                notify.ready();
                continue;
            }
            tracing::info!(signal = sig, "stopping");
            notify.stopping();
            stop.stop();
            break;
        }
    });
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

/// Tells systemd every `every` that the server lives, from a thread of its own; the process
/// ending ends it.
fn watchdog(notify: Arc<Notifier>, every: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("smtp-edge-watchdog".into())
        .spawn(move || loop {
            notify.watchdog();
            std::thread::sleep(every);
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the watchdog thread; systemd will restart us");
    }
}

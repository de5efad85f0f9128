//! Runs the real `smtp-edge` binary for a test: writes its config into a temporary directory,
//! starts it, and waits for it to say `ready` on stdout.
//!
//! Every wait here is on an event (a line, an exit, a file) with a hard deadline; nothing sleeps
//! to let the server "catch up". Listeners, metrics and clients use `127.0.0.1` only, and ports
//! are always 0 in the config: the server prints the port it really bound.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_smtp-edge");

/// How long the server may take from spawn to `ready`.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a message may take to appear in Maildir after its 250.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
/// How long any single reply may take.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(15);

/// The only local domain of the test config.
pub const LOCAL_DOMAIN: &str = "example.test";

/// What a test changes in the config; `Opts::default()` is a plain delivery server.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Roles of the listeners, each bound to `127.0.0.1:0`.
    pub listeners: Vec<&'static str>,
    /// Written to a recipients file and configured, if set.
    pub recipients: Option<Vec<String>>,
    /// `[spool] dir`; default `<tempdir>/spool`.
    pub spool_dir: Option<PathBuf>,
    pub workers: u32,
    pub max_message_size: u64,
    pub max_recipients: u32,
    pub max_bad_commands: u32,
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    /// Whether to configure `[metrics]`.
    pub metrics: bool,
    pub grace_secs: u64,
    /// `tls` and `require_tls` of each listener, by index into `listeners`; listeners past the
    /// end of this list are `tls = "none"`.
    pub listener_tls: Vec<ListenerTls>,
    /// The `[tls]` section, written if set.
    pub tls: Option<TlsOpts>,
    /// The `[auth]` section, written if set (its users and aliases files are created first).
    pub auth: Option<AuthOpts>,
    /// `greet_delay_ms` of every listener that is not implicit TLS; 0 is not written.
    pub greet_delay_ms: u64,
    /// `[shield] ban_secs` (the shield itself stays disabled: bans are enforced in userspace).
    pub ban_secs: Option<u64>,
    /// `[delivery] maildir`; default `<tempdir>/mail`.
    pub maildir: Option<PathBuf>,
    /// Where the server's stderr (its log) goes instead of `<tempdir>/stderr.log`, e.g.
    /// `/dev/full` for a log on a full disk (every write fails with ENOSPC).
    pub stderr_to: Option<PathBuf>,
    /// `[delivery] mode`, written if set.
    pub maildir_mode: Option<&'static str>,
    /// More `key = value` lines for `[limits]`.
    pub limits_extra: Vec<String>,
    /// `[guard] trusted`, written if set; the server's default trusts loopback, so tests of
    /// bans and per-source limits set it to leave their client address out.
    pub trusted: Option<Vec<&'static str>>,
    /// `limits.max_connections_per_ip`, written if set.
    pub max_connections_per_ip: Option<u32>,
    /// The server's RLIMIT_NOFILE (soft and hard), if set.
    pub nofile: Option<u64>,
    /// More `key = value` lines for `[delivery]` (aliases, catch_all, recipient_delimiter).
    pub delivery_extra: Vec<String>,
    /// `key = value` lines of a `[relay]` section, written if non-empty.
    pub relay: Vec<String>,
    /// `proxy_protocol = true` on every listener, and `[proxy] trusted` with these networks.
    pub proxy_trusted: Option<Vec<&'static str>>,
    /// `proxy.header_timeout_secs`, written if set.
    pub proxy_header_timeout_secs: Option<u64>,
    /// `name` of each listener, by index into `listeners`; none past the end of this list.
    pub listener_names: Vec<&'static str>,
    /// `[log] format`, written if set.
    pub log_format: Option<&'static str>,
    /// More TOML, written at the end of the file (whole sections: `[[dkim.sign]]` ...).
    pub extra_toml: Vec<String>,
    /// `key = value` lines of the `[checks]` section. Empty: every check is off, so that tests
    /// of other things never wait on the machine's DNS.
    pub checks: Vec<String>,
    /// `dns.nameservers`, written if non-empty.
    pub nameservers: Vec<SocketAddr>,
    /// `user`, written if set; the test directory is then opened to others (0755), so that
    /// the user can reach the spool and Maildir inside it.
    pub user: Option<&'static str>,
    /// Environment of the server process (e.g. systemd's `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

/// The `[auth]` section. Users are added with the real `smtp-edge user add` before the server
/// starts; keys left `None` are not written, so the server's defaults apply.
#[derive(Debug, Clone, Default)]
pub struct AuthOpts {
    /// `(login, password)` pairs; when non-empty, `users` is `<tempdir>/users`.
    pub users: Vec<(String, String)>,
    /// `(alias, login)` lines of `<tempdir>/aliases`, written (and configured) if non-empty.
    pub aliases: Vec<(String, String)>,
    pub max_failures: Option<u32>,
    pub failure_window_secs: Option<u64>,
    pub ban_secs: Option<u64>,
    pub tarpit_max_ms: Option<u64>,
    pub verify_threads: Option<u32>,
    pub max_checks_per_source: Option<u32>,
    /// `submission_networks`, written if non-empty.
    pub submission_networks: Vec<String>,
    pub trace_login: Option<bool>,
}

/// A listener's `tls` mode (`"none"`, `"starttls"`, `"implicit"`) and `require_tls` (`None`
/// leaves the key out, so the server's default applies).
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub mode: &'static str,
    pub require_tls: Option<bool>,
}

/// The `[tls]` section. Paths are written as given (absolute paths are the safe choice: the
/// server runs in its own temporary directory).
#[derive(Debug, Clone, Default)]
pub struct TlsOpts {
    /// `cert` and `key`; `None` leaves both out (a self-signed certificate is generated).
    pub cert_key: Option<(PathBuf, PathBuf)>,
    /// `self_signed_dir`; default `<tempdir>/tls` when `cert_key` is `None`.
    pub self_signed_dir: Option<PathBuf>,
    /// `[[tls.certificate]]` entries, `(cert, key)`, chosen by SNI.
    pub extra: Vec<(PathBuf, PathBuf)>,
    pub handshake_timeout_secs: Option<u64>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            listeners: vec!["delivery"],
            recipients: None,
            spool_dir: None,
            workers: 2,
            max_message_size: 26_214_400,
            max_recipients: 100,
            max_bad_commands: 20,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            metrics: true,
            grace_secs: 30,
            listener_tls: Vec::new(),
            tls: None,
            auth: None,
            greet_delay_ms: 0,
            ban_secs: None,
            maildir: None,
            stderr_to: None,
            maildir_mode: None,
            limits_extra: Vec::new(),
            trusted: None,
            max_connections_per_ip: None,
            nofile: None,
            delivery_extra: Vec::new(),
            relay: Vec::new(),
            proxy_trusted: None,
            proxy_header_timeout_secs: None,
            listener_names: Vec::new(),
            log_format: None,
            extra_toml: Vec::new(),
            checks: Vec::new(),
            nameservers: Vec::new(),
            user: None,
            env: Vec::new(),
        }
    }
}

impl Opts {
    /// Both listeners, delivery first.
    pub fn with_submission() -> Self {
        Opts {
            listeners: vec!["delivery", "submission"],
            ..Opts::default()
        }
    }
}

/// Renders the TOML config for `opts` rooted at `root`.
pub fn render_config(opts: &Opts, root: &Path) -> String {
    let spool = opts.spool_dir.clone().unwrap_or_else(|| root.join("spool"));
    let mut t = String::new();
    writeln!(t, "hostname = \"mx.example.test\"").unwrap();
    writeln!(t, "local_domains = [\"{LOCAL_DOMAIN}\"]").unwrap();
    writeln!(t, "workers = {}", opts.workers).unwrap();
    if let Some(user) = opts.user {
        writeln!(t, "user = \"{user}\"").unwrap();
    }
    for (i, role) in opts.listeners.iter().enumerate() {
        let tls = opts.listener_tls.get(i);
        let mode = tls.map_or("none", |l| l.mode);
        writeln!(
            t,
            "\n[[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"{role}\"\ntls = \"{mode}\""
        )
        .unwrap();
        if let Some(require) = tls.and_then(|l| l.require_tls) {
            writeln!(t, "require_tls = {require}").unwrap();
        }
        if opts.greet_delay_ms > 0 && mode != "implicit" {
            writeln!(t, "greet_delay_ms = {}", opts.greet_delay_ms).unwrap();
        }
        if opts.proxy_trusted.is_some() {
            writeln!(t, "proxy_protocol = true").unwrap();
        }
        if let Some(name) = opts.listener_names.get(i) {
            writeln!(t, "name = {name:?}").unwrap();
        }
    }
    writeln!(t, "\n[spool]\ndir = {:?}", spool.display().to_string()).unwrap();
    let maildir = opts.maildir.clone().unwrap_or_else(|| root.join("mail"));
    writeln!(
        t,
        "\n[delivery]\nmaildir = {:?}",
        maildir.display().to_string()
    )
    .unwrap();
    if let Some(mode) = opts.maildir_mode {
        writeln!(t, "mode = {mode:?}").unwrap();
    }
    if opts.recipients.is_some() {
        writeln!(
            t,
            "recipients = {:?}",
            root.join("recipients").display().to_string()
        )
        .unwrap();
    }
    for line in &opts.delivery_extra {
        writeln!(t, "{line}").unwrap();
    }
    if !opts.relay.is_empty() {
        writeln!(t, "\n[relay]\n{}", opts.relay.join("\n")).unwrap();
    }
    if opts.checks.is_empty() {
        writeln!(
            t,
            "\n[checks]\nspf = \"off\"\ndkim = \"off\"\ndmarc = \"off\"\narc = \"off\""
        )
        .unwrap();
    } else {
        writeln!(t, "\n[checks]\n{}", opts.checks.join("\n")).unwrap();
    }
    if !opts.nameservers.is_empty() {
        let list: Vec<String> = opts
            .nameservers
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        writeln!(t, "\n[dns]\nnameservers = [{}]", list.join(", ")).unwrap();
    }
    writeln!(
        t,
        "\n[limits]\nmax_message_size = {}\nmax_recipients = {}\nmax_bad_commands = {}\n\
         command_timeout_secs = {}\ndata_timeout_secs = {}",
        opts.max_message_size,
        opts.max_recipients,
        opts.max_bad_commands,
        opts.command_timeout_secs,
        opts.data_timeout_secs
    )
    .unwrap();
    for line in &opts.limits_extra {
        writeln!(t, "{line}").unwrap();
    }
    if let Some(n) = opts.max_connections_per_ip {
        writeln!(t, "max_connections_per_ip = {n}").unwrap();
    }
    if let Some(trusted) = &opts.trusted {
        let nets: Vec<String> = trusted.iter().map(|n| format!("{n:?}")).collect();
        writeln!(t, "\n[guard]\ntrusted = [{}]", nets.join(", ")).unwrap();
    }
    if let Some(trusted) = &opts.proxy_trusted {
        let nets: Vec<String> = trusted.iter().map(|n| format!("{n:?}")).collect();
        writeln!(t, "\n[proxy]\ntrusted = [{}]", nets.join(", ")).unwrap();
        if let Some(secs) = opts.proxy_header_timeout_secs {
            writeln!(t, "header_timeout_secs = {secs}").unwrap();
        }
    }
    if opts.metrics {
        writeln!(t, "\n[metrics]\naddr = \"127.0.0.1:0\"").unwrap();
    }
    if let Some(format) = opts.log_format {
        writeln!(t, "\n[log]\nformat = {format:?}").unwrap();
    }
    writeln!(t, "\n[shutdown]\ngrace_secs = {}", opts.grace_secs).unwrap();
    if let Some(secs) = opts.ban_secs {
        writeln!(t, "\n[shield]\nenabled = false\nban_secs = {secs}").unwrap();
    }
    if let Some(tls) = &opts.tls {
        let quote = |p: &Path| format!("{:?}", p.display().to_string());
        writeln!(t, "\n[tls]").unwrap();
        match &tls.cert_key {
            Some((cert, key)) => {
                writeln!(t, "cert = {}\nkey = {}", quote(cert), quote(key)).unwrap();
            }
            None => {
                let dir = tls
                    .self_signed_dir
                    .clone()
                    .unwrap_or_else(|| root.join("tls"));
                writeln!(t, "self_signed_dir = {}", quote(&dir)).unwrap();
            }
        }
        if let Some(secs) = tls.handshake_timeout_secs {
            writeln!(t, "handshake_timeout_secs = {secs}").unwrap();
        }
        for (cert, key) in &tls.extra {
            writeln!(
                t,
                "\n[[tls.certificate]]\ncert = {}\nkey = {}",
                quote(cert),
                quote(key)
            )
            .unwrap();
        }
    }
    // A submission listener without TLS is refused unless the file says it is meant.
    let plaintext_submission = opts.listeners.iter().enumerate().any(|(i, role)| {
        *role == "submission" && opts.listener_tls.get(i).is_none_or(|l| l.mode == "none")
    });
    match &opts.auth {
        Some(auth) => render_auth(&mut t, auth, root, plaintext_submission),
        None if plaintext_submission => writeln!(t, "\n[auth]\nallow_plaintext = true").unwrap(),
        None => {}
    }
    for section in &opts.extra_toml {
        writeln!(t, "\n{section}").unwrap();
    }
    t
}

/// Appends the `[auth]` section for `auth`; the files it names are in `root`. With
/// `allow_plaintext`, AUTH may go without TLS (a submission listener has none).
fn render_auth(t: &mut String, auth: &AuthOpts, root: &Path, allow_plaintext: bool) {
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    writeln!(t, "\n[auth]").unwrap();
    if allow_plaintext {
        writeln!(t, "allow_plaintext = true").unwrap();
    }
    if !auth.users.is_empty() {
        writeln!(t, "users = {}", quote(&root.join("users"))).unwrap();
    }
    if !auth.aliases.is_empty() {
        writeln!(t, "aliases = {}", quote(&root.join("aliases"))).unwrap();
    }
    let ints = [
        ("max_failures", auth.max_failures.map(u64::from)),
        ("failure_window_secs", auth.failure_window_secs),
        ("ban_secs", auth.ban_secs),
        ("tarpit_max_ms", auth.tarpit_max_ms),
        ("verify_threads", auth.verify_threads.map(u64::from)),
        (
            "max_checks_per_source",
            auth.max_checks_per_source.map(u64::from),
        ),
    ];
    for (key, value) in ints {
        if let Some(v) = value {
            writeln!(t, "{key} = {v}").unwrap();
        }
    }
    if !auth.submission_networks.is_empty() {
        let nets: Vec<String> = auth
            .submission_networks
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        writeln!(t, "submission_networks = [{}]", nets.join(", ")).unwrap();
    }
    if let Some(trace) = auth.trace_login {
        writeln!(t, "trace_login = {trace}").unwrap();
    }
}

/// Creates the users file (with `smtp-edge user add`, the password on stdin) and the aliases
/// file of `auth` in `root`.
fn write_auth_files(auth: &AuthOpts, root: &Path) {
    let users = root.join("users");
    for (login, password) in &auth.users {
        let out = run_client(
            BIN,
            &[
                "user",
                "add",
                "--users",
                &users.display().to_string(),
                login,
            ],
            format!("{password}\n").as_bytes(),
            READY_DEADLINE,
        );
        assert!(
            out.status.success(),
            "smtp-edge user add {login} failed ({:?}): {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !auth.aliases.is_empty() {
        let body: String = auth
            .aliases
            .iter()
            .map(|(alias, login)| format!("{alias}: {login}\n"))
            .collect();
        fs::write(root.join("aliases"), body).expect("write aliases");
    }
}

/// A running `smtp-edge serve`, killed (SIGKILL) on drop.
pub struct Server {
    /// Holds the config, the spool (unless overridden), the Maildir root and the stderr log.
    pub dir: tempfile::TempDir,
    /// `None` runs the embedded default config (`smtp-edge serve` alone).
    pub config: Option<PathBuf>,
    pub maildir: PathBuf,
    /// Set after `ready`: the addresses printed by the server, in config order.
    pub delivery: Option<SocketAddr>,
    pub submission: Option<SocketAddr>,
    /// Set after `ready`: every listener's address, in config order.
    pub listeners: Vec<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// Extra environment for the next start (e.g. `LD_PRELOAD` of a fake clock).
    pub env: Vec<(String, String)>,
    /// RLIMIT_NOFILE (soft and hard) the server starts with, if set.
    nofile: Option<u64>,
    child: Option<Child>,
    stderr_log: PathBuf,
    /// [`Opts::stderr_to`]: stderr goes there, and `stderr_log` stays empty.
    stderr_to: Option<PathBuf>,
    starts: u32,
}

impl Server {
    /// Writes the config for `opts`, starts the server and waits for `ready`.
    pub fn start(opts: Opts) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("smtp-edge-bb-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        if let Some(rcpts) = &opts.recipients {
            let mut body = rcpts.join("\n");
            body.push('\n');
            fs::write(root.join("recipients"), body).expect("write recipients");
        }
        if let Some(auth) = &opts.auth {
            write_auth_files(auth, &root);
        }
        let config = root.join("smtp-edge.toml");
        fs::write(&config, render_config(&opts, &root)).expect("write config");
        let maildir = opts.maildir.clone().unwrap_or_else(|| root.join("mail"));
        if opts.user.is_some() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        }
        let mut server = Server::new_in(dir, maildir, Some(config), opts.nofile);
        server.stderr_to = opts.stderr_to;
        server.env = opts.env;
        server.spawn();
        server
    }

    /// Starts `smtp-edge serve` with no `--config`: the embedded default, with its fixed ports
    /// and `./var/` paths, run from a fresh temporary directory.
    pub fn start_embedded() -> Server {
        let dir = tempfile::Builder::new()
            .prefix("smtp-edge-bb-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let mut server = Server::new_in(dir, root.join("var/mail"), None, None);
        server.spawn();
        server
    }

    /// A server in `dir` (`--config config`, or none), delivering to `maildir`, not started.
    fn new_in(
        dir: tempfile::TempDir,
        maildir: PathBuf,
        config: Option<PathBuf>,
        nofile: Option<u64>,
    ) -> Server {
        Server {
            nofile,
            maildir,
            stderr_log: dir.path().join("stderr.log"),
            stderr_to: None,
            config,
            dir,
            delivery: None,
            submission: None,
            listeners: Vec::new(),
            metrics_addr: None,
            env: Vec::new(),
            child: None,
            starts: 0,
        }
    }

    /// Starts the binary again on the same config, spool and Maildir (after [`Server::sigkill`]
    /// or a signal and [`Server::wait`]). Ports are new.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart while the server still runs");
        self.spawn();
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let stderr = match &self.stderr_to {
            Some(path) => fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
            None => fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.stderr_log)
                .expect("open stderr log"),
        };
        writeln!(&stderr, "===== start #{} =====", self.starts).ok();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: between fork and exec the closure only calls setrlimit(2), which is
            // async-signal-safe, on a value it owns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn smtp-edge");
        let stdout = child.stdout.take().expect("stdout");
        self.child = Some(child);
        self.delivery = None;
        self.submission = None;
        self.listeners.clear();
        self.metrics_addr = None;

        let rx = stdout_lines(stdout);
        let deadline = Instant::now() + READY_DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["ready"] => break,
                        ["listening", role, addr] => {
                            let addr: SocketAddr = addr
                                .parse()
                                .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                            assert!(addr.ip().is_loopback(), "listener not on loopback: {line}");
                            assert_ne!(addr.port(), 0, "port 0 not resolved: {line}");
                            self.listeners.push(addr);
                            match *role {
                                "delivery" if self.delivery.is_none() => self.delivery = Some(addr),
                                "submission" if self.submission.is_none() => {
                                    self.submission = Some(addr)
                                }
                                _ => {}
                            }
                        }
                        ["metrics", addr] => {
                            let addr: SocketAddr = addr
                                .parse()
                                .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                            assert_ne!(addr.port(), 0, "port 0 not resolved: {line}");
                            self.metrics_addr = Some(addr);
                        }
                        _ => {}
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.sigkill();
                    panic!(
                        "smtp-edge did not print `ready` within {READY_DEADLINE:?}; stdout so far: \
                         {seen:?}\n{}",
                        self.stderr_tail()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!(
                        "smtp-edge exited ({status:?}) before `ready`; stdout: {seen:?}\n{}",
                        self.stderr_tail()
                    );
                }
            }
        }
    }

    /// The delivery listener's address.
    pub fn delivery(&self) -> SocketAddr {
        self.delivery
            .expect("server printed no `listening delivery` line")
    }

    /// The submission listener's address.
    pub fn submission(&self) -> SocketAddr {
        self.submission
            .expect("server printed no `listening submission` line")
    }

    /// The address of listener `i` (config order, as in [`Opts::listeners`]).
    pub fn listener(&self, i: usize) -> SocketAddr {
        *self
            .listeners
            .get(i)
            .unwrap_or_else(|| panic!("server printed no `listening` line #{i}"))
    }

    /// The process id of the running server.
    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("server not running").id() as libc::pid_t
    }

    /// SIGKILLs the server and reaps it.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `deadline` for the server to exit by itself (after [`Server::signal`]).
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        match self.wait_exit(deadline) {
            Some(status) => status,
            None => panic!(
                "smtp-edge still running after {deadline:?}\n{}",
                self.stderr_tail()
            ),
        }
    }

    /// Sends `sig` to the server without waiting.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet (`child` is still Some).
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the child to exit, up to `deadline`; on timeout SIGKILLs it and returns None.
    fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        let waiter = thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            status
        });
        match rx.recv_timeout(deadline) {
            Ok(()) => waiter.join().ok().and_then(|s| s.ok()),
            Err(_) => {
                // SAFETY: the waiter thread has not reaped the pid (it has not returned).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = waiter.join();
                None
            }
        }
    }

    /// Everything the server wrote to stderr so far (all starts), whole.
    pub fn stderr_all(&self) -> String {
        fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Waits (at most `deadline`) until the log holds `needle` at least `count` times; panics
    /// with the log's tail if it does not.
    pub fn wait_for_log(&self, needle: &str, count: usize, deadline: Duration) {
        wait_until(deadline, || {
            (self.stderr_all().matches(needle).count() >= count).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "not {count} log lines {needle:?} within {deadline:?}\n{}",
                self.stderr_tail()
            )
        });
    }

    /// Everything the server wrote to stderr so far (all starts), for failure messages.
    pub fn stderr_tail(&self) -> String {
        let log = fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        format!(
            "--- smtp-edge stderr (tail) ---\n{}\n--- end ---",
            &log[start..]
        )
    }

    /// `GET /metrics`, returning the body. Panics on anything but 200.
    pub fn metrics(&self) -> String {
        let addr = self.metrics_addr.expect("server printed no `metrics` line");
        http_get(addr, "/metrics")
    }

    /// The value of one metric sample (`name` or `name{labels}` exactly as exposed), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series).unwrap_or(0.0)
    }

    /// The sum of a family's samples whose labels include `label` (`reason="per_ip"`; `""` for
    /// all of them): a counter over every listener.
    pub fn metric_sum(&self, family: &str, label: &str) -> f64 {
        metric_sum(&self.metrics(), family, label)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sigkill();
        if thread::panicking() {
            eprintln!("{}", self.stderr_tail());
        }
    }
}

/// A plain HTTP/1.0 GET over a `TcpStream`; returns the body, panics unless the status is 200.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, REPLY_DEADLINE).expect("connect metrics");
    s.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
    s.set_write_timeout(Some(REPLY_DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read metrics response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    let status = head.lines().next().unwrap_or("");
    assert!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {status}"
    );
    body.to_string()
}

/// The sum of the samples of `family` in Prometheus text whose labels include `label`
/// (`reason="per_ip"`; `""` matches every sample of the family).
pub fn metric_sum(text: &str, family: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = match series.strip_prefix(family)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            labels
                .contains(label)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Finds `series` in Prometheus text. Labels must match as written (e.g. `{reason="relay_denied"}`).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name.trim() == series).then(|| value.trim().parse().ok())?
    })
}

/// All Maildir messages under `root` (files in any `new/` or `cur/` directory).
pub fn maildir_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                walk(&p, out);
            } else if ft.is_file() {
                let parent = p
                    .parent()
                    .and_then(|d| d.file_name())
                    .and_then(|n| n.to_str());
                if matches!(parent, Some("new") | Some("cur")) {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

/// Polls `root` every 20 ms until it holds at least `count` messages; panics at `deadline`.
/// Polling a directory is the wait-on-condition here: delivery gives no other signal.
pub fn wait_for_maildir(root: &Path, count: usize, deadline: Duration) -> Vec<PathBuf> {
    wait_until(deadline, || {
        let files = maildir_files(root);
        (files.len() >= count).then_some(files)
    })
    .unwrap_or_else(|| {
        panic!(
            "Maildir {} holds {} message(s) after {deadline:?}, wanted {count}: {:?}",
            root.display(),
            maildir_files(root).len(),
            maildir_files(root)
        )
    })
}

/// Evaluates `cond` every 20 ms until it yields `Some` or `deadline` passes.
pub fn wait_until<T>(deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        // A poll interval, not a synchronization: the loop exits on the condition.
        thread::sleep(Duration::from_millis(20));
    }
}

/// The lines a child writes to `stdout`, read on a thread that keeps draining the pipe to EOF (so
/// a server never blocks on a full pipe after `ready`).
pub fn stdout_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Runs an external client with `stdin`, killing it if it runs past `deadline`.
pub fn run_client(cmd: &str, args: &[&str], stdin: &[u8], deadline: Duration) -> Output {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd}: {e} (is it installed? `cargo xtask test` installs it)")
        });
    let pid = child.id() as libc::pid_t;
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("wait for client"),
        Err(_) => {
            // SAFETY: the waiter thread has not reaped the child (it has not sent yet).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{cmd} {args:?} still running after {deadline:?}");
        }
    }
}

/// Path of a helper script in `tests/clients/`.
pub fn client_script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/clients")
        .join(name)
        .display()
        .to_string()
}

/// Runs the binary with `args` (not `serve`-and-wait), returning its output; bounded by `deadline`.
pub fn run_bin(args: &[&str], deadline: Duration) -> Output {
    run_client(BIN, args, b"", deadline)
}

/// One record of a spool log segment, read as the format is documented
/// (`edge/src/spool/log/record.rs`): a 46-octet header (`SEL1`, kind, length, queue id, two
/// checksums), then the payload.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// 1 message, 2 state, 3 done.
    pub kind: u8,
    /// The queue id.
    pub id: String,
    /// Where the header starts in the segment.
    pub offset: usize,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Length of a log record header.
pub const LOG_HEADER_LEN: usize = 46;

/// The records of one segment in order, up to the first header that is not one (zeros, or a
/// torn tail) or runs past the end. Checksums are the server's business; this reads the layout.
pub fn log_records(path: &Path) -> Vec<LogRecord> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + LOG_HEADER_LEN <= bytes.len() && &bytes[pos..pos + 4] == b"SEL1" {
        let len = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let start = pos + LOG_HEADER_LEN;
        if start + len > bytes.len() {
            break;
        }
        out.push(LogRecord {
            kind: bytes[pos + 4],
            id: String::from_utf8_lossy(&bytes[pos + 12..pos + 38]).into_owned(),
            offset: pos,
            payload: bytes[start..start + len].to_vec(),
        });
        pos = start + len;
    }
    out
}

/// The segments of `<spool>/log/`, in name (write) order.
pub fn log_segments(spool: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(spool.join("log"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    segments.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    segments.sort();
    segments
}

/// The messages queued in `spool`, in queue-file form, by id: `queue/<qid>` files, and log
/// messages without a done mark.
pub fn queued_messages(spool: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for entry in fs::read_dir(spool.join("queue"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            out.insert(name, fs::read(entry.path()).unwrap());
        }
    }
    let mut done = std::collections::HashSet::new();
    let mut logged = Vec::new();
    for segment in log_segments(spool) {
        for r in log_records(&segment) {
            match r.kind {
                1 => logged.push((r.id, r.payload)),
                3 => {
                    done.insert(r.id);
                }
                _ => {}
            }
        }
    }
    for (id, payload) in logged {
        if !done.contains(&id) {
            out.insert(id, payload);
        }
    }
    out
}

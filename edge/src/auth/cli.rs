//! `smtp-edge user list|add|passwd|del`: reads and edits the users file.
//!
//! Which file: `--users FILE`, else `auth.users` of `--config FILE` (default: the embedded
//! configuration). `add` accepts only addresses in the `local_domains` of that configuration
//! (the server would accept mail for no other), and `add` and `passwd` refuse passwords under
//! [`MIN_PASSWORD_CHARS`] characters. Of the configuration file only `local_domains` and
//! `auth.users` are read, so the first user can be added before the users file exists.
//!
//! The password is read from standard input: one line (its `\n` or `\r\n` removed), or, on a
//! terminal, typed twice after prompts on standard error with echo turned off. It is hashed
//! with argon2id and [`HashParams::OWASP`].
//!
//! The file is replaced atomically: the new contents go to a temporary file in the same
//! directory, which is fsynced and renamed over the old one, and the directory is fsynced.
//! Comments, blank lines and every other line are kept as they were. A new file is created with
//! mode 0600; an existing one keeps its mode and owner. Two edits of the same file must not run
//! at once (the later rename would win). The server picks the change up on SIGHUP.
//!
//! Exit status: 0 on success, 2 on a usage error, 1 when the operation fails (the user exists
//! for `add`, does not for `passwd` and `del`, the address is outside `local_domains`, the
//! password is too short or the passwords differ, the file cannot be read or written).

use crate::cli::{self, CliError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use zeroize::Zeroizing;

use super::users::{hash_password, login_address, HashParams};

/// Longest password accepted, in octets: far beyond any passphrase, and it bounds the read.
const MAX_PASSWORD: usize = 1024;

/// Shortest password `add` and `passwd` accept, in characters: NIST SP 800-63B §3.1.1.2 asks
/// for at least 8 where a password is the only factor, 15 with no other; 12 is the common
/// middle (and OWASP's advice for SMTP-reachable accounts, which face online guessing).
pub const MIN_PASSWORD_CHARS: usize = 12;

/// `smtp-edge user list|add|passwd|del`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(
    after_help = "On a terminal the password is prompted for twice, without echo; \
                        otherwise it is the first line of standard input. Send SIGHUP to a \
                        running server to apply the change."
)]
pub struct UserArgs {
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
enum Op {
    /// Print the logins of the users file, one per line.
    List(Files),
    /// Create ADDRESS (in local_domains); its password (12 characters or more) is read from
    /// standard input.
    Add(Target),
    /// Set a new password (12 characters or more) for ADDRESS, read from standard input.
    Passwd(Target),
    /// Remove ADDRESS.
    Del(Target),
}

/// Which users file, and the configuration it may come from.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
struct Files {
    /// The users file (`address:$argon2id$...` per line); default: `auth.users` of the
    /// configuration.
    #[arg(long, value_name = "FILE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    users: Option<String>,
    /// The configuration whose `local_domains` (and `auth.users`) apply; default: the embedded
    /// one.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Which file, and which login in it.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
struct Target {
    #[command(flatten)]
    files: Files,
    /// The login: an address such as alice@example.test.
    #[arg(value_name = "ADDRESS")]
    address: String,
}

/// What `user` reads of the configuration: its domains and its users file.
struct Settings {
    local_domains: Vec<String>,
    users: Option<String>,
    /// How to name the configuration in messages.
    name: String,
}

impl Files {
    /// The configuration's `local_domains` and `auth.users`; only these two keys are read.
    fn settings(&self) -> Result<Settings, CliError> {
        let (text, name) = match &self.config {
            Some(path) => (
                fs::read_to_string(path)
                    .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?,
                path.display().to_string(),
            ),
            None => (
                crate::config::DEFAULT_TOML.to_owned(),
                "the embedded configuration".to_owned(),
            ),
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| failed(format!("{name}: {}", e.message().trim())))?;
        let local_domains = table
            .get("local_domains")
            .and_then(toml::Value::as_array)
            .map(|domains| {
                domains
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .ok_or_else(|| failed(format!("{name}: local_domains: expected a list of domains")))?;
        let users = table
            .get("auth")
            .and_then(|auth| auth.get("users"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        Ok(Settings {
            local_domains,
            users,
            name,
        })
    }

    /// The users file: `--users`, else the configuration's `auth.users`.
    fn users(&self, settings: &Settings) -> Result<PathBuf, CliError> {
        match (&self.users, &settings.users) {
            (Some(users), _) | (None, Some(users)) => Ok(PathBuf::from(users)),
            (None, None) => Err(CliError::Usage(format!(
                "no users file: pass --users FILE, or --config FILE with auth.users \
                 ({} has none)",
                settings.name
            ))),
        }
    }
}

/// Runs `smtp-edge user ...` and prints its result on stdout, or one line on failure
/// (stderr); never prints the password.
pub fn run(args: &UserArgs) -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    // SAFETY: isatty only inspects the descriptor number; 0 is standard input.
    let tty = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    let result = execute(args, &mut input, tty, HashParams::OWASP);
    cli::finish(result, "user")
}

/// The test seam: `run` with the password read from `input` as from a pipe, and `params` (tests
/// use cheap ones).
#[cfg(test)]
pub(crate) fn run_with_input(
    args: &UserArgs,
    input: &mut dyn BufRead,
    params: HashParams,
) -> Result<String, CliError> {
    execute(args, input, false, params)
}

fn execute(
    args: &UserArgs,
    input: &mut dyn BufRead,
    tty: bool,
    params: HashParams,
) -> Result<String, CliError> {
    let target = match &args.op {
        Op::List(files) => return list(files),
        Op::Add(target) | Op::Passwd(target) | Op::Del(target) => target,
    };
    let login = login_address(&target.address).map_err(CliError::Usage)?;
    let settings = target.files.settings()?;
    if matches!(args.op, Op::Add(_)) {
        let domain = login.rsplit_once('@').map_or("", |(_, d)| d);
        if !settings.local_domains.iter().any(|d| d == domain) {
            return Err(failed(format!(
                "{login}: {domain} is not in local_domains of {} ({}); a user's own address \
                 must be one we take mail for (pass --config FILE for another configuration)",
                settings.name,
                settings.local_domains.join(", ")
            )));
        }
    }
    let users = target.files.users(&settings)?;
    // Edit the file a symlink points to, not the link: the rename would replace the link.
    let path = fs::canonicalize(&users).unwrap_or(users);
    let existing = match fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound && matches!(args.op, Op::Add(_)) => None,
        Err(e) => return Err(failed(format!("cannot read {}: {e}", path.display()))),
    };
    let text = existing.as_deref().unwrap_or_default();
    let found = text
        .split(|&b| b == b'\n')
        .any(|line| line_login(line).as_deref() == Some(&*login));
    match (&args.op, found) {
        (Op::Add(_), true) => {
            return Err(failed(format!(
                "{login} already exists in {}",
                path.display()
            )))
        }
        (Op::Passwd(_) | Op::Del(_), false) => {
            return Err(failed(format!("{login} is not in {}", path.display())))
        }
        _ => {}
    }
    let new_line = match args.op {
        Op::Del(_) | Op::List(_) => None,
        Op::Add(_) | Op::Passwd(_) => {
            let password = if tty {
                prompt_twice(input, &login)?
            } else {
                read_line(input)?
            };
            let chars = password.chars().count();
            if chars < MIN_PASSWORD_CHARS {
                return Err(failed(format!(
                    "the password has {chars} characters; at least {MIN_PASSWORD_CHARS} are \
                     needed (submission is open to password guessing from anywhere)"
                )));
            }
            let phc = hash_password(password.as_bytes(), params)
                .map_err(|e| failed(format!("cannot hash the password: {e}")))?;
            Some(format!("{login}:{phc}"))
        }
    };
    let contents = edited(text, &login, new_line.as_deref());
    let meta = match existing {
        Some(_) => Some(
            fs::metadata(&path)
                .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?,
        ),
        None => None,
    };
    write_atomically(&path, &contents, meta.as_ref())
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    let verb = match args.op {
        Op::Add(_) => "added",
        Op::Passwd(_) => "changed the password of",
        Op::Del(_) | Op::List(_) => "removed",
    };
    Ok(format!(
        "{verb} {login} in {}; send SIGHUP to smtp-edge to apply\n",
        path.display()
    ))
}

/// `user list`: each login of the file, one per line, in file order (comments, blank lines
/// and hashes are not printed).
fn list(files: &Files) -> Result<String, CliError> {
    let settings = files.settings()?;
    let path = files.users(&settings)?;
    let text =
        fs::read(&path).map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(line_login)
        .map(|login| login + "\n")
        .collect())
}

fn failed(problem: String) -> CliError {
    CliError::Failed(problem)
}

/// The login a users-file line defines, as the loader reads it; `None` for blank, comment and
/// malformed lines (which are kept untouched).
fn line_login(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (address, _) = line.split_once(':')?;
    Some(address.trim().to_ascii_lowercase())
}

/// `text` with `login`'s line replaced by `new_line` (its first occurrence; any duplicate is
/// dropped) or removed when `new_line` is `None`; appended if `login` has no line.
fn edited(text: &[u8], login: &str, new_line: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 200);
    let mut placed = false;
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if last && line.is_empty() {
            break; // the empty piece after the final newline
        }
        if line_login(line).as_deref() == Some(login) {
            if let (Some(new_line), false) = (new_line, placed) {
                out.extend_from_slice(new_line.as_bytes());
                out.push(b'\n');
                placed = true;
            }
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    if let (Some(new_line), false) = (new_line, placed) {
        out.extend_from_slice(new_line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// One password line from `input`, without its line ending.
fn read_line(input: &mut dyn BufRead) -> Result<Zeroizing<String>, CliError> {
    let mut buf = Zeroizing::new(Vec::new());
    // One byte past the cap tells "exactly the cap" from "over it", and bounds the read.
    let mut limited = io::Read::take(input, MAX_PASSWORD as u64 + 2);
    limited
        .read_until(b'\n', &mut buf)
        .map_err(|e| failed(format!("cannot read the password: {e}")))?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(failed("no password given on standard input".to_owned()));
    }
    if buf.len() > MAX_PASSWORD {
        return Err(failed(format!(
            "the password is longer than {MAX_PASSWORD} octets"
        )));
    }
    if buf.contains(&0) {
        // AUTH PLAIN separates its fields with NUL (RFC 4616 §2): such a password could never
        // be sent.
        return Err(failed("the password contains a NUL character".to_owned()));
    }
    let text = std::str::from_utf8(&buf)
        .map_err(|_| failed("the password is not valid UTF-8".to_owned()))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Prompts for the password twice on the terminal, with echo off.
fn prompt_twice(input: &mut dyn BufRead, login: &str) -> Result<Zeroizing<String>, CliError> {
    let _echo =
        EchoOff::new().map_err(|e| failed(format!("cannot turn off terminal echo: {e}")))?;
    let mut ask = |prompt: &str| {
        eprint!("{prompt}");
        let _ = io::stderr().flush();
        let line = read_line(input);
        // Echo is off, so the user's Enter did not move to the next line.
        eprintln!();
        line
    };
    let first = ask(&format!("New password for {login}: "))?;
    let second = ask("Retype the password: ")?;
    if *first != *second {
        return Err(failed("the passwords do not match".to_owned()));
    }
    Ok(first)
}

/// Terminal echo turned off on standard input until dropped. SIGINT and SIGTERM while it is off
/// restore echo before the process ends, so an interrupted prompt does not leave the shell
/// silent.
struct EchoOff {
    saved: libc::termios,
    handlers: Vec<signal_hook::SigId>,
}

impl EchoOff {
    fn new() -> io::Result<EchoOff> {
        // SAFETY: termios is plain old data; tcgetattr fills it in or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut handlers = Vec::new();
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler calls only tcsetattr and _exit, both async-signal-safe
            // (POSIX.1-2017 §2.4.3), on a copy of the saved settings.
            let id = unsafe {
                signal_hook::low_level::register(signal, move || {
                    libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved);
                    signal_hook::low_level::exit(128 + signal);
                })
            };
            // Without the handler an interrupt would leave echo off: a nuisance, not a leak.
            if let Ok(id) = id {
                handlers.push(id);
            }
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: `quiet` is a valid termios derived from the current settings.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            let e = io::Error::last_os_error();
            for id in handlers {
                signal_hook::low_level::unregister(id);
            }
            return Err(e);
        }
        Ok(EchoOff { saved, handlers })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: `saved` holds the settings tcgetattr returned.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Replaces `path` with `contents`: temporary file in the same directory, fsync, rename, fsync
/// of the directory. A new file is 0600; an existing one keeps its mode and owner.
fn write_atomically(
    path: &Path,
    contents: &[u8],
    existing: Option<&fs::Metadata>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let result = (|| {
        if let Some(meta) = existing {
            let own = file.metadata()?;
            if (own.uid(), own.gid()) != (meta.uid(), meta.gid()) {
                std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
            }
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::auth::users::tests::FAST;
    use crate::auth::Credentials;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        user: UserArgs,
    }

    fn parse(args: &[&str]) -> Result<UserArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("user").chain(args.iter().copied())).map(|c| c.user)
    }

    fn cli(args: &[&str], stdin: &str) -> Result<String, CliError> {
        let args = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        run_with_input(&args, &mut stdin.as_bytes(), FAST)
    }

    fn load(path: &Path) -> Credentials {
        Credentials::load(Some(path), None).unwrap()
    }

    #[test]
    fn add_passwd_del_keep_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let p = path.to_str().unwrap();
        let done = cli(
            &["add", "--users", p, "Alice@Example.TEST"],
            "s3cret-enough-chars\n",
        )
        .unwrap();
        assert!(done.starts_with("added alice@example.test in "), "{done}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Comments and foreign lines survive edits.
        let mut text = fs::read_to_string(&path).unwrap();
        text.insert_str(0, "# staff\n\n");
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        cli(
            &["add", &format!("--users={p}"), "bob@example.test"],
            "password-of-bob\r\n",
        )
        .unwrap();
        assert_eq!(load(&path).len(), 2);

        let err = cli(&["add", "--users", p, "alice@example.test"], "x\n").unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.contains("already exists")),
            "{err}"
        );

        let before = fs::read_to_string(&path).unwrap();
        cli(
            &["passwd", "alice@example.test", "--users", p],
            "n3w-password-here\n",
        )
        .unwrap();
        let after = fs::read_to_string(&path).unwrap();
        assert_ne!(before, after);
        assert!(
            after.starts_with("# staff\n\nalice@example.test:$argon2id$v=19$m=64,t=1,p=1$"),
            "{after}"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640,
            "mode kept"
        );

        cli(&["del", "--users", p, "ALICE@example.test"], "").unwrap();
        let c = load(&path);
        assert!(!c.contains("alice@example.test") && c.contains("bob@example.test"));
        assert!(fs::read_to_string(&path)
            .unwrap()
            .starts_with("# staff\n\nbob@"));

        for op in ["passwd", "del"] {
            let err = cli(&[op, "--users", p, "alice@example.test"], "x\n").unwrap_err();
            assert!(
                matches!(&err, CliError::Failed(m) if m.contains("is not in")),
                "{err}"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["users"], "no temporary files left");
    }

    #[test]
    fn passwords_verify_after_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let p = path.to_str().unwrap();
        cli(
            &["add", "--users", p, "a@example.test"],
            "old-password-12\n",
        )
        .unwrap();
        cli(
            &["passwd", "--users", p, "a@example.test"],
            "new-password-12\n",
        )
        .unwrap();
        let c = load(&path);
        let (phc, known) = c.phc_for("a@example.test");
        assert!(known);
        let hash = argon2::password_hash::PasswordHash::new(phc).unwrap();
        use argon2::password_hash::PasswordVerifier;
        assert!(argon2::Argon2::default()
            .verify_password(b"new-password-12", &hash)
            .is_ok());
        assert!(argon2::Argon2::default()
            .verify_password(b"old-password-12", &hash)
            .is_err());
    }

    #[test]
    fn usage_and_input_errors() {
        for args in [
            &[][..],
            &["frob", "--users", "/tmp/x", "a@example.test"],
            &["add", "--users"],
            &["add", "--users", "", "a@example.test"],
            &["add", "--users", "/tmp/x"],
            &["add", "--users", "/tmp/x", "a@example.test", "c@d.test"],
            &["add", "--users", "/tmp/x", "--force", "a@example.test"],
        ] {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
        assert!(matches!(
            cli(
                &["add", "--users", "/tmp/x", "not-an-address"],
                "password-long-enough\n"
            ),
            Err(CliError::Usage(_))
        ));
        // No --users, and the embedded configuration has no auth.users.
        assert!(matches!(
            cli(&["add", "a@example.test"], "password-long-enough\n"),
            Err(CliError::Usage(_))
        ));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        let p = p.to_str().unwrap();
        for stdin in ["", "\n", "a\0b\n"] {
            let err = cli(&["add", "--users", p, "a@example.test"], stdin).unwrap_err();
            assert!(matches!(err, CliError::Failed(_)), "{stdin:?}");
        }
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert!(cli(&["add", "--users", p, "a@example.test"], &long).is_err());
        assert!(
            !dir.path().join("users").exists(),
            "nothing written on failure"
        );
        let missing = dir.path().join("nodir/users");
        let err = cli(
            &[
                "add",
                "--users",
                missing.to_str().unwrap(),
                "a@example.test",
            ],
            "password-long-enough\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.starts_with("cannot write")),
            "{err}"
        );
    }

    #[test]
    fn short_passwords_and_foreign_domains_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let p = path.to_str().unwrap();
        // Eleven characters (one of them two octets): one short.
        let err = cli(
            &["add", "--users", p, "a@example.test"],
            "p\u{e4}sswort-12\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.contains("has 11 characters; at least 12")),
            "{err}"
        );
        assert!(!path.exists(), "nothing written for a short password");
        cli(
            &["add", "--users", p, "a@example.test"],
            "p\u{e4}sswort-123\n",
        )
        .unwrap();
        let err = cli(&["passwd", "--users", p, "a@example.test"], "short\n").unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.contains("at least 12")),
            "{err}"
        );

        // The embedded configuration's domains are localhost and example.test.
        let err = cli(
            &["add", "--users", p, "a@elsewhere.test"],
            "long-enough-pw\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.contains("elsewhere.test is not in local_domains of the embedded configuration")),
            "{err}"
        );
        // --config names the domains, and the users file when --users is not given.
        let config = dir.path().join("smtp-edge.toml");
        fs::write(
            &config,
            format!("local_domains = [\"Elsewhere.TEST\"]\n[auth]\nusers = \"{p}\"\n"),
        )
        .unwrap();
        let c = config.to_str().unwrap();
        cli(
            &["add", "--config", c, "b@elsewhere.test"],
            "long-enough-pw\n",
        )
        .unwrap();
        let err = cli(
            &["add", "--config", c, "c@example.test"],
            "long-enough-pw\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.contains("example.test is not in local_domains of") && m.contains("elsewhere.test")),
            "{err}"
        );
        assert_eq!(
            cli(&["list", "--config", c], "").unwrap(),
            "a@example.test\nb@elsewhere.test\n"
        );
        assert_eq!(
            cli(&["list", "--users", p], "").unwrap(),
            "a@example.test\nb@elsewhere.test\n"
        );
        // No --users and no auth.users: a usage error that says what to pass.
        let err = cli(&["list"], "").unwrap_err();
        assert!(
            matches!(&err, CliError::Usage(m) if m.contains("--users FILE")),
            "{err}"
        );
    }

    #[test]
    fn edited_handles_missing_final_newline_and_duplicates() {
        let text = b"# c\na@x.test:old\nb@x.test:keep\nA@x.test:dup";
        assert_eq!(
            edited(text, "a@x.test", Some("a@x.test:new")),
            b"# c\na@x.test:new\nb@x.test:keep\n"
        );
        assert_eq!(edited(text, "a@x.test", None), b"# c\nb@x.test:keep\n");
        assert_eq!(
            edited(b"# c", "z@x.test", Some("z@x.test:h")),
            b"# c\nz@x.test:h\n"
        );
        assert_eq!(edited(b"", "z@x.test", Some("z@x.test:h")), b"z@x.test:h\n");
    }
}

//! `smtp-edge user add|passwd|del --users FILE ADDRESS`: edits the users file.
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
//! for `add`, does not for `passwd` and `del`, the passwords differ, the file cannot be written).

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

/// `smtp-edge user add|passwd|del --users FILE ADDRESS`.
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
    /// Create ADDRESS; its password is read from standard input.
    Add(Target),
    /// Set a new password for ADDRESS, read from standard input.
    Passwd(Target),
    /// Remove ADDRESS.
    Del(Target),
}

/// Which file, and which login in it.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
struct Target {
    /// The users file (`address:$argon2id$...` per line).
    #[arg(long, value_name = "FILE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    users: String,
    /// The login: an address such as alice@example.test.
    #[arg(value_name = "ADDRESS")]
    address: String,
}

/// Runs `smtp-edge user ...` and prints one line on success (stdout) or failure (stderr);
/// never prints the password.
pub fn run(args: &UserArgs) -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    // SAFETY: isatty only inspects the descriptor number; 0 is standard input.
    let tty = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    let result = execute(args, &mut input, tty, HashParams::OWASP);
    cli::finish(result.map(|message| message + "\n"), "user")
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
    let (Op::Add(target) | Op::Passwd(target) | Op::Del(target)) = &args.op;
    let login = login_address(&target.address).map_err(CliError::Usage)?;
    let users = PathBuf::from(&target.users);
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
        Op::Del(_) => None,
        Op::Add(_) | Op::Passwd(_) => {
            let password = if tty {
                prompt_twice(input, &login)?
            } else {
                read_line(input)?
            };
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
        Op::Del(_) => "removed",
    };
    Ok(format!(
        "{verb} {login} in {}; send SIGHUP to smtp-edge to apply",
        path.display()
    ))
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
        let done = cli(&["add", "--users", p, "Alice@Example.TEST"], "s3cret\n").unwrap();
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
            "pw\r\n",
        )
        .unwrap();
        assert_eq!(load(&path).len(), 2);

        let err = cli(&["add", "--users", p, "alice@example.test"], "x\n").unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.contains("already exists")),
            "{err}"
        );

        let before = fs::read_to_string(&path).unwrap();
        cli(&["passwd", "alice@example.test", "--users", p], "n3w\n").unwrap();
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
        cli(&["add", "--users", p, "a@example.test"], "old\n").unwrap();
        cli(&["passwd", "--users", p, "a@example.test"], "new\n").unwrap();
        let c = load(&path);
        let (phc, known) = c.phc_for("a@example.test");
        assert!(known);
        let hash = argon2::password_hash::PasswordHash::new(phc).unwrap();
        use argon2::password_hash::PasswordVerifier;
        assert!(argon2::Argon2::default()
            .verify_password(b"new", &hash)
            .is_ok());
        assert!(argon2::Argon2::default()
            .verify_password(b"old", &hash)
            .is_err());
    }

    #[test]
    fn usage_and_input_errors() {
        for args in [
            &[][..],
            &["frob", "--users", "/tmp/x", "a@b.test"],
            &["add", "a@b.test"],
            &["add", "--users"],
            &["add", "--users", "", "a@b.test"],
            &["add", "--users", "/tmp/x"],
            &["add", "--users", "/tmp/x", "a@b.test", "c@d.test"],
            &["add", "--users", "/tmp/x", "--force", "a@b.test"],
        ] {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
        assert!(matches!(
            cli(&["add", "--users", "/tmp/x", "not-an-address"], "pw\n"),
            Err(CliError::Usage(_))
        ));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        let p = p.to_str().unwrap();
        for stdin in ["", "\n", "a\0b\n"] {
            let err = cli(&["add", "--users", p, "a@b.test"], stdin).unwrap_err();
            assert!(matches!(err, CliError::Failed(_)), "{stdin:?}");
        }
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert!(cli(&["add", "--users", p, "a@b.test"], &long).is_err());
        assert!(
            !dir.path().join("users").exists(),
            "nothing written on failure"
        );
        let missing = dir.path().join("nodir/users");
        let err = cli(
            &["add", "--users", missing.to_str().unwrap(), "a@b.test"],
            "pw\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, CliError::Failed(m) if m.starts_with("cannot write")),
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

//! What `serve` would hit beyond the text of the file: certificates and keys that do not load,
//! do not match or have expired, directories that are files or cannot be written, a control
//! socket path taken by something else, aliases that lead nowhere.
//!
//! `check-config`, `serve` (before it binds anything) and a reload all run these checks, so
//! a file `check-config` passes is one they accept. Errors stop them; warnings are printed by
//! `check-config` and logged by the server, which runs anyway.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Config, ConfigError, TlsMode};
use crate::tls::{self, CertSource};

/// A certificate closer than this to its end is warned about (as the self-signed one is
/// renewed then).
pub const EXPIRY_WARNING: Duration = tls::SELF_SIGNED_RENEW_BEFORE;

/// What the checks found: errors (the server would fail, or refuses) and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Problems `serve` would stop at, and a reload refuses.
    pub errors: Vec<ConfigError>,
    /// Problems worth fixing that do not stop the server.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Checks what the file names on disk, at `now`: see the module docs. Reads files and
    /// directories, writes nothing.
    ///
    /// Directories are checked for the user running this check. When the server drops its
    /// privileges to another user, that user is the one to check for; the checks take the
    /// directory and the access wanted in [`usable_dir`], where that user goes.
    pub fn preflight(&self, now: SystemTime) -> Findings {
        let mut f = Findings::default();
        self.check_directories(&mut f);
        self.check_control_socket(&mut f);
        if self.listeners.iter().any(|l| l.tls != TlsMode::None) {
            self.check_certificates(now, &mut f);
        }
        self.check_aliases(&mut f);
        f
    }

    fn check_directories(&self, f: &mut Findings) {
        let mut dirs = vec![
            ("spool.dir", self.spool_dir.as_path()),
            ("delivery.maildir", self.maildir.as_path()),
        ];
        let tls_used = self.listeners.iter().any(|l| l.tls != TlsMode::None);
        if let (true, CertSource::SelfSigned { dir, .. }) = (tls_used, &self.tls.default_cert) {
            dirs.push(("tls.self_signed_dir", dir.as_path()));
        }
        for (key, dir) in dirs {
            if let Err(problem) = usable_dir(dir) {
                f.errors.push(ConfigError::new(key, problem));
            }
        }
    }

    /// The control socket: nothing but a socket may be in its place, and its directory must
    /// exist when the server binds it: already, or made with the spool or the Maildir, which
    /// the server creates (with their parents) before it binds the socket.
    fn check_control_socket(&self, f: &mut Findings) {
        let socket = &self.control.socket;
        let key = "control.socket";
        match std::fs::symlink_metadata(socket) {
            Ok(meta) if !meta.file_type().is_socket() => f.errors.push(ConfigError::new(
                key,
                format!("{}: exists and is not a socket", socket.display()),
            )),
            _ => {}
        }
        let Some(parent) = socket.parent() else {
            return;
        };
        if parent.starts_with(&self.spool_dir) {
            // Created with the spool (or under it by the operator): checked with it.
            return;
        }
        let made_first = self.spool_dir.starts_with(parent) || self.maildir.starts_with(parent);
        let usable = if made_first {
            usable_dir(parent)
        } else {
            existing_writable_dir(parent)
        };
        if let Err(problem) = usable {
            f.errors.push(ConfigError::new(
                key,
                format!("{}: {problem}", socket.display()),
            ));
        }
    }

    fn check_certificates(&self, now: SystemTime, f: &mut Findings) {
        for e in tls::check_certificate_files(&self.tls) {
            f.errors.push(match e {
                tls::TlsError::Cert { key, path, problem } => {
                    ConfigError::new(key, format!("{}: {problem}", path.display()))
                }
                other => ConfigError::new("tls", other.to_string()),
            });
        }
        let mut entries: Vec<&tls::CertEntry> = self.tls.certificates.iter().collect();
        if let CertSource::Files(entry) = &self.tls.default_cert {
            entries.insert(0, entry);
        }
        let now = unix_secs(now);
        for entry in entries {
            let key = format!("{}.cert", entry.config_key);
            let Some((_, not_after)) = tls::validity(&entry.cert) else {
                // Unreadable: the load above said why.
                continue;
            };
            let path = entry.cert.display();
            let left = not_after.saturating_sub(now);
            if left < 0 {
                f.errors.push(ConfigError::new(
                    key,
                    format!(
                        "{path}: expired {} day(s) ago",
                        left.unsigned_abs() / 86_400
                    ),
                ));
            } else if left < EXPIRY_WARNING.as_secs() as i64 {
                f.warnings.push(ConfigError::new(
                    key,
                    format!("{path}: expires in {} day(s)", left / 86_400),
                ));
            }
        }
    }

    /// Aliases that lead nowhere: a login alias whose user is not in `auth.users` (it is
    /// inert until the user exists, so that deleting a user never makes a reload fail), and
    /// a `delivery.aliases` target in our domains that is not a recipient.
    fn check_aliases(&self, f: &mut Findings) {
        for login in self.auth.credentials.aliased_logins_without_user() {
            f.warnings.push(ConfigError::new(
                "auth.aliases",
                format!("{login}: not a user in auth.users; its aliases grant nothing"),
            ));
        }
        let rewriter = self.rewrite.load();
        let mut missing: Vec<String> = Vec::new();
        for (alias, targets) in &rewriter.aliases {
            for target in targets {
                let Some((local, domain)) = target.rsplit_once('@') else {
                    continue;
                };
                let domain = domain.to_ascii_lowercase();
                if rewriter.local_domains.contains(&domain) && !rewriter.exists(local, &domain) {
                    missing.push(format!("{alias}: {target} is not a recipient here"));
                }
            }
        }
        missing.sort();
        for problem in missing {
            f.warnings
                .push(ConfigError::new("delivery.aliases", problem));
        }
    }
}

/// Whether the server can use `dir` as a directory of its own: an existing directory it may
/// write to and search, or a path it can create (its nearest existing ancestor is such a
/// directory). The problem, naming the path, if not.
pub fn usable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            Err(format!("{}: exists and is not a directory", dir.display()))
        }
        Ok(_) => writable(dir).map_err(|e| format!("{}: {e}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut ancestor = dir.parent();
            while let Some(a) = ancestor {
                match std::fs::metadata(a) {
                    Ok(meta) if meta.is_dir() => {
                        return writable(a).map_err(|e| {
                            format!(
                                "{}: cannot be created in {}: {e}",
                                dir.display(),
                                a.display()
                            )
                        })
                    }
                    Ok(_) => {
                        return Err(format!(
                            "{}: cannot be created: {} is not a directory",
                            dir.display(),
                            a.display()
                        ))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => ancestor = a.parent(),
                    Err(e) => return Err(format!("{}: {e}", a.display())),
                }
            }
            Err(format!("{}: cannot be created", dir.display()))
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// `dir` exists, is a directory, and may be written to and searched.
fn existing_writable_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => writable(dir).map_err(|e| format!("{}: {e}", dir.display())),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// Whether the calling user may create entries in the directory `dir` (write and search
/// permission, a read-only mount refused), as the kernel decides: `access(2)`, not a guess
/// from the mode bits, so ACLs, root and read-only mounts are answered right.
fn writable(dir: &Path) -> Result<(), std::io::Error> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Seconds since the Unix epoch (negative before it).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

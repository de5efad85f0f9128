//! The users file and the aliases file, loaded whole into an immutable [`Credentials`] that a
//! [`CredentialStore`] swaps atomically on reload.
//!
//! The users file (`auth.users`) has one login per line, the address and its argon2id hash in
//! [PHC string format], as `smtp-edge user add` writes them:
//!
//! ```text
//! # comment lines start with '#'; blank lines are ignored
//! alice@example.test:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//! Bob@Example.TEST:$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>   <- login bob@example.test
//! ```
//!
//! The aliases file (`auth.aliases`) names the other `MAIL FROM` addresses a user may use; a
//! user may always use their own login address. One alias per line, with one or more users
//! separated by commas; an alias may also be repeated on several lines:
//!
//! ```text
//! postmaster@example.test: alice@example.test, bob@example.test
//! sales@example.test: bob@example.test
//! ```
//!
//! A user named in the aliases file but absent from the users file is not an error: the entry
//! is inert until the user exists. That way `smtp-edge user del` followed by a reload always
//! succeeds, and a deleted user can never keep logging in because a reload was refused.
//!
//! Addresses are `local@domain` without quoting, lower-cased (ASCII; U-labels are kept as
//! written), as the `delivery.recipients` file is.
//!
//! [PHC string format]: https://github.com/P-H-C/phc-string-format/blob/master/phc-sf-spec.md

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::{AuthConfig, AuthError, FileProblem};
use crate::protocol::address::{parse_mailbox, AddressError, Domain, MAX_LOCAL_PART};

/// Largest users or aliases file read, 16 MiB: about 100 000 users. It is held in memory, so it
/// needs a cap like every other input.
pub const MAX_AUTH_FILE: u64 = 16 * 1024 * 1024;

/// At most this many bad lines per file are reported one by one; the rest are counted in one
/// last problem, so a file in the wrong format does not bury everything else.
pub const MAX_REPORTED_LINE_ERRORS: usize = 20;

/// Largest argon2id memory cost accepted in the users file, in KiB (256 MiB). Each verifier
/// thread allocates this much per check, so a typo (an extra zero) must not reach it.
pub const MAX_HASH_MEMORY_KIB: u32 = 256 * 1024;
/// Largest argon2id time cost (passes) accepted in the users file.
pub const MAX_HASH_PASSES: u32 = 16;
/// Largest argon2id parallelism (lanes) accepted in the users file.
pub const MAX_HASH_LANES: u32 = 16;

const USERS_KEY: &str = "auth.users";
const ALIASES_KEY: &str = "auth.aliases";

/// The fixed salt of the dummy hash checked for unknown users. It never matches a password
/// anyone chose: the dummy's output is all zeros, not the hash of anything.
const DUMMY_SALT: &[u8; 16] = b"smtp-edge/dummy!";

/// argon2id cost parameters ([RFC 9106 §3.1]).
///
/// [RFC 9106 §3.1]: https://www.rfc-editor.org/rfc/rfc9106#section-3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashParams {
    /// Memory, in KiB (`m=`).
    pub memory_kib: u32,
    /// Passes (`t=`).
    pub passes: u32,
    /// Lanes (`p=`).
    pub lanes: u32,
    /// Length of the hash, in octets.
    pub output_len: usize,
}

impl HashParams {
    /// OWASP's first argon2id recommendation (m=19456 KiB, t=2, p=1; the argon2 crate's
    /// default): what `smtp-edge user add` writes.
    pub const OWASP: HashParams = HashParams {
        memory_kib: 19 * 1024,
        passes: 2,
        lanes: 1,
        output_len: 32,
    };

    fn argon2(self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(
            self.memory_kib,
            self.passes,
            self.lanes,
            Some(self.output_len),
        )?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes `password` with argon2id, `params` and a fresh random salt, as a PHC string for the
/// users file.
pub fn hash_password(
    password: &[u8],
    params: HashParams,
) -> Result<String, argon2::password_hash::Error> {
    let argon2 = params.argon2()?;
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(argon2.hash_password(password, &salt)?.to_string())
}

/// The form logins are looked up in: ASCII lower-case, as the users file is stored. The whole
/// string is folded, local part included, as for `delivery.recipients`.
pub fn normalize_login(login: &str) -> String {
    login.to_ascii_lowercase()
}

/// Everything the users and aliases files say, as loaded at one moment. Immutable: a reload
/// builds a new one.
///
/// `Debug` shows counts only: hashes are secrets (they can be attacked offline).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Login (lower-cased address) to PHC string.
    users: HashMap<String, String>,
    /// Login to the extra `MAIL FROM` addresses it may use (lower-cased).
    aliases: HashMap<String, HashSet<String>>,
    /// A PHC string with the parameters most users have, checked for unknown logins so that
    /// they cost what a known one does.
    dummy: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("aliased_users", &self.aliases.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// No users: every login fails.
    pub fn empty() -> Credentials {
        Credentials {
            users: HashMap::new(),
            aliases: HashMap::new(),
            dummy: dummy_phc(HashParams::OWASP),
        }
    }

    /// Reads and checks the users file and, if given, the aliases file. Every problem of both
    /// files is reported (up to [`MAX_REPORTED_LINE_ERRORS`] lines each); nothing is returned
    /// unless both are clean. Without `users`, the credentials are [empty](Self::empty).
    pub fn load(users: Option<&Path>, aliases: Option<&Path>) -> Result<Credentials, AuthError> {
        let Some(users) = users else {
            return Ok(Credentials::empty());
        };
        let mut problems = Vec::new();
        let users = read_capped(USERS_KEY, users, &mut problems);
        let aliases = aliases.and_then(|path| read_capped(ALIASES_KEY, path, &mut problems));
        let parsed = users.map(|users| Credentials::parse(&users, aliases.as_deref()));
        match parsed {
            Some(Ok(credentials)) if problems.is_empty() => Ok(credentials),
            Some(Err(AuthError::Files(more))) => {
                problems.extend(more);
                Err(AuthError::Files(problems))
            }
            Some(Err(other)) => Err(other),
            _ => Err(AuthError::Files(problems)),
        }
    }

    /// Parses the contents of the two files (see the [module docs](self)).
    pub fn parse(users: &[u8], aliases: Option<&[u8]>) -> Result<Credentials, AuthError> {
        let mut problems = Vec::new();
        let mut bad = Vec::new();
        let mut by_login: HashMap<String, (String, usize)> = HashMap::new();
        let mut param_counts: HashMap<HashParams, usize> = HashMap::new();
        for (n, line) in lines(users) {
            match user_line(line) {
                Ok(None) => {}
                Ok(Some((login, phc, params))) => {
                    if let Some((_, first)) = by_login.get(&login) {
                        bad.push((n, format!("{login} is already defined on line {first}")));
                        continue;
                    }
                    *param_counts.entry(params).or_default() += 1;
                    by_login.insert(login, (phc, n));
                }
                Err(problem) => bad.push((n, problem)),
            }
        }
        report(USERS_KEY, bad, &mut problems);
        let mut alias_map: HashMap<String, HashSet<String>> = HashMap::new();
        if let Some(aliases) = aliases {
            let mut bad = Vec::new();
            for (n, line) in lines(aliases) {
                match alias_line(line) {
                    Ok(None) => {}
                    Ok(Some((alias, owners))) => {
                        for owner in owners {
                            alias_map.entry(owner).or_default().insert(alias.clone());
                        }
                    }
                    Err(problem) => bad.push((n, problem)),
                }
            }
            report(ALIASES_KEY, bad, &mut problems);
        }
        if !problems.is_empty() {
            return Err(AuthError::Files(problems));
        }
        // Ties are broken by the parameters themselves, so the choice does not depend on
        // HashMap order.
        let common = param_counts
            .into_iter()
            .max_by_key(|&(p, count)| (count, p.memory_kib, p.passes, p.lanes, p.output_len))
            .map_or(HashParams::OWASP, |(p, _)| p);
        Ok(Credentials {
            users: by_login
                .into_iter()
                .map(|(login, (phc, _))| (login, phc))
                .collect(),
            aliases: alias_map,
            dummy: dummy_phc(common),
        })
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users (every login fails).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `login` (any case) is a user.
    pub fn contains(&self, login: &str) -> bool {
        self.users.contains_key(&normalize_login(login))
    }

    /// Whether the authenticated `login` may use `mail_from` as its reverse-path: its own
    /// address, or an alias the aliases file grants it. Both are compared ASCII
    /// case-insensitively. `mail_from` is the bare `local@domain`, without angle brackets.
    ///
    /// The null reverse-path (`""`) belongs to nobody and is refused here; whether to allow
    /// `MAIL FROM:<>` on submission is the engine's decision. A quoted local part never matches
    /// (files cannot list one), so it is refused: the policy fails closed.
    pub fn may_send_as(&self, login: &str, mail_from: &str) -> bool {
        let login = normalize_login(login);
        if !self.users.contains_key(&login) {
            return false;
        }
        let mail_from = mail_from.to_ascii_lowercase();
        mail_from == login
            || self
                .aliases
                .get(&login)
                .is_some_and(|set| set.contains(&mail_from))
    }

    /// Every `MAIL FROM` address `login` may use, lower-cased: its own address first, then its
    /// aliases in order. Empty if `login` is not a user. The same rule as
    /// [`may_send_as`](Self::may_send_as), as a list for an engine that keeps one per session.
    pub fn allowed_senders(&self, login: &str) -> Vec<String> {
        let login = normalize_login(login);
        if !self.users.contains_key(&login) {
            return Vec::new();
        }
        let mut aliases: Vec<String> = self
            .aliases
            .get(&login)
            .into_iter()
            .flatten()
            .filter(|alias| **alias != login)
            .cloned()
            .collect();
        aliases.sort_unstable();
        let mut senders = Vec::with_capacity(aliases.len() + 1);
        senders.push(login);
        senders.extend(aliases);
        senders
    }

    /// Logins the aliases file grants addresses to that are not users (their aliases are
    /// inert until they are), sorted.
    pub fn aliased_logins_without_user(&self) -> Vec<String> {
        let mut logins: Vec<String> = self
            .aliases
            .keys()
            .filter(|login| !self.users.contains_key(*login))
            .cloned()
            .collect();
        logins.sort_unstable();
        logins
    }

    /// The PHC string to check a password against, and whether the login exists: the dummy
    /// when it does not, so the caller does the same work either way.
    pub(crate) fn phc_for(&self, login: &str) -> (&str, bool) {
        match self.users.get(login) {
            Some(phc) => (phc, true),
            None => (&self.dummy, false),
        }
    }
}

/// The credentials in force, replaced whole and atomically by [`CredentialStore::reload`]:
/// readers (the verifier threads, `MAIL FROM` checks on every worker) never lock and never see
/// a half-loaded file.
pub struct CredentialStore {
    current: ArcSwap<Credentials>,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CredentialStore")
            .field(&*self.current.load())
            .finish()
    }
}

impl CredentialStore {
    /// Starts from the credentials loaded with the configuration (no file I/O).
    pub fn new(config: &AuthConfig) -> CredentialStore {
        CredentialStore::from_credentials(Arc::clone(&config.credentials))
    }

    /// Starts from `credentials`.
    pub fn from_credentials(credentials: Arc<Credentials>) -> CredentialStore {
        CredentialStore {
            current: ArcSwap::new(credentials),
        }
    }

    /// Re-reads `config.users` and `config.aliases` (SIGHUP). All or nothing: on any problem
    /// the credentials in force stay, and the error lists every problem. This does blocking
    /// file I/O: call it from a thread that may block, not from an io_uring worker.
    pub fn reload(&self, config: &AuthConfig) -> Result<(), AuthError> {
        let fresh = Credentials::load(config.users.as_deref(), config.aliases.as_deref())?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// Puts `credentials` in place for the next AUTH and `MAIL FROM` check (a reload: they
    /// were read and checked with the configuration).
    pub fn replace(&self, credentials: Arc<Credentials>) {
        self.current.store(credentials);
    }

    /// The credentials in force now; a reload does not change the returned value.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// [`Credentials::allowed_senders`] on the credentials in force.
    pub fn allowed_senders(&self, login: &str) -> Vec<String> {
        self.current.load().allowed_senders(login)
    }

    /// [`Credentials::may_send_as`] on the credentials in force.
    pub fn may_send_as(&self, login: &str, mail_from: &str) -> bool {
        self.current.load().may_send_as(login, mail_from)
    }
}

/// A PHC string with `params`, a fixed salt and an all-zero hash of the right length.
fn dummy_phc(params: HashParams) -> String {
    let zeros = vec![0u8; params.output_len];
    // Both encodings only fail on lengths the users-file check has already bounded.
    let hash = Output::new(&zeros).map_or_else(|_| String::new(), |o| o.to_string());
    let salt = SaltString::encode_b64(DUMMY_SALT).map_or_else(|_| String::new(), |s| s.to_string());
    format!(
        "$argon2id$v=19$m={},t={},p={}${salt}${hash}",
        params.memory_kib, params.passes, params.lanes
    )
}

/// The lines of `bytes`, numbered from 1.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// Pushes `bad` lines as problems of `key`, capped at [`MAX_REPORTED_LINE_ERRORS`].
fn report(key: &'static str, bad: Vec<(usize, String)>, problems: &mut Vec<FileProblem>) {
    let total = bad.len();
    for (line, problem) in bad.into_iter().take(MAX_REPORTED_LINE_ERRORS) {
        problems.push(FileProblem {
            key,
            problem: format!("line {line}: {problem}"),
        });
    }
    if total > MAX_REPORTED_LINE_ERRORS {
        problems.push(FileProblem {
            key,
            problem: format!(
                "{} more bad lines not shown",
                total - MAX_REPORTED_LINE_ERRORS
            ),
        });
    }
}

fn read_capped(key: &'static str, path: &Path, problems: &mut Vec<FileProblem>) -> Option<Vec<u8>> {
    let mut push = |problem: String| problems.push(FileProblem { key, problem });
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            push(format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    let mut bytes = Vec::new();
    // One byte past the cap tells "exactly the cap" from "over it".
    if let Err(e) = file.take(MAX_AUTH_FILE + 1).read_to_end(&mut bytes) {
        push(format!("cannot read {}: {e}", path.display()));
        return None;
    }
    if bytes.len() as u64 > MAX_AUTH_FILE {
        push(format!(
            "{} is larger than {MAX_AUTH_FILE} bytes",
            path.display()
        ));
        return None;
    }
    Some(bytes)
}

/// A line as text without surrounding blanks (and the CR of CRLF), or `None` for a blank or
/// comment line.
fn content(line: &[u8]) -> Result<Option<&str>, String> {
    let line = std::str::from_utf8(line)
        .map_err(|_| "not valid UTF-8".to_owned())?
        .trim();
    Ok((!line.is_empty() && !line.starts_with('#')).then_some(line))
}

/// One users-file line: the login, its PHC string and the hash's parameters.
fn user_line(line: &[u8]) -> Result<Option<(String, String, HashParams)>, String> {
    let Some(line) = content(line)? else {
        return Ok(None);
    };
    // An unquoted address has no ':', so the first one ends it.
    let Some((address, phc)) = line.split_once(':') else {
        return Err(
            "expected address:$argon2id$v=19$m=...,t=...,p=...$salt$hash (the line has no ':')"
                .to_owned(),
        );
    };
    let login = login_address(address.trim())?;
    let phc = phc.trim();
    let params = check_phc(phc).map_err(|problem| format!("{login}: {problem}"))?;
    Ok(Some((login, phc.to_owned(), params)))
}

/// One aliases-file line: the alias and the logins that may use it.
fn alias_line(line: &[u8]) -> Result<Option<(String, Vec<String>)>, String> {
    let Some(line) = content(line)? else {
        return Ok(None);
    };
    let Some((alias, owners)) = line.split_once(':') else {
        return Err("expected alias@domain: user@domain[, user@domain...]".to_owned());
    };
    let alias = login_address(alias.trim())?;
    let owners = owners
        .split(',')
        .map(|owner| login_address(owner.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((alias, owners)))
}

/// A login or alias address: unquoted `local@domain` with a domain name, lower-cased.
pub(crate) fn login_address(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("expected an address (local@domain), found nothing".to_owned());
    }
    let mbox = parse_mailbox(text).map_err(|e| match e {
        AddressError::TooLong => format!(
            "{text:?} is too long (RFC 5321 §4.5.3.1: local part at most {MAX_LOCAL_PART} \
             octets, domain at most 255)"
        ),
        AddressError::Syntax => {
            format!("{text:?} is not an address (expected local@domain, RFC 5321 §4.1.2)")
        }
    })?;
    if mbox.quoted {
        // Logins are matched in their plain form; a quoted local part has several spellings.
        return Err(format!("{text:?}: quoted local parts are not supported"));
    }
    match &mbox.domain {
        Domain::Name(domain) => Ok(format!("{}@{domain}", mbox.local.to_ascii_lowercase())),
        _ => Err(format!("{text:?}: an address literal cannot be a login")),
    }
}

/// Checks that `phc` is an argon2id v19 PHC string with a salt, a hash and parameters within
/// our caps, and returns the parameters. Problems never quote the string: it is a secret.
fn check_phc(phc: &str) -> Result<HashParams, String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("the hash is not a PHC string ({e})"))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!("the hash is {}, expected argon2id", hash.algorithm));
    }
    if hash.version != Some(Version::V0x13 as u32) {
        return Err("the hash must be argon2id version 19 (v=19)".to_owned());
    }
    let params =
        Params::try_from(&hash).map_err(|e| format!("invalid argon2id parameters ({e})"))?;
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    if m > MAX_HASH_MEMORY_KIB || t > MAX_HASH_PASSES || p > MAX_HASH_LANES {
        return Err(format!(
            "argon2id parameters m={m},t={t},p={p} exceed the limits m<={MAX_HASH_MEMORY_KIB}, \
             t<={MAX_HASH_PASSES}, p<={MAX_HASH_LANES}"
        ));
    }
    if hash.salt.is_none() {
        return Err("the hash has no salt".to_owned());
    }
    let Some(output) = hash.hash else {
        return Err("the PHC string has no hash".to_owned());
    };
    Ok(HashParams {
        memory_kib: m,
        passes: t,
        lanes: p,
        output_len: output.len(),
    })
}

#[cfg(test)]
pub(crate) mod tests;

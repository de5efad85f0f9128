//! Local recipient rewriting: which addresses in our domains exist, and whose mailboxes a
//! message to one of them goes to.
//!
//! ```text
//!  RCPT TO:<Post+Ops@example.test>
//!      │ lower-case; the alias `post+ops@`? no
//!      │ strip the tag at `delivery.recipient_delimiter` ("+"): post@example.test
//!      │ the alias `post@`? alice@example.test, ops@remote.test   (several targets; recursive)
//!      │ else: in `delivery.recipients` (or no such file)?        that address
//!      │ else: `delivery.catch_all` for the domain?               its target
//!      ▼ else: 550 5.1.1 at RCPT
//!  alice@example.test ─► Maildir       ops@remote.test ─► relay (routed like any remote one)
//! ```
//!
//! The engine asks [`Rewriter::exists`] at `RCPT`; the queue asks [`Rewriter::expand`] when it
//! first attempts a message. Both read the same [`SharedRewriter`], which `SIGHUP` replaces as a
//! whole, so a reload never shows half of a new table.
//!
//! - [`aliases`]: the `delivery.aliases` file, its syntax and the loop check.

pub mod aliases;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::protocol::address::parse_mailbox;
use crate::protocol::{Domain, Mailbox, RecipientCheck};

/// The default `delivery.recipient_delimiter`.
pub const DEFAULT_DELIMITER: &str = "+";

/// Alias chains longer than this are cut (the loop check at load makes them impossible; this
/// bounds the work whatever the table holds).
const MAX_DEPTH: usize = 16;

/// The rewriting tables of one configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewriter {
    /// Our domains, lower-cased.
    pub local_domains: HashSet<String>,
    /// `delivery.recipients`: the addresses that exist (lower-cased `local@domain`); `None`
    /// when every local part exists.
    pub recipients: Option<Arc<HashSet<String>>>,
    /// `delivery.aliases`: lower-cased alias → its targets, as written.
    pub aliases: HashMap<String, Vec<String>>,
    /// `delivery.catch_all`: domain → where its unknown recipients go.
    pub catch_all: HashMap<String, String>,
    /// `delivery.recipient_delimiter`: each character separates a local part from its tag;
    /// empty turns tags off.
    pub delimiter: String,
}

impl Rewriter {
    /// Whether `local@domain` (a local domain) is a recipient here: an alias, a known address
    /// (with or without its tag), or a domain with a catch-all.
    pub fn exists(&self, local: &str, domain: &str) -> bool {
        let key = format!("{}@{domain}", local.to_ascii_lowercase());
        let base = self.untagged(&key);
        self.aliases.contains_key(&key)
            || self.aliases.contains_key(&base)
            || self.known(&key)
            || self.known(&base)
            || self.catch_all.contains_key(domain)
    }

    /// The final recipients of `rcpt`: itself if it is not in a local domain; else what its
    /// alias (or the alias of its untagged form) expands to, recursively; else its untagged
    /// form if that exists; else the domain's catch-all; else itself. Without duplicates, in
    /// order.
    pub fn expand(&self, rcpt: &Mailbox) -> Vec<String> {
        let mut out = Vec::new();
        self.resolve(rcpt, 0, &mut out);
        let mut seen = HashSet::new();
        out.retain(|a| seen.insert(a.to_ascii_lowercase()));
        out
    }

    fn resolve(&self, rcpt: &Mailbox, depth: usize, out: &mut Vec<String>) {
        let domain = match &rcpt.domain {
            Domain::Name(d) if self.local_domains.contains(d) && !rcpt.quoted => d.clone(),
            _ => return out.push(rcpt.to_string()),
        };
        let key = format!("{}@{domain}", rcpt.local.to_ascii_lowercase());
        let base = self.untagged(&key);
        let targets = self.aliases.get(&key).or_else(|| self.aliases.get(&base));
        if let Some(targets) = targets.filter(|_| depth < MAX_DEPTH) {
            for target in targets {
                match parse_mailbox(target) {
                    Ok(m) => self.resolve(&m, depth + 1, out),
                    // Checked at load; a target that does not parse is kept as written.
                    Err(_) => out.push(target.clone()),
                }
            }
        } else if base != key
            && !self.recipients.as_ref().is_some_and(|k| k.contains(&key))
            && self.known(&base)
        {
            // `user+tag@` goes to `user@`, unless the recipients file lists the tagged form.
            out.push(base);
        } else if self.known(&key) {
            // Not rewritten: delivered under the address as the client spelt it.
            out.push(rcpt.to_string());
        } else if let Some(target) = self.catch_all.get(&domain).filter(|_| depth < MAX_DEPTH) {
            match parse_mailbox(target) {
                // The catch-all's target is resolved in turn (it may be an alias), but never
                // through a catch-all again.
                Ok(m) if !self.catch_all_loops(&m) => self.resolve(&m, depth + 1, out),
                _ => out.push(target.clone()),
            }
        } else {
            out.push(rcpt.to_string());
        }
    }

    /// Whether `m` would fall to a catch-all again (a catch-all naming an unknown address).
    fn catch_all_loops(&self, m: &Mailbox) -> bool {
        let Domain::Name(d) = &m.domain else {
            return false;
        };
        let key = format!("{}@{d}", m.local.to_ascii_lowercase());
        self.local_domains.contains(d)
            && !self.known(&key)
            && !self.aliases.contains_key(&key)
            && self.catch_all.contains_key(d)
    }

    /// Whether `key` exists by the recipients file (every local part does without one).
    fn known(&self, key: &str) -> bool {
        self.recipients.as_ref().is_none_or(|set| set.contains(key))
    }

    /// `key` without its tag: `user+tag@domain` → `user@domain`. A local part that starts
    /// with the delimiter keeps it (`+x@` is not `@`).
    fn untagged(&self, key: &str) -> String {
        let Some((local, domain)) = key.rsplit_once('@') else {
            return key.to_owned();
        };
        match local
            .char_indices()
            .find(|(_, c)| self.delimiter.contains(*c))
        {
            Some((at, _)) if at > 0 => format!("{}@{domain}", &local[..at]),
            _ => key.to_owned(),
        }
    }
}

/// The live [`Rewriter`], shared by the engines and the queue; replaced whole on reload.
#[derive(Debug)]
pub struct SharedRewriter(ArcSwap<Rewriter>);

impl SharedRewriter {
    /// Shares `rewriter`.
    pub fn new(rewriter: Rewriter) -> Arc<SharedRewriter> {
        Arc::new(SharedRewriter(ArcSwap::from_pointee(rewriter)))
    }

    /// The tables now.
    pub fn load(&self) -> Arc<Rewriter> {
        self.0.load_full()
    }

    /// Puts `rewriter` in place for every later RCPT and first attempt.
    pub fn replace(&self, rewriter: Rewriter) {
        self.0.store(Arc::new(rewriter));
    }
}

impl PartialEq for SharedRewriter {
    fn eq(&self, other: &Self) -> bool {
        *self.0.load() == *other.0.load()
    }
}

impl Eq for SharedRewriter {}

impl RecipientCheck for SharedRewriter {
    fn exists(&self, local: &str, domain: &str) -> bool {
        self.0.load().exists(local, domain)
    }
}

#[cfg(test)]
mod tests;

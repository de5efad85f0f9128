//! The `delivery.aliases` file: local addresses that deliver to others.
//!
//! ```text
//! # comment lines start with '#'; blank lines are ignored
//! postmaster@example.test: alice@example.test, bob@example.test
//! sales@example.test: team@partner.test          <- a remote target is relayed
//! ```
//!
//! An alias is lower-cased and must be in `local_domains`; its targets are addresses of any
//! domain, several separated by commas. An alias may name another alias; a chain that comes
//! back to where it started is a loop, reported at load (`check-config`) with its path, since
//! it would deliver nowhere.

use std::collections::{HashMap, HashSet};

use crate::protocol::address::parse_mailbox;
use crate::protocol::Domain;

/// Largest aliases file read, like the recipients file: 64 MiB.
pub const MAX_ALIASES_FILE: u64 = 64 * 1024 * 1024;

/// Lower-cased alias → its targets, as written.
pub type AliasTable = HashMap<String, Vec<String>>;

/// Parses `text`: the table, and every problem as (1-based line, problem).
pub fn parse(text: &str, local_domains: &HashSet<String>) -> (AliasTable, Vec<(usize, String)>) {
    let mut table: HashMap<String, Vec<String>> = HashMap::new();
    let mut lines: HashMap<String, usize> = HashMap::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match entry(line, local_domains) {
            Ok((alias, targets)) => {
                if let Some(first) = lines.insert(alias.clone(), i + 1) {
                    bad.push((i + 1, format!("{alias} is already an alias (line {first})")));
                }
                table.insert(alias, targets);
            }
            Err(problem) => bad.push((i + 1, problem)),
        }
    }
    for path in loops(&table) {
        let line = lines.get(&path[0]).copied().unwrap_or(0);
        bad.push((line, format!("alias loop: {}", path.join(" -> "))));
    }
    (table, bad)
}

/// One `alias: target, target` line.
fn entry(line: &str, local_domains: &HashSet<String>) -> Result<(String, Vec<String>), String> {
    let (alias, targets) = line
        .split_once(':')
        .ok_or_else(|| format!("{line:?}: expected `alias@domain: target@domain[, ...]`"))?;
    let alias = alias.trim();
    let mbox = parse_mailbox(alias).map_err(|_| format!("{alias:?} is not an address"))?;
    match &mbox.domain {
        Domain::Name(d) if local_domains.contains(d) && !mbox.quoted => {}
        _ => return Err(format!("{alias:?}: an alias must be in local_domains")),
    }
    let mut out = Vec::new();
    for target in targets.split(',').map(str::trim) {
        let m = parse_mailbox(target).map_err(|_| format!("{target:?} is not an address"))?;
        out.push(m.to_string());
    }
    if out.is_empty() || out.iter().any(String::is_empty) {
        return Err(format!("{alias}: no target"));
    }
    Ok((
        format!("{}@{}", mbox.local.to_ascii_lowercase(), mbox.domain),
        out,
    ))
}

/// Every cycle of the alias graph, once each, as the path from its first alias back to it.
fn loops(table: &HashMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut done: HashSet<&str> = HashSet::new();
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    for start in keys {
        let mut path = Vec::new();
        walk(table, start, &mut path, &mut done, &mut found);
    }
    found
}

fn walk<'a>(
    table: &'a HashMap<String, Vec<String>>,
    at: &'a str,
    path: &mut Vec<&'a str>,
    done: &mut HashSet<&'a str>,
    found: &mut Vec<Vec<String>>,
) {
    if let Some(i) = path.iter().position(|p| *p == at) {
        let mut cycle: Vec<String> = path[i..].iter().map(|s| (*s).to_owned()).collect();
        cycle.push(at.to_owned());
        found.push(cycle);
        return;
    }
    if done.contains(at) {
        return;
    }
    let Some(targets) = table.get(at) else {
        return;
    };
    path.push(at);
    for t in targets {
        let key = t.to_ascii_lowercase();
        if let Some((k, _)) = table.get_key_value(key.as_str()) {
            walk(table, k, path, done, found);
        }
    }
    path.pop();
    done.insert(at);
}

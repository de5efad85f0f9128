use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::*;

fn rewriter(known: Option<&[&str]>) -> Rewriter {
    Rewriter {
        local_domains: ["example.test", "other.test"].map(String::from).into(),
        recipients: known.map(|k| Arc::new(k.iter().map(|s| s.to_string()).collect())),
        aliases: HashMap::from([
            (
                "postmaster@example.test".to_owned(),
                vec!["alice@example.test".into(), "staff@example.test".into()],
            ),
            (
                "staff@example.test".to_owned(),
                vec!["bob@example.test".into(), "Ops@Remote.test".into()],
            ),
        ]),
        catch_all: HashMap::from([("other.test".to_owned(), "postmaster@example.test".into())]),
        delimiter: "+".into(),
    }
}

fn expand(r: &Rewriter, addr: &str) -> Vec<String> {
    r.expand(&parse_mailbox(addr).unwrap())
}

#[test]
fn aliases_expand_recursively_to_local_and_remote_targets() {
    let r = rewriter(Some(&["alice@example.test", "bob@example.test"]));
    assert_eq!(
        expand(&r, "PostMaster@example.test"),
        ["alice@example.test", "bob@example.test", "Ops@remote.test"]
    );
    // A tagged alias is the alias.
    assert_eq!(expand(&r, "staff+x@example.test").len(), 2);
}

#[test]
fn tags_are_dropped_unless_the_tagged_address_exists() {
    let r = rewriter(Some(&["alice@example.test", "c+d@example.test"]));
    assert_eq!(
        expand(&r, "alice+news@example.test"),
        ["alice@example.test"]
    );
    assert_eq!(expand(&r, "c+d@example.test"), ["c+d@example.test"]);
    assert_eq!(expand(&r, "Alice@example.test"), ["Alice@example.test"]);
    let off = Rewriter {
        delimiter: String::new(),
        ..rewriter(Some(&["alice@example.test"]))
    };
    assert!(!off.exists("alice+news", "example.test"));
    // Without a recipients file every local part exists, and the tag still goes.
    assert_eq!(
        expand(&rewriter(None), "zed+x@example.test"),
        ["zed@example.test"]
    );
}

#[test]
fn catch_all_takes_unknown_recipients_of_its_domain_only() {
    let r = rewriter(Some(&["alice@example.test", "bob@example.test"]));
    assert!(r.exists("anyone", "other.test"));
    assert!(!r.exists("anyone", "example.test"));
    assert!(r.exists("postmaster", "example.test"), "an alias exists");
    assert_eq!(
        expand(&r, "anyone@other.test"),
        ["alice@example.test", "bob@example.test", "Ops@remote.test"]
    );
    // Remote addresses are never rewritten.
    assert_eq!(expand(&r, "a+b@remote.test"), ["a+b@remote.test"]);
}

#[test]
fn alias_files_parse_with_line_numbers_and_loops() {
    let domains: HashSet<String> = ["example.test".to_owned()].into();
    let (table, bad) = aliases::parse(
        "# c\n\nA@example.test: b@example.test, x@remote.test\nb@example.test: a@example.test\nc@example.test:\nd@example.test: e@example.test\nd@example.test: f@example.test\n",
        &domains,
    );
    assert_eq!(table["a@example.test"], ["b@example.test", "x@remote.test"]);
    let lines: Vec<(usize, &str)> = bad.iter().map(|(l, p)| (*l, p.as_str())).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0].0, 5, "empty target list");
    assert!(
        lines[1].1.contains("already an alias (line 6)"),
        "{lines:?}"
    );
    assert_eq!(
        lines[2],
        (
            3,
            "alias loop: a@example.test -> b@example.test -> a@example.test"
        )
    );
}

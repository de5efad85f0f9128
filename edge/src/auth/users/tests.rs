//! Users and aliases files: parsing, line errors, the sender policy, reload.

use super::*;

/// Cheap parameters so tests hash in microseconds; real hashes use [`HashParams::OWASP`].
pub(crate) const FAST: HashParams = HashParams {
    memory_kib: 64,
    passes: 1,
    lanes: 1,
    output_len: 32,
};

pub(crate) fn users_file(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(user, pw)| format!("{user}:{}\n", hash_password(pw.as_bytes(), FAST).unwrap()))
        .collect()
}

#[test]
fn good_file_with_comments_blank_lines_crlf_and_case() {
    let alice = hash_password(b"a", FAST).unwrap();
    let bob = hash_password(b"b", FAST).unwrap();
    let text =
        format!("# staff\r\n\r\nAlice@Example.TEST:{alice}\r\n  bob@example.test : {bob}  \n");
    let c = Credentials::parse(text.as_bytes(), None).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.contains("ALICE@example.test"));
    assert!(c.contains("bob@example.test"));
    assert_eq!(c.phc_for("alice@example.test"), (alice.as_str(), true));
    assert!(!c.phc_for("carol@example.test").1);
}

#[test]
fn bad_lines_are_numbered_and_never_quote_the_hash() {
    let good = hash_password(b"pw", FAST).unwrap();
    let argon2i = good.replace("$argon2id$", "$argon2i$");
    let huge = good.replace("m=64", "m=1048576");
    let text = format!(
        "ok@example.test:{good}\nno-colon\nnot an address:{good}\nx@example.test:nonsense\n\
         y@example.test:{argon2i}\nz@example.test:{huge}\nOK@example.test:{good}\n\"q\"@example.test:{good}\n"
    );
    let mut text = text.into_bytes();
    text.push(0xff);
    let Err(AuthError::Files(problems)) = Credentials::parse(&text, None) else {
        panic!("expected line errors");
    };
    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
    for p in &got {
        assert!(p.starts_with("auth.users: line "), "{p}");
        assert!(!p.contains(&good[20..]), "hash leaked: {p}");
    }
    let lines: Vec<&str> = got
        .iter()
        .map(|p| p["auth.users: line ".len()..].split(':').next().unwrap())
        .collect();
    assert_eq!(lines, ["2", "3", "4", "5", "6", "7", "8", "9"]);
    assert!(got[3].contains("expected argon2id"), "{}", got[3]);
    assert!(got[4].contains("exceed the limits"), "{}", got[4]);
    assert!(got[5].contains("already defined on line 1"), "{}", got[5]);
}

#[test]
fn many_bad_lines_are_capped() {
    let text = "bad\n".repeat(MAX_REPORTED_LINE_ERRORS + 5);
    let Err(AuthError::Files(problems)) = Credentials::parse(text.as_bytes(), None) else {
        panic!("expected line errors");
    };
    assert_eq!(problems.len(), MAX_REPORTED_LINE_ERRORS + 1);
    assert_eq!(
        problems.last().unwrap().problem,
        "5 more bad lines not shown"
    );
}

#[test]
fn alias_policy() {
    let users = users_file(&[("alice@example.test", "a"), ("bob@example.test", "b")]);
    let aliases = "# shared\nPostmaster@Example.test: alice@example.test, BOB@example.test\n\
                   sales@example.test: bob@example.test\nghost@example.test: nobody@example.test\n";
    let c = Credentials::parse(users.as_bytes(), Some(aliases.as_bytes())).unwrap();
    assert!(c.may_send_as("alice@example.test", "alice@example.test"));
    assert!(c.may_send_as("Alice@Example.TEST", "ALICE@example.TEST"));
    assert!(c.may_send_as("alice@example.test", "postmaster@example.test"));
    assert!(c.may_send_as("bob@example.test", "Postmaster@example.test"));
    assert!(c.may_send_as("bob@example.test", "sales@example.test"));
    assert!(!c.may_send_as("alice@example.test", "sales@example.test"));
    assert!(!c.may_send_as("alice@example.test", "bob@example.test"));
    assert!(!c.may_send_as("alice@example.test", ""));
    assert!(!c.may_send_as("alice@example.test", "\"alice\"@example.test"));
    assert_eq!(
        c.allowed_senders("BOB@example.test"),
        [
            "bob@example.test",
            "postmaster@example.test",
            "sales@example.test"
        ]
    );
    assert_eq!(
        c.allowed_senders("carol@example.test"),
        Vec::<String>::new()
    );
    // Aliases of users who do not exist grant nothing.
    assert!(!c.may_send_as("nobody@example.test", "ghost@example.test"));
}

#[test]
fn bad_alias_lines_are_numbered() {
    let users = users_file(&[("alice@example.test", "a")]);
    let aliases = "a@example.test: alice@example.test\nno colon\nb@example.test: alice@, x\n";
    let Err(AuthError::Files(problems)) =
        Credentials::parse(users.as_bytes(), Some(aliases.as_bytes()))
    else {
        panic!("expected line errors");
    };
    let keys: Vec<_> = problems.iter().map(|p| (p.key, &p.problem[..7])).collect();
    assert_eq!(
        keys,
        [("auth.aliases", "line 2:"), ("auth.aliases", "line 3:")]
    );
}

#[test]
fn dummy_uses_the_most_common_parameters() {
    let users = users_file(&[("a@example.test", "a"), ("b@example.test", "b")]);
    let c = Credentials::parse(users.as_bytes(), None).unwrap();
    let (dummy, known) = c.phc_for("nobody@example.test");
    assert!(!known);
    assert_eq!(check_phc(dummy), Ok(FAST));
    assert_eq!(
        check_phc(&Credentials::empty().dummy),
        Ok(HashParams::OWASP)
    );
}

#[test]
fn debug_redacts_hashes() {
    let users = users_file(&[("a@example.test", "a")]);
    let c = Credentials::parse(users.as_bytes(), None).unwrap();
    let shown = format!("{:?}", CredentialStore::from_credentials(Arc::new(c)));
    assert!(!shown.contains("argon2"), "{shown}");
    assert!(shown.contains("users: 1"), "{shown}");
}

#[test]
fn reload_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(&path, users_file(&[("a@example.test", "a")])).unwrap();
    let config = AuthConfig {
        users: Some(path.clone()),
        ..AuthConfig::default()
    };
    let store = CredentialStore::new(&config);
    assert!(store.current().is_empty());
    store.reload(&config).unwrap();
    assert!(store.current().contains("a@example.test"));
    std::fs::write(&path, "garbage\n").unwrap();
    let err = store.reload(&config).unwrap_err();
    assert_eq!(err.to_string(), "auth.users: line 1: expected address:$argon2id$v=19$m=...,t=...,p=...$salt$hash (the line has no ':')");
    assert!(
        store.current().contains("a@example.test"),
        "kept on failure"
    );
    let missing = AuthConfig {
        aliases: Some(dir.path().join("nope")),
        ..config
    };
    let err = store.reload(&missing).unwrap_err().to_string();
    assert!(
        err.contains("auth.users: line 1") && err.contains("auth.aliases: cannot read"),
        "{err}"
    );
}

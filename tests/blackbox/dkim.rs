//! DKIM signing on submission, seen from outside: `smtp-edge dkim keygen` makes the keys and
//! prints their DNS records; mail submitted on 587 by an authenticated user comes out of
//! Maildir signed, and Python's dkimpy verifies it against the printed record (its `dnsfunc`
//! answers from the record, so no DNS server is involved). Mail whose From: domain has no key,
//! and mail that arrives on the delivery port, is not signed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::auth::{auth_server_with, login_starttls, send_mail, users, ALICE, ALICE_PW, BOB};
use crate::harness::{client_script, run_bin, wait_for_maildir, DELIVERY_DEADLINE, READY_DEADLINE};
use crate::maildir::{new_dir, read, sample_message};
use crate::session::{dot_stuff, SmtpConn};

/// Runs `smtp-edge dkim keygen` and returns the TXT record it prints, its strings joined.
fn keygen(domain: &str, selector: &str, out: &Path, algorithm: &str) -> String {
    let out_s = out.display().to_string();
    let args = [
        "dkim",
        "keygen",
        "--domain",
        domain,
        "--selector",
        selector,
        "--out",
        &out_s,
        "--algorithm",
        algorithm,
    ];
    let run = run_bin(&args, READY_DEADLINE);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "dkim keygen failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mode = std::fs::metadata(out).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the private key must be readable by its owner only"
    );
    let owner = format!("{selector}._domainkey.{domain}. IN TXT ");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&owner))
        .unwrap_or_else(|| panic!("no `{owner}` line in {stdout:?}"));
    // The record as zone-file strings: join what is between the quotes.
    let record: String = line[owner.len()..].split('"').skip(1).step_by(2).collect();
    assert!(record.starts_with("v=DKIM1; "), "{record:?}");
    record
}

/// dkimpy's verdict on `file` given the key records; true when it says `pass`.
fn dkimpy_verifies(file: &Path, records: &[(String, String)]) -> bool {
    let mut cmd = Command::new("python3");
    cmd.arg(client_script("dkim_verify.py")).arg(file);
    for (name, record) in records {
        cmd.arg(format!("{name}={record}"));
    }
    let out = cmd.output().expect("run python3 dkim_verify.py");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match (out.status.code(), said.as_str()) {
        (Some(0), "pass") => true,
        (Some(1), "fail") => false,
        _ => panic!(
            "dkim_verify.py: {:?} {said:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The `DKIM-Signature:` fields at the top of a delivered message (unfolded).
fn signatures(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_owned());
        }
    }
    fields
        .into_iter()
        .filter(|f| f.to_ascii_lowercase().starts_with("dkim-signature:"))
        .collect()
}

#[test]
fn submitted_mail_is_signed_and_dkimpy_verifies_it_against_the_keygen_record() {
    let keys = tempfile::tempdir().unwrap();
    let rsa_key = keys.path().join("example.pem");
    let ed_key = keys.path().join("ed.pem");
    let rsa_record = keygen("example.test", "s1", &rsa_key, "rsa");
    let ed_record = keygen("ed.test", "s2", &ed_key, "ed25519");
    assert!(rsa_record.starts_with("v=DKIM1; k=rsa; p="), "{rsa_record}");
    assert!(
        ed_record.starts_with("v=DKIM1; k=ed25519; p="),
        "{ed_record}"
    );
    // An existing key is never replaced (its record may be published).
    let before = std::fs::read(&rsa_key).unwrap();
    let again = run_bin(
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.test",
            "--selector",
            "s1",
            "--out",
            &rsa_key.display().to_string(),
        ],
        READY_DEADLINE,
    );
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert_eq!(std::fs::read(&rsa_key).unwrap(), before);
    let records = vec![
        ("s1._domainkey.example.test".to_owned(), rsa_record),
        ("s2._domainkey.ed.test".to_owned(), ed_record),
    ];

    let (server, _cert, _certs) = auth_server_with(
        &[("submission", "starttls", None), ("delivery", "none", None)],
        users(),
        |o| {
            o.extra_toml = vec![format!(
                "[[dkim.sign]]\ndomain = \"example.test\"\nselector = \"s1\"\nkey = \"{}\"\n\n\
                 [[dkim.sign]]\ndomain = \"ed.test\"\nselector = \"s2\"\nkey = \"{}\"",
                rsa_key.display(),
                ed_key.display()
            )]
        },
    );

    // On 587, authenticated: From: in a domain with an RSA key, in one with an Ed25519 key,
    // in one without a key. On 25: From: in the RSA key's domain.
    let rsa_msg = sample_message("dkim-rsa", ALICE, BOB);
    let ed_msg = sample_message("dkim-ed25519", "alice@ed.test", BOB);
    let other_msg = sample_message("dkim-other", "alice@other.test", BOB);
    let inbound_msg = sample_message("dkim-inbound", ALICE, BOB);
    let mut c = login_starttls(server.listener(0), ALICE, ALICE_PW);
    for msg in [&rsa_msg, &ed_msg, &other_msg] {
        let r = send_mail(&mut c, ALICE, &[BOB], msg);
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(c.cmd("QUIT").code, 221);
    let mut inbound = SmtpConn::connect(server.listener(1));
    assert_eq!(inbound.cmd("EHLO client.test").code, 250);
    let r = inbound.send_mail(ALICE, &[BOB], &dot_stuff(&inbound_msg));
    assert_eq!(r.code, 250, "{r:?}");

    wait_for_maildir(&server.maildir, 4, DELIVERY_DEADLINE);
    let dir = new_dir(&server.maildir, BOB);
    let delivered = |tag: &str| {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
                text.contains(&format!("X-Token: {tag}\r\n"))
            })
            .unwrap_or_else(|| panic!("no delivered message {tag} in {}", dir.display()))
    };

    // Signed: one DKIM-Signature on top of the message as sent, which dkimpy verifies.
    for (tag, msg, algorithm, domain) in [
        ("dkim-rsa", &rsa_msg, "rsa-sha256", "example.test"),
        ("dkim-ed25519", &ed_msg, "ed25519-sha256", "ed.test"),
    ] {
        let file = delivered(tag);
        let got = read(&file);
        let sigs = signatures(&got.message);
        assert_eq!(sigs.len(), 1, "{tag}: {sigs:?}");
        let sig = &sigs[0];
        for tag_value in [
            format!("a={algorithm}"),
            format!("d={domain}"),
            "c=relaxed/relaxed".to_owned(),
        ] {
            assert!(sig.contains(&tag_value), "{tag}: no {tag_value} in {sig}");
        }
        let h = sig
            .split(';')
            .map(str::trim)
            .find_map(|t| t.strip_prefix("h="))
            .unwrap_or_else(|| panic!("{tag}: no h= in {sig}"))
            .to_ascii_lowercase();
        let listed: Vec<&str> = h.split(':').collect();
        assert_eq!(
            listed.iter().filter(|f| **f == "from").count(),
            2,
            "{tag}: From is oversigned: {h}"
        );
        for field in ["to", "subject", "message-id"] {
            assert!(listed.contains(&field), "{tag}: {field} not signed: {h}");
        }
        assert!(
            !listed.contains(&"x-token"),
            "{tag}: not a recommended field: {h}"
        );
        assert!(
            got.message.ends_with(msg),
            "{tag}: the message after the signature is not the one sent"
        );
        assert!(dkimpy_verifies(&file, &records), "{tag}: dkimpy says fail");

        // The verdict can fail: one body octet changed breaks the body hash.
        let mut tampered = std::fs::read(&file).unwrap();
        let at = tampered.len() - 5;
        tampered[at] ^= 0x01;
        let copy = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(copy.path(), &tampered).unwrap();
        assert!(
            !dkimpy_verifies(copy.path(), &records),
            "{tag}: dkimpy passed a changed body"
        );
    }

    // Not signed: From: in a domain without a key, and mail on the delivery port.
    for (tag, msg) in [("dkim-other", &other_msg), ("dkim-inbound", &inbound_msg)] {
        let got = read(&delivered(tag));
        assert_eq!(signatures(&got.message), Vec::<String>::new(), "{tag}");
        assert_eq!(&got.message, msg, "{tag}: delivered as sent");
    }
}

/// Messages whose shape a signer can get wrong: folded and oddly-cased fields, 8-bit text,
/// dot-led lines, repeated fields, empty and missing bodies, and BDAT chunks split across the
/// end of the header section. Each is delivered signed, as sent, and dkimpy verifies it.
#[test]
fn awkward_messages_are_signed_so_that_they_verify() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("example.pem");
    let record = keygen("example.test", "s1", &key, "rsa");
    let records = vec![("s1._domainkey.example.test".to_owned(), record)];
    let (server, _cert, _certs) =
        auth_server_with(&[("submission", "starttls", None)], users(), |o| {
            o.extra_toml = vec![format!(
                "[[dkim.sign]]\ndomain = \"example.test\"\nselector = \"s1\"\nkey = \"{}\"",
                key.display()
            )]
        });
    let messages: Vec<(&str, Vec<u8>)> = vec![
        (
            "folded",
            b"from:\r\n  Alice   Example\r\n\t<alice@example.test>\r\nTO: bob@example.test\r\n\
              SUBJECT:   a   folded\r\n   subject  \r\nX-Token: folded\r\n\r\nbody  \t\r\n\r\n\r\n"
                .to_vec(),
        ),
        (
            "eightbit",
            "From: Алиса <alice@example.test>\r\nTo: bob@example.test\r\nSubject: héllo wörld\r\n\
             X-Token: eightbit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nпривет\r\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "dots",
            b"From: alice@example.test\r\nTo: bob@example.test\r\nTo: carol@example.test\r\n\
              Subject: dots\r\nX-Token: dots\r\n\r\n.\r\n..\r\n.leading\r\n"
                .to_vec(),
        ),
        (
            "emptybody",
            b"From: alice@example.test\r\nSubject: empty\r\nX-Token: emptybody\r\n\r\n".to_vec(),
        ),
        (
            "nobody",
            b"From: alice@example.test\r\nSubject: no body\r\nX-Token: nobody\r\n".to_vec(),
        ),
    ];
    let mut c = login_starttls(server.listener(0), ALICE, ALICE_PW);
    for (tag, msg) in &messages {
        let r = send_mail(&mut c, ALICE, &[BOB], msg);
        assert_eq!(r.code, 250, "{tag}: {r:?}");
    }
    // BDAT, in chunks cut inside the blank line that ends the header section.
    let bdat =
        b"From: alice@example.test\r\nSubject: chunked\r\nX-Token: bdat\r\n\r\nbody\r\nno end";
    let cut = bdat.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 3;
    assert_eq!(c.cmd(&format!("MAIL FROM:<{ALICE}>")).code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{BOB}>")).code, 250);
    for (i, chunk) in [&bdat[..1], &bdat[1..cut], &bdat[cut..]].iter().enumerate() {
        let last = if i == 2 { " LAST" } else { "" };
        c.send(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        c.send(chunk);
        let r = c.reply();
        assert_eq!(r.code, 250, "BDAT chunk {i}: {r:?}");
    }
    assert_eq!(c.cmd("QUIT").code, 221);

    wait_for_maildir(&server.maildir, messages.len() + 1, DELIVERY_DEADLINE);
    let dir = new_dir(&server.maildir, BOB);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut all: Vec<(&str, &[u8])> = messages.iter().map(|(t, m)| (*t, m.as_slice())).collect();
    all.push(("bdat", bdat));
    for (tag, msg) in all {
        let file = files
            .iter()
            .find(|p| {
                let text = std::fs::read(p).unwrap();
                let token = format!("X-Token: {tag}\r\n");
                text.windows(token.len()).any(|w| w == token.as_bytes())
            })
            .unwrap_or_else(|| panic!("no delivered message {tag}"));
        let got = read(file);
        assert_eq!(signatures(&got.message).len(), 1, "{tag}: not signed once");
        assert!(got.message.ends_with(msg), "{tag}: not delivered as sent");
        assert!(dkimpy_verifies(file, &records), "{tag}: dkimpy says fail");
    }
}

//! SPF, DKIM and DMARC on the delivery listener against records served by a real DNS server
//! (dnsmasq, started by each test on loopback), with clients on different 127.0.0.x sources
//! and messages signed by another implementation (Python's dkimpy).
//!
//! The zone, shared by every test:
//! - `spf.test`: `v=spf1 ip4:127.0.0.2 -all`; mail from 127.0.0.2 passes, from 127.0.0.3 fails.
//! - `signed.test`: no host may send its mail (`-all`), its DMARC policy is `p=reject`, and
//!   its DKIM key is `sel._domainkey`: only a valid signature makes its mail pass DMARC.
//! - `quarantine.test`: `v=spf1 ip4:127.0.0.2 -all` and DMARC `p=quarantine`; its mail passes
//!   DMARC (aligned SPF) from 127.0.0.2 and fails from 127.0.0.3.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dns::{self, DnsServer};
use crate::harness::{
    client_script, run_client, wait_for_maildir, Opts, Server, DELIVERY_DEADLINE, LOCAL_DOMAIN,
    REPLY_DEADLINE,
};
use crate::session::{dot_stuff, SmtpConn};

const PASSING: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FAILING: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A DNS server for the test zone, and the DKIM key `signed.test` publishes.
struct Zone {
    dns: DnsServer,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Zone {
    fn start() -> Zone {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sel.pem");
        let public = rsa_key(&key);
        let mut records = vec![
            dns::txt("spf.test", "v=spf1 ip4:127.0.0.2 -all"),
            dns::txt("signed.test", "v=spf1 -all"),
            dns::txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
            dns::txt("quarantine.test", "v=spf1 ip4:127.0.0.2 -all"),
            dns::txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
            dns::txt(
                "sel._domainkey.signed.test",
                &format!("v=DKIM1; k=rsa; p={public}"),
            ),
        ];
        // The whole of `test.`: DMARC walks up the tree (`_dmarc.test`), and a name with no
        // record must be NXDOMAIN, not a refusal that reads as a DNS failure.
        records.extend(dns::authoritative(&["test"]));
        Zone {
            dns: dns::start(&records),
            key,
            _dir: dir,
        }
    }

    /// A delivery server asking this zone, with `checks` lines (the checks not named there
    /// are at their default, `tag`).
    fn server(&self, checks: &[&str]) -> Server {
        let mut lines: Vec<String> = checks.iter().map(|l| l.to_string()).collect();
        if lines.is_empty() {
            lines.push("spf = \"tag\"".to_owned());
        }
        Server::start(Opts {
            metrics: true,
            checks: lines,
            nameservers: vec![self.dns.addr],
            ..Opts::default()
        })
    }

    /// `message` signed for `signed.test` by dkimpy.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let key = self.key.display().to_string();
        let out = run_client(
            "python3",
            &[&client_script("dkim_sign.py"), "signed.test", "sel", &key],
            message,
            REPLY_DEADLINE,
        );
        assert!(out.status.success(), "dkim_sign.py: {out:?}");
        out.stdout
    }
}

/// Writes a 2048-bit RSA key (PEM) to `path` with openssl; returns the base64 of its public
/// key, as a DKIM key record carries it (RFC 6376 §3.6.1).
fn rsa_key(path: &Path) -> String {
    let gen = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(path)
        .arg("2048")
        .output()
        .expect("openssl");
    assert!(gen.status.success(), "openssl genrsa: {gen:?}");
    let public = Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    assert!(public.status.success(), "openssl rsa: {public:?}");
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(public.stdout)
}

fn message(from: &str, tag: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <alice@{LOCAL_DOMAIN}>\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@client.test>\r\n\r\nHello, {tag}.\r\n.a dotted line\r\n"
    )
    .into_bytes()
}

/// Sends `content` from `source` as `mail_from`; the reply to MAIL, and to the data if MAIL
/// was accepted.
fn send(server: &Server, source: IpAddr, mail_from: &str, content: &[u8]) -> (u16, Option<String>) {
    let mut c = SmtpConn::connect_from(source, server.delivery()).unwrap();
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.cmd("EHLO client.test").code, 250);
    let mail = c.cmd(&format!("MAIL FROM:<{mail_from}>"));
    if mail.code != 250 {
        return (mail.code, mail.enhanced().map(str::to_owned));
    }
    assert_eq!(c.cmd(&format!("RCPT TO:<alice@{LOCAL_DOMAIN}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&dot_stuff(content));
    c.send(b".\r\n");
    let end = c.reply();
    let _ = c.cmd("QUIT");
    (end.code, end.enhanced().map(str::to_owned))
}

/// The delivered messages, oldest first, as text.
fn delivered(server: &Server, count: usize) -> Vec<String> {
    let files = wait_for_maildir(&server.maildir, count, DELIVERY_DEADLINE);
    let mut texts: Vec<(std::time::SystemTime, String)> = files
        .iter()
        .map(|f| {
            let modified = std::fs::metadata(f).unwrap().modified().unwrap();
            (
                modified,
                String::from_utf8(std::fs::read(f).unwrap()).unwrap(),
            )
        })
        .collect();
    texts.sort();
    texts.into_iter().map(|(_, t)| t).collect()
}

/// The `Authentication-Results:` fields of `text`, each unfolded.
fn auth_results(text: &str) -> Vec<String> {
    let head = text.split("\r\n\r\n").next().unwrap();
    let unfolded = head.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .split("\r\n")
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .map(str::to_owned)
        .collect()
}

/// The one `Authentication-Results:` of ours in `text`.
fn ours(text: &str) -> String {
    let ours: Vec<String> = auth_results(text)
        .into_iter()
        .filter(|l| l.starts_with("Authentication-Results: mx.example.test;"))
        .collect();
    assert_eq!(ours.len(), 1, "{text}");
    ours.into_iter().next().unwrap()
}

#[test]
fn spf_pass_and_fail_by_source_address_are_tagged() {
    let zone = Zone::start();
    let server = zone.server(&[]);
    let m = message("a@spf.test", "spf");
    assert_eq!(send(&server, PASSING, "a@spf.test", &m).0, 250);
    assert_eq!(send(&server, FAILING, "a@spf.test", &m).0, 250);
    let texts = delivered(&server, 2);
    let results: Vec<String> = texts.iter().map(|t| ours(t)).collect();
    assert!(
        results[0].contains("spf=pass smtp.mailfrom=a@spf.test"),
        "{}",
        results[0]
    );
    assert!(
        results[1].contains("spf=fail smtp.mailfrom=a@spf.test"),
        "{}",
        results[1]
    );
    assert_eq!(
        server.metric("smtp_edge_checks_total{check=\"spf\",result=\"pass\"}"),
        1.0
    );
    assert_eq!(
        server.metric("smtp_edge_checks_total{check=\"spf\",result=\"fail\"}"),
        1.0
    );
    let log = server.stderr_all();
    assert!(log.contains("spf=fail"), "{log}");
}

#[test]
fn spf_enforce_refuses_the_fail_at_mail_from() {
    let zone = Zone::start();
    let server = zone.server(&["spf = \"enforce\""]);
    let m = message("a@spf.test", "enforce");
    assert_eq!(
        send(&server, FAILING, "a@spf.test", &m),
        (550, Some("5.7.23".to_owned()))
    );
    assert_eq!(send(&server, PASSING, "a@spf.test", &m).0, 250);
    let texts = delivered(&server, 1);
    assert!(ours(&texts[0]).contains("spf=pass"), "{}", texts[0]);
    assert_eq!(
        server.metric("smtp_edge_messages_rejected_total{reason=\"spf_fail\"}"),
        1.0
    );
}

#[test]
fn dkimpy_signature_passes_and_makes_dmarc_pass_and_a_changed_body_byte_fails() {
    let zone = Zone::start();
    let server = zone.server(&[]);
    let signed = zone.sign(&message("news@signed.test", "dkim"));
    let mut altered = signed.clone();
    let at = altered.len() - 4;
    altered[at] ^= 0x20;
    // SPF fails for signed.test from anywhere: only the signature can make DMARC pass.
    assert_eq!(send(&server, PASSING, "bounce@signed.test", &signed).0, 250);
    assert_eq!(
        send(&server, PASSING, "bounce@signed.test", &altered).0,
        250
    );
    let texts = delivered(&server, 2);
    let good = ours(&texts[0]);
    assert!(good.contains("spf=fail"), "{good}");
    assert!(
        good.contains("dkim=pass header.d=signed.test header.s=sel"),
        "{good}"
    );
    assert!(
        good.contains("dmarc=pass header.from=signed.test policy.dmarc=reject"),
        "{good}"
    );
    let bad = ours(&texts[1]);
    assert!(
        bad.contains("dkim=fail header.d=signed.test header.s=sel"),
        "{bad}"
    );
    assert!(bad.contains("dmarc=fail header.from=signed.test"), "{bad}");
    assert_eq!(
        server.metric("smtp_edge_checks_total{check=\"dkim\",result=\"fail\"}"),
        1.0
    );
    assert_eq!(
        server.metric("smtp_edge_checks_total{check=\"dmarc\",result=\"pass\"}"),
        1.0
    );
    // The message after our two trace fields is the one the client sent, signature included.
    assert!(texts[0].ends_with(std::str::from_utf8(&signed).unwrap()));
}

#[test]
fn dmarc_reject_is_refused_after_data_under_enforce() {
    let zone = Zone::start();
    let server = zone.server(&["dmarc = \"enforce\""]);
    let signed = zone.sign(&message("news@signed.test", "reject"));
    let mut altered = signed.clone();
    let at = altered.len() - 4;
    altered[at] ^= 0x20;
    assert_eq!(
        send(&server, PASSING, "bounce@signed.test", &altered),
        (550, Some("5.7.1".to_owned()))
    );
    // A forged sender without any signature: refused too.
    let unsigned = message("ceo@signed.test", "unsigned");
    assert_eq!(
        send(&server, FAILING, "ceo@signed.test", &unsigned),
        (550, Some("5.7.1".to_owned()))
    );
    assert_eq!(send(&server, PASSING, "bounce@signed.test", &signed).0, 250);
    let texts = delivered(&server, 1);
    assert!(ours(&texts[0]).contains("dmarc=pass"), "{}", texts[0]);
    assert_eq!(
        server.metric("smtp_edge_messages_rejected_total{reason=\"dmarc_reject\"}"),
        2.0
    );
    let log = server.stderr_all();
    assert!(log.contains("dmarc=fail"), "{log}");
}

#[test]
fn forged_authentication_results_with_our_id_are_removed() {
    let zone = Zone::start();
    let server = zone.server(&[]);
    let mut m =
        b"Authentication-Results: mx.example.test;\r\n\tdmarc=pass header.from=signed.test\r\n\
        Authentication-Results: relay.other.test; spf=pass\r\n"
            .to_vec();
    m.extend_from_slice(&message("ceo@signed.test", "forged"));
    assert_eq!(send(&server, FAILING, "ceo@signed.test", &m).0, 250);
    let texts = delivered(&server, 1);
    let all = auth_results(&texts[0]);
    assert_eq!(all.len(), 2, "{all:?}");
    let ours = ours(&texts[0]);
    assert!(ours.contains("dmarc=fail"), "{ours}");
    assert!(
        all.iter()
            .any(|l| l == "Authentication-Results: relay.other.test; spf=pass"),
        "{all:?}"
    );
}

/// The entries of `folder` (`new` or `.Junk/new`) in alice's mailbox, as text.
fn alice(server: &Server, folder: &str) -> Vec<String> {
    let dir = server.maildir.join(LOCAL_DOMAIN).join("alice").join(folder);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| String::from_utf8(std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

#[test]
fn dmarc_quarantine_fail_goes_to_junk_under_enforce_and_a_pass_to_the_inbox() {
    let zone = Zone::start();
    let server = zone.server(&["dmarc = \"enforce\""]);
    let failing = message("ceo@quarantine.test", "quarantined");
    assert_eq!(
        send(&server, FAILING, "ceo@quarantine.test", &failing).0,
        250
    );
    let passing = message("ceo@quarantine.test", "passed");
    assert_eq!(
        send(&server, PASSING, "ceo@quarantine.test", &passing).0,
        250
    );
    delivered(&server, 2);
    let junk = alice(&server, ".Junk/new");
    assert_eq!(junk.len(), 1, "{junk:?}");
    assert!(junk[0].contains("Subject: quarantined\r\n"), "{}", junk[0]);
    assert!(
        ours(&junk[0]).contains(
            "dmarc=fail header.from=quarantine.test policy.dmarc=quarantine \
             policy.disposition=quarantine"
        ),
        "{}",
        junk[0]
    );
    let inbox = alice(&server, "new");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].contains("Subject: passed\r\n"), "{}", inbox[0]);
    assert!(ours(&inbox[0]).contains("dmarc=pass"), "{}", inbox[0]);
    // The folder is a Maildir with the mailbox's own modes.
    use std::os::unix::fs::PermissionsExt as _;
    let mailbox = server.maildir.join(LOCAL_DOMAIN).join("alice");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    for sub in ["tmp", "new", "cur"] {
        assert_eq!(
            mode(&mailbox.join(".Junk").join(sub)),
            mode(&mailbox.join(sub))
        );
    }
}

#[test]
fn dmarc_quarantine_fail_stays_in_the_inbox_tagged_under_tag() {
    let zone = Zone::start();
    let server = zone.server(&["dmarc = \"tag\""]);
    let failing = message("ceo@quarantine.test", "tagged");
    assert_eq!(
        send(&server, FAILING, "ceo@quarantine.test", &failing).0,
        250
    );
    delivered(&server, 1);
    let inbox = alice(&server, "new");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let ours = ours(&inbox[0]);
    assert!(
        ours.contains("dmarc=fail header.from=quarantine.test policy.dmarc=quarantine"),
        "{ours}"
    );
    assert!(!ours.contains("policy.disposition"), "{ours}");
    assert!(alice(&server, ".Junk/new").is_empty());
}

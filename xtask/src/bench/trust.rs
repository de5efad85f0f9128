//! Scenario t: what the inbound checks cost. Scenario a's load (50 sessions, 100 messages each,
//! pipelined) into smtp-edge with every `[checks]` entry `"off"`, then with SPF, DKIM, DMARC and
//! ARC at `"tag"`, then (with `--vs postfix`) into Postfix, in turn, round after round.
//!
//! The checks ask a real DNS server, dnsmasq on loopback ([`super::dnsmasq`]), authoritative
//! for `test`, serving [`DOMAIN`]: an SPF record that passes 127.0.0.0/8, a DMARC record with `p=none` (so every
//! message is delivered and counted) and the DKIM key record `smtp-edge dkim keygen` printed.
//! Every message is one 10 KiB message from [`SENDER`], DKIM-signed once per bench run by
//! another implementation (dkimpy, as the tests sign) with that key, and sent as is
//! (`smtp-bench --message`): each one costs an SPF evaluation at MAIL and an RSA-2048 signature
//! verification, ARC and DMARC at the end of data. Answers carry a TTL of 300 s, so after the
//! first lookups each worker's cache answers, as it would in service.
//!
//! A checks-on run counts only if the checks ran on every message: smtp-edge's
//! `smtp_edge_checks_total` must show `spf`, `dkim` and `dmarc` `pass` once per accepted message,
//! and a delivered message's `Authentication-Results:` must say so; with the checks off, the
//! counters must stay at zero.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::dnsmasq::{self, Dnsmasq};
use super::json::Fields as _;
use super::servers::{Kind, Server};
use super::{median, Run};

/// The sender's domain: SPF, DKIM `d=` and the DMARC From: domain.
pub const DOMAIN: &str = "bench.test";
/// The zone dnsmasq is authoritative for.
const ZONE: &str = "test";
/// The reverse-path and `From:` of every message.
pub const SENDER: &str = "bench@bench.test";
/// The DKIM selector.
const SELECTOR: &str = "bench";
/// Content octets of the signed message, DKIM-Signature included: scenario a's size.
const SIZE: usize = 10_240;
/// Body line length before CRLF (RFC 5322 §2.1.1 recommends at most 78).
const LINE: usize = 76;
/// The checks that must `pass` once per message when they are on (ARC has no chain to find:
/// `none`).
const MUST_PASS: [&str; 3] = ["spf", "dkim", "dmarc"];
/// The throughput goal against durable Postfix with the checks on.
const GOAL: f64 = 2.0;

/// Scenario t's keys: the checks-off run and the checks-on run (the one compared with Postfix).
pub const OFF: &str = "t-off";
/// See [`OFF`].
pub const TAG: &str = "t-tag";

/// `[checks]` with every check off.
pub const CHECKS_OFF: &str = "spf = \"off\"\ndkim = \"off\"\ndmarc = \"off\"\narc = \"off\"";
/// `[checks]` with every check at `tag`.
pub const CHECKS_TAG: &str = "spf = \"tag\"\ndkim = \"tag\"\ndmarc = \"tag\"\narc = \"tag\"";

/// The DNS server and the signed message, made once per bench run.
pub struct Zone {
    dns: Dnsmasq,
    /// The DKIM-signed message `smtp-bench --message` sends.
    pub message: PathBuf,
    /// Its size in octets.
    pub size: usize,
}

impl Zone {
    /// The value for `dns.nameservers`.
    pub fn nameserver(&self) -> String {
        self.dns.addr.to_string()
    }
}

/// Whether scenario t can run here.
pub enum Prepared {
    /// It can.
    Ready(Zone),
    /// It cannot, and why.
    Skipped(String),
}

/// Makes the DKIM key (`smtp-edge dkim keygen`), the signed message (dkimpy, through
/// `tests/clients/dkim_sign.py`) and starts dnsmasq serving the zone, under `dir`. Skipped,
/// with the reason, when dnsmasq or dkimpy is not installed.
pub fn prepare(edge: &Path, workspace: &Path, dir: &Path) -> Result<Prepared> {
    let Some(program) = dnsmasq::program() else {
        return Ok(Prepared::Skipped(
            "dnsmasq is not installed (Debian dnsmasq-base)".into(),
        ));
    };
    let import = Command::new("python3")
        .args(["-c", "import dkim"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !import.is_ok_and(|s| s.success()) {
        return Ok(Prepared::Skipped(
            "python3 cannot import dkim (PyPI dkimpy; `cargo xtask test` installs it)".into(),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let key = dir.join("dkim.pem");
    let out = Command::new(edge)
        .args([
            "dkim",
            "keygen",
            "--domain",
            DOMAIN,
            "--selector",
            SELECTOR,
            "--out",
        ])
        .arg(&key)
        .stdin(Stdio::null())
        .output()
        .context("smtp-edge dkim keygen")?;
    let printed = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "smtp-edge dkim keygen failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let record = key_record(&printed)
        .with_context(|| format!("no TXT record in the output of dkim keygen: {printed}"))?;
    let signer = Signer {
        script: workspace.join("tests/clients/dkim_sign.py"),
        key,
    };
    // The DKIM-Signature's length does not depend on the body (fixed-length `bh=` and `b=`),
    // so one trial signature sizes the body for a signed message of SIZE octets.
    let trial = message(SIZE);
    let header = signer.sign(&trial)?.len().saturating_sub(trial.len());
    let signed = signer.sign(&message(SIZE.saturating_sub(header)))?;
    let path = dir.join("signed.eml");
    std::fs::write(&path, &signed)?;
    let txt = [
        (DOMAIN.to_owned(), "v=spf1 ip4:127.0.0.0/8 -all".to_owned()),
        (format!("_dmarc.{DOMAIN}"), "v=DMARC1; p=none".to_owned()),
        (format!("{SELECTOR}._domainkey.{DOMAIN}"), record),
    ];
    // Authoritative for the parent, `test`: DMARC also asks for the organizational domain's
    // record (`_dmarc.test`), which must be NXDOMAIN; a server authoritative only for
    // bench.test refuses it, and DMARC is then `temperror`.
    let dns = Dnsmasq::start(&program, &dir.join("dns"), ZONE, &txt)?;
    Ok(Prepared::Ready(Zone {
        dns,
        message: path,
        size: signed.len(),
    }))
}

/// dkimpy with the key `smtp-edge dkim keygen` wrote.
struct Signer {
    script: PathBuf,
    key: PathBuf,
}

impl Signer {
    /// `message` with a DKIM-Signature (relaxed/relaxed, rsa-sha256) in front.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mut child = Command::new("python3")
            .arg(&self.script)
            .args([DOMAIN, SELECTOR])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("python3 dkim_sign.py")?;
        child.stdin.take().context("stdin")?.write_all(message)?;
        let out = child.wait_with_output()?;
        if !out.status.success() || out.stdout.len() <= message.len() {
            bail!(
                "dkim_sign.py failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }
}

/// The record `dkim keygen` printed (`S._domainkey.D. IN TXT ( "..." "..." )`), its
/// character-strings joined.
pub fn key_record(printed: &str) -> Option<String> {
    let line = printed.lines().find(|l| l.contains(" IN TXT "))?;
    let (_, strings) = line.split_once(" IN TXT ")?;
    let joined: String = strings.split('"').skip(1).step_by(2).collect();
    joined.starts_with("v=DKIM1").then_some(joined)
}

/// An unsigned message from [`SENDER`] to `user@example.test`, `size` content octets (more if
/// its header section and first line alone are longer), CRLF line ends. One body line starts with a dot:
/// the signature covers the body unstuffed, so it verifies only if the client stuffs and the
/// server unstuffs.
pub fn message(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{SENDER}>\r\nTo: <user@example.test>\r\nSubject: smtp-bench scenario t\r\n\
         Date: Sun, 29 Nov 2026 00:00:00 +0000\r\nMessage-ID: <scenario-t@{DOMAIN}>\r\n\r\n\
         .This line starts with a dot.\r\n"
    )
    .into_bytes();
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    let mut k = 0usize;
    while m.len() < size {
        let left = size - m.len();
        // Full lines while at least a short line (one octet and CRLF) would be left after
        // one; then one line takes the rest, up to 78 octets before its CRLF.
        let n = if left <= LINE + 4 {
            left.saturating_sub(2).max(1)
        } else {
            LINE
        };
        for i in 0..n {
            // Lines start with a letter: no leading dot or space beyond the one above.
            m.push(if i == 0 {
                b'X'
            } else {
                alphabet[k % alphabet.len()]
            });
            k = k.wrapping_mul(31).wrapping_add(7);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// What smtp-edge reported about its checks in one run.
#[derive(Debug, Default)]
pub struct Observed {
    /// `smtp_edge_checks_total{check,result}` at the end of the run: (check, result, count).
    pub counts: Vec<(String, String, u64)>,
    /// The `Authentication-Results:` field of a delivered message, unfolded.
    pub header: Option<String>,
    /// Why the counters could not be read, if they could not.
    pub error: Option<String>,
}

impl Observed {
    /// The count of `check` with `result`.
    pub fn count(&self, check: &str, result: &str) -> u64 {
        self.counts
            .iter()
            .filter(|(c, r, _)| c == check && r == result)
            .map(|(_, _, n)| n)
            .sum()
    }
    /// Every check result counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, _, n)| n).sum()
    }
    fn json(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .filter(|(_, _, n)| *n > 0)
            .map(|(c, r, n)| format!("\"{c}={r}\":{n}"))
            .collect();
        format!(
            "{{\"counts\":{{{}}},\"authentication_results\":{},\"error\":{}}}",
            counts.join(","),
            self.header
                .as_deref()
                .map_or("null".into(), super::json::quote),
            self.error
                .as_deref()
                .map_or("null".into(), super::json::quote)
        )
    }
}

/// The JSON of a run's observation (`null` without one).
pub fn json(observed: Option<&Observed>) -> String {
    observed.map_or("null".into(), Observed::json)
}

/// Reads smtp-edge's check counters (its metrics endpoint) and one delivered message's
/// `Authentication-Results:` (under `dir/mail`), after the drain.
pub fn observe(server: &Server, dir: &Path) -> Observed {
    let mut seen = Observed {
        header: first_delivered(&dir.join("mail"))
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|m| auth_results(&String::from_utf8_lossy(&m))),
        ..Observed::default()
    };
    match server.metrics_page() {
        Ok(page) => seen.counts = check_counts(&page),
        Err(e) => seen.error = Some(format!("{e:#}")),
    }
    seen
}

/// `smtp_edge_checks_total{check="C",result="R"} N` lines of a metrics page.
pub fn check_counts(page: &str) -> Vec<(String, String, u64)> {
    page.lines()
        .filter_map(|l| {
            let labels = l.strip_prefix("smtp_edge_checks_total{")?;
            let (labels, value) = labels.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_owned)
            };
            Some((
                label("check")?,
                label("result")?,
                value.trim().parse::<f64>().ok()? as u64,
            ))
        })
        .collect()
}

/// The first message file in a Maildir tree.
fn first_delivered(root: &Path) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) if d.ends_with("new") || d.ends_with("cur") => return Some(path),
                _ => {}
            }
        }
    }
    None
}

/// The first `Authentication-Results:` field of `message`'s header section, unfolded (RFC 5322
/// §2.2.3).
pub fn auth_results(message: &str) -> Option<String> {
    let header = message.split("\r\n\r\n").next()?;
    let mut lines = header.split("\r\n").skip_while(|l| {
        !l.get(..23)
            .is_some_and(|n| n.eq_ignore_ascii_case("Authentication-Results:"))
    });
    let mut field = lines.next()?.to_owned();
    for more in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        field.push(' ');
        field.push_str(more.trim_start());
    }
    Some(field)
}

/// Why t's runs do not count: a checks-on run where a check did not pass on every accepted
/// message, or whose delivered message does not say so; a checks-off run where a check ran.
pub fn problems(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs.iter().filter(|r| r.server == Kind::Edge) {
        let what = format!("{} / {} / round {}", r.scenario, r.server.name(), r.round);
        let Some(seen) = &r.checks else { continue };
        if let Some(e) = &seen.error {
            out.push(format!(
                "{what}: the checks' counters could not be read: {e}"
            ));
            continue;
        }
        let accepted = r.msgs() as u64;
        match r.scenario {
            TAG => {
                for check in MUST_PASS {
                    let pass = seen.count(check, "pass");
                    if pass != accepted {
                        out.push(format!(
                            "{what}: {check}=pass on {pass} of {accepted} accepted messages \
                             (smtp_edge_checks_total: {}): the checks did not run as configured",
                            summary(seen)
                        ));
                    }
                }
                let header = seen.header.as_deref().unwrap_or("");
                if accepted > 0
                    && !MUST_PASS
                        .iter()
                        .all(|c| header.contains(&format!("{c}=pass")))
                {
                    out.push(format!(
                        "{what}: a delivered message's Authentication-Results does not say \
                         spf, dkim and dmarc pass: {header:?}"
                    ));
                }
            }
            OFF if seen.total() > 0 => out.push(format!(
                "{what}: checks ran although all are off: {}",
                summary(seen)
            )),
            _ => {}
        }
    }
    out
}

/// The non-zero counters, `check=result N`.
fn summary(seen: &Observed) -> String {
    let parts: Vec<String> = seen
        .counts
        .iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(c, r, n)| format!("{c}={r} {n}"))
        .collect();
    if parts.is_empty() {
        "all zero".into()
    } else {
        parts.join(", ")
    }
}

/// One round of t: messages/s of each run, and the passes counted with the checks on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    /// The round.
    pub round: usize,
    /// smtp-edge, checks off.
    pub off: Option<f64>,
    /// smtp-edge, checks at tag.
    pub tag: Option<f64>,
    /// Postfix, same load.
    pub postfix: Option<f64>,
    /// Checks at tag: spf, dkim and dmarc passes, and the accepted messages.
    pub passes: Option<([u64; 3], u64)>,
}

impl Round {
    fn tag_off(&self) -> Option<f64> {
        Some(self.tag? / self.off?.max(1e-9))
    }
    fn tag_postfix(&self) -> Option<f64> {
        Some(self.tag? / self.postfix?.max(1e-9))
    }
}

/// t's runs, round by round.
pub fn rounds(runs: &[Run], rounds: usize) -> Vec<Round> {
    (1..=rounds)
        .map(|round| {
            let find = |key: &str, kind: Kind| {
                runs.iter()
                    .find(|r| r.scenario == key && r.server == kind && r.round == round)
            };
            let per_s = |r: &Run| r.bench.num("messages_per_s");
            Round {
                round,
                off: find(OFF, Kind::Edge).map(per_s),
                tag: find(TAG, Kind::Edge).map(per_s),
                postfix: find(TAG, Kind::Postfix).map(per_s),
                passes: find(TAG, Kind::Edge).and_then(|r| {
                    let seen = r.checks.as_ref()?;
                    Some((MUST_PASS.map(|c| seen.count(c, "pass")), r.msgs() as u64))
                }),
            }
        })
        .filter(|r| r.off.is_some() || r.tag.is_some())
        .collect()
}

/// `label X.XXx (runs a, b, c)`, X the median, with `[goal >= Nx: met]` or `NOT met` when a
/// goal is given; `label -` without values.
pub fn ratio_line(label: &str, values: &[f64], goal: Option<f64>) -> String {
    if values.is_empty() {
        return format!("{label} - (no pair)");
    }
    let m = median(values.to_vec());
    let runs: Vec<String> = values.iter().map(|x| format!("{x:.2}x")).collect();
    let verdict = goal.map_or(String::new(), |g| {
        format!(
            " [goal >= {g}x: {}]",
            if m >= g { "met" } else { "NOT met" }
        )
    });
    format!("{label} {m:.2}x (runs {}){verdict}", runs.join(", "))
}

fn cell(v: Option<f64>, digits: usize, suffix: &str) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}{suffix}"))
}

fn passes(p: Option<([u64; 3], u64)>) -> String {
    p.map_or("-".into(), |([s, d, m], n)| format!("{s}, {d}, {m} of {n}"))
}

/// One round's cells, for both reports: round, off, tag, postfix, tag/off, tag/postfix, passes.
fn cells(r: &Round) -> [String; 7] {
    [
        r.round.to_string(),
        cell(r.off, 0, ""),
        cell(r.tag, 0, ""),
        cell(r.postfix, 0, ""),
        cell(r.tag_off(), 2, "x"),
        cell(r.tag_postfix(), 2, "x"),
        passes(r.passes),
    ]
}

/// The ratio lines of both reports (`colon` after the label in Markdown): checks on vs off,
/// then, when Postfix ran, checks on vs Postfix with the goal.
fn ratio_lines(rs: &[Round], colon: &str) -> Vec<String> {
    let on_off: Vec<f64> = rs.iter().filter_map(Round::tag_off).collect();
    let vs: Vec<f64> = rs.iter().filter_map(Round::tag_postfix).collect();
    let mut lines = vec![ratio_line(
        &format!("checks at tag / checks off, throughput{colon}"),
        &on_off,
        None,
    )];
    if !vs.is_empty() {
        lines.push(ratio_line(
            &format!("checks at tag / postfix, throughput{colon}"),
            &vs,
            Some(GOAL),
        ));
    }
    lines
}

/// The text report of t: per round, then the ratios (checks on vs off; vs Postfix, with the
/// goal), and with the zone how many DNS queries dnsmasq answered over all of t's runs.
pub fn render(t: &mut String, rs: &[Round], zone: Option<&Zone>) {
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(
        t,
        "\nt checks: smtp-edge [checks] all \"off\" vs all \"tag\" (DNS: dnsmasq on loopback){}:\n\
         {:>3} {:>10} {:>10} {:>10} {:>8} {:>12}  spf, dkim, dmarc pass (tag)",
        zone.map_or(String::new(), |z| format!(
            ", {} octets DKIM-signed from {SENDER}; {} DNS queries answered in all",
            z.size,
            z.dns.queries()
        )),
        "rnd",
        "off msg/s",
        "tag msg/s",
        "postfix",
        "tag/off",
        "tag/postfix"
    );
    for r in rs {
        let [round, off, tag, postfix, tag_off, tag_postfix, passes] = cells(r);
        let _ = writeln!(
            t,
            "{round:>3} {off:>10} {tag:>10} {postfix:>10} {tag_off:>8} {tag_postfix:>12}  {passes}"
        );
    }
    for line in ratio_lines(rs, "") {
        let _ = writeln!(t, "  {line}");
    }
}

/// The Markdown of t: one row per round, then the ratio lines.
pub fn markdown(rs: &[Round]) -> String {
    if rs.is_empty() {
        return String::new();
    }
    let mut t = String::from(
        "\n| t: round | checks off msg/s | checks at tag msg/s | postfix msg/s | tag / off | tag / postfix | spf, dkim, dmarc pass (tag) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rs {
        let _ = writeln!(t, "| {} |", cells(r).join(" | "));
    }
    for line in ratio_lines(rs, ":") {
        let _ = writeln!(t, "\n{line}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_record_is_read_from_what_keygen_prints() {
        let printed = "wrote a RSA key (2048 bits) to k.pem\n\
            publish this TXT record, then add to the configuration:\n\
            [[dkim.sign]]\ndomain = \"bench.test\"\nselector = \"bench\"\nkey = \"k.pem\"\n\
            bench._domainkey.bench.test. IN TXT ( \"v=DKIM1; k=rsa; p=MIIB\" \"IjANBg\" )\n";
        assert_eq!(
            key_record(printed).as_deref(),
            Some("v=DKIM1; k=rsa; p=MIIBIjANBg")
        );
        let short = "s._domainkey.d.test. IN TXT \"v=DKIM1; k=ed25519; p=abc\"\n";
        assert_eq!(
            key_record(short).as_deref(),
            Some("v=DKIM1; k=ed25519; p=abc")
        );
        assert_eq!(key_record("no record here\n"), None);
    }

    #[test]
    fn the_message_has_the_size_asked_and_short_lines() {
        for size in [10_000, 10_001, 10_002, 10_003, 10_079, 10_080, 10_081] {
            let m = message(size);
            assert_eq!(m.len(), size, "size {size}");
            let text = String::from_utf8(m).unwrap();
            assert!(text.ends_with("\r\n"));
            assert!(text.starts_with(&format!("From: <{SENDER}>\r\n")));
            assert!(text.contains("\r\n\r\n.This line starts with a dot.\r\n"));
            let body = text.split_once("\r\n\r\n").unwrap().1;
            for line in body.split_terminator("\r\n") {
                assert!(line.len() <= 78 && !line.contains('\n'), "{line:?}");
                assert!(!line.starts_with(' '), "{line:?}");
            }
        }
    }

    #[test]
    fn counters_are_read_from_the_metrics_page() {
        let page = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n\
            # TYPE smtp_edge_checks_total counter\n\
            smtp_edge_checks_total{check=\"spf\",result=\"pass\"} 5000\n\
            smtp_edge_checks_total{check=\"dkim\",result=\"fail\"} 0\n\
            smtp_edge_checks_total{check=\"dmarc\",result=\"pass\"} 4999\n\
            smtp_edge_messages_accepted_total 5000\n";
        let counts = check_counts(page);
        assert_eq!(
            counts,
            [
                ("spf".into(), "pass".into(), 5000),
                ("dkim".into(), "fail".into(), 0),
                ("dmarc".into(), "pass".into(), 4999)
            ]
        );
        let seen = Observed {
            counts,
            ..Observed::default()
        };
        assert_eq!(seen.count("dmarc", "pass"), 4999);
        assert_eq!(seen.count("dkim", "pass"), 0);
        assert_eq!(seen.total(), 9999);
    }

    #[test]
    fn the_authentication_results_field_is_unfolded() {
        let m = "Received: from x\r\nAuthentication-Results: bench.example.test;\r\n\
            \tspf=pass smtp.mailfrom=bench@bench.test;\r\n dkim=pass header.d=bench.test\r\n\
            Subject: s\r\n\r\nAuthentication-Results: not a header\r\n";
        assert_eq!(
            auth_results(m).as_deref(),
            Some(
                "Authentication-Results: bench.example.test; spf=pass \
                 smtp.mailfrom=bench@bench.test; dkim=pass header.d=bench.test"
            )
        );
        assert_eq!(auth_results("Subject: s\r\n\r\nbody\r\n"), None);
    }

    #[test]
    fn ratios_say_whether_the_goal_is_met() {
        assert_eq!(
            ratio_line("on / postfix:", &[2.5, 1.9, 2.1], Some(2.0)),
            "on / postfix: 2.10x (runs 2.50x, 1.90x, 2.10x) [goal >= 2x: met]"
        );
        assert_eq!(
            ratio_line("on / postfix:", &[1.5, 2.5, 1.9], Some(2.0)),
            "on / postfix: 1.90x (runs 1.50x, 2.50x, 1.90x) [goal >= 2x: NOT met]"
        );
        assert_eq!(
            ratio_line("on / off:", &[0.9, 1.1], None),
            "on / off: 1.00x (runs 0.90x, 1.10x)"
        );
        assert_eq!(ratio_line("on / off:", &[], None), "on / off: - (no pair)");
    }

    #[test]
    fn the_markdown_pairs_runs_of_the_same_round() {
        let rs = [
            Round {
                round: 1,
                off: Some(2000.0),
                tag: Some(1800.0),
                postfix: Some(600.0),
                passes: Some(([5000, 5000, 5000], 5000)),
            },
            Round {
                round: 2,
                off: Some(1000.0),
                tag: Some(1100.0),
                postfix: None,
                passes: None,
            },
        ];
        let md = markdown(&rs);
        assert!(
            md.contains("| 1 | 2000 | 1800 | 600 | 0.90x | 3.00x | 5000, 5000, 5000 of 5000 |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 1000 | 1100 | - | 1.10x | - | - |"),
            "{md}"
        );
        assert!(
            md.contains("checks at tag / checks off, throughput: 1.00x (runs 0.90x, 1.10x)"),
            "{md}"
        );
        assert!(
            md.contains(
                "checks at tag / postfix, throughput: 3.00x (runs 3.00x) [goal >= 2x: met]"
            ),
            "{md}"
        );
        assert_eq!(markdown(&[]), "");
        // The text report has the same cells, lined up.
        let mut text = String::new();
        render(&mut text, &rs, None);
        assert!(text.contains("  1       2000       1800        600    0.90x        3.00x  5000, 5000, 5000 of 5000"), "{text}");
        assert!(
            text.contains("  checks at tag / checks off, throughput 1.00x (runs 0.90x, 1.10x)"),
            "{text}"
        );
    }
}

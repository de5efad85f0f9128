//! The queue relaying to receivers that Postfix ships: `smtp-sink` as `relay.local` (it dumps
//! each transaction to a file), and a throwaway Postfix instance as the `relay.remote` smarthost,
//! delivering with virtual(8) into a Maildir in the test's directory. Each message must arrive
//! once, and byte for byte as sent once the trace headers are taken off.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{
    maildir_files, run_bin, wait_until, AuthOpts, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE,
};
use crate::maildir::sample_message;
use crate::session::{dot_stuff, SmtpConn};

/// How long Postfix gets to start or stop on a loaded machine.
const POSTFIX_DEADLINE: Duration = Duration::from_secs(30);

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A directory every user may enter and write: the receivers drop privileges before they write.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `content` with CRLF line ends made LF, as receivers that store Unix files write it.
fn lf(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        if !(content[i] == b'\r' && content.get(i + 1) == Some(&b'\n')) {
            out.push(content[i]);
        }
        i += 1;
    }
    out
}

/// A stored message split into its leading trace headers (`Return-Path:`, `X-Original-To:`,
/// `Delivered-To:`, `Received:` and smtp-sink's `X-*:` lines, unfolded) and the rest.
fn split_trace(stored: &[u8]) -> (Vec<String>, &[u8]) {
    const TRACE: [&str; 9] = [
        "Return-Path:",
        "X-Original-To:",
        "Received:",
        "Delivered-To:",
        "X-Client-Addr:",
        "X-Client-Proto:",
        "X-Helo-Args:",
        "X-Mail-Args:",
        "X-Rcpt-Args:",
    ];
    let mut headers: Vec<String> = Vec::new();
    let mut rest = stored;
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let line = String::from_utf8_lossy(&rest[..end]);
        let line = line.trim_end();
        if TRACE.iter().any(|t| line.starts_with(t)) {
            headers.push(line.to_owned());
        } else if line.starts_with([' ', '\t']) && !headers.is_empty() {
            let last = headers.last_mut().unwrap();
            last.push(' ');
            last.push_str(line.trim_start());
        } else {
            return (headers, rest);
        }
        rest = &rest[end..];
    }
}

/// Sends one message; returns it as sent.
fn send(addr: SocketAddr, tag: &str, from: &str, rcpts: &[&str]) -> Vec<u8> {
    let msg = sample_message(tag, from, rcpts[0]);
    let (mut c, _) = SmtpConn::connect_ehlo(addr);
    let r = c.send_mail(from, rcpts, &dot_stuff(&msg));
    assert_eq!(r.code, 250, "{tag}: {r:?}");
    msg
}

/// Waits until the server's queue is empty (every message delivered or bounced).
fn wait_queue_empty(server: &Server) {
    let config = server.config.as_ref().unwrap().to_str().unwrap().to_owned();
    let empty = wait_until(DELIVERY_DEADLINE, || {
        let out = run_bin(
            &["queue", "list", "--json", "--config", &config],
            REPLY_DEADLINE,
        );
        (String::from_utf8_lossy(&out.stdout).trim() == "[]").then_some(())
    });
    assert!(
        empty.is_some(),
        "the queue does not empty:\n{}",
        server.stderr_tail()
    );
}

/// `smtp-sink` dumping each transaction to a file of its own; killed on drop.
struct Sink {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Sink {
    fn start() -> Sink {
        let dir = open_dir();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new("smtp-sink");
        // As root, smtp-sink must drop privileges (-u) before it writes the dumps.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.args(["-u", "nobody"]);
        }
        let mut child = cmd
            .arg("-d")
            .arg(dir.path().join("msg."))
            .arg(addr.to_string())
            .arg("10")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("sink.log")).unwrap())
            .spawn()
            .expect("smtp-sink (Debian postfix; `cargo xtask test` installs it)");
        let up = wait_until(REPLY_DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "smtp-sink exited ({status}): {}",
                    fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default()
                );
            }
            listening(addr).then_some(())
        });
        assert!(up.is_some(), "smtp-sink does not listen on {addr}");
        Sink { child, addr, dir }
    }

    /// Each transaction's dump, complete once the relay has had smtp-sink's 250 for it.
    fn dumps(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("msg."))
            })
            .collect();
        files.sort();
        files.iter().map(|f| fs::read(f).unwrap()).collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn smtp_sink_as_relay_local_gets_each_message_once_byte_exact() {
    let sink = Sink::start();
    let server = Server::start(Opts {
        relay: vec![format!("local = \"smtp://{}\"", sink.addr)],
        ..Opts::default()
    });
    // Each message's envelope, by its token.
    let sends: [(&str, &str, &[&str]); 4] = [
        ("sink-0", "a@remote.test", &["alice@example.test"]),
        (
            "sink-1",
            "b@remote.test",
            &["bob@example.test", "alice@example.test"],
        ),
        ("sink-2", "", &["carol@example.test"]),
        ("sink-3", "a@remote.test", &["alice@example.test"]),
    ];
    let mut sent = BTreeMap::new();
    for (tag, from, rcpts) in sends {
        sent.insert(
            tag,
            (from, rcpts, send(server.delivery(), tag, from, rcpts)),
        );
    }
    let arrived = wait_until(DELIVERY_DEADLINE, || {
        (sink.dumps().len() >= sent.len()).then_some(())
    });
    assert!(
        arrived.is_some(),
        "{} of {} arrived:\n{}",
        sink.dumps().len(),
        sent.len(),
        server.stderr_tail()
    );
    // Once the queue is empty no copy is still on its way: a duplicate would be here now.
    wait_queue_empty(&server);
    let dumps = sink.dumps();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for dump in &dumps {
        let (trace, content) = split_trace(dump);
        let (tag, (from, rcpts, msg)) = sent
            .iter()
            .find(|(tag, _)| {
                content
                    .windows(tag.len() + 9)
                    .any(|w| w == format!("X-Token: {tag}").as_bytes())
            })
            .unwrap_or_else(|| {
                panic!(
                    "a dump of no message sent:\n{}",
                    String::from_utf8_lossy(dump)
                )
            });
        *seen.entry(*tag).or_default() += 1;
        // smtp-sink adds a blank line after the message.
        let mut want = lf(msg);
        want.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(content),
            String::from_utf8_lossy(&want),
            "{tag}: not byte-exact after the trace headers"
        );
        assert!(
            trace.contains(&format!("X-Mail-Args: <{from}>")),
            "{tag}: {trace:?}"
        );
        let got: Vec<&String> = trace
            .iter()
            .filter(|h| h.starts_with("X-Rcpt-Args:"))
            .collect();
        let want: Vec<String> = rcpts
            .iter()
            .map(|r| format!("X-Rcpt-Args: <{r}>"))
            .collect();
        assert_eq!(
            got,
            want.iter().collect::<Vec<_>>(),
            "{tag}: one transaction, every recipient"
        );
        // Ours is the trace header nearest the message, below smtp-sink's.
        let received: Vec<&String> = trace
            .iter()
            .filter(|h| h.starts_with("Received:"))
            .collect();
        assert_eq!(received.len(), 2, "{tag}: {trace:?}");
        assert!(received[0].contains("by smtp-sink"), "{tag}: {trace:?}");
        assert!(!received[1].contains("smtp-sink"), "{tag}: {trace:?}");
    }
    let want: BTreeMap<&str, usize> = sent.keys().map(|t| (*t, 1)).collect();
    assert_eq!(seen, want, "each message arrives once");
}

/// A throwaway Postfix instance (its own config and queue directories), taking mail for
/// `remote.test` on a loopback port and delivering it with virtual(8) into one Maildir; stopped on
/// drop.
struct Postfix {
    conf: PathBuf,
    master: Option<i32>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Postfix {
    fn start() -> Postfix {
        let dir = open_dir();
        let root = dir.path();
        let (conf, queue, data, mail) = (
            root.join("etc"),
            root.join("queue"),
            root.join("data"),
            root.join("mail"),
        );
        for d in [&conf, &queue, &data, &mail] {
            fs::create_dir_all(d).unwrap();
        }
        // virtual(8) writes as nobody; the data directory belongs to postfix.
        chown(&mail, "nobody:nogroup");
        chown(&data, "postfix");
        let port = free_port();
        // No header rewriting for loopback clients (Postfix would add a Date: header), so what
        // arrives is what we sent.
        fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 myhostname = hop.example.test\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_recipient_maps =\n\
                 local_header_rewrite_clients =\n\
                 biff = no\n\
                 maillog_file = {root}/maillog\n\
                 maillog_file_prefixes = {root}\n\
                 virtual_mailbox_domains = remote.test\n\
                 virtual_mailbox_base = {mail}\n\
                 virtual_mailbox_maps = static:remote.test/\n\
                 virtual_uid_maps = static:65534\n\
                 virtual_gid_maps = static:65534\n\
                 virtual_minimum_uid = 100\n\
                 smtputf8_enable = no\n",
                queue = queue.display(),
                data = data.display(),
                mail = mail.display(),
                root = root.display(),
            ),
        )
        .unwrap();
        fs::write(
            conf.join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 pickup    unix  n - n 60 1 pickup\n\
                 cleanup   unix  n - n - 0 cleanup\n\
                 qmgr      unix  n - n 300 1 qmgr\n\
                 rewrite   unix  - - n - - trivial-rewrite\n\
                 bounce    unix  - - n - 0 bounce\n\
                 defer     unix  - - n - 0 bounce\n\
                 trace     unix  - - n - 0 bounce\n\
                 verify    unix  - - n - 1 verify\n\
                 flush     unix  n - n 1000? 0 flush\n\
                 proxymap  unix  - - n - - proxymap\n\
                 showq     unix  n - n - - showq\n\
                 error     unix  - - n - - error\n\
                 retry     unix  - - n - - error\n\
                 discard   unix  - - n - - discard\n\
                 virtual   unix  - n n - - virtual\n\
                 anvil     unix  - - n - 1 anvil\n\
                 scache    unix  - - n - 1 scache\n\
                 postlog   unix-dgram n - n - 1 postlogd\n"
            ),
        )
        .unwrap();
        let mut pf = Postfix {
            conf,
            master: None,
            port,
            dir,
        };
        let out = pf.postfix("start");
        assert!(
            out.status.success(),
            "postfix start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pf.maillog()
        );
        let pidfile = queue.join("pid/master.pid");
        pf.master = wait_until(POSTFIX_DEADLINE, || {
            fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_until(POSTFIX_DEADLINE, || listening(addr).then_some(()));
        assert!(
            pf.master.is_some() && up.is_some(),
            "postfix does not listen on {addr}:\n{}",
            pf.maillog()
        );
        pf
    }

    fn postfix(&self, command: &str) -> std::process::Output {
        Command::new("postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("postfix (Debian postfix; `cargo xtask test` installs it)")
    }

    fn maillog(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message delivered to the Maildir.
    fn delivered(&self) -> Vec<Vec<u8>> {
        maildir_files(&self.dir.path().join("mail"))
            .iter()
            .map(|f| fs::read(f).unwrap())
            .collect()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let Some(pid) = self.master else {
            let _ = self.postfix("abort");
            return;
        };
        let _ = self.postfix("stop");
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        if wait_until(POSTFIX_DEADLINE, || (!alive()).then_some(())).is_none() {
            let _ = self.postfix("abort");
            // SAFETY: kill has no memory preconditions; pid is the master we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn chown(path: &Path, owner: &str) {
    let ok = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chown {owner} {}", path.display());
}

#[test]
#[ignore = "needs root: a Postfix instance starts as root"]
fn postfix_as_smarthost_delivers_submitted_remote_mail_once_byte_exact() {
    let postfix = Postfix::start();
    let server = Server::start(Opts {
        auth: Some(AuthOpts {
            submission_networks: vec!["127.0.0.0/8".into()],
            ..AuthOpts::default()
        }),
        relay: vec![format!("remote = {:?}", postfix.url())],
        ..Opts::with_submission()
    });
    let sends: [(&str, &[&str]); 3] = [
        ("pf-0", &["far@remote.test"]),
        ("pf-1", &["far@remote.test", "near@remote.test"]),
        ("pf-2", &["near@remote.test"]),
    ];
    let from = "carol@example.test";
    let mut sent = BTreeMap::new();
    for (tag, rcpts) in sends {
        sent.insert(tag, (rcpts, send(server.submission(), tag, from, rcpts)));
    }
    wait_queue_empty(&server);
    // virtual(8) stores one copy per recipient.
    let copies: usize = sends.iter().map(|(_, r)| r.len()).sum();
    let delivered = wait_until(DELIVERY_DEADLINE, || {
        let d = postfix.delivered();
        (d.len() >= copies).then_some(d)
    })
    .unwrap_or_else(|| panic!("Postfix did not deliver {copies}:\n{}", postfix.maillog()));
    let mut seen: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for file in &delivered {
        let (trace, content) = split_trace(file);
        let (tag, (rcpts, msg)) = sent
            .iter()
            .find(|(tag, _)| {
                content
                    .windows(tag.len() + 9)
                    .any(|w| w == format!("X-Token: {tag}").as_bytes())
            })
            .unwrap_or_else(|| panic!("a message never sent:\n{}", String::from_utf8_lossy(file)));
        assert_eq!(
            String::from_utf8_lossy(content),
            String::from_utf8_lossy(&lf(msg)),
            "{tag}: not byte-exact after the trace headers"
        );
        assert_eq!(
            trace[0],
            format!("Return-Path: <{from}>"),
            "{tag}: {trace:?}"
        );
        let to = trace
            .iter()
            .find_map(|h| h.strip_prefix("Delivered-To: "))
            .unwrap_or_else(|| panic!("{tag}: no Delivered-To: {trace:?}"))
            .to_owned();
        assert!(rcpts.contains(&to.as_str()), "{tag}: delivered to {to}");
        // Postfix's Received: names us as its client; ours is the one below it.
        let received: Vec<&String> = trace
            .iter()
            .filter(|h| h.starts_with("Received:"))
            .collect();
        assert_eq!(received.len(), 2, "{tag}: {trace:?}");
        assert!(
            received[0].contains("by hop.example.test"),
            "{tag}: {trace:?}"
        );
        *seen.entry((*tag, to)).or_default() += 1;
    }
    let want: BTreeMap<(&str, String), usize> = sends
        .iter()
        .flat_map(|(tag, rcpts)| rcpts.iter().map(move |r| ((*tag, (*r).to_owned()), 1)))
        .collect();
    assert_eq!(seen, want, "each recipient's copy arrives once");
    assert!(
        server
            .stderr_all()
            .contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", postfix.port)),
        "{}",
        server.stderr_tail()
    );
}

//! SIGKILL under load: every message that got a 250 is delivered after a restart, exactly once;
//! no message is ever delivered twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{
    wait_for_maildir, wait_until, Opts, Server, DELIVERY_DEADLINE, REPLY_DEADLINE,
};
use crate::maildir::{new_dir, tokens_in};
use crate::session::{dot_stuff, SmtpConn};

const CLIENTS: usize = 20;
/// Upper bound of messages per client (the loop is bounded in count)...
const MAX_PER_CLIENT: usize = 40;
/// ...and in time.
const LOAD_DEADLINE: Duration = Duration::from_secs(60);
/// SIGKILL once this many messages were acknowledged: mid-way through the load.
const KILL_AFTER_ACKS: usize = 120;
/// Recovery delivers every acknowledged message within this.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

fn message(token: &str, rcpt: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <load@remote.test>\r\nTo: <{rcpt}>\r\nSubject: crash {token}\r\nX-Token: {token}\r\n\r\n"
    );
    for i in 0..20 {
        m.push_str(&format!("{token} line {i} {}\r\n", "z".repeat(60)));
    }
    dot_stuff(m.as_bytes())
}

/// One client: one connection, transactions in a loop until an error, the bound, or the end.
/// Returns nothing; acknowledged tokens go to `acked` and a tick to `tick` for each.
fn client(addr: SocketAddr, id: usize, acked: Arc<Mutex<Vec<String>>>, tick: mpsc::Sender<()>) {
    let end = Instant::now() + LOAD_DEADLINE;
    let Ok(mut c) = SmtpConn::connect_raw(addr) else {
        return;
    };
    let step = |c: &mut SmtpConn, line: &[u8], want: u16| -> bool {
        c.try_send(line).is_ok() && matches!(c.try_reply(REPLY_DEADLINE), Ok(r) if r.code == want)
    };
    if !matches!(c.try_reply(REPLY_DEADLINE), Ok(r) if r.code == 220)
        || !step(&mut c, b"EHLO load.test\r\n", 250)
    {
        return;
    }
    for m in 0..MAX_PER_CLIENT {
        if Instant::now() >= end {
            return;
        }
        let token = format!("crash-c{id:02}-m{m:02}");
        let rcpt = format!("load{}@example.test", (id + m) % 5);
        let ok = step(&mut c, b"MAIL FROM:<load@remote.test>\r\n", 250)
            && step(&mut c, format!("RCPT TO:<{rcpt}>\r\n").as_bytes(), 250)
            && step(&mut c, b"DATA\r\n", 354);
        if !ok {
            return;
        }
        let mut body = message(&token, &rcpt);
        body.extend_from_slice(b".\r\n");
        if !step(&mut c, &body, 250) {
            return; // killed mid-transaction: this token is unacknowledged
        }
        acked.lock().unwrap().push(token);
        if tick.send(()).is_err() {
            return;
        }
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_message_and_duplicates_none() {
    let mut server = Server::start(Opts::default());
    let addr = server.delivery();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (acked, tx) = (acked.clone(), tx.clone());
            thread::spawn(move || client(addr, id, acked, tx))
        })
        .collect();
    drop(tx);

    // Wait for the load to be under way, then kill without warning.
    let end = Instant::now() + LOAD_DEADLINE;
    let mut acks = 0;
    while acks < KILL_AFTER_ACKS {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(()) => acks += 1,
            Err(_) => break, // all clients finished, or the deadline: kill anyway
        }
    }
    server.sigkill();
    for w in workers {
        w.join().expect("client thread panicked");
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() >= 20,
        "only {} messages acknowledged before the kill; the load never got going",
        acked.len()
    );

    server.restart();
    let all_delivered = wait_until(RECOVERY_DEADLINE, || {
        let have: BTreeSet<String> = tokens_in(&server.maildir).into_iter().collect();
        acked.is_subset(&have).then_some(())
    });
    if all_delivered.is_none() {
        let have: BTreeSet<String> = tokens_in(&server.maildir).into_iter().collect();
        let lost: Vec<&String> = acked.difference(&have).collect();
        panic!(
            "{} of {} acknowledged messages not delivered {RECOVERY_DEADLINE:?} after restart: {lost:?}",
            lost.len(),
            acked.len()
        );
    }
    // A sentinel through the restarted server: once it is delivered, recovery has had its
    // chance to (wrongly) deliver something a second time.
    let (mut c, _) = SmtpConn::connect_ehlo(server.delivery());
    let r = c.send_mail(
        "load@remote.test",
        &["sentinel@example.test"],
        &message("sentinel", "sentinel@example.test"),
    );
    assert_eq!(r.code, 250, "sentinel after restart: {r:?}");
    wait_for_maildir(
        &new_dir(&server.maildir, "sentinel@example.test"),
        1,
        DELIVERY_DEADLINE,
    );

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in tokens_in(&server.maildir) {
        *counts.entry(t).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let unacked_delivered = counts
        .keys()
        .filter(|t| !acked.contains(*t) && *t != "sentinel")
        .count();
    eprintln!(
        "crash: {} acknowledged, all delivered once; {} unacknowledged also delivered",
        acked.len(),
        unacked_delivered
    );
}

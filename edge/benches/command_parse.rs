//! Command parsing: a pipelined stream of envelope commands driven through
//! [`smtp_edge::protocol::Connection`] (the parser is reached the way the driver reaches it),
//! beside a naive byte-at-a-time line splitter with a verb match (the least any parser does).
//! Throughput is in input octets.
//!
//! The corpus is deterministic: after `EHLO`, 2,000 groups of `MAIL FROM`, two `RCPT TO` and
//! `RSET` (no `DATA`, so the spool is never involved). Before timing, both sides must count the
//! same number of commands: the engine answers each with exactly one reply.

// The engine takes the time as an input; any instant will do here.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smtp_edge::protocol::{Connection, EngineConfig, Event, Role};

const GROUPS: usize = 2_000;

fn corpus() -> (Vec<u8>, usize) {
    let mut s = String::from("EHLO client.example.org\r\n");
    for i in 0..GROUPS {
        s.push_str(&format!(
            "MAIL FROM:<sender{i}@example.org> SIZE=10240 BODY=8BITMIME\r\n"
        ));
        s.push_str(&format!("RCPT TO:<user{}@example.test>\r\n", i % 97));
        s.push_str("RCPT TO:<postmaster@example.test>\r\n");
        s.push_str("RSET\r\n");
    }
    (s.into_bytes(), 1 + GROUPS * 4)
}

/// Naive: split lines one byte at a time, upper-case the verb, match it. Returns commands seen.
fn naive(input: &[u8]) -> usize {
    let mut commands = 0;
    let mut line = Vec::with_capacity(512);
    for &b in input {
        line.push(b);
        if b == b'\n' && line.ends_with(b"\r\n") {
            let verb: Vec<u8> = line
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .map(u8::to_ascii_uppercase)
                .collect();
            match verb.as_slice() {
                b"EHLO" | b"HELO" | b"MAIL" | b"RCPT" | b"DATA" | b"RSET" | b"NOOP" | b"QUIT" => {
                    commands += 1
                }
                _ => {}
            }
            line.clear();
        }
    }
    commands
}

/// The engine: feed everything (it consumes what it can), drain events and replies. Returns the
/// number of replies.
fn engine(cfg: &Arc<EngineConfig>, now: Instant, input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut conn = Connection::new(cfg.clone(), now);
    let mut rest = input;
    // Bounded: every round consumes input or the loop ends.
    while !rest.is_empty() {
        let used = conn.handle_input(now, rest);
        while let Some(ev) = conn.poll_event() {
            if let Event::MessageData { data, .. } = ev {
                conn.recycle(data);
            }
        }
        let _ = conn.poll_transmit(out);
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
    let _ = conn.poll_transmit(out);
    // Final lines of replies: "NNN " (multi-line replies use "NNN-").
    out.split(|&b| b == b'\n')
        .filter(|l| l.get(3) == Some(&b' '))
        .count()
}

fn bench(c: &mut Criterion) {
    let (input, commands) = corpus();
    let cfg = Arc::new(EngineConfig::new(
        "mx.example.test",
        Role::Delivery,
        &["example.test"],
    ));
    let now = Instant::now();
    let mut out = Vec::new();
    assert_eq!(naive(&input), commands);
    // Greeting + one reply per command.
    assert_eq!(engine(&cfg, now, &input, &mut out), commands + 1);
    assert!(
        !out.windows(4)
            .any(|w| w.starts_with(b"5") && w[3] == b' ' && w[1].is_ascii_digit()),
        "every command accepted: {}",
        String::from_utf8_lossy(&out[..out.len().min(400)])
    );

    let mut g = c.benchmark_group("command_parse/pipelined");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("naive", |b| b.iter(|| black_box(naive(black_box(&input)))));
    g.bench_function("engine", |b| {
        b.iter(|| {
            out.clear();
            black_box(engine(&cfg, now, black_box(&input), &mut out))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The client's content path: dot-stuffing through [`Client::send_body`] (the public path the
//! relay uses), beside a naive byte-at-a-time stuffer (the oracle) and a plain copy
//! (`extend_from_slice`, the floor). Throughput is in content octets.
//!
//! The corpus is deterministic: 1 MiB of message content in lines of 1..=998 octets, one line
//! in 50 starting with a dot, handed over in 64 KiB pieces as a spool reader would. Before
//! timing, the naive and real outputs are asserted equal.

// Benchmarks start sessions at the real time: any instant works, time is only passed in.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smtp_edge::protocol::address::parse_mailbox;
use smtp_edge::protocol::client::{Client, ClientConfig, Dialect, Event, Message};

/// One spool read's worth.
const PIECE: usize = 64 * 1024;

/// `target` octets of content: lines of printable text, one in 50 starting with a dot.
fn corpus(target: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut out = Vec::with_capacity(target + 1024);
    while out.len() < target {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 998) as usize;
        let start = out.len();
        for i in 0..len {
            out.push(b' ' + ((x >> (i % 48)) as u8 % 94));
        }
        out[start] = if x.is_multiple_of(50) { b'.' } else { b'x' };
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The naive oracle: RFC 5321 §4.5.2 one byte at a time, for CRLF-clean content.
fn naive(content: &[u8], out: &mut Vec<u8>) {
    let mut line_start = true;
    for &b in content {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// A client that has just been asked for the content of a message.
fn client_in_body() -> Client {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::new(Dialect::Smtp, "relay.example.test"), now);
    c.send_message(
        now,
        Message {
            from: Some(parse_mailbox("a@example.test").unwrap()),
            to: vec![parse_mailbox("b@example.test").unwrap()],
            size: None,
            eight_bit: false,
            smtputf8: false,
        },
    );
    c.handle_input(now, b"220 mx\r\n250 mx\r\n250 Ok\r\n250 Ok\r\n354 Go\r\n");
    while let Some(ev) = c.poll_event() {
        if matches!(ev, Event::SendBody(_)) {
            let _ = c.poll_transmit(&mut Vec::new());
            return c;
        }
    }
    panic!("no SendBody");
}

/// The stuffed wire form of `content` through the client, ended by the terminator.
fn through_client(content: &[u8], out: &mut Vec<u8>) {
    let now = Instant::now();
    let mut c = client_in_body();
    for piece in content.chunks(PIECE) {
        c.send_body(now, piece);
        let _ = c.poll_transmit(out);
    }
    c.end_body(now);
    let _ = c.poll_transmit(out);
}

fn bench(c: &mut Criterion) {
    let content = corpus(1 << 20);
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    through_client(&content, &mut fast);
    naive(&content, &mut slow);
    assert_eq!(fast, slow, "client and naive stuffing disagree");

    let mut g = c.benchmark_group("dot_stuff");
    g.throughput(Throughput::Bytes(content.len() as u64));
    let mut out = Vec::with_capacity(2 << 20);
    g.bench_function("copy", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&content));
        })
    });
    g.bench_function("naive", |b| {
        b.iter(|| {
            out.clear();
            naive(black_box(&content), &mut out);
        })
    });
    g.bench_function("client", |b| {
        b.iter(|| {
            out.clear();
            through_client(black_box(&content), &mut out);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

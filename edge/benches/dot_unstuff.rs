//! The DATA path: end-of-data search and dot-unstuffing with [`DataReceiver::feed`], beside a
//! naive byte-at-a-time unstuffer (the oracle) and a plain copy (`extend_from_slice`, the floor:
//! what moving the bytes costs with no scanning at all). Throughput is in input octets.
//!
//! The corpus is deterministic: 1 MiB of message text in lines of 1..=998 octets, one line in
//! 50 dot-stuffed, ended by `CRLF . CRLF`, fed in 64 KiB chunks as the receive buffers deliver it.
//! Before timing, the naive and real outputs are asserted equal.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smtp_edge::protocol::{DataReceiver, DEFAULT_MAX_LINE_LENGTH};

/// One receive buffer's worth.
const CHUNK: usize = 64 * 1024;
const LIMIT: u64 = 1 << 30;

/// `target` octets of wire-form body: lines of printable text, some dot-stuffed, then `.` CRLF.
/// `max_line` bounds the line length (CRLF excluded).
fn corpus(target: usize, max_line: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(target + 1024);
    while out.len() < target {
        let r = next();
        let len = 1 + (r % max_line as u64) as usize;
        if r % 50 == 0 {
            out.extend_from_slice(b"..");
        }
        for i in 0..len {
            out.push(b' ' + ((r >> (i % 48)) as u8 % 94));
        }
        // Never start a line with a lone '.' by chance: the first byte is a letter.
        let start = out.len() - len;
        if out[start] == b'.' {
            out[start] = b'x';
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The naive oracle: one byte at a time, the RFC 5321 §4.5.2 rule written out. Returns the
/// content and the octets consumed (through the terminator). Assumes well-formed input (no bare
/// CR or LF), which the corpus guarantees.
fn naive(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut at_line_start = true;
    let mut i = 0;
    while i < input.len() {
        if at_line_start && input[i] == b'.' {
            if input.get(i + 1) == Some(&b'\r') && input.get(i + 2) == Some(&b'\n') {
                return i + 3;
            }
            i += 1; // the stuffed dot
        }
        let b = input[i];
        out.push(b);
        at_line_start = b == b'\n' && i > 0 && input[i - 1] == b'\r';
        i += 1;
    }
    i
}

fn real(input: &[u8], out: &mut Vec<u8>) -> usize {
    let mut rx = DataReceiver::new(LIMIT, DEFAULT_MAX_LINE_LENGTH);
    let mut used = 0;
    for chunk in input.chunks(CHUNK) {
        let (n, end) = rx.feed(chunk, out);
        used += n;
        if end {
            break;
        }
    }
    used
}

fn memcpy(input: &[u8], out: &mut Vec<u8>) -> usize {
    for chunk in input.chunks(CHUNK) {
        out.extend_from_slice(chunk);
    }
    input.len()
}

fn bench(c: &mut Criterion) {
    for (name, max_line) in [("text_76", 76), ("lines_1_998", 998)] {
        let body = corpus(1 << 20, max_line);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let na = naive(&body, &mut a);
        let nb = real(&body, &mut b);
        assert_eq!(na, body.len(), "naive must consume through the terminator");
        assert_eq!(nb, na, "feed and naive disagree on the end of data");
        assert!(a == b, "feed and naive disagree on the content");
        assert!(a.len() < body.len(), "the corpus has stuffed dots");

        let mut g = c.benchmark_group(format!("dot_unstuff/{name}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        let mut out = Vec::with_capacity(body.len());
        g.bench_function("naive", |bn| {
            bn.iter(|| {
                out.clear();
                black_box(naive(black_box(&body), &mut out))
            })
        });
        g.bench_function("feed", |bn| {
            bn.iter(|| {
                out.clear();
                black_box(real(black_box(&body), &mut out))
            })
        });
        g.bench_function("memcpy", |bn| {
            bn.iter(|| {
                out.clear();
                black_box(memcpy(black_box(&body), &mut out))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

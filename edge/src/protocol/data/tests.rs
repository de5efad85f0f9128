#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::scan::{Kernel, BLOCK};
use super::*;
use crate::protocol::DEFAULT_MAX_LINE_LENGTH;
use proptest::prelude::*;

/// The line limit most tests use: the RFC's floor, so that lines around it are cheap to build.
const LINE: usize = MIN_TEXT_LINE;

/// Everything a run of [`DataReceiver::feed_with`] shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// Content appended, even for a faulted body (where it is partial by design).
    out: Vec<u8>,
    consumed: usize,
    done: bool,
    fault: Option<DataFault>,
    size: u64,
}

impl Outcome {
    /// (content, consumed, done, fault), content cleared if the body is refused (it is
    /// discarded whole, so its prefix is not compared with the oracle).
    fn verdict(&self) -> (Vec<u8>, usize, bool, Option<DataFault>) {
        let out = if self.fault.is_some() {
            Vec::new()
        } else {
            self.out.clone()
        };
        (out, self.consumed, self.done, self.fault)
    }
}

/// Feeds `chunks` in order with `kernel`, stopping at the end of data.
fn run_with(kernel: Kernel, limit: u64, chunks: &[&[u8]]) -> Outcome {
    run_with_lines(kernel, limit, LINE, chunks)
}

/// [`run_with`] with a line limit of `max_line`.
fn run_with_lines(kernel: Kernel, limit: u64, max_line: usize, chunks: &[&[u8]]) -> Outcome {
    let mut rx = DataReceiver::new(limit, max_line);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    for chunk in chunks {
        let (n, end) = rx.feed_with(kernel, chunk, &mut out);
        consumed += n;
        if end {
            done = true;
            break;
        }
    }
    Outcome {
        out,
        consumed,
        done,
        fault: rx.fault(),
        size: rx.size(),
    }
}

/// Feeds `chunks` with the kernel `feed` picks; returns (content, consumed, done, fault).
fn run(chunks: &[&[u8]]) -> (Vec<u8>, usize, bool, Option<DataFault>) {
    run_with(Kernel::detect(), u64::MAX, chunks).verdict()
}

/// Every kernel gives the same outcome as the byte-level machine alone, partial content and
/// size included: the block scanner changes speed, never behaviour.
fn assert_kernels_agree(limit: u64, chunks: &[&[u8]]) -> Outcome {
    let reference = run_with(Kernel::Scalar, limit, chunks);
    for kernel in Kernel::all() {
        assert_eq!(run_with(kernel, limit, chunks), reference, "{kernel:?}");
    }
    reference
}

/// The oracle's verdict on `input` as a whole: (content, consumed, done, fault).
fn oracle(input: &[u8], limit: u64) -> (Vec<u8>, usize, bool, Option<DataFault>) {
    match naive::unstuff(input, limit, LINE) {
        Some((out, n, fault)) => (
            if fault.is_some() { Vec::new() } else { out },
            n,
            true,
            fault,
        ),
        None => (Vec::new(), input.len(), false, None),
    }
}

/// Asserts what every kernel makes of `input`, split as `cuts` say, against the oracle. An
/// unfinished body is compared on its fault only: the oracle judges a CR at the very end bare,
/// while the receiver waits for the next octet.
fn assert_matches_oracle(input: &[u8], cuts: &[usize], limit: u64) {
    let mut chunks = Vec::new();
    let mut at = 0;
    for &cut in cuts {
        let cut = cut.clamp(at, input.len());
        chunks.push(&input[at..cut]);
        at = cut;
    }
    chunks.push(&input[at..]);
    let fast = assert_kernels_agree(limit, &chunks).verdict();
    let (out, n, done, fault) = oracle(input, limit);
    assert_eq!(fast.2, done, "done, cuts {cuts:?}");
    if done {
        assert_eq!(fast, (out, n, done, fault), "cuts {cuts:?}");
    } else {
        assert_eq!(fast.1, input.len());
    }
}

/// `input` behind `pad` octets of text in its first line, after a few clean lines: every octet
/// of it moves across block and vector boundaries, after blocks the scanner skips.
fn shifted(input: &[u8], pad: usize) -> Vec<u8> {
    let mut shifted = Vec::with_capacity(3 * 62 + pad + input.len());
    for line in 0..3u8 {
        shifted.extend((0..60u8).map(|k| b'A' + (k + line) % 26));
        shifted.extend_from_slice(b"\r\n");
    }
    shifted.resize(shifted.len() + pad, b'p');
    shifted.extend_from_slice(input);
    shifted
}

/// Every split of `input`, and byte by byte, gives the same result as feeding it whole, with
/// every kernel; and shifted across two blocks, it matches the oracle.
fn assert_split_invariant(input: &[u8]) -> (Vec<u8>, usize, bool, Option<DataFault>) {
    let whole = assert_kernels_agree(u64::MAX, &[input]);
    for i in 0..=input.len() {
        assert_eq!(
            assert_kernels_agree(u64::MAX, &[&input[..i], &input[i..]]).verdict(),
            whole.verdict(),
            "split at {i}"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        assert_kernels_agree(u64::MAX, &bytes).verdict(),
        whole.verdict(),
        "byte by byte"
    );
    for pad in 0..=2 * BLOCK {
        let input = shifted(input, pad);
        let cuts: Vec<usize> = (0..input.len()).step_by(29).collect();
        assert_matches_oracle(&input, &[], u64::MAX);
        assert_matches_oracle(&input, &cuts, u64::MAX);
    }
    whole.verdict()
}

#[test]
fn ends_at_crlf_dot_crlf_and_leaves_the_rest() {
    let input = b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let (out, n, done, fault) = assert_split_invariant(input);
    assert!(done);
    assert_eq!(fault, None);
    assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
    assert_eq!(&input[n..], b"QUIT\r\n");
}

#[test]
fn empty_body() {
    let (out, n, done, _) = assert_split_invariant(b".\r\n");
    assert!(done);
    assert_eq!((out.len(), n), (0, 3));
}

#[test]
fn dot_unstuffing_removes_exactly_one_dot() {
    // RFC 5321 §4.5.2: the receiver deletes the first character of a line that is a period.
    let (out, _, done, fault) = assert_split_invariant(b"..\r\n...x\r\n.y\r\nz.\r\n.\r\n");
    assert!(done && fault.is_none());
    assert_eq!(out, b".\r\n..x\r\ny\r\nz.\r\n");
}

#[test]
fn smuggling_terminators_do_not_end_the_body() {
    // CVE-2023-51764/5/6: each of these is some other server's end of data, never ours.
    for fake in [
        &b"a\n.\nMAIL FROM:<x@y>\r\n"[..],
        b"a\r.\rMAIL FROM:<x@y>\r\n",
        b"a\r\n.\nMAIL FROM:<x@y>\r\n",
        b"a\n.\r\nMAIL FROM:<x@y>\r\n",
        b"a\r\n.\rMAIL FROM:<x@y>\r\n",
    ] {
        let (_, _, done, fault) = assert_split_invariant(fake);
        assert!(!done, "{fake:?} ended the body");
        assert_eq!(fault, Some(DataFault::BareNewline), "{fake:?}");
        let mut full = fake.to_vec();
        full.extend_from_slice(b".\r\n");
        let (_, n, done, fault) = assert_split_invariant(&full);
        assert!(
            done && n == full.len(),
            "{fake:?}: one message, ending at the real CRLF.CRLF"
        );
        assert_eq!(fault, Some(DataFault::BareNewline));
    }
}

#[test]
fn smuggling_bare_lf_dot() {
    let (_, _, done, fault) = assert_split_invariant(b"x\r\n\n.\n\r\n.\r\n");
    assert!(done);
    assert_eq!(fault, Some(DataFault::BareNewline));
}

#[test]
fn smuggling_bare_newlines_in_long_clean_text() {
    // A bare CR or LF alone in otherwise clean text, at every offset of the blocks around it:
    // the scanner must hand each one to the byte-level machine, wherever it falls.
    let clean: Vec<u8> = (0..4 * BLOCK)
        .flat_map(|k| if k % 40 == 39 { *b"\r\n" } else { *b"ab" })
        .collect();
    for bad in [&b"\n"[..], b"\r", b"\n.\n", b"\r.\r", b"\n.\r\n"] {
        for at in (0..clean.len()).filter(|&at| clean[at] == b'a') {
            let mut body = clean.clone();
            body.splice(at..at, bad.iter().copied());
            body.extend_from_slice(b"\r\n.\r\n");
            let whole = assert_kernels_agree(u64::MAX, &[&body]);
            assert!(
                whole.done && whole.consumed == body.len(),
                "{bad:?} at {at}"
            );
            assert_eq!(whole.fault, Some(DataFault::BareNewline), "{bad:?} at {at}");
        }
    }
}

#[test]
fn bare_cr_inside_a_line() {
    let (_, _, done, fault) = assert_split_invariant(b"a\rb\r\n.\r\n");
    assert!(done);
    assert_eq!(fault, Some(DataFault::BareNewline));
}

#[test]
fn a_stuffed_line_is_measured_without_its_dot() {
    // A 1000-octet text line (CRLF included) that starts with a dot is 1001 octets on the wire.
    let ok = [b".".to_vec(), vec![b'.'; LINE - 2], b"\r\n.\r\n".to_vec()].concat();
    assert_eq!(assert_split_invariant(&ok).3, None);
    let long = [b".".to_vec(), vec![b'.'; LINE - 1], b"\r\n.\r\n".to_vec()].concat();
    assert_eq!(
        assert_split_invariant(&long).3,
        Some(DataFault::LineTooLong)
    );
}

#[test]
fn line_limit_counts_crlf() {
    let ok = [vec![b'a'; LINE - 2], b"\r\n.\r\n".to_vec()].concat();
    assert_eq!(assert_split_invariant(&ok).3, None);
    let long = [vec![b'a'; LINE - 1], b"\r\n.\r\n".to_vec()].concat();
    assert_eq!(
        assert_split_invariant(&long).3,
        Some(DataFault::LineTooLong)
    );
}

#[test]
fn line_limit_is_exact_wherever_the_line_falls() {
    // Lines of 999..=1002 octets (CRLF included) between short ones, starting at every offset
    // of a block, whole and split inside the long line.
    for text in LINE - 3..=LINE {
        for pad in 0..=BLOCK {
            let mut body = vec![b'q'; pad];
            body.extend_from_slice(b"\r\nshort\r\n");
            body.resize(body.len() + text, b'l');
            body.extend_from_slice(b"\r\nshort\r\n.\r\n");
            let expect = (text + 2 > LINE).then_some(DataFault::LineTooLong);
            for cuts in [&[][..], &[pad + 500], &[pad + 100, pad + 900]] {
                let got = assert_kernels_agree(u64::MAX, &cut(&body, cuts));
                assert_eq!(got.fault, expect, "line {text}, pad {pad}, cuts {cuts:?}");
                assert!(got.done && got.consumed == body.len());
            }
        }
    }
}

#[test]
fn long_lines_up_to_the_limit_are_kept_byte_exact() {
    // Real mail carries lines far over RFC 5321's 1000: one 64 KiB line with the default limit,
    // dot-stuffed and not, at every alignment of the block scanner.
    let text = DEFAULT_MAX_LINE_LENGTH - 2;
    for stuffed in [false, true] {
        for pad in [0, 1, BLOCK - 1, BLOCK] {
            let mut content = vec![b'q'; pad];
            content.extend_from_slice(b"\r\n");
            let start = content.len();
            content.resize(start + text, b'l');
            if stuffed {
                content[start] = b'.';
            }
            content.extend_from_slice(b"\r\nend\r\n");
            let mut wire = content.clone();
            if stuffed {
                wire.insert(start, b'.');
            }
            wire.extend_from_slice(b".\r\n");
            for kernel in Kernel::all() {
                for cuts in [&[][..], &[start + 7000], &[start + 1, start + 40_000]] {
                    let chunks = cut(&wire, cuts);
                    let got = run_with_lines(kernel, u64::MAX, DEFAULT_MAX_LINE_LENGTH, &chunks);
                    assert_eq!(got.fault, None, "{kernel:?} pad {pad} stuffed {stuffed}");
                    assert!(got.done && got.consumed == wire.len());
                    assert!(got.out == content, "{kernel:?} pad {pad}: content differs");
                }
            }
            // One octet more is over the limit, and the body still ends where it should.
            let mut over = wire.clone();
            over.insert(start + 10, b'l');
            let got = run_with_lines(
                Kernel::detect(),
                u64::MAX,
                DEFAULT_MAX_LINE_LENGTH,
                &[&over],
            );
            assert_eq!(got.fault, Some(DataFault::LineTooLong), "pad {pad}");
            assert!(got.done && got.consumed == over.len());
        }
    }
}

#[test]
fn nul_refuses_the_body_whole_wherever_it_falls() {
    // `\r\n\0.\r\n` must not be stored: a next hop that strips NULs would see an end of data.
    let body = b"a\r\n\0.\r\nb\r\n.\r\n";
    let (_, n, done, fault) = assert_split_invariant(body);
    assert!(
        done && n == body.len(),
        "one body, ending at the real CRLF.CRLF"
    );
    assert_eq!(fault, Some(DataFault::Nul));
    for body in [
        &b"\0\r\n.\r\n"[..],
        b"a\0b\r\n.\r\n",
        b".\0\r\n.\r\n",
        b"a\r\0\r\n.\r\n",
    ] {
        let (_, _, done, fault) = assert_split_invariant(body);
        assert!(done, "{body:?}");
        assert!(fault >= Some(DataFault::Nul), "{body:?}: {fault:?}");
    }
    // A lone NUL at every offset of long clean text: the scanner hands each to the machine.
    let clean: Vec<u8> = (0..4 * BLOCK)
        .flat_map(|k| if k % 40 == 39 { *b"\r\n" } else { *b"ab" })
        .collect();
    for at in (0..clean.len()).filter(|&at| clean[at] == b'a') {
        let mut body = clean.clone();
        body.insert(at, 0);
        body.extend_from_slice(b"\r\n.\r\n");
        let whole = assert_kernels_agree(u64::MAX, &[&body]);
        assert!(whole.done && whole.consumed == body.len(), "at {at}");
        assert_eq!(whole.fault, Some(DataFault::Nul), "at {at}");
    }
}

fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut at = 0;
    for &c in cuts {
        chunks.push(&input[at..c]);
        at = c;
    }
    chunks.push(&input[at..]);
    chunks
}

#[test]
fn size_limit() {
    let mut rx = DataReceiver::new(4, LINE);
    let mut out = Vec::new();
    let (_, done) = rx.feed(b"abc\r\ndef\r\n.\r\n", &mut out);
    assert!(done);
    assert_eq!(rx.fault(), Some(DataFault::TooLarge));
    let mut rx = DataReceiver::new(5, LINE);
    let (_, done) = rx.feed(b"abc\r\n.\r\n", &mut Vec::new());
    assert!(done && rx.fault().is_none());
}

#[test]
fn size_limit_in_long_clean_text() {
    let body = shifted(b"x\r\n.\r\n", 0);
    let content = (body.len() - 3) as u64;
    for limit in [content - 1, content, content + 1] {
        let got = assert_kernels_agree(limit, &[&body]);
        let expect = (content > limit).then_some(DataFault::TooLarge);
        assert_eq!(got.fault, expect, "limit {limit}");
        assert_eq!(oracle(&body, limit).3, expect);
    }
}

/// Short bodies over an alphabet that makes terminators and stuffing likely.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'\r'),
            Just(b'\n'),
            Just(b'.'),
            Just(b'a'),
            Just(b' '),
            Just(0)
        ],
        0..200,
    )
}

/// Bodies of up to a few KB: mostly clean lines, so the scanner skips blocks, with bare CRs
/// and LFs, stuffed dots, terminators and lines near the length limit mixed in.
fn long_body() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        12 => Just(b"\r\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\0".to_vec()),
        3 => Just(b".".to_vec()),
        3 => Just(b"\r\n.".to_vec()),
        16 => (1..80usize).prop_map(|n| vec![b'a'; n]),
        1 => (990..1010usize).prop_map(|n| vec![b'l'; n]),
    ];
    prop::collection::vec(token, 0..120).prop_map(|tokens| tokens.concat())
}

proptest! {
    #[test]
    fn matches_naive_oracle(input in body(), split in any::<prop::sample::Index>()) {
        let at = split.index(input.len() + 1);
        let fast = run(&[&input[..at], &input[at..]]);
        match naive::unstuff(&input, u64::MAX, LINE) {
            Some((out, n, fault)) => {
                prop_assert!(fast.2);
                prop_assert_eq!(fast.1, n);
                prop_assert_eq!(fast.3, fault);
                if fault.is_none() {
                    prop_assert_eq!(fast.0, out);
                }
            }
            None => prop_assert!(!fast.2),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn long_bodies_match_naive_oracle_at_every_alignment(
        body in long_body(),
        end in any::<bool>(),
        pad in 0..=BLOCK,
        lead in 0..32usize,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let mut input = shifted(&body, pad);
        if end {
            input.extend_from_slice(b"\r\n.\r\n");
        }
        // `lead` octets before the slice move its address across alignments too.
        let mut backing = vec![b'\n'; lead];
        backing.extend_from_slice(&input);
        backing.extend_from_slice(b"\r\n.\r\n");
        let input = &backing[lead..lead + input.len()];
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        assert_matches_oracle(input, &cuts, u64::MAX);
    }
}

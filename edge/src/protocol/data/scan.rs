//! The block scanner: finds where a `DATA` body stops being plain text.
//!
//! A block of [`BLOCK`] octets is *clean* when the byte-level machine in [`super::DataReceiver`]
//! would pass over it making no decision: every LF has a CR before it, every CR has a LF after it,
//! no line starts with a dot, and no octet is NUL. With `prev` the octet before each position and
//! `cur` the octet at it, a block is clean iff, at every position,
//!
//! ```text
//! (cur == LF) == (prev == CR)   &&   !(cur == '.' && prev == LF)   &&   cur != NUL
//! ```
//!
//! The naive equivalent is the byte loop in the tests (`naive_classify`). A CR that ends a block
//! is checked against the next block's first octet, or left to the machine. Each kernel reads the
//! block as a 65-octet window (the octet before, then the block) and also returns the LF
//! positions, from which [`Kernel::skip`] checks line lengths exactly without looking at octets again.

/// Octets per block: one `u64` of mask bits.
pub(super) const BLOCK: usize = 64;

/// A block and the octet before it.
type Window = [u8; BLOCK + 1];

/// What a kernel learns about one block: bit `k` of each mask stands for octet `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Class {
    /// Octets where the byte-level machine must decide something; zero iff the block is clean.
    pub dirty: u64,
    /// LF octets.
    pub lf: u64,
}

/// The current line, as the byte-level machine tracks it: at chunk position `q`, the line holds
/// `carry + (q - from)` octets.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line {
    /// Where the line began in this chunk (or 0, if it began in an earlier one).
    pub from: usize,
    /// Octets of the line seen in earlier chunks (saturating).
    pub carry: usize,
}

/// How far [`skip`] got.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    /// The end of the clean blocks: `start <= end <= input.len()`.
    pub end: usize,
    /// A line that ended among them was longer than the limit given to [`Kernel::skip`].
    pub too_long: bool,
}

/// Which instructions classify blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// 32-octet AVX2 compares, if the CPU has them (checked at each use); else [`Kernel::Sse2`].
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// 16-octet SSE2 compares, part of the x86_64 baseline.
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// Portable: eight octets per `u64`. On x86_64 only the tests pick it, but it is built
    /// everywhere so that it cannot rot.
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    Swar,
    /// No block scan at all: the byte-level machine does everything (the tests' reference).
    #[cfg(test)]
    Scalar,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    #[inline]
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                Kernel::Avx2
            } else {
                Kernel::Sse2
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Kernel::Swar
        }
    }

    /// Every kernel that runs here, for the tests.
    #[cfg(test)]
    pub(super) fn all() -> Vec<Self> {
        let mut all = vec![Kernel::Scalar, Kernel::Swar];
        #[cfg(target_arch = "x86_64")]
        {
            all.push(Kernel::Sse2);
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Kernel::Avx2);
            }
        }
        all
    }

    /// Skips clean octets from `start`, which must be at least 1 (the octet before is read):
    /// whole clean blocks, then the clean prefix of the next block, stopping at its first octet
    /// that needs a decision, or before a last block that is not whole. Lines ending among them
    /// are checked against `max_line` (CRLF included; at least [`BLOCK`]) and `line` is moved
    /// past them, exactly as the byte-level machine would do.
    #[inline]
    pub(super) fn skip(self, input: &[u8], start: usize, line: &mut Line, max_line: usize) -> Run {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if std::arch::is_x86_feature_detected!("avx2") => {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { x86::skip_avx2(input, start, line, max_line) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Sse2 => {
                // SAFETY: SSE2 is part of the x86_64 baseline; every x86_64 CPU has it.
                unsafe { x86::skip_sse2(input, start, line, max_line) }
            }
            Kernel::Swar => skip_with(Swar::classify, input, start, line, max_line),
            #[cfg(test)]
            Kernel::Scalar => Run {
                end: start,
                too_long: false,
            },
        }
    }
}

/// The scanning loop shared by the kernels, with `classify` inlined into each.
#[inline(always)]
fn skip_with(
    classify: impl Fn(&Window) -> Class,
    input: &[u8],
    start: usize,
    line: &mut Line,
    max_line: usize,
) -> Run {
    let mut p = start;
    let mut too_long = false;
    let Line {
        mut from,
        mut carry,
    } = *line;
    while let Some(window) = p
        .checked_sub(1)
        .and_then(|before| input.get(before..p + BLOCK))
        .and_then(|w| <&Window>::try_from(w).ok())
    {
        let class = classify(window);
        // The clean prefix: all of the block (64 when `dirty` is 0), or up to the first dirty
        // octet; `below` has a bit for each of its octets. Note that `p` moves by a constant
        // on clean blocks, so the next load never waits for this block's compares.
        let below = class.dirty.wrapping_sub(1) & !class.dirty;
        let lf = class.lf & below;
        if lf != 0 {
            // Only the first line ending here can be long: the others fit in the block (and
            // `max_line >= BLOCK`). Its length is at most the distance to the block's end;
            // check exactly past that.
            let end = p + BLOCK;
            if carry.saturating_add(end - from) > max_line {
                let first_lf = p + lf.trailing_zeros() as usize;
                too_long |= carry.saturating_add(first_lf + 1 - from) > max_line;
            }
            from = end - lf.leading_zeros() as usize;
            carry = 0;
        }
        if class.dirty != 0 {
            p += class.dirty.trailing_zeros() as usize;
            break;
        }
        p += BLOCK;
    }
    *line = Line { from, carry };
    Run { end: p, too_long }
}

/// Portable kernel: SIMD within a register, eight octets per `u64`.
struct Swar;

impl Swar {
    /// Each octet's high bit, and nothing else.
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Each octet's low seven bits.
    const LOW7: u64 = !Self::HIGH;
    /// One in each octet; times `b`, `b` in each octet.
    const ONES: u64 = 0x0101_0101_0101_0101;
    /// Gathers the high bits of the eight octets into the top octet, octet `k` to bit `56 + k`.
    const GATHER: u64 = 0x0102_0408_1020_4080;

    /// The high bit of each octet of `word` that equals `b` (exact: no false positives).
    #[inline(always)]
    fn eq(word: u64, b: u8) -> u64 {
        let x = word ^ (Self::ONES * u64::from(b));
        // An octet's high bit survives iff it is zero: (x & 0x7f) + 0x7f sets bit 7 iff the low
        // bits are not all zero, without carrying into the next octet, and `| x` adds bit 7.
        !(((x & Self::LOW7) + Self::LOW7) | x) & Self::HIGH
    }

    /// One bit per octet of a word of high bits, octet `k` to bit `k`.
    #[inline(always)]
    fn movemask(high_bits: u64) -> u64 {
        ((high_bits >> 7).wrapping_mul(Self::GATHER)) >> 56
    }

    #[inline(always)]
    fn classify(window: &Window) -> Class {
        let (prev, cur) = (window.split_last().map(|(_, w)| w), window.split_first());
        let (Some(prev), Some((_, cur))) = (prev, cur) else {
            return Class { dirty: 1, lf: 0 };
        };
        let mut class = Class { dirty: 0, lf: 0 };
        for (k, (prev, cur)) in prev.chunks_exact(8).zip(cur.chunks_exact(8)).enumerate() {
            let prev = u64::from_le_bytes(prev.try_into().unwrap_or_default());
            let cur = u64::from_le_bytes(cur.try_into().unwrap_or_default());
            let is_lf = Self::eq(cur, b'\n');
            let bare = is_lf ^ Self::eq(prev, b'\r');
            let stuffed = Self::eq(cur, b'.') & Self::eq(prev, b'\n');
            let nul = Self::eq(cur, 0);
            class.dirty |= Self::movemask(bare | stuffed | nul) << (8 * k);
            class.lf |= Self::movemask(is_lf) << (8 * k);
        }
        class
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86_64 kernels: the same compares on 16 (SSE2) or 32 (AVX2) octets at a time.

    use std::arch::x86_64::*;

    use super::{skip_with, Class, Line, Run, Window, BLOCK};

    /// [`super::Kernel::skip`] with SSE2.
    ///
    /// # Safety
    ///
    /// The CPU must support SSE2, as every x86_64 CPU does.
    #[target_feature(enable = "sse2")]
    pub(super) unsafe fn skip_sse2(
        input: &[u8],
        start: usize,
        line: &mut Line,
        max_line: usize,
    ) -> Run {
        skip_with(|w| classify_sse2(w), input, start, line, max_line)
    }

    /// [`super::Kernel::skip`] with AVX2.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn skip_avx2(
        input: &[u8],
        start: usize,
        line: &mut Line,
        max_line: usize,
    ) -> Run {
        skip_with(|w| classify_avx2(w), input, start, line, max_line)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn classify_sse2(window: &Window) -> Class {
        let w = window.as_ptr();
        let (cr, lf, dot, nul) = (
            _mm_set1_epi8(b'\r' as i8),
            _mm_set1_epi8(b'\n' as i8),
            _mm_set1_epi8(b'.' as i8),
            _mm_setzero_si128(),
        );
        let mut class = Class { dirty: 0, lf: 0 };
        for k in 0..BLOCK / 16 {
            // SAFETY: both 16-octet loads lie in the 65-octet window: `prev` at offset 16k
            // and `cur` at 16k + 1, for k < 4; `loadu` has no alignment requirement.
            let (prev, cur) = unsafe {
                (
                    _mm_loadu_si128(w.add(16 * k).cast()),
                    _mm_loadu_si128(w.add(16 * k + 1).cast()),
                )
            };
            let is_lf = _mm_cmpeq_epi8(cur, lf);
            let bare = _mm_xor_si128(is_lf, _mm_cmpeq_epi8(prev, cr));
            let stuffed = _mm_and_si128(_mm_cmpeq_epi8(cur, dot), _mm_cmpeq_epi8(prev, lf));
            let bad = _mm_or_si128(bare, _mm_cmpeq_epi8(cur, nul));
            let dirty = _mm_movemask_epi8(_mm_or_si128(bad, stuffed));
            class.dirty |= u64::from(dirty as u16) << (16 * k);
            class.lf |= u64::from(_mm_movemask_epi8(is_lf) as u16) << (16 * k);
        }
        class
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn classify_avx2(window: &Window) -> Class {
        let w = window.as_ptr();
        let (cr, lf, dot, nul) = (
            _mm256_set1_epi8(b'\r' as i8),
            _mm256_set1_epi8(b'\n' as i8),
            _mm256_set1_epi8(b'.' as i8),
            _mm256_setzero_si256(),
        );
        let mut class = Class { dirty: 0, lf: 0 };
        for k in 0..BLOCK / 32 {
            // SAFETY: both 32-octet loads lie in the 65-octet window: `prev` at offset 32k
            // and `cur` at 32k + 1, for k < 2; `loadu` has no alignment requirement.
            let (prev, cur) = unsafe {
                (
                    _mm256_loadu_si256(w.add(32 * k).cast()),
                    _mm256_loadu_si256(w.add(32 * k + 1).cast()),
                )
            };
            let is_lf = _mm256_cmpeq_epi8(cur, lf);
            let bare = _mm256_xor_si256(is_lf, _mm256_cmpeq_epi8(prev, cr));
            let stuffed =
                _mm256_and_si256(_mm256_cmpeq_epi8(cur, dot), _mm256_cmpeq_epi8(prev, lf));
            let bad = _mm256_or_si256(bare, _mm256_cmpeq_epi8(cur, nul));
            let dirty = _mm256_movemask_epi8(_mm256_or_si256(bad, stuffed));
            class.dirty |= u64::from(dirty as u32) << (32 * k);
            class.lf |= u64::from(_mm256_movemask_epi8(is_lf) as u32) << (32 * k);
        }
        class
    }

    #[cfg(test)]
    pub(super) fn sse2(window: &Window) -> Class {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { classify_sse2(window) }
    }

    #[cfg(test)]
    pub(super) fn avx2(window: &Window) -> Option<Class> {
        // SAFETY: the CPU has AVX2, checked first.
        std::arch::is_x86_feature_detected!("avx2").then(|| unsafe { classify_avx2(window) })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive equivalent of every kernel's classification, one octet at a time.
    fn naive_classify(window: &Window) -> Class {
        let mut class = Class { dirty: 0, lf: 0 };
        for k in 0..BLOCK {
            let (prev, cur) = (window[k], window[k + 1]);
            if (cur == b'\n') != (prev == b'\r') || (cur == b'.' && prev == b'\n') || cur == 0 {
                class.dirty |= 1 << k;
            }
            if cur == b'\n' {
                class.lf |= 1 << k;
            }
        }
        class
    }

    fn kernels(window: &Window) -> Vec<(&'static str, Class)> {
        let mut all = vec![("swar", Swar::classify(window))];
        #[cfg(target_arch = "x86_64")]
        {
            all.push(("sse2", x86::sse2(window)));
            if let Some(class) = x86::avx2(window) {
                all.push(("avx2", class));
            }
        }
        all
    }

    #[test]
    fn swar_movemask_gathers_every_pattern() {
        for bits in 0..=255u64 {
            let mut high = 0;
            for k in 0..8 {
                if bits >> k & 1 == 1 {
                    high |= 0x80 << (8 * k);
                }
            }
            assert_eq!(Swar::movemask(high), bits, "{bits:08b}");
        }
    }

    #[test]
    fn swar_eq_is_exact() {
        for a in 0..=255u8 {
            for b in [b'\r', b'\n', b'.', 0, 0x80, 0xff] {
                let word = u64::from_le_bytes([a, b, a ^ 0x80, 1, a, 0xff, 0x7f, a]);
                let expect = word.to_le_bytes().map(|x| if x == b { 0x80 } else { 0 });
                assert_eq!(
                    Swar::eq(word, b),
                    u64::from_le_bytes(expect),
                    "{a:#x} vs {b:#x}"
                );
            }
        }
    }

    /// Windows over an alphabet dense in CR, LF and dots, so that clean and dirty both occur.
    fn window() -> impl Strategy<Value = Window> {
        prop::collection::vec(
            prop_oneof![
                4 => Just(&b"\r\n"[..]),
                1 => Just(&b"\r"[..]),
                1 => Just(&b"\n"[..]),
                2 => Just(&b"."[..]),
                1 => Just(&b"\r\n."[..]),
                6 => Just(&b"ab"[..]),
                1 => Just(&[0x80u8, 0xff, 0x0d ^ 0x80][..]),
                1 => Just(&[0u8][..]),
                1 => Just(&[0x01u8, 0x00, 0x80][..]),
            ],
            40..80,
        )
        .prop_map(|parts| {
            let flat = parts.concat();
            let mut window = [b'x'; BLOCK + 1];
            let n = flat.len().min(BLOCK + 1);
            window[..n].copy_from_slice(&flat[..n]);
            window
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn every_kernel_classifies_like_the_naive_loop(window in window()) {
            let expect = naive_classify(&window);
            for (name, class) in kernels(&window) {
                prop_assert_eq!(class, expect, "{}", name);
            }
        }
    }

    #[test]
    fn clean_text_is_clean() {
        let mut window = [b'a'; BLOCK + 1];
        window[0] = b'\n';
        window[10] = b'\r';
        window[11] = b'\n';
        window[BLOCK] = b'\r';
        for (name, class) in kernels(&window) {
            assert_eq!(
                class,
                Class {
                    dirty: 0,
                    lf: 1 << 10
                },
                "{name}"
            );
        }
    }
}

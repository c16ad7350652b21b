//! The text transforms a server applies to each message: pure functions over
//! bytes, no I/O and no knowledge of message boundaries (that is
//! [`crate::protocol`]'s job).
//!
//! # Invalid UTF-8
//! The textbook server calls `bytes.decode()` and dies on the first byte that
//! is not UTF-8. Here every byte sequence is accepted: valid UTF-8 is
//! transformed code point by code point, and every byte that is not part of a
//! valid sequence is copied through unchanged. Nothing is lost, and a reply is
//! never more than 3 times the request (the worst case of upper-casing, e.g.
//! `ΐ`, 2 bytes, becomes U+0399 U+0308 U+0301, 6 bytes).
//!
//! # Streaming
//! Case mapping is per code point (Python's `str.upper()` has no context rules
//! either), so a stream can be mapped in pieces. [`map_case`] stops before an
//! incomplete sequence at the end of its input so that the caller can retry it
//! once more bytes arrive; a character split across two reads then comes out
//! exactly as if it had arrived whole.

use std::fmt;
use std::str::FromStr;

/// What the server does to each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Full Unicode upper-casing, as Python 3's `str.upper()` (`ß` becomes `SS`).
    Upper,
    /// Full Unicode lower-casing, per code point (see [`Case::Lower`]).
    Lower,
    /// The bytes back unchanged (RFC 862).
    Echo,
    /// The number of times this character occurs in the message, in decimal.
    Count(char),
    /// Echo in sockperf's ping-pong protocol, so that sockperf's client can
    /// measure the server (see [`crate::sockperf`]).
    Sockperf,
}

/// The character `count` counts when none is given: the textbook's exercise
/// counts the letter `s`.
pub const DEFAULT_COUNT_LETTER: char = 's';

/// A `--transform` value that is not one of the known transforms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTransformError {
    /// Not `upper`, `lower`, `echo`, `count[:LETTER]` or `sockperf`.
    #[error("unknown transform '{0}' (expected upper, lower, echo, count[:LETTER] or sockperf)")]
    Unknown(String),
    /// `count:` followed by something other than exactly one character.
    #[error("count takes exactly one character to count, as in count:s (got '{0}')")]
    BadLetter(String),
    /// `count:\n` would count the line terminator, which never occurs in a line.
    #[error("count cannot count line terminators")]
    LineTerminator,
}

impl FromStr for Transform {
    type Err = ParseTransformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "upper" => return Ok(Transform::Upper),
            "lower" => return Ok(Transform::Lower),
            "echo" => return Ok(Transform::Echo),
            "sockperf" => return Ok(Transform::Sockperf),
            "count" => return Ok(Transform::Count(DEFAULT_COUNT_LETTER)),
            _ => {}
        }
        let Some(letter) = s.strip_prefix("count:") else {
            return Err(ParseTransformError::Unknown(s.to_owned()));
        };
        let mut chars = letter.chars();
        match (chars.next(), chars.next()) {
            (Some('\n' | '\r'), None) => Err(ParseTransformError::LineTerminator),
            (Some(c), None) => Ok(Transform::Count(c)),
            _ => Err(ParseTransformError::BadLetter(letter.to_owned())),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Upper => f.write_str("upper"),
            Transform::Lower => f.write_str("lower"),
            Transform::Echo => f.write_str("echo"),
            Transform::Sockperf => f.write_str("sockperf"),
            Transform::Count(c) => write!(f, "count:{c}"),
        }
    }
}

/// Which way [`map_case`] maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// Unicode full upper-case mapping (`char::to_uppercase`).
    Upper,
    /// Unicode full lower-case mapping (`char::to_lowercase`), per code point:
    /// unlike Python's `str.lower()`, a word-final `Σ` becomes `σ`, not `ς`,
    /// because that rule needs context a stream may not have yet.
    Lower,
}

/// Case-maps `input`, appending the result to `out`, and returns how many
/// bytes of `input` were consumed.
///
/// All of `input` is consumed unless it ends with an incomplete but so far
/// valid UTF-8 sequence (1 to 3 bytes) and `at_end` is false: those bytes are
/// left for the caller to present again with what follows. With `at_end`, they
/// are copied through like any other invalid bytes.
pub fn map_case(case: Case, input: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
    // All-ASCII input, the common case, needs no UTF-8 decoding at all:
    // `is_ascii` checks a word at a time, and the copy and the in-place map
    // vectorize.
    if input.is_ascii() {
        map_ascii(case, input, out);
        return input.len();
    }
    let mut consumed = 0;
    for chunk in input.utf8_chunks() {
        map_str(case, chunk.valid(), out);
        consumed += chunk.valid().len();
        let invalid = chunk.invalid();
        let is_tail = consumed + invalid.len() == input.len();
        if is_tail && !at_end && is_incomplete_sequence(invalid) {
            return consumed;
        }
        out.extend_from_slice(invalid);
        consumed += invalid.len();
    }
    consumed
}

/// True when `bytes` is the start of a valid UTF-8 sequence that more bytes
/// could complete (as opposed to bytes that no continuation can make valid).
fn is_incomplete_sequence(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => false,
        Err(e) => e.error_len().is_none(),
    }
}

fn map_str(case: Case, s: &str, out: &mut Vec<u8>) {
    out.reserve(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        // ASCII runs are copied and mapped in place in bulk, which the
        // compiler vectorizes; only other characters go one at a time.
        let run = ascii_prefix(rest.as_bytes());
        if run > 0 {
            map_ascii(case, &rest.as_bytes()[..run], out);
            rest = &rest[run..];
        }
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        let mut utf8 = [0u8; 4];
        match case {
            Case::Upper => {
                for m in c.to_uppercase() {
                    out.extend_from_slice(m.encode_utf8(&mut utf8).as_bytes());
                }
            }
            Case::Lower => {
                for m in c.to_lowercase() {
                    out.extend_from_slice(m.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        rest = chars.as_str();
    }
}

/// Appends the ASCII bytes `ascii` to `out`, case-mapped as they are copied:
/// one pass, which the compiler vectorizes (a copy, then mapping in place,
/// took two).
fn map_ascii(case: Case, ascii: &[u8], out: &mut Vec<u8>) {
    match case {
        Case::Upper => out.extend(ascii.iter().map(u8::to_ascii_uppercase)),
        Case::Lower => out.extend(ascii.iter().map(u8::to_ascii_lowercase)),
    }
}

/// The length of the ASCII run `bytes` starts with: 16 bytes at a time
/// (`is_ascii` on a block is a few word operations), then byte by byte.
fn ascii_prefix(bytes: &[u8]) -> usize {
    let blocks = bytes
        .chunks_exact(16)
        .take_while(|block| block.is_ascii())
        .count();
    let n = blocks * 16;
    n + bytes[n..]
        .iter()
        .position(|b| !b.is_ascii())
        .unwrap_or(bytes.len() - n)
}

/// Counts the occurrences of one character's UTF-8 encoding in a byte stream
/// that arrives in pieces, including occurrences split across pieces.
///
/// UTF-8 is self-synchronizing, so a match of a valid encoding can only start
/// on a character boundary: counting byte strings counts characters.
#[derive(Clone, Debug)]
pub struct Counter {
    needle: [u8; 4],
    needle_len: usize,
    /// The last `needle_len - 1` bytes seen (fewer at the start), so that a
    /// match split across two pieces is found when the second arrives.
    tail: [u8; 3],
    tail_len: usize,
    count: u64,
}

impl Counter {
    /// A counter of `letter`, starting at zero.
    pub fn new(letter: char) -> Self {
        let mut needle = [0u8; 4];
        let needle_len = letter.encode_utf8(&mut needle).len();
        Counter {
            needle,
            needle_len,
            tail: [0; 3],
            tail_len: 0,
            count: 0,
        }
    }

    /// Counts the occurrences in `piece`, the next bytes of the stream.
    pub fn feed(&mut self, piece: &[u8]) {
        let needle = &self.needle[..self.needle_len];
        if self.needle_len == 1 {
            self.count += memchr::memchr_iter(needle[0], piece).count() as u64;
            return;
        }
        // `joint` is the tail followed by the first needle_len - 1 bytes of
        // `piece`: too short to hold a whole match of its own, it holds
        // exactly the matches that straddle the boundary.
        let keep = self.needle_len - 1;
        let head = &piece[..piece.len().min(keep)];
        let mut buf = [0u8; 6];
        buf[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        buf[self.tail_len..self.tail_len + head.len()].copy_from_slice(head);
        let joint = &buf[..self.tail_len + head.len()];
        self.count += memchr::memmem::find_iter(joint, needle).count() as u64;
        self.count += memchr::memmem::find_iter(piece, needle).count() as u64;
        // The new tail: the last `keep` bytes seen, from `piece` alone when it
        // is long enough, else from `joint` (which then holds all of `piece`).
        let seen = if piece.len() >= keep { piece } else { joint };
        let start = seen.len().saturating_sub(keep);
        self.tail_len = seen.len() - start;
        self.tail[..self.tail_len].copy_from_slice(&seen[start..]);
    }

    /// The count so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns the count and starts again from zero (a new message).
    pub fn take(&mut self) -> u64 {
        self.tail_len = 0;
        std::mem::take(&mut self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(map_case(Case::Upper, input, true, &mut out), input.len());
        out
    }

    fn lower(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(map_case(Case::Lower, input, true, &mut out), input.len());
        out
    }

    #[test]
    fn parses_every_transform_and_prints_it_back() {
        let table = [
            ("upper", Transform::Upper),
            ("lower", Transform::Lower),
            ("echo", Transform::Echo),
            ("sockperf", Transform::Sockperf),
            ("count", Transform::Count('s')),
            ("count:e", Transform::Count('e')),
            ("count:ß", Transform::Count('ß')),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Transform>(), Ok(want), "{text}");
        }
        assert_eq!(Transform::Count('e').to_string(), "count:e");
        assert_eq!(Transform::Upper.to_string(), "upper");
    }

    #[test]
    fn rejects_bad_transforms_with_a_reason() {
        let table = [
            ("UPPER", ParseTransformError::Unknown("UPPER".into())),
            ("", ParseTransformError::Unknown("".into())),
            ("count:", ParseTransformError::BadLetter("".into())),
            ("count:ab", ParseTransformError::BadLetter("ab".into())),
            ("count:\n", ParseTransformError::LineTerminator),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Transform>(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn upper_cases_like_python() {
        let table: [(&str, &str); 8] = [
            ("hello, world", "HELLO, WORLD"),
            ("", ""),
            ("straße", "STRASSE"),
            ("ﬃ", "FFI"),
            ("ŉ", "ʼN"),
            ("ΐ", "\u{399}\u{308}\u{301}"),
            ("ǆ ǅ", "Ǆ Ǆ"),
            ("日本語 abc", "日本語 ABC"),
        ];
        for (input, want) in table {
            assert_eq!(upper(input.as_bytes()), want.as_bytes(), "{input}");
        }
    }

    #[test]
    fn lower_cases_per_code_point() {
        assert_eq!(lower("HeLLo İ".as_bytes()), "hello i\u{307}".as_bytes());
        // No final-sigma context rule: documented difference from Python.
        assert_eq!(lower("ΟΔΟΣ".as_bytes()), "οδοσ".as_bytes());
    }

    #[test]
    fn copies_invalid_bytes_through_unchanged() {
        let table: [(&[u8], &[u8]); 7] = [
            (b"a\x80b", b"A\x80B"),                     // lone continuation byte
            (b"\xc0\xafx", b"\xc0\xafX"),               // overlong '/'
            (b"\xed\xa0\x80y", b"\xed\xa0\x80Y"),       // UTF-16 surrogate
            (b"\xe2\x82z", b"\xe2\x82Z"),               // truncated in the middle
            (b"z\xf0\x9f", b"Z\xf0\x9f"),               // truncated at the end
            (b"\xff\xfe", b"\xff\xfe"),                 // never valid
            (b"\xf4\x90\x80\x80", b"\xf4\x90\x80\x80"), // above U+10FFFF
        ];
        for (input, want) in table {
            assert_eq!(upper(input), want, "{input:?}");
        }
    }

    #[test]
    fn leaves_an_incomplete_tail_for_later_unless_at_end() {
        let mut out = Vec::new();
        // "aß" with the second byte of ß missing.
        assert_eq!(map_case(Case::Upper, b"a\xc3", false, &mut out), 1);
        assert_eq!(out, b"A");
        // A byte no continuation can fix is not held back.
        out.clear();
        assert_eq!(map_case(Case::Upper, b"a\xff", false, &mut out), 2);
        assert_eq!(out, b"A\xff");
        // Invalid start followed by a valid prefix: only the prefix is held.
        out.clear();
        assert_eq!(map_case(Case::Upper, b"\x80\xe2\x82", false, &mut out), 1);
        assert_eq!(out, b"\x80");
    }

    #[test]
    fn reply_is_at_most_three_times_the_request() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            for case in [Case::Upper, Case::Lower] {
                let mut out = Vec::new();
                map_case(case, s.as_bytes(), true, &mut out);
                assert!(out.len() <= 3 * s.len(), "{c:?} {case:?}");
            }
        }
    }

    #[test]
    fn counts_single_and_multibyte_letters_across_pieces() {
        let table: [(char, &[&[u8]], u64); 6] = [
            ('s', &[b"mississippi"], 4),
            ('s', &[b"mis", b"sis", b"", b"sippi"], 4),
            ('ß', &["straße ß".as_bytes()], 2),
            ('ß', &[b"stra\xc3", b"\x9fe"], 1),
            (
                '😀',
                &[b"\xf0", b"\x9f", b"\x98", b"\x80!\xf0\x9f\x98\x80"],
                2,
            ),
            ('é', &[b"\xc3\xa9\xc3", b"\xc3\xa9"], 2),
        ];
        for (letter, pieces, want) in table {
            let mut counter = Counter::new(letter);
            for piece in pieces {
                counter.feed(piece);
            }
            assert_eq!(counter.take(), want, "{letter} in {pieces:?}");
            assert_eq!(counter.count(), 0);
        }
    }

    #[test]
    fn take_forgets_a_partial_match() {
        let mut counter = Counter::new('ß');
        counter.feed(b"\xc3");
        assert_eq!(counter.take(), 0);
        counter.feed(b"\x9f");
        assert_eq!(counter.take(), 0);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in the given pieces the way a stream reader does: what a
    /// call leaves unconsumed is presented again in front of the next piece.
    fn map_in_pieces(case: Case, input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut carry = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(start, input.len());
            carry.extend_from_slice(&input[start..cut]);
            let consumed = map_case(case, &carry, false, &mut out);
            carry.drain(..consumed);
            assert!(carry.len() <= 3);
            start = cut;
        }
        map_case(case, &carry, true, &mut out);
        out
    }

    /// Bytes that are mostly UTF-8 with a few invalid bytes mixed in.
    fn text_and_noise() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
                1 => prop::collection::vec(any::<u8>(), 0..4),
            ],
            0..64,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_output_as_whole(
            input in text_and_noise(),
            mut cuts in prop::collection::vec(0usize..300, 0..8),
        ) {
            cuts.sort_unstable();
            for case in [Case::Upper, Case::Lower] {
                let mut whole = Vec::new();
                map_case(case, &input, true, &mut whole);
                prop_assert_eq!(map_in_pieces(case, &input, &cuts), whole);
            }
        }

        #[test]
        fn never_more_than_three_times_the_input(input in any::<Vec<u8>>()) {
            for case in [Case::Upper, Case::Lower] {
                let mut out = Vec::new();
                prop_assert_eq!(map_case(case, &input, true, &mut out), input.len());
                prop_assert!(out.len() <= 3 * input.len());
            }
        }

        #[test]
        fn counting_in_pieces_matches_counting_whole(
            input in text_and_noise(),
            letter in prop_oneof![Just('s'), Just('ß'), Just('€'), Just('😀')],
            mut cuts in prop::collection::vec(0usize..300, 0..8),
        ) {
            cuts.sort_unstable();
            let mut whole = Counter::new(letter);
            whole.feed(&input);
            let mut pieces = Counter::new(letter);
            let mut start = 0;
            for cut in cuts.into_iter().chain(std::iter::once(input.len())) {
                let cut = cut.clamp(start, input.len());
                pieces.feed(&input[start..cut]);
                start = cut;
            }
            prop_assert_eq!(pieces.count(), whole.count());
        }
    }
}

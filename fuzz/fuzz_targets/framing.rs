//! The TCP framing state machine fed arbitrary bytes in arbitrary pieces,
//! with pauses and an end of stream: never a panic; case transforms and
//! sockperf's echo give the same bytes however the stream is cut; `count` gives the same replies
//! however it is cut when there are no pauses, and never errs on a line
//! within its limit.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use upcase::Transform;
use upcase::protocol::StreamReplier;
use upcase::transform::{Case, map_case};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    which: u8,
    letter: char,
    max_line: u8,
    /// Piece lengths; each piece is followed by a pause if its flag is set.
    pieces: Vec<(u8, bool)>,
    data: &'a [u8],
}

fn feed(
    transform: Transform,
    max_line: usize,
    pieces: &[(u8, bool)],
    data: &[u8],
) -> (Vec<u8>, bool) {
    let mut replier = StreamReplier::new(transform, max_line);
    let mut out = Vec::new();
    let mut rest = data;
    for &(len, pause) in pieces {
        let (piece, tail) = rest.split_at(usize::from(len).min(rest.len()));
        rest = tail;
        if replier.on_data(piece, &mut out).is_err() {
            return (out, true);
        }
        if pause {
            replier.on_pause(&mut out);
        }
    }
    if replier.on_data(rest, &mut out).is_err() {
        return (out, true);
    }
    replier.on_eof(&mut out);
    (out, false)
}

fuzz_target!(|input: Input<'_>| {
    let transform = match input.which % 5 {
        0 => Transform::Upper,
        1 => Transform::Lower,
        2 => Transform::Echo,
        3 => Transform::Sockperf,
        _ => Transform::Count(input.letter),
    };
    let max_line = usize::from(input.max_line) + 1;
    let (out, too_long) = feed(transform, max_line, &input.pieces, input.data);
    let (whole, whole_too_long) = feed(transform, max_line, &[], input.data);
    match transform {
        Transform::Upper | Transform::Lower => {
            let case = if transform == Transform::Upper {
                Case::Upper
            } else {
                Case::Lower
            };
            let mut expected = Vec::new();
            map_case(case, input.data, true, &mut expected);
            assert_eq!(out, expected);
            assert!(!too_long);
        }
        Transform::Echo => assert_eq!(out, input.data),
        // Echo with one bit per message header cleared, wherever the
        // stream is cut.
        Transform::Sockperf => {
            assert_eq!(out, whole);
            assert_eq!(out.len(), input.data.len());
            assert!(out.iter().zip(input.data).all(|(o, i)| o & !1 == i & !1));
            assert!(!too_long);
        }
        Transform::Count(_) => {
            let longest = input
                .data
                .split(|b| *b == b'\n')
                .map(|line| line.len() - usize::from(line.ends_with(b"\r")))
                .max()
                .unwrap_or(0);
            // A line's `\r` before its `\n` is the terminator's, not the
            // line's (and a `\r` last in the stream may yet be one).
            assert_eq!(
                whole_too_long,
                longest > max_line,
                "limit {max_line}, longest {longest}"
            );
            if input.pieces.iter().all(|(_, pause)| !pause) {
                assert_eq!((out, too_long), (whole, whole_too_long));
            }
        }
    }
});

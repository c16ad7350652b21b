//! Message boundaries and sizes on each transport: pure, no I/O.
//!
//! Data flows one way: socket bytes come in, this module decides what a
//! message is, applies the [`Transform`] to it, and hands back the reply bytes
//! for the socket.
//!
//! - **UDP**: each datagram is one message and gets one reply datagram
//!   ([`reply_to_datagram`]), even when empty.
//! - **TCP**: a byte stream, answered as it arrives ([`StreamReplier`]): the
//!   textbook TCP client sends one sentence with no newline and waits, so the
//!   server cannot wait for a newline or for the end of the stream. `upper`,
//!   `lower` and `echo` reply to every byte as soon as it is read (holding back
//!   only the 1 to 3 bytes of a character split between reads). `count`
//!   answers per line, and answers an unterminated line when the client pauses
//!   or half-closes.
//!
//! # `count`'s reply format
//! The number of occurrences in decimal ASCII digits, no sign, no padding. On
//! UDP that is the whole reply datagram (`3`); an empty datagram (the UDP
//! client's empty line) gets `0`, the one reply longer than 3 times its
//! request: by one byte, 29 bytes on the wire for 28. On TCP each reply ends with
//! `\r\n` if the line it answers ended with `\r\n`, and with `\n` otherwise
//! (including an unterminated line answered on a pause or at end of stream),
//! so that replies on a stream stay apart.
//!
//! A `count` line longer than its limit is a protocol error
//! ([`LineTooLong`]): the server sends the error's text as a last line and
//! closes, as Redis does with a too-long inline request. (Counting needs no
//! buffer, but a client that never ends its line is broken or hostile.)

use crate::sockperf;
use crate::transform::{Case, Counter, Transform, map_case};

/// The largest UDP payload over IPv4: 65,535 − 20 (IP header) − 8 (UDP header).
pub const MAX_DATAGRAM_BYTES_V4: usize = 65_507;

/// The largest UDP payload over IPv6 (no jumbograms): 65,535 − 8.
pub const MAX_DATAGRAM_BYTES_V6: usize = 65_527;

/// The largest UDP payload to `addr`: [`MAX_DATAGRAM_BYTES_V4`] or
/// [`MAX_DATAGRAM_BYTES_V6`] by its family.
pub fn max_datagram_bytes(addr: std::net::SocketAddr) -> usize {
    if addr.is_ipv4() {
        MAX_DATAGRAM_BYTES_V4
    } else {
        MAX_DATAGRAM_BYTES_V6
    }
}

/// A receive buffer of this size can hold any datagram whole, so no datagram
/// is ever truncated by the receiver.
pub const DATAGRAM_BUFFER_BYTES: usize = 65_536;

/// Appends the reply to one datagram to `out`.
pub fn reply_to_datagram(transform: Transform, datagram: &[u8], out: &mut Vec<u8>) {
    match transform {
        Transform::Upper => {
            map_case(Case::Upper, datagram, true, out);
        }
        Transform::Lower => {
            map_case(Case::Lower, datagram, true, out);
        }
        Transform::Echo => out.extend_from_slice(datagram),
        Transform::Sockperf => sockperf::reply_to_datagram(datagram, out),
        Transform::Count(letter) => {
            let mut counter = Counter::new(letter);
            counter.feed(datagram);
            push_decimal(counter.take(), out);
        }
    }
}

fn push_decimal(n: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    // Formats straight into `out`: no String per reply. Writing to a Vec
    // cannot fail.
    let _ = write!(out, "{n}");
}

/// A `count` line went past its limit without a newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("upcase: line longer than {max} bytes; closing")]
pub struct LineTooLong {
    /// The limit.
    pub max: usize,
}

/// The replying half of one TCP connection: fed the bytes as they are read,
/// it produces the reply bytes to write.
#[derive(Clone, Debug)]
pub struct StreamReplier {
    state: State,
}

#[derive(Clone, Debug)]
enum State {
    Case {
        case: Case,
        /// The start of a character whose remaining bytes have not arrived.
        pending: [u8; 3],
        pending_len: usize,
    },
    Echo,
    Sockperf(sockperf::Frames),
    Count {
        counter: Counter,
        /// Bytes of the current line since the last reply (0: no line open),
        /// and the most allowed.
        line_bytes: usize,
        max_line_bytes: usize,
        /// The current line's last byte was `\r` (a `\n` next ends it as CRLF).
        after_cr: bool,
    },
}

impl State {
    fn case(case: Case) -> Self {
        State::Case {
            case,
            pending: [0; 3],
            pending_len: 0,
        }
    }
}

impl StreamReplier {
    /// A replier for a new connection; `count` lines may be at most
    /// `max_line_bytes` long.
    pub fn new(transform: Transform, max_line_bytes: usize) -> Self {
        let state = match transform {
            Transform::Upper => State::case(Case::Upper),
            Transform::Lower => State::case(Case::Lower),
            Transform::Echo => State::Echo,
            Transform::Sockperf => State::Sockperf(sockperf::Frames::default()),
            Transform::Count(letter) => State::Count {
                counter: Counter::new(letter),
                line_bytes: 0,
                max_line_bytes,
                after_cr: false,
            },
        };
        StreamReplier { state }
    }

    /// Appends to `out` the reply to `data`, the next bytes read. Fails if a
    /// `count` line grows past its limit; `out` then holds the replies to the
    /// lines before it.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), LineTooLong> {
        match &mut self.state {
            State::Case {
                case,
                pending,
                pending_len,
            } => {
                let mut data = data;
                if *pending_len > 0 {
                    // Complete the held-back character with the first bytes
                    // of `data`. An incomplete sequence is at most 3 bytes, so
                    // if `data` has 4 or more, whatever is left over afterwards
                    // lies inside `data`.
                    let take = data.len().min(4);
                    let mut joint = [0u8; 7];
                    joint[..*pending_len].copy_from_slice(&pending[..*pending_len]);
                    joint[*pending_len..*pending_len + take].copy_from_slice(&data[..take]);
                    let joint = &joint[..*pending_len + take];
                    let consumed = map_case(*case, joint, false, out);
                    if consumed < *pending_len {
                        // Still incomplete: all of `data` went into the joint.
                        let rest = &joint[consumed..];
                        pending[..rest.len()].copy_from_slice(rest);
                        *pending_len = rest.len();
                        return Ok(());
                    }
                    data = &data[consumed - *pending_len..];
                    *pending_len = 0;
                }
                let consumed = map_case(*case, data, false, out);
                let rest = &data[consumed..];
                pending[..rest.len()].copy_from_slice(rest);
                *pending_len = rest.len();
            }
            State::Echo => out.extend_from_slice(data),
            State::Sockperf(frames) => frames.on_data(data, out),
            State::Count {
                counter,
                line_bytes,
                max_line_bytes,
                after_cr,
            } => {
                let mut data = data;
                while !data.is_empty() {
                    let end = memchr::memchr(b'\n', data);
                    let taken = end.unwrap_or(data.len());
                    *line_bytes += taken;
                    // The `\r` of a CRLF is the terminator's, not the
                    // line's: a `\r` last so far may turn out to be one.
                    let ends_in_cr = match end {
                        Some(0) => *after_cr,
                        Some(i) => data[i - 1] == b'\r',
                        None => data.last() == Some(&b'\r'),
                    };
                    if *line_bytes - usize::from(ends_in_cr) > *max_line_bytes {
                        return Err(LineTooLong {
                            max: *max_line_bytes,
                        });
                    }
                    match end {
                        Some(i) => {
                            let line = &data[..i];
                            counter.feed(line);
                            let crlf = ends_in_cr;
                            push_decimal(counter.take(), out);
                            out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                            *line_bytes = 0;
                            *after_cr = false;
                            data = &data[i + 1..];
                        }
                        None => {
                            counter.feed(data);
                            *after_cr = data.last() == Some(&b'\r');
                            data = &[];
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// True when the replier holds nothing back: no part of a character, no
    /// open `count` line, no partial sockperf message. A fresh replier would
    /// then answer whatever comes next exactly as this one.
    pub fn holds_nothing(&self) -> bool {
        match &self.state {
            State::Case { pending_len, .. } => *pending_len == 0,
            State::Echo => true,
            State::Sockperf(frames) => frames.at_boundary(),
            State::Count { line_bytes, .. } => *line_bytes == 0,
        }
    }

    /// True when the replier holds an unterminated `count` line that
    /// [`StreamReplier::on_pause`] would answer.
    pub fn awaits_pause(&self) -> bool {
        matches!(self.state, State::Count { line_bytes, .. } if line_bytes > 0)
    }

    /// The client has paused: answers an unterminated `count` line, if any.
    /// Other transforms have already answered everything they can.
    pub fn on_pause(&mut self, out: &mut Vec<u8>) {
        if let State::Count {
            counter,
            line_bytes,
            after_cr,
            ..
        } = &mut self.state
            && *line_bytes > 0
        {
            push_decimal(counter.take(), out);
            out.push(b'\n');
            *line_bytes = 0;
            *after_cr = false;
        }
    }

    /// The stream has ended (the client half-closed or the server is shutting
    /// down): appends the rest of the reply. Held-back bytes of an incomplete
    /// character are copied through unchanged, like any invalid bytes.
    pub fn on_eof(&mut self, out: &mut Vec<u8>) {
        match &mut self.state {
            State::Case {
                pending,
                pending_len,
                ..
            } => {
                out.extend_from_slice(&pending[..*pending_len]);
                *pending_len = 0;
            }
            State::Echo | State::Sockperf(_) => {}
            State::Count { .. } => self.on_pause(out),
        }
    }
}

/// Newline bytes in `bytes`: the lines a TCP read or write carried. A SIMD
/// count (`bytecount`): searching newline by newline (`memchr_iter`) took a
/// tenth of the server's time when streaming short lines.
pub fn count_lines(bytes: &[u8]) -> u64 {
    bytecount::count(bytes, b'\n') as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reply_per_datagram() {
        use Transform::*;
        let table: [(Transform, &[u8], &[u8]); 9] = [
            (Upper, b"hello", b"HELLO"),
            (Upper, b"", b""),
            (Upper, b"caf\xc3\xa9\n", "CAFÉ\n".as_bytes()),
            (Upper, b"\xff\xc3", b"\xff\xc3"),
            (Lower, b"ABC", b"abc"),
            (Echo, b"\x00\xffAbc", b"\x00\xffAbc"),
            (Count('s'), b"mississippi", b"4"),
            // An empty line has no s: the one reply longer than 3x its
            // request, by one byte (29 bytes on the wire for 28).
            (Count('s'), b"", b"0"),
            (Count('ß'), "ßß\nß".as_bytes(), b"3"),
        ];
        for (transform, input, want) in table {
            let mut out = Vec::new();
            reply_to_datagram(transform, input, &mut out);
            assert_eq!(out, want, "{transform} {input:?}");
        }
    }

    /// Feeds `pieces` to a new replier, then ends the stream.
    fn stream(transform: &str, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut replier = StreamReplier::new(transform.parse().unwrap(), 1 << 20);
        let mut replies = Vec::new();
        for piece in pieces {
            let mut out = Vec::new();
            replier.on_data(piece, &mut out).unwrap();
            replies.push(out);
        }
        let mut rest = Vec::new();
        replier.on_eof(&mut rest);
        (replies, rest)
    }

    #[test]
    fn holds_nothing_only_between_whole_messages() {
        // (transform, a piece that leaves something held, the piece that
        // completes it)
        let sockperf_header = [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 20];
        let cases: [(&str, &[u8], &[u8]); 5] = [
            ("upper", b"caf\xc3", b"\xa9\n"),
            ("lower", b"\xf0\x9f", b"\x98\x80"),
            ("count", b"mis", b"sissippi\n"),
            ("count:\u{df}", b"\xc3", b"\x9f\n"),
            ("sockperf", &sockperf_header, &[b'p'; 6]),
        ];
        for (transform, partial, rest) in cases {
            let mut replier = StreamReplier::new(transform.parse().unwrap(), 1 << 20);
            assert!(replier.holds_nothing(), "{transform}: fresh");
            let mut out = Vec::new();
            replier.on_data(partial, &mut out).unwrap();
            assert!(!replier.holds_nothing(), "{transform}: after {partial:?}");
            replier.on_data(rest, &mut out).unwrap();
            assert!(replier.holds_nothing(), "{transform}: after {rest:?}");
        }
        let mut echo = StreamReplier::new(Transform::Echo, 1 << 20);
        echo.on_data(b"\xc3", &mut Vec::new()).unwrap();
        assert!(echo.holds_nothing());
        // A count line answered by the pause holds nothing either.
        let mut count = StreamReplier::new(Transform::Count('s'), 1 << 20);
        count.on_data(b"ss", &mut Vec::new()).unwrap();
        count.on_pause(&mut Vec::new());
        assert!(count.holds_nothing());
        // A stream that stopped looking like sockperf's is echoed from then
        // on, which a fresh replier would not do.
        let mut lost = StreamReplier::new(Transform::Sockperf, 1 << 20);
        lost.on_data(&[0; 14], &mut Vec::new()).unwrap();
        assert!(!lost.holds_nothing());
    }

    #[test]
    fn answers_each_piece_as_it_arrives() {
        let (replies, rest) = stream("upper", &[b"hello ", b"world"]);
        assert_eq!(replies, [b"HELLO ".to_vec(), b"WORLD".to_vec()]);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_character_split_byte_by_byte_comes_out_whole() {
        // ß is C3 9F; 😀 is F0 9F 98 80.
        let (replies, rest) = stream(
            "upper",
            &[b"\xc3", b"\x9f", b"\xf0", b"\x9f", b"\x98", b"\x80"],
        );
        assert_eq!(replies.concat(), "SS😀".as_bytes());
        assert_eq!(replies[0], b"");
        assert_eq!(replies[1], b"SS");
        assert!(rest.is_empty());
    }

    #[test]
    fn a_held_character_joins_a_long_next_read() {
        let (replies, _) = stream("upper", &[b"a\xe2\x82", b"\xacbcdef\xc3"]);
        assert_eq!(replies[0], b"A");
        assert_eq!(replies[1], "€BCDEF".as_bytes());
    }

    #[test]
    fn a_held_prefix_followed_by_a_non_continuation_is_copied_through() {
        let (replies, rest) = stream("upper", &[b"\xe2\x82", b"x"]);
        assert_eq!(replies.concat(), b"\xe2\x82X");
        assert!(rest.is_empty());
    }

    #[test]
    fn an_incomplete_character_at_end_of_stream_is_copied_through() {
        let (replies, rest) = stream("lower", &[b"A\xf0\x9f"]);
        assert_eq!(replies[0], b"a");
        assert_eq!(rest, b"\xf0\x9f");
    }

    #[test]
    fn count_answers_each_line_and_mirrors_crlf() {
        let (replies, rest) = stream("count", &[b"sss\nno\r\n", b"s", b"s\r", b"\n"]);
        assert_eq!(replies[0], b"3\n0\r\n");
        assert_eq!(replies[1], b"");
        assert_eq!(replies[2], b"");
        assert_eq!(replies[3], b"2\r\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn count_answers_an_unterminated_line_on_pause_or_eof() {
        let mut replier = StreamReplier::new(Transform::Count('s'), 1 << 20);
        let mut out = Vec::new();
        assert!(!replier.awaits_pause());
        replier.on_data(b"yes s", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(replier.awaits_pause());
        replier.on_pause(&mut out);
        assert_eq!(out, b"2\n");
        assert!(!replier.awaits_pause());
        // Nothing pending: a pause or the end adds nothing.
        replier.on_pause(&mut out);
        replier.on_eof(&mut out);
        assert_eq!(out, b"2\n");
        replier.on_data(b"ss", &mut out).unwrap();
        replier.on_eof(&mut out);
        assert_eq!(out, b"2\n2\n");
    }

    #[test]
    fn count_of_an_empty_line_is_zero() {
        let (replies, _) = stream("count", &[b"\n\n"]);
        assert_eq!(replies[0], b"0\n0\n");
    }

    #[test]
    fn echo_is_byte_exact() {
        let all: Vec<u8> = (0..=255).collect();
        let (replies, rest) = stream("echo", &[&all, b""]);
        assert_eq!(replies[0], all);
        assert!(replies[1].is_empty() && rest.is_empty());
    }

    #[test]
    fn a_count_line_past_its_limit_is_an_error_after_the_lines_before_it() {
        let mut replier = StreamReplier::new(Transform::Count('s'), 4);
        let mut out = Vec::new();
        // Exactly the limit is fine, terminated or not.
        replier.on_data(b"ssss\nss", &mut out).unwrap();
        replier.on_data(b"ss", &mut out).unwrap();
        assert_eq!(out, b"4\n");
        let err = replier.on_data(b"s\n", &mut out).unwrap_err();
        assert_eq!(err, LineTooLong { max: 4 });
        assert_eq!(err.to_string(), "upcase: line longer than 4 bytes; closing");
        // The \r of a CRLF is no part of the line, however the bytes come.
        for pieces in [
            &[&b"ssss\r\n"[..]][..],
            &[b"ssss\r", b"\n"],
            &[b"ss", b"ss\r", b"\n"],
        ] {
            let mut replier = StreamReplier::new(Transform::Count('s'), 4);
            let mut out = Vec::new();
            for piece in pieces {
                replier.on_data(piece, &mut out).unwrap();
            }
            assert_eq!(out, b"4\r\n", "{pieces:?}");
        }
        // But a \r that is not followed by \n is: 5 bytes.
        let mut replier = StreamReplier::new(Transform::Count('s'), 4);
        replier.on_data(b"ssss\r", &mut out).unwrap();
        assert!(replier.on_data(b"s", &mut out).is_err());
        let mut replier = StreamReplier::new(Transform::Count('s'), 4);
        assert!(replier.on_data(b"ssss\rs\n", &mut out).is_err());
        // Other transforms stream lines of any length.
        let mut upper = StreamReplier::new(Transform::Upper, 4);
        upper.on_data(b"far more than four", &mut out).unwrap();
    }
}

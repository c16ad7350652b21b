//! What `upcase bench` sends and what it expects back: pure, no I/O.
//!
//! Each message is its sequence number in decimal, a space, then filler text
//! up to the message size (and a `\n` on a persistent TCP connection):
//!
//! ```text
//! 42 quick brown fox jumps over the lazy dog. The quick brown fox jum
//! ```
//!
//! The filler mixes capitals and small letters, so upper-cased, lower-cased
//! and echoed replies all differ from each other, and it is ASCII, so each
//! reply has the request's length. Digits are the same in every case, so the
//! sequence number survives the transform and a reply is matched to its
//! request by it, whatever order replies come in (UDP) — without storing the
//! requests: the expected reply is rebuilt from the number.

use std::io::Write as _;

/// Filler text; byte `i` of every message is byte `i % len` of this.
const FILLER: &[u8] = b"The Quick Brown Fox jumps over the Lazy Dog. ";

/// The smallest message: room for any sequence number below 10^15 and its
/// space.
pub const MIN_SIZE: usize = 16;

/// What a correct reply is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The request upper-cased (`upcase server`'s default).
    Upper,
    /// The request lower-cased.
    Lower,
    /// The request unchanged.
    Echo,
    /// Anything that starts with the request's sequence number.
    None,
}

/// Builds messages and checks replies for one run.
#[derive(Clone, Debug)]
pub struct Payloads {
    /// Filler for a whole message (without the newline).
    filler: Vec<u8>,
    /// The filler as a correct reply has it, or `None` to check nothing.
    expected: Option<Vec<u8>>,
    newline: bool,
}

impl Payloads {
    /// Messages of `size` bytes in all, the `\n` included if `newline`.
    pub fn new(size: usize, newline: bool, expect: Expect) -> Result<Payloads, String> {
        if size < MIN_SIZE {
            return Err(format!(
                "a message must be at least {MIN_SIZE} bytes (its sequence number and filler), not {size}"
            ));
        }
        let body = size - usize::from(newline);
        let filler: Vec<u8> = FILLER.iter().copied().cycle().take(body).collect();
        let expected = match expect {
            Expect::Upper => Some(filler.to_ascii_uppercase()),
            Expect::Lower => Some(filler.to_ascii_lowercase()),
            Expect::Echo => Some(filler.clone()),
            Expect::None => None,
        };
        Ok(Payloads {
            filler,
            expected,
            newline,
        })
    }

    /// Bytes of every message, the newline included.
    pub fn size(&self) -> usize {
        self.filler.len() + usize::from(self.newline)
    }

    /// Appends message `seq` to `out`.
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{seq} ");
        let prefix = out.len() - start;
        out.extend_from_slice(&self.filler[prefix.min(self.filler.len())..]);
        if self.newline {
            out.push(b'\n');
        }
    }

    /// The sequence number a reply (without its newline) starts with.
    pub fn seq_of(reply: &[u8]) -> Option<u64> {
        let digits = reply.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || reply.get(digits) != Some(&b' ') {
            return None;
        }
        std::str::from_utf8(&reply[..digits]).ok()?.parse().ok()
    }

    /// Whether `reply` (without its newline) is the right answer to message
    /// `seq`.
    pub fn is_correct(&self, seq: u64, reply: &[u8]) -> bool {
        let Some(expected) = &self.expected else {
            return Payloads::seq_of(reply) == Some(seq);
        };
        if reply.len() != expected.len() || Payloads::seq_of(reply) != Some(seq) {
            return false;
        }
        // The reply starts with `seq` and a space; what it was sent with had
        // no leading zeros, so a right reply's digits are exactly as many.
        let prefix = reply.iter().take_while(|b| b.is_ascii_digit()).count() + 1;
        let shortest = seq.checked_ilog10().unwrap_or(0) as usize + 2;
        prefix == shortest && reply[prefix..] == expected[prefix..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(p: &Payloads, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        p.write(seq, &mut out);
        out
    }

    #[test]
    fn messages_have_the_size_asked_for() {
        let p = Payloads::new(64, true, Expect::Upper).unwrap();
        for seq in [0, 7, 12_345, 999_999_999_999_999] {
            let m = message(&p, seq);
            assert_eq!(m.len(), 64);
            assert_eq!(m.last(), Some(&b'\n'));
            assert_eq!(Payloads::seq_of(&m), Some(seq));
        }
        let m = message(&Payloads::new(16, false, Expect::Echo).unwrap(), 42);
        assert_eq!(m, b"42  Quick Brown ");
    }

    #[test]
    fn too_small_a_size_is_refused() {
        assert!(Payloads::new(MIN_SIZE - 1, false, Expect::Upper).is_err());
    }

    #[test]
    fn each_expectation_accepts_only_its_reply() {
        let seq = 31;
        let m = message(&Payloads::new(40, false, Expect::None).unwrap(), seq);
        let upper = m.to_ascii_uppercase();
        let lower = m.to_ascii_lowercase();
        for (expect, right) in [
            (Expect::Upper, &upper),
            (Expect::Lower, &lower),
            (Expect::Echo, &m),
        ] {
            let p = Payloads::new(40, false, expect).unwrap();
            for candidate in [&upper, &lower, &m] {
                assert_eq!(
                    p.is_correct(seq, candidate),
                    candidate == right,
                    "{expect:?}"
                );
            }
            assert!(!p.is_correct(seq + 1, right), "another number");
            assert!(!p.is_correct(seq, &right[..39]), "short");
            let mut corrupted = right.clone();
            corrupted[30] = b'#';
            assert!(!p.is_correct(seq, &corrupted), "a wrong byte");
        }
        let none = Payloads::new(40, false, Expect::None).unwrap();
        assert!(none.is_correct(seq, b"31 anything"));
        assert!(!none.is_correct(seq, b"32 anything"));
    }

    #[test]
    fn sequence_numbers_need_digits_then_a_space() {
        assert_eq!(Payloads::seq_of(b"12 X"), Some(12));
        assert_eq!(Payloads::seq_of(b"12"), None);
        assert_eq!(Payloads::seq_of(b"x12 "), None);
        assert_eq!(Payloads::seq_of(b" 12 "), None);
        assert_eq!(Payloads::seq_of(b"99999999999999999999999 "), None);
    }
}

//! Seeded random text for tests, with its upper-cased form computed
//! independently of upcase's own code: from a fixed table of tokens.

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// Input tokens and what each becomes upper-cased. Multibyte characters,
/// one that grows (ß → SS), and invalid UTF-8, which must come back as it
/// went. No token starts with a continuation byte, so the truncated ones
/// ([0xC3], [0xE2, 0x82]) never join the next token into a valid character.
const TOKENS: &[(&[u8], &[u8])] = &[
    (b"a", b"A"),
    (b"z", b"Z"),
    (b"Q", b"Q"),
    (b" ", b" "),
    (b"7", b"7"),
    ("é".as_bytes(), "É".as_bytes()),
    ("ж".as_bytes(), "Ж".as_bytes()),
    ("ß".as_bytes(), b"SS"),
    ("€".as_bytes(), "€".as_bytes()),
    ("😀".as_bytes(), "😀".as_bytes()),
    (b"\xff", b"\xff"),
    (b"\xc3", b"\xc3"),
    (b"\xe2\x82", b"\xe2\x82"),
];

/// A seeded generator of lines.
pub struct Lines(StdRng);

impl Lines {
    /// The same seed gives the same lines.
    pub fn new(seed: u64) -> Lines {
        Lines(StdRng::seed_from_u64(seed))
    }

    /// A line of up to `max_tokens` tokens (no newline) and its upper-cased
    /// form.
    pub fn next_line(&mut self, max_tokens: usize) -> (Vec<u8>, Vec<u8>) {
        let n = self.0.random_range(0..=max_tokens);
        let mut line = Vec::new();
        let mut upper = Vec::new();
        for _ in 0..n {
            let (token, up) = TOKENS[self.0.random_range(0..TOKENS.len())];
            line.extend_from_slice(token);
            upper.extend_from_slice(up);
        }
        (line, upper)
    }

    /// The generator itself, for other seeded choices.
    pub fn rng(&mut self) -> &mut impl Rng {
        &mut self.0
    }
}

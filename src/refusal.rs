//! The lines a server sends instead of a reply, just before it closes the
//! connection: pure, no I/O. The server writes them; the client, ping and
//! bench recognise them, so that a refusal is reported as one (an error,
//! counted by reason) and never printed or counted as a reply.
//!
//! A client tells a refusal from a reply by two things together: the line
//! is one of [`Refusal::ALL`]'s, byte for byte, and the server closes the
//! connection right after it (a server echoing a client that typed the same
//! words keeps the connection open). See docs/wire.md.

/// Why a server turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server is at its connection cap.
    Busy,
    /// The client's address (or its network) is at its cap.
    PerSource,
    /// Plaintext on the TLS port.
    NotTls,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 3] = [Refusal::Busy, Refusal::PerSource, Refusal::NotTls];

    /// The line on the wire, with its newline.
    pub fn line(self) -> &'static [u8] {
        match self {
            Refusal::Busy => b"upcase: server busy, too many connections; try again later\n",
            Refusal::PerSource => {
                b"upcase: too many connections from your address; try again later\n"
            }
            Refusal::NotTls => {
                b"upcase: this port speaks TLS; connect with a TLS client, or to the plain port\n"
            }
        }
    }

    /// A short name, for counts by reason: `busy`, `per_source`, `not_tls`.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::PerSource => "per_source",
            Refusal::NotTls => "not_tls",
        }
    }

    /// What the server said, without the `upcase: ` prefix and the
    /// newline, with what to do about it where our tools can: for a client
    /// of ours, `--tls` is how to speak TLS.
    pub fn explain(self) -> String {
        let line = std::str::from_utf8(self.line()).expect("ASCII");
        let said = line.trim_end().trim_start_matches("upcase: ");
        match self {
            Refusal::NotTls => format!("{said} (add --tls)"),
            _ => said.to_owned(),
        }
    }

    /// The refusal `line` is, with or without its newline (and a `\r`).
    pub fn of(line: &[u8]) -> Option<Refusal> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Refusal::ALL
            .into_iter()
            .find(|r| r.line().strip_suffix(b"\n") == Some(line))
    }

    /// Whether `bytes` could still become a refusal line as more arrive.
    pub fn could_be(bytes: &[u8]) -> bool {
        Refusal::ALL.iter().any(|r| r.line().starts_with(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_recognised_exactly() {
        for r in Refusal::ALL {
            assert_eq!(Refusal::of(r.line()), Some(r));
            let bare = r.line().strip_suffix(b"\n").unwrap();
            assert_eq!(Refusal::of(bare), Some(r));
            assert!(Refusal::could_be(&r.line()[..10]));
        }
        assert_eq!(
            Refusal::of(b"UPCASE: SERVER BUSY, TOO MANY CONNECTIONS; TRY AGAIN LATER\n"),
            None
        );
        assert_eq!(Refusal::of(b"upcase: server busy"), None);
        assert!(!Refusal::could_be(b"HELLO"));
        assert_eq!(
            Refusal::NotTls.explain(),
            "this port speaks TLS; connect with a TLS client, or to the plain port (add --tls)"
        );
    }
}

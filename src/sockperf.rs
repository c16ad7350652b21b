//! The reply side of sockperf's ping-pong protocol, so that sockperf's own
//! client (`sockperf ping-pong`) can measure this server
//! (`--transform sockperf`).
//!
//! A sockperf message starts with a 14-byte header: an 8-byte sequence
//! number, 2 bytes of flags and the 4-byte length of the whole message, all
//! big-endian. Its server echoes each message with the header's "client" flag
//! cleared, and its client ignores any reply that still has the flag set, so
//! a plain echo server is never measured. Replying means echoing every byte
//! and clearing one bit per message. Over TCP the messages follow each other
//! in the stream, so [`Frames`] follows the length fields to find each
//! header; it holds no bytes back and buffers nothing.
//!
//! Written here rather than taken from a crate: no crate speaks sockperf's
//! protocol, and the whole of it is this one bit.

/// Bytes in a sockperf message header.
pub const HEADER_BYTES: usize = 14;

/// Where the flags' low byte is in the header, and the bit that marks a
/// message as the client's.
const FLAGS_LOW_BYTE: usize = 9;
const CLIENT_FLAG: u8 = 1;

/// Where the header's length field is.
const LENGTH_FIELD: std::ops::Range<usize> = 10..14;

/// Appends the reply to one datagram (one message) to `out`: the datagram
/// with its client flag cleared. A datagram too short to be a sockperf
/// message comes back unchanged.
pub fn reply_to_datagram(datagram: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(datagram);
    if datagram.len() >= HEADER_BYTES {
        out[start + FLAGS_LOW_BYTE] &= !CLIENT_FLAG;
    }
}

/// Where a TCP stream of sockperf messages is: the reply side's state for
/// one connection.
#[derive(Clone, Debug, Default)]
pub struct Frames {
    /// Bytes of the current message seen so far.
    offset: usize,
    /// The current message's length, as far as its header has arrived.
    length: usize,
    /// A header announced a length shorter than a header: the stream is not
    /// sockperf's, and the rest is echoed unchanged.
    lost: bool,
}

impl Frames {
    /// Appends to `out` the reply to `data`, the next bytes of the stream.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(data);
        let mut i = 0;
        while i < data.len() && !self.lost {
            if self.offset < HEADER_BYTES {
                if self.offset == FLAGS_LOW_BYTE {
                    out[start + i] &= !CLIENT_FLAG;
                }
                if LENGTH_FIELD.contains(&self.offset) {
                    self.length = self.length << 8 | usize::from(data[i]);
                }
                self.offset += 1;
                i += 1;
                if self.offset == HEADER_BYTES && self.length < HEADER_BYTES {
                    self.lost = true;
                }
            } else {
                let skip = (self.length - self.offset).min(data.len() - i);
                self.offset += skip;
                i += skip;
            }
            if self.offset >= HEADER_BYTES && self.offset == self.length {
                // The message's last byte: the next one starts a header.
                self.offset = 0;
                self.length = 0;
            }
        }
    }

    /// True between messages of a sockperf stream: a fresh [`Frames`] would
    /// read what comes next the same way.
    pub fn at_boundary(&self) -> bool {
        self.offset == 0 && !self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client message of `length` bytes with sequence number `seq`.
    fn message(seq: u64, length: u32) -> Vec<u8> {
        let mut m = seq.to_be_bytes().to_vec();
        m.extend_from_slice(&3u16.to_be_bytes()); // client | pong request
        m.extend_from_slice(&length.to_be_bytes());
        m.resize(length as usize, b'p');
        m
    }

    fn server_reply(mut m: Vec<u8>) -> Vec<u8> {
        m[FLAGS_LOW_BYTE] &= !CLIENT_FLAG;
        m
    }

    #[test]
    fn a_datagram_comes_back_with_only_the_client_flag_cleared() {
        let mut out = Vec::new();
        reply_to_datagram(&message(7, 64), &mut out);
        assert_eq!(out, server_reply(message(7, 64)));
        assert_eq!(out[8..10], [0, 2]);
        // Not a sockperf message: echoed.
        out.clear();
        reply_to_datagram(b"hello", &mut out);
        assert_eq!(out, b"hello");
    }

    #[test]
    fn a_stream_in_pieces_of_any_size_gets_every_header_fixed() {
        let lengths = [64, 14, 300, 15, 64];
        let stream: Vec<u8> = (0..)
            .zip(lengths)
            .flat_map(|(seq, len)| message(seq, len))
            .collect();
        let want: Vec<u8> = (0..)
            .zip(lengths)
            .flat_map(|(seq, len)| server_reply(message(seq, len)))
            .collect();
        for piece in [1, 2, 5, 13, 14, 15, 63, 64, 65, 1000] {
            let mut frames = Frames::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                frames.on_data(chunk, &mut out);
            }
            assert_eq!(out, want, "pieces of {piece}");
        }
    }

    #[test]
    fn a_stream_that_is_not_sockperfs_is_echoed_unchanged_after_its_first_header() {
        let mut frames = Frames::default();
        let mut out = Vec::new();
        let text = b"this is not a sockperf stream at all, just text\n";
        frames.on_data(text, &mut out);
        let mut want = text.to_vec();
        want[FLAGS_LOW_BYTE] &= !CLIENT_FLAG;
        assert_eq!(out, want);
        // The length field read "not " = 0x6e6f7420: a huge message, skipped
        // through; a length under 14 gives up on framing instead.
        let mut frames = Frames::default();
        let mut out = Vec::new();
        let short = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, 1, 1, 1];
        frames.on_data(&short, &mut out);
        frames.on_data(&short, &mut out);
        let mut want = short.to_vec();
        want[FLAGS_LOW_BYTE] = 0;
        want.extend_from_slice(&short);
        assert_eq!(out, want);
    }
}

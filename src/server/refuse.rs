//! Turning a connection away with a reason it can read.

use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::SockRef;
use tokio::net::TcpStream;

/// Refused connections lingering at once, at most: each holds a descriptor
/// for up to the lingering close's time, so they must fit in the
/// descriptors kept back from the connection cap (`fdlimit`'s 32).
const MAX_LINGERING: usize = 16;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Tells a refused client why in one line and closes the connection,
/// never blocking the caller (the accept loop). The line is followed by a
/// FIN, and the client's request, if it sent one, is read and discarded
/// until it closes too ([`super::turn::linger`], in a task of its own):
/// closing with its request unread would send a reset, which can destroy
/// the line before the client reads it (a client that writes at once, as
/// the textbook TCPClient and bench do, saw a reset about once in twenty).
/// Beyond [`MAX_LINGERING`] at once (a flood), a connection is closed
/// straight after the line.
pub(super) fn refuse(stream: TcpStream, line: &[u8]) {
    // Best effort: the line fits in any socket's empty send buffer.
    let _ = stream.try_write(line);
    let _ = SockRef::from(&stream).shutdown(std::net::Shutdown::Write);
    if LINGERING.fetch_add(1, Ordering::AcqRel) < MAX_LINGERING {
        tokio::spawn(async move {
            super::turn::linger(&stream, std::time::Instant::now()).await;
            LINGERING.fetch_sub(1, Ordering::AcqRel);
        });
    } else {
        LINGERING.fetch_sub(1, Ordering::AcqRel);
        let mut discard = [0u8; 1024];
        while matches!(stream.try_read(&mut discard), Ok(n) if n > 0) {}
    }
}

//! Turning a connection away with a reason it can read.

use tokio::net::TcpStream;

/// Tells a refused client why in one line and lets the connection close.
pub(super) fn refuse(stream: &TcpStream, line: &[u8]) {
    // Best effort, never blocking the accept loop: the line fits in any
    // socket's empty send buffer.
    let _ = stream.try_write(line);
    // Closing with unread bytes would send a reset, which can destroy the
    // line before the client reads it.
    let mut discard = [0u8; 1024];
    while matches!(stream.try_read(&mut discard), Ok(n) if n > 0) {}
}

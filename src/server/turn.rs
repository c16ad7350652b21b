//! What both connection loops (`tcp`, plain, and `tls_conn`) share: the
//! worker thread's read buffer, the deadline a connection waits for, the
//! accounting of a reply written, and the lingering close.

use std::cell::RefCell;
use std::future::Future;
use std::io::Read as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::{Duration, Sleep};

use super::Stats;
use crate::protocol::count_lines;

/// Bytes read from a connection at once: as much as the streaming baseline
/// (a blocking server reading 256 KiB). Measured against 64 KiB: 4
/// connections streaming 64 KiB requests got 1.5x the rate at 0.7x the CPU
/// per request, since one read and one write now carry several requests.
/// The buffer is the worker thread's; a connection holds at most one read's
/// reply (at most 3x the read) only while a client is slow to take it.
/// (Over TLS a read brings at most one record's plaintext, 16 KiB.)
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// How long a connection the server closes first may go on discarding what
/// the client still sends ([`linger`]) ...
const LINGER_TIME: Duration = Duration::from_secs(2);

/// ... and how long the client may be silent meanwhile.
const LINGER_QUIET: Duration = Duration::from_millis(500);

/// A reply buffer that grew past this is freed after use rather than kept by
/// an idle connection.
const KEEP_REPLY_BUFFER_BYTES: usize = 4 * 1024;

thread_local! {
    /// The worker thread's read buffer, shared by its connections.
    pub(super) static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER_BYTES]);
}

/// Polls `timer` for `deadline`, setting it only when it would fire too
/// late: Ready once `deadline` has passed. Only a connection about to wait
/// needs its deadline in the timer wheel (resetting a sleep registers it,
/// under the timer driver's lock), and a deadline that moved later (each
/// message pushes the idle and park deadlines on) is found when the timer
/// fires early, and the timer set again then: once a period rather than
/// once a message.
///
/// `waiting` is the caller's, false for a new timer: it is set once the
/// timer has returned Pending, and from then on the timer is polled again
/// only when it has fired or was reset. A pending timer keeps the waker of
/// its last poll, which is this task's, so polling it on every turn only
/// stored the same waker again (5% of the server's instructions per
/// request at 50 connections).
pub(super) fn poll_deadline(
    mut timer: Pin<&mut Sleep>,
    deadline: tokio::time::Instant,
    waiting: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<()> {
    // A timer reset is polled at once: one that fired has given its waker up.
    let mut reset = timer.deadline() > deadline;
    if reset {
        timer.as_mut().reset(deadline);
    }
    loop {
        if !reset && *waiting && !timer.is_elapsed() {
            return Poll::Pending;
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => {
                *waiting = true;
                return Poll::Pending;
            }
            // Fired at or after the deadline: its time has come.
            Poll::Ready(()) if timer.deadline() >= deadline => return Poll::Ready(()),
            // Fired early, for a deadline since pushed on.
            Poll::Ready(()) => {
                timer.as_mut().reset(deadline);
                reset = true;
            }
        }
    }
}

/// Counts the first `sent` bytes of `reply` as written, and empties it
/// (freeing a buffer that grew large).
pub(super) fn written(reply: &mut Vec<u8>, sent: usize, stats: &Stats) {
    Stats::add(&stats.tcp_bytes_out, sent as u64);
    Stats::add(&stats.tcp_lines_out, count_lines(&reply[..sent]));
    reply.clear();
    if reply.capacity() > KEEP_REPLY_BUFFER_BYTES {
        *reply = Vec::new();
    }
}

/// Reads and discards what the client still sends after the server closed
/// its side first (shutdown, a `count` line too long), until the client
/// closes too, has been silent for [`LINGER_QUIET`], or [`LINGER_TIME`] is
/// up. Closing a socket with input unread sends a reset rather than a FIN,
/// and a reset makes the client's kernel throw away the reply it has not
/// read yet (RFC 1122, 4.2.2.13): the last reply would be lost just when the
/// server took care to finish it. nginx's lingering close does the same.
///
/// `heard` is when the client last sent something: one silent since before
/// the quiet period (idle at its prompt, say) and with nothing unread is
/// closed at once, with a clean FIN.
pub(super) async fn linger(stream: &TcpStream, heard: std::time::Instant) {
    let mut heard = tokio::time::Instant::from_std(heard);
    let until = tokio::time::Instant::now() + LINGER_TIME;
    // The socket itself first, not tokio's readiness, which may not have
    // seen input that arrived since the last read.
    let mut read = READ_BUFFER.with_borrow_mut(|buf| (&*SockRef::from(stream)).read(buf));
    loop {
        match read {
            Ok(0) => return,
            Ok(_) => heard = tokio::time::Instant::now(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        let quiet = until.min(heard + LINGER_QUIET);
        if tokio::time::timeout_at(quiet, stream.readable())
            .await
            .is_err()
        {
            return;
        }
        read = READ_BUFFER.with_borrow_mut(|buf| stream.try_read(buf));
    }
}

//! One UDP socket of a run: batches of requests out, batches of replies in,
//! matched by sequence number.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;

use tokio::time::sleep_until;

use super::{BATCH, InFlight, Payloads, Run, Tally, error_kind};
use crate::mmsg::{RecvBatch, SendBatch};
use crate::udp_io::UdpIo;

/// One UDP connection's socket and buffers, made before the run's clock
/// starts ([`prepare`]): with thousands of sockets, allocating their
/// buffers takes tens of milliseconds, which the first requests would
/// otherwise wait for and count as the server's latency.
pub(super) struct Prepared {
    socket: UdpIo,
    recv: RecvBatch,
    send: SendBatch,
    out: Vec<u8>,
    /// Its counts and histograms (three HdrHistograms, 48 KB zeroed).
    tally: Tally,
}

/// Readies `socket` (opened, connected and registered with its thread's
/// runtime) for a run of `config` with requests of `size` bytes.
pub(super) fn prepare(config: &super::Config, size: usize, socket: UdpIo) -> Prepared {
    let offload = config.offload && offload(socket.as_fd());
    let slot = if offload {
        // A coalesced run of replies may fill the largest datagram.
        crate::protocol::DATAGRAM_BUFFER_BYTES
    } else {
        // A right reply has the request's length; a bigger slot shows a
        // longer (wrong) reply as wrong rather than cut.
        (size * 3 + 64).min(crate::protocol::DATAGRAM_BUFFER_BYTES)
    };
    Prepared {
        recv: RecvBatch::new(BATCH, slot),
        send: SendBatch::new(BATCH, offload),
        out: Vec::with_capacity(BATCH * size),
        tally: Tally::default(),
        socket,
    }
}

/// Drives connection `index` on its prepared socket until its pacer is done
/// and every request is settled, or the run is stopped.
pub(super) async fn connection(run: Arc<Run>, index: usize, prepared: Prepared) -> Tally {
    let mut pacer = run.pacer(index);
    // Watched for reading only: sends go straight to the kernel (see
    // `udp_io`).
    let Prepared {
        socket,
        mut recv,
        mut send,
        mut out,
        mut tally,
    } = prepared;
    tally.live = run.live_for(index);
    let size = run.payloads.size();
    let mut window = InFlight::starting_at(1);
    let timeout = run.config.timeout;

    loop {
        let now = Instant::now();
        let lost = window.expire(now, timeout);
        tally.counts.lost += lost;
        tally.settled(lost, now);

        let room = BATCH - out.len() / size;
        let due = run.fill(&mut pacer, &mut window, &mut tally, &mut out, room, now);
        while !out.is_empty() {
            match send.send(socket.as_fd(), &out, size) {
                Ok(n) => {
                    out.drain(..n * size);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Such as ECONNREFUSED reported from an earlier ICMP
                    // error: these requests are not sent and will time out.
                    tally.error(error_kind(&e));
                    out.clear();
                }
            }
        }
        if due.done && window.outstanding() == 0 && out.is_empty() {
            break;
        }

        let deadline = window.next_deadline(timeout);
        tokio::select! {
            biased;
            () = run.cancel.cancelled() => {
                tally.counts.in_flight += window.clear();
                break;
            }
            _ = socket.readable() => {}
            _ = socket.writable(), if !out.is_empty() => {}
            () = sleep_until(deadline.unwrap_or(now).into()), if deadline.is_some() => {}
            () = super::pace::until(due.wake.unwrap_or(now)), if due.wake.is_some() => {}
        }

        let mut received = 0;
        loop {
            let n = match socket.try_recv(&mut recv) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Readiness is kept after an error: the next turn
                    // reads on.
                    tally.error(error_kind(&e));
                    break;
                }
            };
            let now = Instant::now();
            for i in 0..n {
                for (reply, cut) in recv.datagrams(i) {
                    settle(&run.payloads, &mut window, &mut tally, reply, cut, now);
                    received += 1;
                }
            }
            if n < BATCH {
                break;
            }
        }
        run.counted(due.sent, received);
    }
    tally
}

/// Turns on UDP offload for `socket`: replies may come coalesced (GRO), and
/// requests go as segmented sends (GSO). Returns whether the kernel has
/// both; without, the run goes on with plain batches.
fn offload(fd: BorrowedFd<'_>) -> bool {
    if let Err(e) = crate::mmsg::enable_gro(fd) {
        tracing::warn!(error = %e, "no UDP receive offload here: sending plain batches");
        return false;
    }
    if !crate::mmsg::supports_segmentation(fd) {
        tracing::warn!("no UDP segmentation offload here: sending plain batches");
        return false;
    }
    true
}

/// Matches one reply to its request and counts it.
fn settle(
    payloads: &Payloads,
    window: &mut InFlight,
    tally: &mut Tally,
    reply: &[u8],
    cut: bool,
    now: Instant,
) {
    let matched = Payloads::seq_of(reply).and_then(|seq| Some((seq, window.take(seq)?)));
    match matched {
        Some((seq, request)) if request.measured => {
            let right = !cut && payloads.is_correct(seq, reply);
            tally.reply(now - request.intended, reply.len(), right, now);
        }
        Some(_) => {}
        None => tally.counts.unexpected += 1,
    }
}

//! One QUIC connection of a run: a stream per request (up to the pipeline
//! depth in flight), a new connection per request (oneshot, the handshake
//! timed apart), or DATAGRAM frames matched by sequence number (as UDP).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{InFlight, Next, Run, Tally};
use crate::quic::{QuicClient, QuicError};

/// How a QUIC load sends its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each request on a stream of its own, on one connection.
    Streams,
    /// Each request on a connection of its own (a handshake each).
    Oneshot,
    /// Each request as a DATAGRAM frame, on one connection.
    Datagrams,
    /// Requests as lines on one stream, pipelined as over TCP (the TCP
    /// load loop drives it).
    Lines,
}

/// What one request's stream came to.
struct Answer {
    seq: u64,
    intended: Instant,
    measured: bool,
    reply: Result<Vec<u8>, QuicError>,
    /// Oneshot: how long its handshake took.
    handshake: Option<Duration>,
}

/// Connects within the request timeout.
async fn connect(run: &Run) -> Result<QuicClient, QuicError> {
    let tls = run.config.tls.as_ref().expect("QUIC has TLS");
    let target = run.config.target.to_string();
    let max_reply = run.payloads.size() * 3 + 64;
    QuicClient::connect(
        &target,
        &[run.config.target],
        tls,
        run.config.timeout,
        max_reply,
    )
    .await
}

/// Connects and opens the one stream a [`Mode::Lines`] connection sends
/// its lines on.
pub(super) async fn open_lines(run: &Run) -> std::io::Result<super::conn::QuicLines> {
    let opened = async {
        let client = connect(run).await?;
        let stream = tokio::time::timeout(run.config.timeout, client.open_stream())
            .await
            .map_err(|_| timed_out(run))??;
        Ok::<_, QuicError>(super::conn::QuicLines::new(client, stream))
    };
    opened.await.map_err(std::io::Error::other)
}

/// Drives connection `index` in `mode` until its pacer is done and every
/// request is settled, or the run is stopped.
pub(super) async fn connection(run: Arc<Run>, index: usize, mode: Mode) -> Tally {
    let mut tally = run.tally(index);
    let mut pacer = run.pacer(index);
    let client = match mode {
        Mode::Oneshot => None,
        _ => match connect(&run).await {
            Ok(client) => Some(Arc::new(client)),
            Err(e) => {
                tracing::warn!("connection {index}: {e}");
                tally.error("connect");
                tally.counts.not_sent += pacer.abandon();
                return tally;
            }
        },
    };
    if mode == Mode::Datagrams {
        let client = client.expect("connected");
        return datagrams(run, client, pacer, tally).await;
    }
    let mut inflight: JoinSet<Answer> = JoinSet::new();
    let mut seq = 0u64;
    let size = run.payloads.size() as u64;
    loop {
        let now = Instant::now();
        tally.counts.not_sent += pacer.skip_late(now);
        let mut wake = None;
        let mut done = false;
        while inflight.len() < run.config.pipeline {
            match pacer.poll(now) {
                Next::Send { intended, measured } => {
                    pacer.sent(measured);
                    seq += 1;
                    let mut message = Vec::with_capacity(size as usize);
                    run.payloads.write(seq, &mut message);
                    // The payload ends with its newline; the client adds one.
                    message.pop();
                    if measured {
                        tally.counts.sent += 1;
                        tally.counts.bytes_sent += size;
                    }
                    run.counted(1, 0);
                    let deadline = intended + run.config.timeout;
                    let client = client.clone();
                    let run = run.clone();
                    inflight.spawn(async move {
                        let (reply, handshake) = match tokio::time::timeout_at(
                            deadline.into(),
                            ask(&run, client, &message),
                        )
                        .await
                        {
                            Ok(answer) => answer,
                            Err(_) => (Err(timed_out(&run)), None),
                        };
                        Answer {
                            seq,
                            intended,
                            measured,
                            reply,
                            handshake,
                        }
                    });
                }
                Next::Wait(t) => {
                    wake = Some(t);
                    break;
                }
                Next::Done => {
                    done = true;
                    break;
                }
            }
        }
        if done && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = run.cancel.cancelled() => {
                let measured = inflight.len() as u64;
                tally.counts.in_flight += measured;
                inflight.abort_all();
                break;
            }
            Some(joined) = inflight.join_next() => {
                if let Ok(answer) = joined {
                    settle(&run, &mut tally, answer);
                }
            }
            () = super::pace::until(wake.unwrap_or(now)), if wake.is_some() => {}
        }
    }
    if let Some(client) = client {
        client.close();
    }
    tally
}

/// The error a request that timed out counts as.
fn timed_out(run: &Run) -> QuicError {
    QuicError::TimedOut {
        addr: run.config.target,
        timeout: run.config.timeout,
    }
}

/// One request: on `client`'s connection, or (oneshot) on one of its own,
/// whose handshake is timed apart.
async fn ask(
    run: &Run,
    client: Option<Arc<QuicClient>>,
    message: &[u8],
) -> (Result<Vec<u8>, QuicError>, Option<Duration>) {
    match client {
        Some(client) => (client.request(message).await, None),
        None => {
            let started = Instant::now();
            let client = match connect(run).await {
                Ok(client) => client,
                Err(e) => return (Err(e), None),
            };
            let handshake = started.elapsed();
            let reply = client.request(message).await;
            client.close();
            (reply, Some(handshake))
        }
    }
}

/// Counts one request's answer.
fn settle(run: &Run, tally: &mut Tally, answer: Answer) {
    let now = Instant::now();
    run.counted(0, u64::from(answer.reply.is_ok()));
    if !answer.measured {
        return;
    }
    match answer.reply {
        Ok(reply) => {
            let line = reply.strip_suffix(b"\n").unwrap_or(&reply);
            let right = run.payloads.is_correct(answer.seq, line);
            let setup = answer.handshake.unwrap_or_default();
            tally.reply(
                (now - answer.intended).saturating_sub(setup),
                reply.len(),
                right,
                now,
            );
            if let Some(handshake) = answer.handshake {
                tally.shook_hands(handshake);
            }
        }
        Err(QuicError::TimedOut { .. }) => {
            tally.counts.lost += 1;
            tally.error("timeout");
            tally.settled(1, now);
        }
        Err(QuicError::Connect { .. }) => {
            tally.counts.failed += 1;
            tally.error("connect");
            tally.settled(1, now);
        }
        Err(QuicError::Stream { .. }) => {
            tally.counts.failed += 1;
            tally.error("stream");
            tally.settled(1, now);
        }
    }
}

/// Requests as DATAGRAM frames on `client`'s connection, matched by
/// sequence number as over UDP (loss is loss: no retransmission).
async fn datagrams(
    run: Arc<Run>,
    client: Arc<QuicClient>,
    mut pacer: super::Pacer,
    mut tally: Tally,
) -> Tally {
    let size = run.payloads.size() as u64;
    let mut window = InFlight::starting_at(1);
    let timeout = run.config.timeout;
    let mut out = Vec::new();
    loop {
        let now = Instant::now();
        let lost = window.expire(now, timeout);
        tally.counts.lost += lost;
        tally.settled(lost, now);
        out.clear();
        let due = run.fill(
            &mut pacer,
            &mut window,
            &mut tally,
            &mut out,
            usize::MAX,
            now,
        );
        for message in out.chunks(size as usize) {
            if let Err(e) = client.send_datagram(message) {
                tracing::debug!(error = %e, "datagram not sent");
                tally.error("send");
            }
        }
        run.counted(due.sent, 0);
        if due.done && window.outstanding() == 0 {
            break;
        }
        let deadline = window.next_deadline(timeout);
        tokio::select! {
            biased;
            () = run.cancel.cancelled() => {
                tally.counts.in_flight += window.clear();
                break;
            }
            reply = client.read_datagram() => match reply {
                Ok(reply) => {
                    let now = Instant::now();
                    let matched = super::Payloads::seq_of(&reply)
                        .and_then(|seq| Some((seq, window.take(seq)?)));
                    match matched {
                        Some((seq, request)) if request.measured => {
                            let right = run.payloads.is_correct(seq, &reply);
                            tally.reply(now - request.intended, reply.len(), right, now);
                        }
                        Some(_) => {}
                        None => tally.counts.unexpected += 1,
                    }
                    run.counted(0, 1);
                }
                Err(e) => {
                    tracing::warn!("datagrams: {e}");
                    tally.error("connection");
                    let n = window.clear();
                    tally.counts.failed += n;
                    tally.settled(n, Instant::now());
                    tally.counts.not_sent += pacer.abandon();
                    break;
                }
            },
            () = tokio::time::sleep_until(deadline.unwrap_or(now).into()), if deadline.is_some() => {}
            () = super::pace::until(due.wake.unwrap_or(now)), if due.wake.is_some() => {}
        }
    }
    client.close();
    tally
}

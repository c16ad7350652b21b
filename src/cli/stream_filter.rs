//! `upcase client` as a filter over TCP, streaming: input lines are written
//! as they come and replies printed in order as they arrive, as socat and
//! nc do, instead of waiting for each reply before sending the next line
//! (`seq 1 100000 | upcase client` took 8 s that way).
//!
//! Used once the first line's reply has shown that the server keeps the
//! connection open; a server that closes after each reply (the textbook
//! TCPServer) is served a line per connection, as before. Memory is
//! bounded: a writer thread blocks on the socket when the server is behind
//! (TCP's own backpressure), and a reply longer than its limit is an error.
//! Plain TCP only: a TLS stream cannot be written and read from two threads.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Streams the rest of `input` on `stream` and prints each reply line to
/// `out`. Returns how the run ended: Ok when every line got its reply.
pub fn run(
    stream: TcpStream,
    input: io::Stdin,
    out: &mut impl Write,
    max_line_bytes: usize,
    max_reply_bytes: usize,
) -> anyhow::Result<()> {
    let peer = stream.peer_addr()?;
    let writer_stream = stream.try_clone()?;
    let sent = Arc::new(AtomicU64::new(0));
    let input_done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sent, input_done) = (sent.clone(), input_done.clone());
        std::thread::Builder::new()
            .name("client-writer".into())
            .spawn(move || {
                let written = write_lines(input, &writer_stream, max_line_bytes, &sent);
                input_done.store(true, Ordering::Release);
                // The server finishes its replies and closes.
                let _ = writer_stream.shutdown(Shutdown::Write);
                written
            })?
    };
    let mut replies = BufReader::new(&stream);
    let mut reply = Vec::new();
    let mut received = 0u64;
    let outcome = loop {
        reply.clear();
        let limit = u64::try_from(max_reply_bytes).unwrap_or(u64::MAX);
        match (&mut replies).take(limit + 1).read_until(b'\n', &mut reply) {
            Ok(0) => break Ok(()),
            Ok(_) if reply.last() == Some(&b'\n') => {
                out.write_all(&reply)?;
                received += 1;
                // Flushed when no more replies are waiting: a person
                // watching sees each, a pipeline pays one write per batch.
                if replies.buffer().is_empty() {
                    out.flush()?;
                }
            }
            Ok(_) if reply.len() > max_reply_bytes => {
                break Err(anyhow::anyhow!(
                    "tcp {peer}: reply longer than {max_reply_bytes} bytes without a newline"
                ));
            }
            Ok(_) => {
                // The server closed in the middle of a reply.
                out.write_all(&reply)?;
                out.write_all(b"\n")?;
                super::output::report_error(format_args!(
                    "warning: the server closed the connection before ending its reply with a newline; it may be incomplete"
                ));
                received += 1;
                break Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Silence: an error only while a line awaits its reply;
                // otherwise the input is slow (a person, a slow producer),
                // or done and every reply in.
                if received < sent.load(Ordering::Acquire) {
                    break Err(anyhow::anyhow!(
                        "tcp {peer}: awaiting the reply: no reply in time"
                    ));
                }
                if input_done.load(Ordering::Acquire) {
                    break Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(anyhow::anyhow!("tcp {peer}: awaiting the reply: {e}")),
        }
    };
    out.flush()?;
    // Unblocks a writer stuck on a server that stopped reading.
    let _ = stream.shutdown(Shutdown::Both);
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the input thread failed"))?;
    outcome?;
    written?;
    let sent = sent.load(Ordering::Acquire);
    if received < sent {
        anyhow::bail!(
            "tcp {peer}: the server closed the connection with {} of {sent} lines unanswered",
            sent - received
        );
    }
    Ok(())
}

/// Writes each line of `input` to `stream` with a `\n`, counting them in
/// `sent`; a line longer than `max` is an error, not cut.
fn write_lines(
    input: io::Stdin,
    mut stream: &TcpStream,
    max: usize,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    // Our own buffer over stdin's (which serves what it holds first), to
    // see whether whole lines are waiting.
    let mut input = BufReader::new(input.lock());
    let mut line = Vec::new();
    // Lines go out in batches, those input holds whole now in one write,
    // before a read that may wait; a line counts as sent once written.
    let mut batch = Vec::new();
    let mut in_batch = 0;
    loop {
        match super::client::read_line(&mut input, max, &mut line) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // The lines before the bad one still go, and get replies.
                stream.write_all(&batch)?;
                sent.fetch_add(in_batch, Ordering::AcqRel);
                return Err(e);
            }
        }
        batch.extend_from_slice(&line);
        batch.push(b'\n');
        in_batch += 1;
        if !input.buffer().contains(&b'\n') || batch.len() >= 64 * 1024 {
            stream.write_all(&batch)?;
            sent.fetch_add(in_batch, Ordering::AcqRel);
            batch.clear();
            in_batch = 0;
        }
    }
    stream.write_all(&batch)?;
    sent.fetch_add(in_batch, Ordering::AcqRel);
    Ok(())
}

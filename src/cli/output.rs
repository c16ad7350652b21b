//! Standard output whose reader may leave first (`upcase ping host | head -1`).
//!
//! Rust ignores SIGPIPE, so that a peer closing a socket cannot kill the
//! process; a write to a closed pipe then fails with `EPIPE` instead. The
//! tools end quietly on it, as a filter killed by SIGPIPE would, and the
//! server, whose stdout only announces where it listens, goes on serving.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// The reader of standard output is gone.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub struct OutputClosed;

/// Standard output, its `EPIPE` turned into [`OutputClosed`] so that it is
/// told apart from a socket's (see [`is_closed`]).
pub struct Output(io::Stdout);

impl Output {
    pub fn new() -> Output {
        Output(io::stdout())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, OutputClosed)
    } else {
        e
    }
}

/// Whether `e` is, or was caused by, writing to a closed standard output:
/// an `io::Error` in its chain that carries [`OutputClosed`].
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .is_some_and(|inner| inner.is::<OutputClosed>())
    })
}

/// Writes `value` as JSON and a newline to `out` in one write, so that a
/// closed standard output shows as [`OutputClosed`] (serde_json's own
/// error hides the I/O error's cause).
pub fn write_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
    pretty: bool,
) -> io::Result<()> {
    let mut bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(io::Error::other)?;
    bytes.push(b'\n');
    out.write_all(&bytes)
}

/// Writes the server's announcements (ready, addresses). Unlike `println!`,
/// which panics, a closed stdout is logged once and the server goes on.
pub fn announce(lines: &[String]) {
    let mut out = io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot write to stdout; serving on");
    }
}

/// Log lines dropped because stderr could not take them.
static DROPPED_LOG_LINES: AtomicU64 = AtomicU64::new(0);

/// The queue of the server's log lines, counting those it dropped when full.
static QUEUE_DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines the server's queue holds at most while stderr is slow: about
/// 200 KiB of lines at ~200 bytes each.
pub const LOG_QUEUE_LINES: usize = 1024;

/// How many log lines were dropped so far: stderr failed (a closed pipe, a
/// full disk), or it could not keep up and the queue was full.
pub fn dropped_log_lines() -> u64 {
    let queued = QUEUE_DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64);
    DROPPED_LOG_LINES.load(Ordering::Relaxed) + queued
}

/// The queue's guard: dropping it writes what is queued.
static QUEUE_GUARD: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> =
    std::sync::Mutex::new(None);

/// Standard error behind a bounded queue and a thread of its own, for the
/// server: a reader that stops reading (a paused `| less`, a stuck
/// journald, Docker's blocking log mode) fills the pipe, and then only
/// that thread waits; a line that finds the queue full is dropped and
/// counted ([`dropped_log_lines`]), and serving and signals go on. Call
/// [`flush_logs`] before the process ends.
pub fn log_queue() -> tracing_appender::non_blocking::NonBlocking {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("upcase-log")
        .finish(LogWriter::new());
    let _ = QUEUE_DROPPED.set(writer.error_counter());
    *QUEUE_GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    writer
}

/// Writes the log lines still queued, waiting at most about a second for a
/// reader that does not read; later lines are written at once. For the end
/// of the process, `exit` included (which runs no destructor).
pub fn flush_logs() {
    let Some(guard) = QUEUE_GUARD.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    // A stderr that takes nothing within a second will not take the queue:
    // the lines are dropped. (The guard's own wait would end after a
    // second too, but then print to stdout about it, which panics if
    // stdout is closed, and the panic's message would wait on stderr.)
    if stderr_writable_within(std::time::Duration::from_secs(1)) {
        drop(guard);
    } else {
        std::mem::forget(guard);
    }
}

/// Whether standard error can take a write within `wait`.
fn stderr_writable_within(wait: std::time::Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDERR_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll(2) on one pollfd we own, for its length of 1.
    let ready = unsafe { libc::poll(&mut fd, 1, ms) };
    ready == 1 && fd.revents & libc::POLLOUT != 0
}

/// Standard error for log lines: a write that fails is dropped and counted,
/// never an error. Logging is how the server reports; it must not be a way
/// to stop it (a panic on a broken pipe ended the signal handler's task, and
/// with it the graceful shutdown).
pub struct LogWriter(io::Stderr);

impl LogWriter {
    pub fn new() -> LogWriter {
        LogWriter(io::stderr())
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.0.write(buf).unwrap_or_else(|_| {
            DROPPED_LOG_LINES.fetch_add(1, Ordering::Relaxed);
            buf.len()
        }))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.0.write_all(buf).is_err() {
            DROPPED_LOG_LINES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Writes `upcase: MESSAGE` on stderr, as the last word of a failed
/// command. Unlike `eprintln!`, a closed stderr is no panic: there is
/// nobody left to tell.
pub fn report_error(message: std::fmt::Arguments) {
    let _ = writeln!(io::stderr(), "upcase: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_output_is_told_apart_from_other_broken_pipes() {
        let closed = anyhow::Error::from(mark(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(is_closed(&closed));
        assert!(is_closed(&closed.context("printing the report")));

        let socket = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!is_closed(&socket));
        let other = anyhow::Error::from(mark(io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_closed(&other));
    }
}

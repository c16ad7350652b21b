//! A persistent connection as the load loop drives it, plain, TLS or one
//! QUIC stream: reads and writes that never wait (`WouldBlock` instead),
//! and one wait for readiness. The plain socket's are tokio's own; TLS's
//! poll tokio-rustls once, so the same loop drives both. A QUIC stream has
//! no socket to wait on: its wait reads into a buffer of its own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// What the persistent load loop needs of a connection.
pub(super) trait Conn {
    /// Reads what is there; `WouldBlock` if nothing is.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits; `WouldBlock` if nothing does.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Sends what the connection itself still holds (TLS records); `Ok`
    /// when nothing is left, `WouldBlock` when the socket is full.
    fn try_flush(&mut self) -> io::Result<()>;
    /// Whether [`try_flush`](Conn::try_flush) has something left to send.
    fn holds_output(&self) -> bool;
    /// Waits until the socket may be read or written, as `interest` asks.
    async fn ready(&mut self, interest: Interest) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }

    fn try_flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn holds_output(&self) -> bool {
        false
    }

    async fn ready(&mut self, interest: Interest) -> io::Result<()> {
        TcpStream::ready(self, interest).await.map(drop)
    }
}

/// Polls once without a task to wake: the loop waits on the socket's
/// readiness ([`Conn::ready`]) instead, which tokio-rustls' own reads and
/// writes clear when they meet `WouldBlock`.
fn once<T>(poll: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>) -> io::Result<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl Conn for TlsStream<TcpStream> {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        once(|cx| {
            let mut read = ReadBuf::new(buf);
            Pin::new(&mut *self)
                .poll_read(cx, &mut read)
                .map_ok(|()| read.filled().len())
        })
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        once(|cx| Pin::new(&mut *self).poll_write(cx, buf))
    }

    fn try_flush(&mut self) -> io::Result<()> {
        once(|cx| Pin::new(&mut *self).poll_flush(cx))
    }

    fn holds_output(&self) -> bool {
        self.get_ref().1.wants_write()
    }

    async fn ready(&mut self, interest: Interest) -> io::Result<()> {
        self.get_ref().0.ready(interest).await.map(drop)
    }
}

/// One QUIC stream carrying a connection's lines, as a TCP connection
/// would. quinn's streams are futures, not sockets: waiting to read reads
/// into `input` (taken by the next [`Conn::try_read`]), and writes queue in
/// `output` (no more than the load loop's window) until quinn takes them.
pub(super) struct QuicLines {
    /// Kept for the stream's life.
    _client: crate::quic::QuicClient,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    input: Box<[u8]>,
    /// What of `input` is read and not yet taken.
    start: usize,
    end: usize,
    /// The server finished its side of the stream.
    ended: bool,
    output: Vec<u8>,
}

/// How much a wait reads ahead.
const READ_AHEAD: usize = 64 * 1024;

impl QuicLines {
    pub(super) fn new(
        client: crate::quic::QuicClient,
        (send, recv): (quinn::SendStream, quinn::RecvStream),
    ) -> QuicLines {
        QuicLines {
            _client: client,
            send,
            recv,
            input: vec![0; READ_AHEAD].into_boxed_slice(),
            start: 0,
            end: 0,
            ended: false,
            output: Vec::new(),
        }
    }

    /// Polls quinn for what the server sent, into `input`; ready once
    /// something (or the stream's end) is there.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.start < self.end || self.ended {
            return Poll::Ready(Ok(()));
        }
        let mut read = ReadBuf::new(&mut self.input);
        match AsyncRead::poll_read(Pin::new(&mut self.recv), cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                (self.start, self.end) = (0, n);
                self.ended = n == 0;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Hands quinn what it takes of `output`; ready when all of it is taken.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.output.is_empty() {
            match AsyncWrite::poll_write(Pin::new(&mut self.send), cx, &self.output) {
                Poll::Ready(Ok(n)) => drop(self.output.drain(..n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Conn for QuicLines {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        once(|cx| self.poll_input(cx))?;
        let n = buf.len().min(self.end - self.start);
        buf[..n].copy_from_slice(&self.input[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Taken whole: the load loop holds no more than its window.
        self.output.extend_from_slice(buf);
        match self.try_flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(buf.len()),
        }
    }

    fn try_flush(&mut self) -> io::Result<()> {
        once(|cx| self.poll_output(cx))
    }

    fn holds_output(&self) -> bool {
        !self.output.is_empty()
    }

    async fn ready(&mut self, interest: Interest) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            if interest.is_writable() && !self.output.is_empty() {
                match self.poll_output(cx) {
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Pending => {}
                }
            }
            self.poll_input(cx)
        })
        .await
    }
}

//! A persistent connection as the load loop drives it, plain or TLS: reads
//! and writes that never wait (`WouldBlock` instead), and one wait for
//! readiness. The plain socket's are tokio's own; TLS's poll tokio-rustls
//! once, so the same loop drives both.

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
    async fn ready(&self, interest: Interest) -> io::Result<()>;
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

    async fn ready(&self, interest: Interest) -> io::Result<()> {
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

    async fn ready(&self, interest: Interest) -> io::Result<()> {
        self.get_ref().0.ready(interest).await.map(drop)
    }
}

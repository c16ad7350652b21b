//! A UDP socket that tokio watches for reading only (the load generator's;
//! the server's UDP sockets each have a blocking thread instead).
//!
//! tokio's `UdpSocket` registers with epoll for reading and writing. On
//! loopback every send then signals `EPOLLOUT`, and each reply costs the
//! worker a second trip through `epoll_wait` that wakes no one. A [`UdpIo`]
//! is registered for reading alone: sends go straight to the kernel, and only
//! when the send buffer is full does [`UdpIo::writable`] watch a duplicate of
//! the descriptor for writing, for that one wait.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::mmsg::RecvBatch;

/// A non-blocking UDP socket registered with tokio for reading only.
#[derive(Debug)]
pub struct UdpIo(AsyncFd<UdpSocket>);

impl UdpIo {
    /// Registers `socket` with the current tokio runtime.
    pub fn new(socket: UdpSocket) -> io::Result<UdpIo> {
        socket.set_nonblocking(true)?;
        Ok(UdpIo(watch(socket, Interest::READABLE)?))
    }

    /// Sets the only peer the socket sends to and receives from.
    pub fn connect(&self, peer: SocketAddr) -> io::Result<()> {
        self.0.get_ref().connect(peer)
    }

    /// Waits until tokio has seen the socket readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.0.readable().await?.retain_ready();
        Ok(())
    }

    /// Receives a batch of what is queued, without waiting; `WouldBlock` if
    /// nothing is. A batch that comes back short has drained the queue, so
    /// it also clears the readiness tokio keeps: the next wait goes to epoll
    /// instead of a `recvmmsg(2)` that would find nothing. A datagram
    /// arriving meanwhile raises a new edge, so none waits unnoticed.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let mut received = 0;
        let result = self.0.try_io(Interest::READABLE, |socket| {
            received = batch.recv(socket.as_fd())?;
            if received < batch.capacity() {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(received)
            }
        });
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && received > 0 => Ok(received),
            result => result,
        }
    }

    /// Waits until the socket's send buffer has room, after a send failed
    /// with `WouldBlock`.
    pub async fn writable(&self) -> io::Result<()> {
        // A duplicate descriptor is a separate entry in epoll, so it can be
        // watched for writing while the socket stays registered for reading.
        let duplicate = self.0.get_ref().try_clone()?;
        let watched = watch(duplicate, Interest::WRITABLE)?;
        watched.writable().await?.retain_ready();
        Ok(())
    }
}

impl AsFd for UdpIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

/// Registers `socket` with tokio for `interest`.
fn watch(socket: UdpSocket, interest: Interest) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: the `UdpSocket` owns its descriptor, closes it only when
    // dropped, and reports the same one for as long as it lives.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for datagrams and receives a batch, as the bench's loop does.
    async fn recv(socket: &UdpIo, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_recv(batch) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return result,
            }
        }
    }

    #[tokio::test]
    async fn receives_what_arrives_and_waits_for_room_to_send() {
        let socket = UdpIo::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.0.get_ref().local_addr().unwrap();
        for i in 0..3u8 {
            peer.send_to(&[i], to).unwrap();
        }
        let mut batch = RecvBatch::new(8, 64);
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = recv(&socket, &mut batch).await.unwrap();
            for i in 0..n {
                got.extend(batch.datagrams(i).map(|(d, _)| d.to_vec()));
            }
        }
        assert_eq!(got, [[0], [1], [2]]);
        // An empty socket's send buffer has room: the wait ends, and the
        // socket still receives afterwards.
        socket.writable().await.unwrap();
        peer.send_to(b"after", to).unwrap();
        let n = recv(&socket, &mut batch).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(batch.datagrams(0).next().unwrap().0, b"after");
    }
}

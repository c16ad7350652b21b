//! Many datagrams per system call: `recvmmsg(2)` and `sendmmsg(2)` on a
//! non-blocking UDP socket (Linux). [`RecvBatch`] records each datagram's
//! source; [`SendBatch`] sends on a connected socket, [`AddressedBatch`] to
//! an address per datagram (a server's replies).
//!
//! Hand-written over `libc` because no well-kept crate fits: socket2 0.6 has
//! no mmsg calls yet (rust-lang/socket2#583), and nix's `recvmmsg` ties its
//! headers to the buffers' borrow for each call, so a loop that reuses its
//! buffers would build a vector of slices per batch. Here the headers, the
//! iovecs and one flat buffer are allocated once and re-pointed on each call.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{SockAddr, SockAddrStorage};

/// Buffers for receiving up to `count` datagrams in one call.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_storage>,
    received: usize,
}

// SAFETY: the raw pointers in `iov` and `hdr` point into `buf` and `iov`,
// which the batch owns; they are rewritten before every system call and
// never dereferenced by Rust code, so moving the batch to another thread
// cannot leave them dangling in any way that matters.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for `count` datagrams of up to `slot` bytes each.
    ///
    /// The buffer is zeroed memory from the allocator, which for large sizes
    /// is fresh pages from the kernel: only the pages datagrams are written
    /// into become resident, so large slots cost little for small datagrams.
    pub fn new(count: usize, slot: usize) -> RecvBatch {
        RecvBatch {
            buf: vec![0; count * slot],
            slot,
            // SAFETY: all-zero is a valid iovec, mmsghdr and sockaddr_storage
            // (null pointers, zero lengths, AF_UNSPEC).
            iov: vec![unsafe { std::mem::zeroed() }; count],
            hdr: vec![unsafe { std::mem::zeroed() }; count],
            names: vec![unsafe { std::mem::zeroed() }; count],
            received: 0,
        }
    }

    /// Receives what is waiting, up to the batch's size, without blocking.
    /// Returns how many datagrams came; `WouldBlock` if none was waiting.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        let slots = self.iov.iter_mut().zip(&mut self.hdr).zip(&mut self.names);
        for (i, ((iov, hdr), name)) in slots.enumerate() {
            // SAFETY: i * slot + slot <= buf.len() by construction.
            iov.iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov.iov_len = self.slot;
            // SAFETY: all-zero is a valid msghdr.
            hdr.msg_hdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_len = 0;
        }
        // SAFETY: `hdr` holds `hdr.len()` initialized headers whose iovecs
        // point at distinct `slot`-byte regions of `buf` and whose names
        // point at distinct entries of `names`, all alive for the call; no
        // control buffers are asked for.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdr.as_mut_ptr(),
                self.hdr.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.received = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        Ok(self.received)
    }

    /// Datagram `i` of the last call, and whether it was cut short because
    /// it was longer than a slot.
    pub fn get(&self, i: usize) -> (&[u8], bool) {
        assert!(i < self.received, "datagram {i} of {}", self.received);
        let len = self.hdr[i].msg_len as usize;
        let truncated = self.hdr[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.buf[i * self.slot..][..len.min(self.slot)], truncated)
    }

    /// Where datagram `i` of the last call came from (`None` if the kernel
    /// gave no IP address, which a UDP socket never does).
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        assert!(i < self.received, "datagram {i} of {}", self.received);
        let len = self.hdr[i].msg_hdr.msg_namelen;
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: `sockaddr_storage` is a platform sockaddr type, and the
        // kernel wrote an address of `len` bytes (at most the storage's
        // size, which it was given) into `names[i]`.
        let addr = unsafe {
            *storage.view_as::<libc::sockaddr_storage>() = self.names[i];
            SockAddr::new(storage, len)
        };
        addr.as_socket()
    }
}

/// Datagrams to send, each to its own address, up to `count` per call:
/// a server's replies to a [`RecvBatch`]. The payloads are laid end to end
/// in one buffer that is reused, so a steady load allocates nothing.
pub struct AddressedBatch {
    buf: Vec<u8>,
    /// Each datagram's end in `buf` and its destination.
    entries: Vec<(usize, SockAddr)>,
    /// Datagrams before this one are sent (or given up on).
    next: usize,
    headers: SendHeaders,
}

impl AddressedBatch {
    /// Room for `count` datagrams per call.
    pub fn new(count: usize) -> AddressedBatch {
        AddressedBatch {
            buf: Vec::new(),
            entries: Vec::with_capacity(count),
            next: 0,
            headers: SendHeaders::new(count),
        }
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.entries.clear();
        self.next = 0;
    }

    /// Adds a datagram to `to` whose payload `write` appends to the buffer
    /// it is given.
    pub fn push(&mut self, to: SocketAddr, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.entries.push((self.buf.len(), SockAddr::from(to)));
    }

    /// Datagrams not yet sent.
    pub fn pending(&self) -> usize {
        self.entries.len() - self.next
    }

    /// Payload bytes not yet sent.
    pub fn pending_bytes(&self) -> usize {
        let sent = self.next.checked_sub(1).map_or(0, |i| self.entries[i].0);
        self.buf.len() - sent
    }

    /// The next datagram to send: its payload and destination.
    pub fn peek(&self) -> Option<(&[u8], SocketAddr)> {
        let (end, to) = self.entries.get(self.next)?;
        let start = self.next.checked_sub(1).map_or(0, |i| self.entries[i].0);
        Some((&self.buf[start..*end], to.as_socket()?))
    }

    /// Gives up on the next datagram (after an error sending it).
    pub fn skip(&mut self) {
        self.next = (self.next + 1).min(self.entries.len());
    }

    /// Sends pending datagrams, up to the batch's size, without blocking.
    /// Returns how many were sent, and they are no longer pending. An error
    /// concerns the first pending datagram (`WouldBlock`: none could be
    /// sent; otherwise [`skip`](Self::skip) it, or retry).
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut start = self.next.checked_sub(1).map_or(0, |i| self.entries[i].0);
        let datagrams = self.entries[self.next..].iter().map(|(end, to)| {
            let datagram = (&self.buf[start..*end], Some(to));
            start = *end;
            datagram
        });
        let n = self.headers.send(fd, datagrams)?;
        self.next += n;
        Ok(n)
    }
}

/// Headers for sending up to `count` datagrams in one call on a connected
/// socket.
pub struct SendBatch(SendHeaders);

impl SendBatch {
    /// Room for `count` datagrams per call.
    pub fn new(count: usize) -> SendBatch {
        SendBatch(SendHeaders::new(count))
    }

    /// Sends the datagrams laid end to end in `buf`, `size` bytes each, up
    /// to the batch's size, without blocking. Returns how many were sent (the
    /// first ones); `WouldBlock` if none could be.
    pub fn send(&mut self, fd: BorrowedFd<'_>, buf: &[u8], size: usize) -> io::Result<usize> {
        assert!(
            size > 0 && buf.len().is_multiple_of(size),
            "whole datagrams only"
        );
        self.0.send(fd, buf.chunks_exact(size).map(|d| (d, None)))
    }
}

/// The `sendmmsg(2)` headers both kinds of send batch point at their data:
/// allocated once, re-pointed on each call.
struct SendHeaders {
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
}

// SAFETY: as for `RecvBatch`: the pointers are rewritten before each call.
unsafe impl Send for SendHeaders {}

impl SendHeaders {
    fn new(count: usize) -> SendHeaders {
        SendHeaders {
            // SAFETY: all-zero is a valid iovec and mmsghdr.
            iov: vec![unsafe { std::mem::zeroed() }; count],
            hdr: vec![unsafe { std::mem::zeroed() }; count],
        }
    }

    /// Sends up to a batch of `datagrams`, each a payload and, on an
    /// unconnected socket, a destination, without blocking. Returns how many
    /// were sent (the first ones).
    fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        datagrams: impl Iterator<Item = (&'a [u8], Option<&'a SockAddr>)>,
    ) -> io::Result<usize> {
        let mut count = 0;
        for ((iov, hdr), (data, to)) in self.iov.iter_mut().zip(&mut self.hdr).zip(datagrams) {
            iov.iov_base = data.as_ptr().cast_mut().cast();
            iov.iov_len = data.len();
            // SAFETY: all-zero is a valid msghdr.
            hdr.msg_hdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            if let Some(to) = to {
                hdr.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
                hdr.msg_hdr.msg_namelen = to.len();
            }
            count += 1;
        }
        // SAFETY: the first `count` headers point at payloads and addresses
        // borrowed for `'a`, which outlives the call; the kernel only reads
        // them.
        let n = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.hdr.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn batches_go_and_come_whole() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();

        let mut recv = RecvBatch::new(8, 6);
        let err = recv.recv(b.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        let mut send = SendBatch::new(4);
        let sent = send.send(a.as_fd(), b"one  two  three", 5).unwrap();
        assert_eq!(sent, 3);
        // A datagram longer than a slot is reported cut, never silently.
        a.send(b"too long").unwrap();
        b.set_nonblocking(false).unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            let n = match recv.recv(b.as_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            got.extend((0..n).map(|i| {
                let (d, cut) = recv.get(i);
                (d.to_vec(), cut)
            }));
        }
        let want: Vec<(Vec<u8>, bool)> = vec![
            (b"one  ".to_vec(), false),
            (b"two  ".to_vec(), false),
            (b"three".to_vec(), false),
            (b"too lo".to_vec(), true),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn replies_go_to_each_source_and_bad_ones_can_be_skipped() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("from {i}").as_bytes(), server.local_addr().unwrap())
                .unwrap();
        }
        let mut recv = RecvBatch::new(8, 64);
        let mut got = 0;
        let mut replies = AddressedBatch::new(2);
        while got < 3 {
            match recv.recv(server.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let from = recv.source(i).unwrap();
                        let (data, _) = recv.get(i);
                        replies.push(from, |buf| buf.extend(data.to_ascii_uppercase()));
                        // One reply too large for any datagram, to skip.
                        if got + i == 1 {
                            replies.push(from, |buf| buf.resize(buf.len() + 70_000, b'x'));
                        }
                    }
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(replies.pending(), 4);
        let mut errors = 0;
        while replies.pending() > 0 {
            match replies.send(server.as_fd()) {
                Ok(n) => assert!(n > 0 && n <= 2),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
                    assert_eq!(replies.peek().unwrap().0.len(), 70_000);
                    replies.skip();
                    errors += 1;
                }
            }
        }
        assert_eq!(errors, 1);
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 64];
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], format!("FROM {i}").as_bytes());
        }
        replies.clear();
        assert_eq!(replies.pending(), 0);
        assert!(replies.peek().is_none());
    }

    #[test]
    fn at_most_a_batch_is_sent_per_call() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        let mut send = SendBatch::new(2);
        assert_eq!(send.send(a.as_fd(), b"abc", 1).unwrap(), 2);
    }
}

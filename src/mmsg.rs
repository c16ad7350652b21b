//! Many datagrams per system call: `recvmmsg(2)` and `sendmmsg(2)` on a
//! connected, non-blocking UDP socket (Linux).
//!
//! Hand-written over `libc` because no well-kept crate fits: socket2 0.6 has
//! no mmsg calls yet (rust-lang/socket2#583), and nix's `recvmmsg` ties its
//! headers to the buffers' borrow for each call, so a loop that reuses its
//! buffers would build a vector of slices per batch. Here the headers, the
//! iovecs and one flat buffer are allocated once and re-pointed on each call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Buffers for receiving up to `count` datagrams in one call.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    received: usize,
}

// SAFETY: the raw pointers in `iov` and `hdr` point into `buf` and `iov`,
// which the batch owns; they are rewritten before every system call and
// never dereferenced by Rust code, so moving the batch to another thread
// cannot leave them dangling in any way that matters.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Room for `count` datagrams of up to `slot` bytes each.
    pub fn new(count: usize, slot: usize) -> RecvBatch {
        RecvBatch {
            buf: vec![0; count * slot],
            slot,
            // SAFETY: all-zero is a valid iovec and mmsghdr (null pointers,
            // zero lengths).
            iov: vec![unsafe { std::mem::zeroed() }; count],
            hdr: vec![unsafe { std::mem::zeroed() }; count],
            received: 0,
        }
    }

    /// Receives what is waiting, up to the batch's size, without blocking.
    /// Returns how many datagrams came; `WouldBlock` if none was waiting.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        for (i, (iov, hdr)) in self.iov.iter_mut().zip(&mut self.hdr).enumerate() {
            // SAFETY: i * slot + slot <= buf.len() by construction.
            iov.iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov.iov_len = self.slot;
            // SAFETY: all-zero is a valid msghdr.
            hdr.msg_hdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_len = 0;
        }
        // SAFETY: `hdr` holds `hdr.len()` initialized headers whose iovecs
        // point at distinct `slot`-byte regions of `buf`, all alive for the
        // call; no address or control buffers are asked for.
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
}

/// Headers for sending up to `count` datagrams in one call.
pub struct SendBatch {
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
}

// SAFETY: as for `RecvBatch`: the pointers are rewritten before each call.
unsafe impl Send for SendBatch {}

impl SendBatch {
    /// Room for `count` datagrams per call.
    pub fn new(count: usize) -> SendBatch {
        SendBatch {
            // SAFETY: all-zero is a valid iovec and mmsghdr.
            iov: vec![unsafe { std::mem::zeroed() }; count],
            hdr: vec![unsafe { std::mem::zeroed() }; count],
        }
    }

    /// Sends the datagrams laid end to end in `buf`, `size` bytes each, up
    /// to the batch's size, without blocking. Returns how many were sent (the
    /// first ones); `WouldBlock` if none could be.
    pub fn send(&mut self, fd: BorrowedFd<'_>, buf: &[u8], size: usize) -> io::Result<usize> {
        assert!(
            size > 0 && buf.len().is_multiple_of(size),
            "whole datagrams only"
        );
        let count = (buf.len() / size).min(self.hdr.len());
        for (i, (iov, hdr)) in self
            .iov
            .iter_mut()
            .zip(&mut self.hdr)
            .take(count)
            .enumerate()
        {
            iov.iov_base = buf[i * size..].as_ptr().cast_mut().cast();
            iov.iov_len = size;
            // SAFETY: all-zero is a valid msghdr.
            hdr.msg_hdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `count` headers point at `size`-byte regions of
        // `buf`, which outlives the call; the kernel only reads them.
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
    fn at_most_a_batch_is_sent_per_call() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        let mut send = SendBatch::new(2);
        assert_eq!(send.send(a.as_fd(), b"abc", 1).unwrap(), 2);
    }
}

//! Many datagrams per system call: `recvmmsg(2)` and `sendmmsg(2)` on a
//! non-blocking UDP socket (Linux), with UDP segmentation offload where the
//! kernel has it. [`RecvBatch`] records each datagram's source;
//! [`SendBatch`] sends on a connected socket, [`AddressedBatch`] to an
//! address per datagram (a server's replies).
//!
//! **Reply from the address asked.** A socket bound to a wildcard address
//! (`0.0.0.0`, `[::]`) on a host with several addresses would answer from
//! whichever one the routing table picks, and a client whose socket is
//! connected to another drops the reply. With [`enable_pktinfo`], each
//! received message carries the address it was sent to
//! ([`RecvBatch::destination`], from `IP_PKTINFO`/`IPV6_PKTINFO`), and an
//! [`AddressedBatch`] sends each reply from the address given with it, in
//! the same `sendmmsg(2)`, as DNS and NTP servers do.
//!
//! **Offload.** With [`enable_gro`], the kernel may hand over a run of
//! equal-sized datagrams of one flow as one buffer and a segment size (UDP
//! GRO); [`RecvBatch::datagrams`] splits it back, so callers always see
//! datagrams. A send batch may likewise join a run of equal-sized datagrams
//! to one destination into one segmented send (UDP GSO, `UDP_SEGMENT`): the
//! kernel cuts it into the same datagrams on the wire, for one trip through
//! the stack instead of one per datagram. Where the kernel or the path
//! refuses a segmented send, those datagrams go one by one and the batch
//! stops joining datagrams of that size.
//!
//! Hand-written over `libc` because no well-kept crate fits: socket2 0.6 has
//! no mmsg calls yet (rust-lang/socket2#583); nix's `recvmmsg` ties its
//! headers to the buffers' borrow for each call, so a loop that reuses its
//! buffers would build a vector of slices per batch; and quinn-udp, which
//! does GSO and GRO, sends one destination per system call (it dropped
//! `sendmmsg`), while a server answers many peers per batch. Here the
//! headers, the iovecs, the control buffers and one flat buffer are
//! allocated once and re-pointed on each call.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{SockAddr, SockAddrStorage};

/// Most datagrams one segmented send may carry (the kernel's
/// `UDP_MAX_SEGMENTS`, 64 before Linux 6.9 and 128 since).
const MAX_SEGMENTS: usize = 64;

/// Most payload bytes one segmented send may carry: what fits in one IPv4
/// packet's length field, the smaller of the two families.
const MAX_SEGMENTED_BYTES: usize = crate::protocol::MAX_DATAGRAM_BYTES_V4;

/// Room for the control messages of one datagram, 8-byte aligned as
/// `cmsghdr` needs: a segment size (`int`, 24 bytes with its header) and an
/// `in6_pktinfo` (40 bytes), the most we send or receive together.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

/// The local address a datagram was sent to, as the kernel reported it, to
/// send its reply from: the form (IPv4 or IPv6 control message) follows
/// the one received, which the kernel takes back on either family of socket
/// (an IPv4 datagram on a dual-stack IPv6 socket comes with `IP_PKTINFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// `IP_PKTINFO`: the destination address of the IPv4 header.
    V4(std::net::Ipv4Addr),
    /// `IPV6_PKTINFO`: the destination address, and the interface it came
    /// in on (a link-local address means nothing without it).
    V6(std::net::Ipv6Addr, u32),
}

/// Asks the kernel to report each datagram's destination address (see
/// [`RecvBatch::destination`]): `IP_PKTINFO` on an IPv4 socket, and on an
/// IPv6 one `IPV6_RECVPKTINFO`, plus `IP_PKTINFO` for the IPv4 datagrams a
/// dual-stack socket receives (refused on an IPv6-only one, which gets
/// none: that error is ignored).
pub fn enable_pktinfo(fd: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        let _ = set_int_option(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        Ok(())
    } else {
        set_int_option(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    }
}

/// Waits until `fd`'s send buffer has room, for at most `timeout`; returns
/// whether it has. For a thread that sends on a blocking socket with
/// `MSG_DONTWAIT` and was told `WouldBlock`. (One `poll(2)`: std has no
/// wrapper, and the batches here are already written over libc.)
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    let mut entry = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, alive for the call.
    match unsafe { libc::poll(&mut entry, 1, millis) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Asks the kernel to coalesce runs of one flow's datagrams (UDP GRO, Linux
/// 5.0 and later). [`RecvBatch`] splits them again.
pub fn enable_gro(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// `setsockopt(2)` of an `int` option (socket2 has no UDP_GRO).
fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel takes segmented sends (UDP GSO, Linux 4.18 and later)
/// on this socket.
pub fn supports_segmentation(fd: BorrowedFd<'_>) -> bool {
    let mut size: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid fd, and pointers to an int and its length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&raw mut size).cast(),
            &raw mut len,
        )
    };
    r == 0
}

/// Buffers for receiving up to `count` datagrams in one call.
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_storage>,
    control: Vec<Control>,
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
            control: vec![Control([0; 64]); count],
            received: 0,
        }
    }

    /// The most messages one call receives.
    pub fn capacity(&self) -> usize {
        self.hdr.len()
    }

    /// Receives what is waiting, up to the batch's size, without blocking.
    /// Returns how many datagrams came; `WouldBlock` if none was waiting.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.recv_with(fd, libc::MSG_DONTWAIT)
    }

    /// On a blocking socket: waits for a datagram (for at most the socket's
    /// `SO_RCVTIMEO`, then `WouldBlock`), and receives it with whatever else
    /// is waiting then, up to the batch's size.
    pub fn recv_wait(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.recv_with(fd, libc::MSG_WAITFORONE)
    }

    fn recv_with(&mut self, fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        let slots = self.iov.iter_mut().zip(&mut self.hdr).zip(&mut self.names);
        for (i, (((iov, hdr), name), control)) in slots.zip(&mut self.control).enumerate() {
            // SAFETY: i * slot + slot <= buf.len() by construction.
            iov.iov_base = unsafe { base.add(i * self.slot) }.cast();
            iov.iov_len = self.slot;
            // SAFETY: all-zero is a valid msghdr.
            hdr.msg_hdr = unsafe { std::mem::zeroed() };
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = control.0.len();
            hdr.msg_len = 0;
        }
        // SAFETY: `hdr` holds `hdr.len()` initialized headers whose iovecs
        // point at distinct `slot`-byte regions of `buf` and whose names
        // point at distinct entries of `names`, and whose control buffers
        // at distinct entries of `control`, all alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdr.as_mut_ptr(),
                self.hdr.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        self.received = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        Ok(self.received)
    }

    /// The datagrams of message `i` of the last call: one, or a coalesced
    /// run (with [`enable_gro`]). Each comes with whether it was cut short
    /// because the message was longer than a slot (only the last can be).
    pub fn datagrams(&self, i: usize) -> Datagrams<'_> {
        assert!(i < self.received, "message {i} of {}", self.received);
        let hdr = &self.hdr[i].msg_hdr;
        let len = self.hdr[i].msg_len as usize;
        Datagrams {
            rest: Some(&self.buf[i * self.slot..][..len.min(self.slot)]),
            segment: segment_size(hdr).unwrap_or(usize::MAX),
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    /// Where message `i` of the last call came from (`None` if the kernel
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

impl RecvBatch {
    /// The local address message `i` of the last call was sent to, if the
    /// kernel said (with [`enable_pktinfo`]) and it is one a reply can come
    /// from: not a broadcast or multicast address.
    pub fn destination(&self, i: usize) -> Option<Local> {
        assert!(i < self.received, "datagram {i} of {}", self.received);
        let local = find_control(&self.hdr[i].msg_hdr, |level, kind, data| {
            match (level, kind) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    // SAFETY: the kernel wrote an `in_pktinfo` here.
                    let info: libc::in_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
                    let ip = std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    Some(Local::V4(ip))
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    // SAFETY: the kernel wrote an `in6_pktinfo` here.
                    let info: libc::in6_pktinfo = unsafe { std::ptr::read_unaligned(data.cast()) };
                    let ip = std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    Some(Local::V6(ip, info.ipi6_ifindex))
                }
                _ => None,
            }
        })?;
        let unicast = match local {
            Local::V4(ip) => !(ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified()),
            Local::V6(ip, _) => !(ip.is_multicast() || ip.is_unspecified()),
        };
        unicast.then_some(local)
    }
}

/// The first control message of `hdr` that `pick` (given its level, type
/// and data) makes something of.
fn find_control<T>(
    hdr: &libc::msghdr,
    mut pick: impl FnMut(libc::c_int, libc::c_int, *const u8) -> Option<T>,
) -> Option<T> {
    if hdr.msg_controllen == 0 {
        return None;
    }
    // SAFETY: `msg_control` and `msg_controllen` describe the control
    // buffer the kernel filled in; the CMSG_* walk stays inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if let Some(found) = pick((*c).cmsg_level, (*c).cmsg_type, libc::CMSG_DATA(c)) {
                return Some(found);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// One datagram of an [`AddressedBatch`]: its payload's end in the buffer,
/// where it goes, and where it comes from (`None`: as the kernel picks).
type Entry = (usize, SockAddr, Option<Local>);

/// Where datagram `i`'s payload starts in an [`AddressedBatch`]'s buffer.
fn start(entries: &[Entry], i: usize) -> usize {
    i.checked_sub(1).map_or(0, |i| entries[i].0)
}

/// The segment size the kernel reported for a coalesced message (UDP GRO).
fn segment_size(hdr: &libc::msghdr) -> Option<usize> {
    find_control(hdr, |level, kind, data| {
        if level == libc::SOL_UDP && kind == libc::UDP_GRO {
            // SAFETY: the kernel wrote an `int` here.
            let size = unsafe { std::ptr::read_unaligned(data.cast::<libc::c_int>()) };
            usize::try_from(size).ok().filter(|&s| s > 0)
        } else {
            None
        }
    })
}

/// The datagrams of one received message: see [`RecvBatch::datagrams`].
pub struct Datagrams<'a> {
    rest: Option<&'a [u8]>,
    segment: usize,
    truncated: bool,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = (&'a [u8], bool);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        if rest.len() > self.segment {
            let (datagram, rest) = rest.split_at(self.segment);
            self.rest = Some(rest);
            Some((datagram, false))
        } else {
            self.rest = None;
            Some((rest, self.truncated))
        }
    }
}

/// Which runs of equal-sized datagrams a send batch joins into one
/// segmented send.
#[derive(Clone, Copy, Debug)]
struct Segmenting {
    /// Datagrams of at least this many bytes go alone (0: all do).
    below: usize,
}

impl Segmenting {
    fn new(on: bool) -> Segmenting {
        Segmenting {
            below: if on { usize::MAX } else { 0 },
        }
    }

    /// How many datagrams of `size` bytes, out of `available` in a run, to
    /// send as one.
    fn run(&self, size: usize, available: usize) -> usize {
        if size == 0 || size >= self.below {
            return 1;
        }
        available
            .min(MAX_SEGMENTS)
            .min(MAX_SEGMENTED_BYTES / size)
            .max(1)
    }

    /// Takes in that a segmented send of `size`-byte datagrams failed with
    /// `e`. Returns whether the failure was the segmenting's, so that the
    /// datagrams should go again one by one.
    fn refused(&mut self, size: usize, e: &io::Error) -> bool {
        match e.raw_os_error() {
            // Segments larger than the path's MTU, or a socket setting that
            // rules segmenting out: stop joining datagrams this large.
            Some(libc::EINVAL) => self.below = self.below.min(size),
            // No segmenting on this path (IPsec, ...) or kernel.
            Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP) => self.below = 0,
            _ => return false,
        }
        tracing::debug!(size, error = %e, "segmented UDP send refused; sending one by one");
        true
    }
}

/// Datagrams to send, each to its own address, up to `count` per call:
/// a server's replies to a [`RecvBatch`]. The payloads are laid end to end
/// in one buffer that is reused, so a steady load allocates nothing.
pub struct AddressedBatch {
    buf: Vec<u8>,
    /// Each datagram's end in `buf`, its destination and its source.
    entries: Vec<Entry>,
    /// Datagrams before this one are sent (or given up on).
    next: usize,
    /// The sends of the current call: each a run of datagrams (their first
    /// entry, how many) sent as one.
    runs: Vec<(usize, usize)>,
    segmenting: Segmenting,
    headers: SendHeaders,
}

impl AddressedBatch {
    /// Room for `count` sends per call; with `segment`, each may be a run of
    /// equal-sized datagrams to one address, sent as one.
    pub fn new(count: usize, segment: bool) -> AddressedBatch {
        AddressedBatch {
            buf: Vec::new(),
            entries: Vec::with_capacity(count),
            next: 0,
            runs: Vec::with_capacity(count),
            segmenting: Segmenting::new(segment),
            headers: SendHeaders::new(count),
        }
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.entries.clear();
        self.next = 0;
    }

    /// Adds a datagram to `to`, sent from `from` (`None`: from the address
    /// the kernel picks), whose payload `write` appends to the buffer it is
    /// given.
    pub fn push(&mut self, to: SocketAddr, from: Option<Local>, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.buf);
        self.entries
            .push((self.buf.len(), SockAddr::from(to), from));
    }

    /// Datagrams not yet sent.
    pub fn pending(&self) -> usize {
        self.entries.len() - self.next
    }

    /// Payload bytes not yet sent.
    pub fn pending_bytes(&self) -> usize {
        let sent = start(&self.entries, self.next);
        self.buf.len() - sent
    }

    /// The next datagram to send: its payload and destination.
    pub fn peek(&self) -> Option<(&[u8], SocketAddr)> {
        let (end, to, _) = self.entries.get(self.next)?;
        let start = start(&self.entries, self.next);
        Some((&self.buf[start..*end], to.as_socket()?))
    }

    /// Gives up on the next datagram (after an error sending it).
    pub fn skip(&mut self) {
        self.next = (self.next + 1).min(self.entries.len());
    }

    /// Sends pending datagrams, up to the batch's size in sends, without
    /// blocking. Returns how many datagrams were sent, and they are no
    /// longer pending. An error concerns the first pending datagram
    /// (`WouldBlock`: none could be sent; otherwise [`skip`](Self::skip) it,
    /// or retry).
    pub fn send(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        loop {
            self.plan_runs();
            let (entries, buf) = (&self.entries, &self.buf);
            let runs = self.runs.iter().map(|&(first, count)| {
                let start = start(entries, first);
                let end = entries[first + count - 1].0;
                let segment = if count > 1 { (end - start) / count } else { 0 };
                let (_, to, from) = &entries[first];
                (&buf[start..end], Some(to), from.as_ref(), segment)
            });
            match self.headers.send(fd, runs) {
                Ok(n) => {
                    let sent: usize = self.runs[..n].iter().map(|&(_, count)| count).sum();
                    self.next += sent;
                    return Ok(sent);
                }
                Err(e) => {
                    let (first, count) = self.runs[0];
                    let size = self.entries[first].0 - start(&self.entries, first);
                    if count == 1 || !self.segmenting.refused(size, &e) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Splits the pending datagrams, up to a batch of sends, into runs of
    /// equal-sized datagrams to one address that may go as one.
    fn plan_runs(&mut self) {
        self.runs.clear();
        let mut first = self.next;
        while first < self.entries.len() && self.runs.len() < self.headers.hdr.len() {
            let (end, to, from) = &self.entries[first];
            let size = end - start(&self.entries, first);
            // Looks no further than one run can reach: a batch may hold
            // thousands of alike replies (coalesced requests). A run joins
            // datagrams of one size, one destination and one source.
            let alike = self.entries[first + 1..]
                .iter()
                .take(MAX_SEGMENTS - 1)
                .scan(*end, |prev, (end, next_to, next_from)| {
                    let same = end - *prev == size && next_to == to && next_from == from;
                    *prev = *end;
                    same.then_some(())
                })
                .count();
            let count = self.segmenting.run(size, 1 + alike);
            self.runs.push((first, count));
            first += count;
        }
    }
}

/// Headers for sending up to `count` datagrams (or runs of them) in one
/// call on a connected socket.
pub struct SendBatch {
    headers: SendHeaders,
    segmenting: Segmenting,
}

impl SendBatch {
    /// Room for `count` sends per call; with `segment`, each may be a run of
    /// datagrams sent as one.
    pub fn new(count: usize, segment: bool) -> SendBatch {
        SendBatch {
            headers: SendHeaders::new(count),
            segmenting: Segmenting::new(segment),
        }
    }

    /// Sends the datagrams laid end to end in `buf`, `size` bytes each, up
    /// to the batch's size in sends, without blocking. Returns how many
    /// datagrams were sent (the first ones); `WouldBlock` if none could be.
    pub fn send(&mut self, fd: BorrowedFd<'_>, buf: &[u8], size: usize) -> io::Result<usize> {
        assert!(
            size > 0 && buf.len().is_multiple_of(size),
            "whole datagrams only"
        );
        loop {
            let run = self.segmenting.run(size, buf.len() / size);
            let segment = if run > 1 { size } else { 0 };
            let sends = buf.chunks(run * size).map(|d| (d, None, None, segment));
            match self.headers.send(fd, sends) {
                Ok(n) => return Ok((n * run).min(buf.len() / size)),
                Err(e) if run > 1 && self.segmenting.refused(size, &e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The `sendmmsg(2)` headers both kinds of send batch point at their data:
/// allocated once, re-pointed on each call.
struct SendHeaders {
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    control: Vec<Control>,
}

// SAFETY: as for `RecvBatch`: the pointers are rewritten before each call.
unsafe impl Send for SendHeaders {}

impl SendHeaders {
    fn new(count: usize) -> SendHeaders {
        SendHeaders {
            // SAFETY: all-zero is a valid iovec and mmsghdr.
            iov: vec![unsafe { std::mem::zeroed() }; count],
            hdr: vec![unsafe { std::mem::zeroed() }; count],
            control: vec![Control([0; 64]); count],
        }
    }

    /// Sends up to a batch of `sends`, each a payload, on an unconnected
    /// socket a destination, a source address (`None`: the kernel picks),
    /// and a segment size (0: one datagram; else the payload is a run of
    /// datagrams this long), without blocking. Returns how many sends went
    /// (the first ones).
    fn send<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        sends: impl Iterator<Item = (&'a [u8], Option<&'a SockAddr>, Option<&'a Local>, usize)>,
    ) -> io::Result<usize> {
        let mut count = 0;
        let headers = self
            .iov
            .iter_mut()
            .zip(&mut self.hdr)
            .zip(&mut self.control);
        for (((iov, hdr), control), (data, to, from, segment)) in headers.zip(sends) {
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
            if segment > 0 || from.is_some() {
                set_control(hdr, control, segment, from);
            }
            count += 1;
        }
        // SAFETY: the first `count` headers point at payloads and addresses
        // borrowed for `'a`, which outlives the call, and at their own
        // control buffers; the kernel only reads them.
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

/// Points `hdr` at `control`, holding a `UDP_SEGMENT` message if
/// `segment` is not 0 (the payload is cut into datagrams of `segment`
/// bytes), and an `IP_PKTINFO` or `IPV6_PKTINFO` message if `from` is given
/// (the datagrams leave from that address).
fn set_control(
    hdr: &mut libc::mmsghdr,
    control: &mut Control,
    segment: usize,
    from: Option<&Local>,
) {
    hdr.msg_hdr.msg_control = control.0.as_mut_ptr().cast();
    let base = control.0.as_mut_ptr();
    let mut used = 0;
    // SAFETY: the control buffer is 64 bytes, 8-aligned, and the messages
    // written take at most CMSG_SPACE(2) + CMSG_SPACE(20) = 24 + 40 = 64
    // bytes; each starts at a multiple of 8 (CMSG_SPACE is aligned), so its
    // header, and the writes through it and CMSG_DATA, lie inside the
    // buffer. (Not CMSG_NXTHDR: it reads the next header's length, which
    // is stale from an earlier batch until written.)
    unsafe {
        let mut put = |level, kind, data: &[u8]| {
            let c = base.add(used).cast::<libc::cmsghdr>();
            (*c).cmsg_level = level;
            (*c).cmsg_type = kind;
            (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as usize;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
            used += libc::CMSG_SPACE(data.len() as u32) as usize;
        };
        if segment > 0 {
            let segment = u16::try_from(segment).expect("segments fit in a datagram");
            put(libc::SOL_UDP, libc::UDP_SEGMENT, &segment.to_ne_bytes());
        }
        match from {
            Some(Local::V4(ip)) => {
                let mut info: libc::in_pktinfo = std::mem::zeroed();
                // ipi_spec_dst is the source address; the interface is left
                // to routing (0), as DNS servers leave it for IPv4.
                info.ipi_spec_dst.s_addr = u32::from(*ip).to_be();
                let bytes = std::slice::from_raw_parts(
                    (&raw const info).cast::<u8>(),
                    size_of::<libc::in_pktinfo>(),
                );
                put(libc::IPPROTO_IP, libc::IP_PKTINFO, bytes);
            }
            Some(Local::V6(ip, interface)) => {
                let mut info: libc::in6_pktinfo = std::mem::zeroed();
                info.ipi6_addr.s6_addr = ip.octets();
                info.ipi6_ifindex = *interface;
                let bytes = std::slice::from_raw_parts(
                    (&raw const info).cast::<u8>(),
                    size_of::<libc::in6_pktinfo>(),
                );
                put(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, bytes);
            }
            None => {}
        }
    }
    hdr.msg_hdr.msg_controllen = used;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DATAGRAM_BUFFER_BYTES;
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

        let mut send = SendBatch::new(4, false);
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
            got.extend((0..n).flat_map(|i| recv.datagrams(i).map(|(d, cut)| (d.to_vec(), cut))));
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
        let mut replies = AddressedBatch::new(2, false);
        while got < 3 {
            match recv.recv(server.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let from = recv.source(i).unwrap();
                        let (data, _) = recv.datagrams(i).next().unwrap();
                        replies.push(from, None, |buf| buf.extend(data.to_ascii_uppercase()));
                        // One reply too large for any datagram, to skip.
                        if got + i == 1 {
                            replies.push(from, None, |buf| buf.resize(buf.len() + 70_000, b'x'));
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
        let mut send = SendBatch::new(2, false);
        assert_eq!(send.send(a.as_fd(), b"abc", 1).unwrap(), 2);
    }

    /// Numbered datagrams of `size` bytes, end to end.
    fn numbered(count: usize, size: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| format!("{i:0size$}").into_bytes())
            .collect()
    }

    /// Sends all of `buf` through `send`, as `size`-byte datagrams.
    fn send_all(send: &mut SendBatch, fd: BorrowedFd<'_>, buf: &[u8], size: usize) {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = send.send(fd, rest, size).unwrap();
            assert!(n > 0);
            rest = &rest[n * size..];
        }
    }

    /// Receives datagrams one by one (no offload) until `count` came.
    fn recv_plain(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let n = socket.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            })
            .collect()
    }

    /// Receives through `recv` until `count` datagrams came; also returns
    /// how many messages carried them.
    fn recv_batched(
        recv: &mut RecvBatch,
        socket: &UdpSocket,
        count: usize,
    ) -> (Vec<Vec<u8>>, usize) {
        let (mut got, mut messages) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} came",
                got.len()
            );
            match recv.recv(socket.as_fd()) {
                Ok(n) => {
                    messages += n;
                    for i in 0..n {
                        for (d, cut) in recv.datagrams(i) {
                            assert!(!cut);
                            got.push(d.to_vec());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        (got, messages)
    }

    fn connected_pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        (a, b)
    }

    #[test]
    fn segmented_sends_arrive_as_the_same_datagrams() {
        let (a, b) = connected_pair();
        assert!(supports_segmentation(a.as_fd()));
        let sent = numbered(100, 10);
        let mut send = SendBatch::new(4, true);
        send_all(&mut send, a.as_fd(), &sent, 10);
        // A receiver without offload sees each datagram on its own.
        let got = recv_plain(&b, 100);
        assert_eq!(got, sent.chunks(10).map(<[u8]>::to_vec).collect::<Vec<_>>());
        assert_eq!(send.segmenting.below, usize::MAX, "nothing was refused");
    }

    #[test]
    fn coalesced_datagrams_are_split_back() {
        let (a, b) = connected_pair();
        enable_gro(b.as_fd()).unwrap();
        let sent = numbered(100, 10);
        let mut send = SendBatch::new(4, true);
        send_all(&mut send, a.as_fd(), &sent, 10);
        // A run with a shorter last datagram, as other senders may send.
        let mut headers = SendHeaders::new(1);
        let n = headers
            .send(
                a.as_fd(),
                std::iter::once((&b"aaaabbbbcc"[..], None, None, 4)),
            )
            .unwrap();
        assert_eq!(n, 1);

        let mut recv = RecvBatch::new(8, DATAGRAM_BUFFER_BYTES);
        let (got, messages) = recv_batched(&mut recv, &b, 103);
        let mut want: Vec<Vec<u8>> = sent.chunks(10).map(<[u8]>::to_vec).collect();
        want.extend([b"aaaa".to_vec(), b"bbbb".to_vec(), b"cc".to_vec()]);
        assert_eq!(got, want);
        // Unsegmented, the 100 numbered datagrams would take 100 messages.
        assert!(messages < 100, "103 datagrams came in {messages} messages");
    }

    #[test]
    fn replies_join_runs_of_one_size_to_one_address() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c0 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c1 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (to0, to1) = (c0.local_addr().unwrap(), c1.local_addr().unwrap());
        let mut replies = AddressedBatch::new(8, true);
        let pushes: [(SocketAddr, &[u8]); 9] = [
            (to0, b"aa"),
            (to0, b"ab"),
            (to0, b"ac"),
            (to1, b"ba"),
            (to1, b"bb"),
            (to0, b"ccc"),
            (to0, b"cdd"),
            (to0, b"e"),
            (to0, b""),
        ];
        for (to, data) in pushes {
            replies.push(to, None, |buf| buf.extend_from_slice(data));
        }
        replies.plan_runs();
        assert_eq!(replies.runs, [(0, 3), (3, 2), (5, 2), (7, 1), (8, 1)]);
        assert_eq!(replies.send(server.as_fd()).unwrap(), 9);
        assert_eq!(replies.pending(), 0);
        let want0: Vec<Vec<u8>> = ["aa", "ab", "ac", "ccc", "cdd", "e", ""]
            .map(|s| s.as_bytes().to_vec())
            .into();
        assert_eq!(recv_plain(&c0, 7), want0);
        assert_eq!(recv_plain(&c1, 2), [b"ba".to_vec(), b"bb".to_vec()]);
    }

    #[test]
    fn a_long_run_is_cut_at_the_kernels_segment_limit() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut replies = AddressedBatch::new(8, true);
        for i in 0..200 {
            replies.push(to, None, |buf| buf.extend(format!("{i:03}").bytes()));
        }
        replies.plan_runs();
        assert_eq!(replies.runs, [(0, 64), (64, 64), (128, 64), (192, 8)]);
    }

    #[test]
    fn a_refused_segmented_send_goes_one_by_one() {
        // Linux refuses segmented sends (EINVAL) on a socket that sends
        // without UDP checksums.
        let (a, b) = connected_pair();
        no_checksums(&a);
        let sent = numbered(20, 10);
        let mut send = SendBatch::new(4, true);
        send_all(&mut send, a.as_fd(), &sent, 10);
        assert_eq!(
            recv_plain(&b, 20),
            sent.chunks(10).map(<[u8]>::to_vec).collect::<Vec<_>>()
        );
        assert_eq!(
            send.segmenting.below, 10,
            "datagrams of 10 bytes go alone now"
        );

        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        no_checksums(&server);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut replies = AddressedBatch::new(4, true);
        for i in 0..5 {
            replies.push(client.local_addr().unwrap(), None, |buf| {
                buf.extend(format!("r{i}").bytes())
            });
        }
        let mut sent = 0;
        while replies.pending() > 0 {
            sent += replies.send(server.as_fd()).unwrap();
        }
        assert_eq!(sent, 5);
        assert_eq!(replies.segmenting.below, 2);
        let want: Vec<Vec<u8>> = (0..5).map(|i| format!("r{i}").into_bytes()).collect();
        assert_eq!(recv_plain(&client, 5), want);
    }

    /// Turns off UDP checksums on `socket` (`SO_NO_CHECK`).
    /// Receives `count` messages on `socket`, blocking up to a bound.
    fn recv_count(
        socket: &UdpSocket,
        recv: &mut RecvBatch,
        count: usize,
    ) -> Vec<(SocketAddr, Option<Local>, Vec<u8>)> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < count {
            assert!(std::time::Instant::now() < deadline, "only {got:?}");
            match recv.recv(socket.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        for (data, _) in recv.datagrams(i) {
                            got.push((recv.source(i).unwrap(), recv.destination(i), data.to_vec()));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn replies_leave_from_the_address_each_request_was_sent_to() {
        // A wildcard socket, as a server's; requests to two of loopback's
        // addresses, from one client socket, of one size (so that a
        // segmented send could join them, were it not for their sources).
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        server.set_nonblocking(true).unwrap();
        enable_pktinfo(server.as_fd(), false).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let targets = ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"];
        for ip in targets {
            client.send_to(b"same size", (ip, port)).unwrap();
        }
        let mut recv = RecvBatch::new(8, 64);
        let got = recv_count(&server, &mut recv, targets.len());
        let mut replies = AddressedBatch::new(8, supports_segmentation(server.as_fd()));
        for (ip, (from, local, data)) in targets.iter().zip(&got) {
            assert_eq!(*local, Some(Local::V4(ip.parse().unwrap())));
            replies.push(*from, *local, |buf| buf.extend_from_slice(data));
        }
        while replies.pending() > 0 {
            replies.send(server.as_fd()).unwrap();
        }
        for ip in targets {
            let mut buf = [0u8; 64];
            let (n, source) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"same size");
            assert_eq!(
                source,
                SocketAddr::from((ip.parse::<std::net::Ipv4Addr>().unwrap(), port))
            );
        }
    }

    #[test]
    fn ipv6_and_ipv4_mapped_destinations_are_reported_and_answered_from() {
        let server = UdpSocket::bind("[::]:0").unwrap();
        server.set_nonblocking(true).unwrap();
        enable_pktinfo(server.as_fd(), true).unwrap();
        let port = server.local_addr().unwrap().port();
        // The standard library leaves IPV6_V6ONLY as the system has it
        // (off by default on Linux): IPv4 comes in mapped, with IP_PKTINFO.
        let v6 = UdpSocket::bind("[::1]:0").unwrap();
        v6.connect(("::1", port)).unwrap();
        v6.send(b"six").unwrap();
        let mut recv = RecvBatch::new(8, 64);
        let got = recv_count(&server, &mut recv, 1);
        let Some(Local::V6(ip, interface)) = got[0].1 else {
            panic!("{got:?}")
        };
        assert_eq!(ip, std::net::Ipv6Addr::LOCALHOST);
        assert!(interface > 0, "the loopback interface's index");
        let v4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        v4.connect(("127.0.0.2", port)).unwrap();
        v4.send(b"four").unwrap();
        let got4 = recv_count(&server, &mut recv, 1);
        // Reported as the mapped IPv6 address (either form is taken back).
        let mapped = match got4[0].1 {
            Some(Local::V4(ip)) => ip,
            Some(Local::V6(ip, _)) => ip.to_ipv4_mapped().expect("mapped"),
            None => panic!("no destination"),
        };
        assert_eq!(mapped, std::net::Ipv4Addr::new(127, 0, 0, 2));
        let mut replies = AddressedBatch::new(8, false);
        for (from, local, data) in got.iter().chain(&got4) {
            replies.push(*from, *local, |buf| buf.extend_from_slice(data));
        }
        while replies.pending() > 0 {
            replies.send(server.as_fd()).unwrap();
        }
        // Connected sockets take replies only from the address they asked.
        for (socket, want) in [(&v6, &b"six"[..]), (&v4, b"four")] {
            socket
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 16];
            let n = socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

    fn no_checksums(socket: &UdpSocket) {
        set_int_option(socket.as_fd(), libc::SOL_SOCKET, libc::SO_NO_CHECK, 1).unwrap();
    }
}

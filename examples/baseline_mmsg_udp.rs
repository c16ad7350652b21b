//! Baseline for `BENCHMARKS.md` (benchmark code, not product code): the
//! kernel's practical limit for UDP on one core. A plain blocking loop:
//! `recvmmsg(2)` up to 64 datagrams, upper-case each (ASCII) in place,
//! `sendmmsg(2)` them back to their sources from the same buffers. No
//! checks, no limits, no counters: the least work a UDP upper-caser can do.
//!
//! `cargo run --release --example baseline_mmsg_udp -- PORT`

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BATCH: usize = 64;
const SLOT: usize = 2048;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map_or(12000, |p| p.parse().expect("PORT"));
    let socket = UdpSocket::bind(("127.0.0.1", port))?;
    let fd = socket.as_raw_fd();
    println!("ready");
    let mut buf = vec![0u8; BATCH * SLOT];
    // SAFETY (all three): all-zero is a valid value of these C structs.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut hdr: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        for i in 0..BATCH {
            iov[i].iov_base = buf[i * SLOT..].as_mut_ptr().cast();
            iov[i].iov_len = SLOT;
            hdr[i].msg_hdr.msg_iov = &mut iov[i];
            hdr[i].msg_hdr.msg_iovlen = 1;
            hdr[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdr[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: the headers point into `buf`, `iov` and `names`, all alive
        // for the call; blocking until at least one datagram arrives.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdr.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for i in 0..n {
            let len = hdr[i].msg_len as usize;
            buf[i * SLOT..][..len].make_ascii_uppercase();
            // Send back exactly what came, to where it came from (the name
            // and its length are still set from the receive).
            iov[i].iov_len = len;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: as above; the kernel only reads the first `n` headers.
            let k = unsafe { libc::sendmmsg(fd, hdr[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if k <= 0 {
                sent += 1; // that one failed; go on with the rest
            } else {
                sent += k as usize;
            }
        }
    }
}

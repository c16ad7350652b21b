//! A fault-injecting TCP proxy for tests: sits between a client and a
//! server on loopback and slices, delays, resets or closes what it relays.
//! Blocking threads: two per connection, enough for a test's few clients.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// What the proxy does to the bytes it relays.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Relay both ways one byte per write, waiting `delay` before each.
    Slice {
        /// Wait before each byte.
        delay: Duration,
    },
    /// Relay the server's first `n` bytes on each connection, then reset
    /// the client's connection (RST), as a crashing middlebox would.
    ResetAfter(usize),
    /// Relay the server's first `n` bytes on each connection, then close
    /// the client's connection cleanly (FIN) mid-reply.
    CloseAfter(usize),
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Relays each connection made to [`Proxy::addr`] to `upstream`, with
    /// `fault`. A client's half-close is passed on to the server.
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                thread::spawn(move || relay(client, upstream, fault));
            }
        });
        Proxy { addr, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn relay(client: TcpStream, upstream: SocketAddr, fault: Fault) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    for s in [&client, &server] {
        s.set_nodelay(true).unwrap();
    }
    let (client_in, server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn(move || {
        pump(client_in, &server_out, fault, None);
        // The client half-closed (or is gone): pass it on.
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let limit = match fault {
        Fault::ResetAfter(n) | Fault::CloseAfter(n) => Some(n),
        Fault::Slice { .. } => None,
    };
    pump(server, &client, fault, limit);
    match fault {
        Fault::ResetAfter(_) => {
            // A close with a zero linger sends RST, but only once the last
            // descriptor of the socket closes: stop the other pump first.
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            let _ = client.shutdown(Shutdown::Read);
            let _ = up.join();
            drop(client);
        }
        Fault::CloseAfter(_) | Fault::Slice { .. } => {
            let _ = client.shutdown(Shutdown::Write);
            let _ = up.join();
        }
    }
}

/// Copies `from` to `to` until end of stream, an error, or `limit` bytes.
fn pump(mut from: TcpStream, mut to: &TcpStream, fault: Fault, limit: Option<usize>) {
    let mut buf = [0u8; 16 * 1024];
    let mut relayed = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let n = limit.map_or(n, |l| n.min(l - relayed));
        let chunk = &buf[..n];
        let sent = match fault {
            Fault::Slice { delay } => chunk.iter().try_for_each(|b| {
                thread::sleep(delay);
                to.write_all(std::slice::from_ref(b))
            }),
            _ => to.write_all(chunk),
        };
        if sent.is_err() {
            return;
        }
        relayed += n;
        if limit == Some(relayed) {
            return;
        }
    }
}

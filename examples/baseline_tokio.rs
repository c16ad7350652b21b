//! Baseline for `BENCHMARKS.md` (benchmark code, not product code): the
//! upper-casing server a user would write with tokio. TCP: a task per
//! connection reading into a 1 KiB buffer and writing it back upper-cased;
//! UDP: a `recv_from`/`send_to` loop on one `UdpSocket`. ASCII upper-casing
//! only, as the benchmark's requests are ASCII.
//!
//! `cargo run --release --example baseline_tokio -- PORT [THREADS]`

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(12000, |p| p.parse().expect("PORT"));
    let threads: usize = args.next().map_or(1, |t| t.parse().expect("THREADS"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            let udp = UdpSocket::bind(("127.0.0.1", port)).await?;
            println!("ready");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    buf[..n].make_ascii_uppercase();
                    let _ = udp.send_to(&buf[..n], peer).await;
                }
            });
            // The accept loop runs in a task, on the worker thread, as
            // upcase's does: from `block_on` it would run on the main thread,
            // and every new connection would cross threads to its task.
            let acceptor = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(stream));
                }
            });
            acceptor.await.map_err(std::io::Error::other)
        })
}

/// Upper-cases what arrives on `stream` until the client closes.
async fn serve(mut stream: tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf[..n].make_ascii_uppercase();
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

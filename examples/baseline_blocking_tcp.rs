//! Baseline for `BENCHMARKS.md` (benchmark code, not product code): the
//! streaming ceiling over TCP. A blocking thread per connection reads into a
//! 256 KiB buffer, upper-cases (ASCII) in place and writes it back.
//!
//! `cargo run --release --example baseline_blocking_tcp -- PORT`

use std::io::{Read, Write};
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map_or(12000, |p| p.parse().expect("PORT"));
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    println!("ready");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf[..n].make_ascii_uppercase();
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

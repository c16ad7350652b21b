//! inetd mode: serve the one peer on stdin and stdout, the way echo services
//! have always been run (inetd, xinetd, systemd's `Accept=yes` sockets,
//! `systemd-socket-activate --inetd`).
//!
//! What stdin is decides how it is served:
//! - a connected TCP socket (inetd `nowait` stream): exactly as the server
//!   serves an accepted connection, with its timeouts and limits;
//! - a UDP socket (inetd `wait` dgram): as a UDP listening socket, until
//!   shut down;
//! - anything else (a pipe, a file, a terminal): the bytes of stdin come out
//!   transformed on stdout, as they would over a TCP connection, until EOF.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use socket2::{Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Config, Stats, tcp, udp};
use crate::protocol::StreamReplier;

/// Serves stdin/stdout until the peer is done or `shutdown` is cancelled,
/// and returns the counters. Must run within a tokio runtime.
pub async fn serve(config: Config, shutdown: CancellationToken) -> io::Result<Arc<Stats>> {
    let config = Arc::new(config);
    let stats = Arc::new(Stats::default());
    // A duplicate, so that fd 0 itself stays open whatever happens here.
    let socket = Socket::from(io::stdin().as_fd().try_clone_to_owned()?);
    match socket.r#type() {
        Ok(Type::STREAM) => {
            let peer = socket
                .peer_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("stdin is a stream socket but not TCP"))?;
            socket.set_nonblocking(true)?;
            let stream = tokio::net::TcpStream::from_std(socket.into())?;
            tcp::serve_connection(stream, peer, config, stats.clone(), shutdown).await;
        }
        Ok(Type::DGRAM) => {
            udp::prepare(&socket);
            let seed = config.drop_seed.unwrap_or_else(rand::random);
            let stats = stats.clone();
            tokio::task::spawn_blocking(move || {
                udp::serve(socket.into(), config, stats, seed, shutdown);
            })
            .await
            .map_err(io::Error::other)?;
        }
        Ok(other) => {
            return Err(io::Error::other(format!(
                "stdin is a socket of an unsupported type ({other:?})"
            )));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            filter(&config, &stats, shutdown).await?;
        }
        Err(e) => return Err(e),
    }
    Ok(stats)
}

/// Stdin to stdout through a [`StreamReplier`], as over TCP: `count`'s
/// pause rule applies, and held-back bytes are answered at EOF or shutdown.
async fn filter(config: &Config, stats: &Stats, shutdown: CancellationToken) -> io::Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut replier = StreamReplier::new(config.transform, config.count_max_line_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = Vec::new();
    loop {
        let done = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                replier.on_eof(&mut reply);
                true
            }
            // tokio's stdin keeps what a cancelled read brought for the next
            // read, so losing this race loses no input.
            read = stdin.read(&mut buf) => match read? {
                0 => {
                    replier.on_eof(&mut reply);
                    true
                }
                n => {
                    Stats::add(&stats.tcp_bytes_in, n as u64);
                    if let Err(e) = replier.on_data(&buf[..n], &mut reply) {
                        reply.extend_from_slice(format!("{e}\n").as_bytes());
                        stdout.write_all(&reply).await?;
                        stdout.flush().await?;
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    false
                }
            },
            _ = tokio::time::sleep(config.count_pause), if replier.awaits_pause() => {
                replier.on_pause(&mut reply);
                false
            }
        };
        stdout.write_all(&reply).await?;
        stdout.flush().await?;
        Stats::add(&stats.tcp_bytes_out, reply.len() as u64);
        reply.clear();
        if done {
            return Ok(());
        }
    }
}

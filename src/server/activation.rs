//! Sockets handed over by a service manager (systemd's socket activation,
//! `sd_listen_fds(3)`): `LISTEN_PID` names this process and `LISTEN_FDS`
//! counts descriptors from fd 3 on.
//!
//! Each descriptor is told apart by what it is, not by its position, so a
//! socket unit may list its TCP and UDP sockets in any order.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

use socket2::{Socket, Type};

use super::Listeners;

/// An inherited descriptor this server cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` or `LISTEN_PID` is malformed.
    #[error("socket activation: {0}")]
    Environment(#[source] io::Error),
    /// A descriptor is not a socket, or its options cannot be read.
    #[error("socket activation: fd {fd} is not usable")]
    Unusable {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A descriptor is a socket, but neither a listening TCP socket nor a
    /// UDP socket (say a Unix socket, or a stream socket not listening).
    #[error(
        "socket activation: fd {fd} is neither a listening TCP socket nor a UDP socket (ListenStream= and ListenDatagram= take IP addresses or ports)"
    )]
    Unsupported {
        /// The descriptor.
        fd: RawFd,
    },
}

/// The sockets the service manager passed, or `None` when it passed none
/// (not socket-activated: the server binds its own). A listening TCP
/// socket on `tls_port` (when TLS is on) serves TLS.
pub fn inherited(tls_port: Option<u16>) -> Result<Option<Listeners>, ActivationError> {
    let fds = sd_notify::listen_fds().map_err(ActivationError::Environment)?;
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut listeners = Listeners::default();
    for fd in fds {
        // SAFETY: by the sd_listen_fds protocol, which `listen_fds` checked
        // (LISTEN_PID is this process), fds 3 to 3 + LISTEN_FDS - 1 are open
        // and ours; each is taken here exactly once.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let unusable = |source| ActivationError::Unusable { fd, source };
        let local = socket.local_addr().map_err(unusable)?.as_socket();
        let is_ip = local.is_some();
        match socket.r#type().map_err(unusable)? {
            Type::STREAM if is_ip && socket.is_listener().map_err(unusable)? => {
                socket.set_nonblocking(true).map_err(unusable)?;
                if local.map(|a| a.port()) == tls_port {
                    listeners.tls.push(socket.into());
                } else {
                    listeners.tcp.push(socket.into());
                }
            }
            Type::DGRAM if is_ip => {
                socket.set_nonblocking(true).map_err(unusable)?;
                super::udp::prepare(&socket);
                listeners.udp.push(socket.into());
            }
            _ => return Err(ActivationError::Unsupported { fd }),
        }
    }
    Ok(Some(listeners))
}

//! upcase: the textbook's upper-casing client and server over UDP and TCP,
//! made into real software.
//!
//! # Layout
//! Data flows one way: socket bytes → [`protocol`] (message boundaries) →
//! [`transform`] → [`protocol`] → socket.
//!
//! | module | owns |
//! |---|---|
//! | [`transform`] | the text transforms (upper, lower, echo, count, sockperf): pure, no I/O |
//! | [`protocol`] | what a message is on UDP and on TCP, and its reply: pure, no I/O |
//! | [`refusal`] | the lines a server sends instead of a reply before it closes: pure, no I/O |
//! | [`server`] | [`server::Config`] (every limit), binding, the TCP and UDP serving loops |
//! | [`client`] | connecting, sending a message, awaiting the reply that matches it |
//! | [`io_error`] | I/O errors in the words the tools print them |
//! | [`ping`] | the UDP Pinger: probes, matching replies by sequence number, counting |
//! | [`stats`] | round-trip time statistics: min/avg/max/mdev, percentiles, jitter |
//! | [`bench`] | the load generator: pacing, in-flight windows, reply checks, reports |
//! | [`compare`] | the same messages over UDP, TCP, TLS and QUIC, measured side by side |
//! | [`mmsg`] | many datagrams per system call (`recvmmsg`/`sendmmsg`) |
//! | [`sockperf`] | the reply side of sockperf's ping-pong protocol (`--transform sockperf`) |
//! | [`tls`] | TLS material (PEM files), client settings, one-line handshake failures |
//! | [`quic`] | the QUIC client: an endpoint, a connection within a deadline, a request per stream |
//!
//! The `upcase` binary adds command-line parsing (`src/main.rs`, `src/cli/`).

pub mod bench;
pub mod client;
pub mod compare;
pub mod io_error;
pub mod mmsg;
pub mod ping;
pub mod protocol;
pub mod quic;
pub mod refusal;
pub mod server;
pub mod sockperf;
pub mod stats;
pub mod tls;
pub mod transform;
pub mod udp_io;

pub use transform::Transform;

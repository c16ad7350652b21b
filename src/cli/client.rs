//! `upcase client`: interactive like the textbook client when stdin is a
//! terminal, a Unix filter (one reply line per input line) when it is not.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use upcase::client::{Reply, TcpClient, UdpClient};
use upcase::quic::QuicClient;

/// The textbook client's prompt, word for word.
const PROMPT: &str = "Input lowercase sentence:";

/// Options of `upcase client`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server host name or IP address
    #[arg(default_value = "localhost")]
    host: String,
    /// Server port, as nc and the textbook take it (the same as -p)
    #[arg(value_name = "PORT")]
    port_arg: Option<u16>,
    /// Server port [default: 12000, or 12443 with --tls]
    #[arg(short, long)]
    port: Option<u16>,
    /// Use UDP: one datagram per line, with timeout and retries
    #[arg(short = 'u', long, conflicts_with = "tcp")]
    udp: bool,
    /// Use IPv4 addresses only
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,
    /// Use IPv6 addresses only
    #[arg(short = '6')]
    ipv6: bool,
    /// Send from this local address (one of this host's)
    #[arg(short = 's', long, value_name = "ADDRESS")]
    source: Option<std::net::IpAddr>,
    /// Use TCP: one connection, one line per message (the default)
    #[arg(long)]
    tcp: bool,
    /// How long to wait for a reply: per try over UDP [default: 1s]; to connect and per silence over TCP [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = super::parse_nonzero_duration)]
    timeout: Option<Duration>,
    /// UDP: send a line this many more times when no reply comes
    #[arg(long, value_name = "N", default_value_t = 3)]
    retries: u32,
    /// Longest input line accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_line_bytes: usize,
    #[command(flatten)]
    tls: super::tls::TlsArgs,
}

/// The transport chosen for this run.
enum Transport {
    Tcp(TcpClient),
    Udp(UdpClient),
    /// A stream per line, on one connection, driven by its own runtime.
    Quic(tokio::runtime::Runtime, QuicClient),
}

impl Transport {
    fn request(&mut self, line: &[u8]) -> anyhow::Result<Reply> {
        Ok(match self {
            Transport::Tcp(c) => c.request(line)?,
            Transport::Udp(c) => Reply {
                bytes: c.request(line)?,
                complete: true,
            },
            Transport::Quic(runtime, c) => {
                let bytes = runtime.block_on(c.request(line))?;
                // The server finished the stream: a reply without its
                // newline is all there is.
                let complete = bytes.last() == Some(&b'\n');
                Reply { bytes, complete }
            }
        })
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if let Transport::Quic(runtime, c) = self {
            c.close();
            // Lets the close go out before the runtime stops.
            runtime.block_on(tokio::task::yield_now());
        }
    }
}

/// Connects over QUIC (a stream per line), within `timeout` (QUIC ignores
/// ICMP: nothing listening would otherwise wait for quinn's idle timeout).
fn quic(
    target: &str,
    addrs: &[std::net::SocketAddr],
    tls: &upcase::tls::TlsConnect,
    timeout: Duration,
    max_reply: usize,
) -> anyhow::Result<Transport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(QuicClient::connect(target, addrs, tls, timeout, max_reply))?;
    Ok(Transport::Quic(runtime, client))
}

/// Sends each line of stdin and prints each reply.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let port = match (args.port_arg, args.port) {
        (Some(a), Some(b)) if a != b => {
            return Err(super::UsageError(format!(
                "two ports: {a} after the host and -p {b}; give one"
            ))
            .into());
        }
        (Some(port), _) | (None, Some(port)) => port,
        (None, None) => args.tls.default_port(),
    };
    let target = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]:{}", args.host, port)
    } else {
        format!("{}:{}", args.host, port)
    };
    let addrs = super::only_family(
        super::resolve(&args.host, port)?,
        &args.host,
        args.ipv4,
        args.ipv6,
    )?;
    if let Some(source) = args.source {
        let addrs_family = addrs.iter().any(|a| a.is_ipv4() == source.is_ipv4());
        if !addrs_family {
            return Err(super::UsageError(format!(
                "-s {source}: {} has no address of that family",
                args.host
            ))
            .into());
        }
    }
    let addrs: Vec<_> = match args.source {
        Some(source) => addrs
            .into_iter()
            .filter(|a| a.is_ipv4() == source.is_ipv4())
            .collect(),
        None => addrs,
    };
    if args.udp && (args.tls.tls || args.tls.quic) {
        let flag = if args.tls.tls {
            "--tls is for TCP"
        } else {
            "--quic is a transport of its own"
        };
        return Err(super::UsageError(format!("{flag}: drop --udp")).into());
    }
    let tls = args.tls.connect(&args.host)?;
    let interactive = io::stdin().is_terminal();
    let mut failed = false;
    // A reply is at most 3x its line, plus a line terminator.
    let max_reply = args.max_line_bytes.saturating_mul(3).saturating_add(2);
    let mut transport = if args.tls.quic {
        let timeout = args.timeout.unwrap_or(Duration::from_secs(5));
        let tls = tls.as_ref().expect("--quic sets up TLS");
        quic(&target, &addrs, tls, timeout, max_reply)?
    } else if args.udp {
        let timeout = args.timeout.unwrap_or(Duration::from_secs(1));
        Transport::Udp(UdpClient::new(&target, addrs, timeout, args.retries).from(args.source))
    } else {
        let timeout = args.timeout.unwrap_or(Duration::from_secs(10));
        if interactive {
            // A person may have started the client first: say so, prompt
            // anyway, and connect again with the first line.
            let (client, error) =
                TcpClient::try_connect(args.source, &target, addrs, timeout, max_reply, tls);
            // Not a failure of any line: the status counts typed lines
            // that got no reply.
            if let Some(e) = error {
                super::output::report_error(format_args!(
                    "{:#} (each line tries again)",
                    anyhow::Error::from(e)
                ));
            }
            Transport::Tcp(client)
        } else {
            Transport::Tcp(TcpClient::connect_from(
                args.source,
                &target,
                addrs,
                timeout,
                max_reply,
                tls,
            )?)
        }
    };

    let mut input = io::stdin().lock();
    // A reader of stdout that leaves (`| head`) ends the client quietly.
    let mut stdout = super::output::Output::new();
    let mut line = Vec::new();
    loop {
        if interactive {
            write!(stdout, "{PROMPT}")?;
            stdout.flush()?;
        }
        if !read_line(&mut input, args.max_line_bytes, &mut line)? {
            if interactive {
                writeln!(stdout)?;
            }
            break;
        }
        let reply = match transport.request(&line) {
            Ok(reply) => reply,
            Err(e) if interactive => {
                // A person can try again; a pipeline must not lose a line.
                super::output::report_error(format_args!("{e:#}"));
                failed = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        print_reply(&mut stdout, &reply)?;
        if !reply.complete {
            super::output::report_error(format_args!(
                "warning: the server closed the connection before ending its reply with a newline; it may be incomplete"
            ));
        }
        // A filter on a server that keeps its connections streams the
        // rest: lines out as they come, replies in as they arrive.
        if !interactive
            && let Transport::Tcp(client) = &mut transport
            && let Some(stream) = client.open_stream()
        {
            drop(input);
            stdout.flush()?;
            let stdin = io::stdin();
            super::stream_filter::run(stream, stdin, &mut stdout, args.max_line_bytes, max_reply)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads one line into `line` without its `\n`. Returns false at end of
/// input; fails on a line longer than `max` bytes rather than cutting it.
pub(super) fn read_line(
    input: &mut impl BufRead,
    max: usize,
    line: &mut Vec<u8>,
) -> anyhow::Result<bool> {
    line.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = input.take(limit).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > max {
        anyhow::bail!("input line longer than --max-line-bytes ({max} bytes)");
    }
    Ok(true)
}

/// Prints a reply on its own line, byte for byte.
fn print_reply(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    out.write_all(&reply.bytes)?;
    if reply.bytes.last() != Some(&b'\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_without_terminators_and_refuses_long_ones() {
        let mut input = io::Cursor::new(b"ab\n\nlast".to_vec());
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line(&mut input, 4, &mut line).unwrap() {
            lines.push(line.clone());
        }
        assert_eq!(lines, [b"ab".to_vec(), b"".to_vec(), b"last".to_vec()]);

        let mut input = io::Cursor::new(b"abcd\nabcde\n".to_vec());
        assert!(read_line(&mut input, 4, &mut line).unwrap());
        assert_eq!(line, b"abcd");
        let err = read_line(&mut input, 4, &mut line).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}

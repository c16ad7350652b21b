//! `upcase compare`: the options, and the table, JSON and page made of the
//! measurements ([`upcase::compare`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use upcase::bench::plot::{self, Series};
use upcase::compare::{Kind, Row, Settings};

/// Options of `upcase compare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Server host name or IP address
    #[arg(default_value = "localhost")]
    host: String,
    /// The UDP and TCP port
    #[arg(short, long, default_value_t = upcase::server::DEFAULT_PORT)]
    port: u16,
    /// The TLS port
    #[arg(long, value_name = "PORT", default_value_t = upcase::tls::DEFAULT_PORT)]
    tls_port: u16,
    /// The QUIC port [default: the TLS port]
    #[arg(long, value_name = "PORT")]
    quic_port: Option<u16>,
    /// Trust this CA or self-signed certificate (PEM) for TLS and QUIC
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (TLS and QUIC): for a lab
    #[arg(long)]
    insecure: bool,
    /// Ask for (SNI) and verify this server name instead of HOST
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// Which transports, in order: udp, tcp, tls, quic
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "udp,tcp,tls,quic"
    )]
    transports: Vec<Transport>,
    /// Warm round trips per transport
    #[arg(short = 'n', long, default_value_t = 200, value_parser = super::parse_usize)]
    messages: usize,
    /// Bytes per message (at least 16)
    #[arg(long, default_value_t = 64, value_parser = super::parse_usize)]
    size: usize,
    /// How long the pipelined rate is measured, per transport
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::parse_nonzero_duration)]
    duration: Duration,
    /// How long a reply may take before it counts as lost
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = super::parse_nonzero_duration)]
    timeout: Duration,
    /// Print one JSON document instead of the table
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page (table and charts, nothing fetched)
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Udp,
    Tcp,
    Tls,
    Quic,
}

/// The JSON document.
#[derive(Serialize)]
struct Report<'a> {
    host: &'a str,
    messages: usize,
    size: usize,
    transports: &'a [Row],
    sentences: &'a [String],
}

/// Measures and reports. Exit 1 only when no transport answered.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.size < 16 {
        return Err(super::UsageError("--size must be at least 16 bytes".into()).into());
    }
    // Created first: a path that cannot be written fails before the runs.
    let html_file = args
        .html
        .as_ref()
        .map(|path| {
            std::fs::File::create(path).map_err(|e| {
                super::UsageError(format!(
                    "cannot write the page to {}: {}",
                    path.display(),
                    upcase::io_error::error_text(&e)
                ))
            })
        })
        .transpose()?;
    let secure = args
        .transports
        .iter()
        .any(|t| matches!(t, Transport::Tls | Transport::Quic));
    let tls = if secure {
        let settings = upcase::tls::ClientTls {
            ca: args.ca.clone(),
            insecure: args.insecure,
            sni: args.sni.clone(),
            cert: None,
            key: None,
        };
        let name = settings.server_name(&args.host)?;
        Some(upcase::tls::TlsConnect {
            config: settings.config()?,
            name,
        })
    } else {
        None
    };
    let mut targets = Vec::new();
    for transport in &args.transports {
        let (kind, port) = match transport {
            Transport::Udp => (Kind::Udp, args.port),
            Transport::Tcp => (Kind::Tcp, args.port),
            Transport::Tls => (Kind::Tls, args.tls_port),
            Transport::Quic => (Kind::Quic, args.quic_port.unwrap_or(args.tls_port)),
        };
        let addr = super::resolve(&args.host, port)?[0];
        targets.push((kind, addr));
    }
    let settings = Settings {
        targets,
        tls,
        messages: args.messages,
        size: args.size,
        timeout: args.timeout,
        rate_for: args.duration,
    };
    let rows = upcase::compare::run(&settings, |name| {
        let _ = writeln!(std::io::stderr(), "upcase compare: measuring {name} ...");
    });
    let sentences = sentences(&rows);
    let mut out = super::output::Output::new();
    if args.json {
        let report = Report {
            host: &args.host,
            messages: args.messages,
            size: args.size,
            transports: &rows,
            sentences: &sentences,
        };
        super::output::write_json(&mut out, &report, true)?;
    } else {
        write!(out, "{}", table(&args.host, &rows, &sentences))?;
    }
    out.flush()?;
    if let (Some(path), Some(mut file)) = (&args.html, html_file) {
        let page = page(&args.host, &rows, &sentences)?;
        file.write_all(page.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if rows.iter().any(|r| r.answered) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn int(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The table's cells for `row`, in [`COLUMNS`]' order.
fn cells(row: &Row) -> Vec<String> {
    if !row.answered {
        return vec![
            row.transport.to_owned(),
            format!("no answer: {}", row.note.as_deref().unwrap_or("")),
        ];
    }
    vec![
        row.transport.to_owned(),
        num(row.first_reply_ms),
        format!("{}/{}", int(row.packets_out), int(row.packets_in)),
        format!("{}/{}", int(row.bytes_out), int(row.bytes_in)),
        num(row.resumed_first_reply_ms),
        num(row.p50_ms),
        num(row.p99_ms),
        num(row.max_ms),
        row.rate_per_second
            .map_or_else(|| "-".into(), |r| format!("{r:.0}")),
        match (row.datagrams_lost, row.datagrams_sent) {
            (Some(lost), Some(sent)) => {
                format!("{} of {} (datagrams: {lost} of {sent})", row.lost, row.sent)
            }
            _ => format!("{} of {}", row.lost, row.sent),
        },
    ]
}

const COLUMNS: [&str; 10] = [
    "transport",
    "first reply ms",
    "packets out/in",
    "bytes out/in",
    "resumed ms",
    "p50 ms",
    "p99 ms",
    "max ms",
    "rate /s",
    "lost",
];

/// The terminal's table, the sentences under it, and each transport's
/// boundaries and notes.
fn table(host: &str, rows: &[Row], sentences: &[String]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.len()).collect();
    for row in &body {
        if row.len() == COLUMNS.len() {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let mut out = format!("upcase compare: {host}\n\n");
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let _ = writeln!(out, "{}", line(&header));
    for row in &body {
        if row.len() == COLUMNS.len() {
            let _ = writeln!(out, "{}", line(row));
        } else {
            let _ = writeln!(out, "{:>w$}  {}", row[0], row[1], w = widths[0]);
        }
    }
    out.push('\n');
    for s in sentences {
        let _ = writeln!(out, "{s}");
    }
    for row in rows.iter().filter(|r| r.answered) {
        if let Some(b) = &row.boundaries {
            let _ = writeln!(out, "{}: {b}", row.transport);
        }
        if let (Some(note), true) = (&row.note, row.answered) {
            let _ = writeln!(out, "{}: {note}", row.transport);
        }
    }
    out
}

/// What the numbers show, in a few plain sentences written from them.
fn sentences(rows: &[Row]) -> Vec<String> {
    let get = |name: &str| rows.iter().find(|r| r.transport == name && r.answered);
    let mut out = Vec::new();
    let first: Vec<String> = rows
        .iter()
        .filter(|r| r.answered)
        .filter_map(|r| {
            let ms = r.first_reply_ms?;
            Some(format!(
                "{} {ms:.3} ms, packets {} out and {} in",
                r.transport.to_uppercase(),
                int(r.packets_out),
                int(r.packets_in)
            ))
        })
        .collect();
    if !first.is_empty() {
        let mut s = format!("The first reply from a cold start: {}.", first.join("; "));
        if let (Some(udp), Some(tcp)) = (get("udp"), get("tcp"))
            && let (Some(u), Some(t)) = (udp.first_reply_ms, tcp.first_reply_ms)
        {
            let _ = write!(
                s,
                " TCP's took {:.1} times UDP's: its handshake's round trip comes before the line's",
                t / u.max(1e-9)
            );
            if let (Some(tls), Some(tl)) = (get("tls"), get("tls").and_then(|r| r.first_reply_ms)) {
                let _ = write!(s, ", and TLS adds its own ({:.3} ms in all", tl);
                if let Some(resumed) = tls.resumed_first_reply_ms {
                    let _ = write!(s, ", {resumed:.3} ms resumed");
                }
                s.push(')');
            }
            s.push('.');
        }
        out.push(s);
    }
    let warm: Vec<&Row> = rows
        .iter()
        .filter(|r| r.answered && r.p50_ms.is_some())
        .collect();
    if let (Some(fast), Some(slow)) = (
        warm.iter()
            .min_by(|a, b| a.p50_ms.partial_cmp(&b.p50_ms).unwrap()),
        warm.iter()
            .max_by(|a, b| a.p50_ms.partial_cmp(&b.p50_ms).unwrap()),
    ) {
        out.push(format!(
            "Once warm, a round trip's median went from {} ms ({}) to {} ms ({}).",
            num(fast.p50_ms),
            fast.transport.to_uppercase(),
            num(slow.p50_ms),
            slow.transport.to_uppercase()
        ));
    }
    let lossy: Vec<&Row> = rows.iter().filter(|r| r.answered && r.lost > 0).collect();
    let answered = rows.iter().filter(|r| r.answered).count();
    if answered == 0 {
        out.push("No transport answered: nothing was measured.".into());
    } else if lossy.is_empty() && answered < rows.len() {
        out.push("No message went unanswered over the transports that answered.".into());
    } else if lossy.is_empty() {
        out.push("No message went unanswered over any transport.".into());
    } else {
        let said: Vec<String> = lossy
            .iter()
            .map(|r| {
                format!(
                    "{} lost {} of {} ({:.1}%)",
                    r.transport.to_uppercase(),
                    r.lost,
                    r.sent,
                    100.0 * r.lost as f64 / r.sent.max(1) as f64
                )
            })
            .collect();
        let streams: Vec<String> = rows
            .iter()
            .filter(|r| r.answered && r.lost == 0 && r.transport != "udp")
            .map(|r| format!("{} (max {} ms)", r.transport.to_uppercase(), num(r.max_ms)))
            .collect();
        let mut s = format!("{}.", said.join("; "));
        if !streams.is_empty() {
            let _ = write!(
                s,
                " The streams lost nothing: {} sent again what the path lost, and a loss showed as latency.",
                streams.join(", ")
            );
        }
        out.push(s);
    }
    out
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Bars of packets out and in for each transport's first reply, as SVG.
fn packets_svg(rows: &[Row]) -> String {
    let answered: Vec<&Row> = rows.iter().filter(|r| r.answered).collect();
    let max = answered
        .iter()
        .flat_map(|r| [r.packets_out.unwrap_or(0), r.packets_in.unwrap_or(0)])
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (width, bar_area) = (600.0, 420.0);
    let height = 40.0 + 50.0 * answered.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">"
    );
    for (i, r) in answered.iter().enumerate() {
        let y = 20.0 + 50.0 * i as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text>",
            y + 18.0,
            r.transport
        );
        for (j, (label, value, color)) in [
            ("out", r.packets_out.unwrap_or(0), "#3367d6"),
            ("in", r.packets_in.unwrap_or(0), "#e6194b"),
        ]
        .into_iter()
        .enumerate()
        {
            let w = bar_area * value as f64 / max;
            let yy = y + 20.0 * j as f64;
            let _ = write!(
                svg,
                "<rect x=\"60\" y=\"{yy}\" width=\"{w:.1}\" height=\"16\" fill=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{}\">{value} {label}</text>",
                66.0 + w,
                yy + 13.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The self-contained page: the table, the sentences, a latency chart and
/// a packets chart, each with its sentence; nothing fetched from anywhere.
fn page(host: &str, rows: &[Row], sentences: &[String]) -> anyhow::Result<String> {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>upcase compare: {host}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #aaa;padding:.3em .6em;text-align:right}}\
         th{{background:#eee}}td:first-child{{text-align:left}}</style></head><body>\
         <h1>UDP, TCP, TLS and QUIC to {host}</h1><table><tr>",
        host = escape(host)
    );
    for c in COLUMNS {
        let _ = write!(html, "<th>{}</th>", escape(c));
    }
    html.push_str("</tr>");
    for row in rows {
        let cells = cells(row);
        html.push_str("<tr>");
        if cells.len() == COLUMNS.len() {
            for c in &cells {
                let _ = write!(html, "<td>{}</td>", escape(c));
            }
        } else {
            let _ = write!(
                html,
                "<td>{}</td><td colspan=\"{}\">{}</td>",
                escape(&cells[0]),
                COLUMNS.len() - 1,
                escape(&cells[1])
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    for s in sentences {
        let _ = write!(html, "<p>{}</p>", escape(s));
    }
    html.push_str("<h2>Warm round trips by percentile</h2>");
    let series: Vec<Series<'_>> = rows
        .iter()
        .filter(|r| !r.distribution.is_empty())
        .map(|r| Series {
            label: r.transport.to_uppercase(),
            points: &r.distribution,
        })
        .collect();
    if !series.is_empty() {
        html.push_str(&plot::svg(&series, plot::Scale::Auto).map_err(anyhow::Error::msg)?);
    }
    if let Some(s) = sentences.get(1) {
        let _ = write!(html, "<p>{}</p>", escape(s));
    }
    html.push_str("<h2>Packets for the first reply</h2>");
    html.push_str(&packets_svg(rows));
    if let Some(s) = sentences.first() {
        let _ = write!(html, "<p>{}</p>", escape(s));
    }
    for row in rows.iter().filter(|r| r.answered) {
        if let Some(b) = &row.boundaries {
            let _ = write!(
                html,
                "<p><b>{}</b>: {}</p>",
                row.transport.to_uppercase(),
                escape(b)
            );
        }
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

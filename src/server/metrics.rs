//! The server's [`Stats`] as Prometheus metrics (OpenMetrics text, which
//! Prometheus scrapes natively).
//!
//! The counters stay the server's own relaxed atomics; this module only reads
//! them when scraped, through a `prometheus-client` [`Collector`], so serving
//! a message costs nothing more with metrics on than off.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Stats;
use super::stats::{LATENCY_BOUNDS_MICROS, Latency};

/// What `/metrics` answers with, per the OpenMetrics specification.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of `stats`, encoded for one scrape.
pub fn render(stats: &Arc<Stats>) -> String {
    let mut registry = Registry::with_prefix("upcase");
    registry.register_collector(Box::new(StatsCollector(stats.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("encoding into a String cannot fail");
    text
}

#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let s = &*self.0;
        let families = [
            Family {
                name: "tcp_connections",
                help: "TCP connections accepted and served",
                kind: Counter,
                label: None,
                series: &[("", &s.tcp_connections)],
            },
            Family {
                name: "tcp_connections_open",
                help: "TCP connections open now",
                kind: Gauge,
                label: None,
                series: &[("", &s.tcp_open)],
            },
            Family {
                name: "tcp_connections_parked",
                help: "Open TCP connections parked now: idle, waiting without a task",
                kind: Gauge,
                label: None,
                series: &[("", &s.tcp_parked)],
            },
            Family {
                name: "tcp_parks",
                help: "Times an idle TCP connection was parked",
                kind: Counter,
                label: None,
                series: &[("", &s.tcp_parks)],
            },
            Family {
                name: "tcp_connections_refused",
                help: "TCP connections refused, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("busy", &s.tcp_refused_busy),
                    ("per_source", &s.tcp_refused_per_source),
                    ("denied", &s.tcp_refused_denied),
                    ("proxy_header", &s.tcp_proxy_header_errors),
                ],
            },
            Family {
                name: "tcp_connections_closed",
                help: "TCP connections closed by the server, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("idle", &s.tcp_idle_closed),
                    ("write_stalled", &s.tcp_write_stalled),
                    ("line_too_long", &s.tcp_line_too_long),
                    ("error", &s.tcp_errors),
                ],
            },
            Family {
                name: "accept_errors",
                help: "Errors from accept(2), such as running out of file descriptors",
                kind: Counter,
                label: None,
                series: &[("", &s.accept_errors)],
            },
            Family {
                name: "messages_received",
                help: "Messages received: UDP datagrams, TCP lines",
                kind: Counter,
                label: Some("protocol"),
                series: &[("udp", &s.udp_datagrams_in), ("tcp", &s.tcp_lines_in)],
            },
            Family {
                name: "messages_sent",
                help: "Replies sent: UDP datagrams, TCP lines",
                kind: Counter,
                label: Some("protocol"),
                series: &[("udp", &s.udp_datagrams_out), ("tcp", &s.tcp_lines_out)],
            },
            Family {
                name: "bytes_received",
                help: "Payload bytes received",
                kind: Counter,
                label: Some("protocol"),
                series: &[("udp", &s.udp_bytes_in), ("tcp", &s.tcp_bytes_in)],
            },
            Family {
                name: "bytes_sent",
                help: "Payload bytes sent",
                kind: Counter,
                label: Some("protocol"),
                series: &[("udp", &s.udp_bytes_out), ("tcp", &s.tcp_bytes_out)],
            },
            Family {
                name: "udp_datagrams_dropped",
                help: "UDP datagrams received and not answered, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("source", &s.udp_refused_source),
                    ("denied", &s.udp_refused_denied),
                    ("rate_limited", &s.udp_rate_limited),
                    ("loop", &s.udp_refused_loop),
                    ("simulated", &s.udp_dropped_simulated),
                ],
            },
            Family {
                name: "udp_errors",
                help: "UDP receive and send errors",
                kind: Counter,
                label: Some("op"),
                series: &[("recv", &s.udp_recv_errors), ("send", &s.udp_send_errors)],
            },
            Family {
                name: "tls_handshakes",
                help: "TLS handshakes completed",
                kind: Counter,
                label: None,
                series: &[("", &s.tls_handshakes)],
            },
            Family {
                name: "tls_handshake_failures",
                help: "TLS handshakes that failed, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("timeout", &s.tls_failed_timeout),
                    ("not_tls", &s.tls_failed_not_tls),
                    ("client_cert", &s.tls_failed_client_cert),
                    ("alert", &s.tls_failed_alert),
                    ("protocol", &s.tls_failed_protocol),
                    ("io", &s.tls_failed_io),
                ],
            },
            Family {
                name: "quic_connections",
                help: "QUIC connections whose handshake completed",
                kind: Counter,
                label: None,
                series: &[("", &s.quic_connections)],
            },
            Family {
                name: "quic_connections_open",
                help: "QUIC connections open now",
                kind: Gauge,
                label: None,
                series: &[("", &s.quic_open)],
            },
            Family {
                name: "quic_connections_refused",
                help: "QUIC connection attempts refused (over a cap, or denied)",
                kind: Counter,
                label: None,
                series: &[("", &s.quic_refused)],
            },
            Family {
                name: "quic_retries",
                help: "Retry packets sent to validate a new client's address",
                kind: Counter,
                label: None,
                series: &[("", &s.quic_retries)],
            },
            Family {
                name: "quic_handshake_failures",
                help: "QUIC handshakes that failed, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("timeout", &s.quic_failed_timeout),
                    ("alpn", &s.quic_failed_alpn),
                    ("client_cert", &s.quic_failed_client_cert),
                    ("protocol", &s.quic_failed_protocol),
                ],
            },
            Family {
                name: "quic_zero_rtt",
                help: "QUIC connections that opened a stream as 0-RTT early data",
                kind: Counter,
                label: None,
                series: &[("", &s.quic_zero_rtt)],
            },
            Family {
                name: "quic_streams",
                help: "QUIC bidirectional streams opened by clients",
                kind: Counter,
                label: None,
                series: &[("", &s.quic_streams)],
            },
            Family {
                name: "quic_streams_reset",
                help: "QUIC streams reset by the server, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("line_too_long", &s.quic_line_too_long),
                    ("write_stalled", &s.quic_write_stalled),
                ],
            },
            Family {
                name: "quic_stream_bytes",
                help: "Bytes on QUIC streams, by direction",
                kind: Counter,
                label: Some("direction"),
                series: &[("in", &s.quic_bytes_in), ("out", &s.quic_bytes_out)],
            },
            Family {
                name: "quic_datagrams",
                help: "QUIC DATAGRAM frames, by direction",
                kind: Counter,
                label: Some("direction"),
                series: &[("in", &s.quic_datagrams_in), ("out", &s.quic_datagrams_out)],
            },
            Family {
                name: "quic_datagrams_not_sent",
                help: "QUIC datagram replies not sent, by reason",
                kind: Counter,
                label: Some("reason"),
                series: &[
                    ("too_large", &s.quic_datagrams_too_large),
                    ("unsupported", &s.quic_datagrams_unsupported),
                ],
            },
        ];
        for family in &families {
            family.encode(&mut encoder)?;
        }
        encode_latency(
            &mut encoder,
            "reply_latency_seconds",
            "From a message received to its reply sent (TCP: from a read to the reply to what it brought written)",
            &[("udp", &s.udp_reply_latency), ("tcp", &s.tcp_reply_latency)],
        )?;
        encode_latency(
            &mut encoder,
            "tls_handshake_seconds",
            "From a TLS connection accepted to its handshake done",
            &[("tls", &s.tls_handshake_latency)],
        )
    }
}

/// One metric family: its name (without the prefix or `_total`), help,
/// type, and its series as (label value, counter).
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: MetricType,
    /// The one label's name; `None` for a family of one unlabelled series.
    label: Option<&'a str>,
    series: &'a [(&'a str, &'a AtomicU64)],
}

impl Family<'_> {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for &(label_value, counter) in self.series {
            let value = Stats::get(counter);
            match self.label {
                None => encode_value(&mut metric, self.kind, value)?,
                Some(label) => {
                    let labels = [(label, label_value)];
                    encode_value(&mut metric.encode_family(&labels)?, self.kind, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    metric: &mut MetricEncoder,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    match kind {
        MetricType::Gauge => metric.encode_gauge(&value),
        _ => metric.encode_counter::<NoLabelSet, _, u64>(&value, None),
    }
}

/// A histogram family, one series per (protocol label, histogram).
fn encode_latency(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&str, &Latency)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for &(protocol, latency) in series {
        let counts = latency.buckets();
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MICROS
            .iter()
            .map(|&micros| micros as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(counts)
            .collect();
        let labels = [("protocol", protocol)];
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                latency.sum().as_secs_f64(),
                counts.iter().sum(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exported_with_its_value() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.udp_datagrams_in, 7);
        Stats::add(&stats.tcp_refused_busy, 3);
        Stats::add(&stats.tcp_open, 2);
        stats
            .udp_reply_latency
            .record(std::time::Duration::from_micros(30));
        let text = render(&stats);
        assert!(
            text.contains("upcase_messages_received_total{protocol=\"udp\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("upcase_tcp_connections_refused_total{reason=\"busy\"} 3\n"));
        assert!(text.contains("upcase_tcp_connections_open 2\n"));
        assert!(
            text.contains(
                "upcase_reply_latency_seconds_bucket{le=\"0.00005\",protocol=\"udp\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("upcase_reply_latency_seconds_count{protocol=\"udp\"} 1\n"));
        assert!(text.ends_with("# EOF\n"));
        // Every counter of the snapshot appears in some series: one sample
        // line per counter, plus the three histograms.
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        let histogram_lines = 3 * (LATENCY_BOUNDS_MICROS.len() + 1 + 2);
        assert_eq!(samples, stats.snapshot().len() + histogram_lines, "{text}");
    }
}

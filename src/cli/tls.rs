//! The TLS options of `client`, `ping` and `bench`, flattened into each.

use std::path::PathBuf;

use upcase::tls::{ClientTls, TlsConnect};

/// `--tls` (or `--quic`) and what goes with it.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("secure").args(["tls", "quic"]).multiple(false)))]
pub struct TlsArgs {
    /// Connect over TLS (the server's --tls-port; default port 12443)
    #[arg(long, help_heading = "TLS")]
    pub tls: bool,
    /// Connect over QUIC (the server's --quic port; default port 12443), TLS 1.3 inside
    #[arg(long, help_heading = "TLS")]
    pub quic: bool,
    /// Trust this CA or self-signed certificate (PEM) instead of the system's roots
    #[arg(long, value_name = "FILE", requires = "secure", help_heading = "TLS")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate at all (says so on stderr): for a lab, never for anything real
    #[arg(long, requires = "secure", conflicts_with = "ca", help_heading = "TLS")]
    insecure: bool,
    /// Ask for (SNI) and verify this server name instead of HOST
    #[arg(long, value_name = "NAME", requires = "secure", help_heading = "TLS")]
    sni: Option<String>,
    /// Client certificate (PEM) for a server that asks for one (mutual TLS)
    #[arg(long, value_name = "FILE", requires_all = ["secure", "key"], help_heading = "TLS")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM)
    #[arg(long, value_name = "FILE", requires = "cert", help_heading = "TLS")]
    key: Option<PathBuf>,
}

impl TlsArgs {
    /// The port to use when none is given: the TLS port with `--tls`.
    pub fn default_port(&self) -> u16 {
        if self.tls || self.quic {
            upcase::tls::DEFAULT_PORT
        } else {
            upcase::server::DEFAULT_PORT
        }
    }

    /// The TLS to set up with `host`, if `--tls` or `--quic`; the files are
    /// read now, so a bad one is reported before anything is sent.
    pub fn connect(&self, host: &str) -> anyhow::Result<Option<TlsConnect>> {
        if !self.tls && !self.quic {
            return Ok(None);
        }
        let settings = ClientTls {
            ca: self.ca.clone(),
            insecure: self.insecure,
            sni: self.sni.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        if self.insecure {
            super::output::report_error(format_args!(
                "warning: --insecure: the server's certificate is not verified; \
                 anyone on the path could pose as the server"
            ));
        }
        let name = settings.server_name(host)?;
        Ok(Some(TlsConnect {
            config: settings.config()?,
            name,
        }))
    }
}

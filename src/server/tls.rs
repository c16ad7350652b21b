//! The server's TLS: its certificate and key, reloaded on request (SIGHUP)
//! without touching the connections already open, and optional client
//! certificates (mutual TLS).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::WebPkiClientVerifier;

use crate::tls::{self as material, TlsError};

/// TLS as the server is told to serve it.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The TLS port on each listen address (the plain port keeps serving).
    /// Port 0 picks a free one, apart from the plain port's.
    pub port: u16,
    /// A connection whose handshake is not done after this long is closed.
    pub handshake_timeout: Duration,
    /// The certificate and key in use.
    pub keys: Arc<Keys>,
}

/// Where the server's TLS material is: PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate, followed by its chain.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, SEC1 or RSA).
    pub key: PathBuf,
    /// With mutual TLS: the CA that must have signed a client's
    /// certificate.
    pub client_ca: Option<PathBuf>,
}

/// The rustls configuration in use, built from [`TlsFiles`] and rebuilt by
/// [`reload`](Keys::reload). A handshake takes the configuration current
/// when it starts; one in progress or done keeps its own.
pub struct Keys {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("files", &self.files).finish()
    }
}

impl Keys {
    /// Reads and checks the files: every problem is found here, at start,
    /// rather than at the first client.
    pub fn load(files: TlsFiles) -> Result<Keys, TlsError> {
        material::warm_up();
        let config = server_config(&files)?;
        Ok(Keys {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again. New handshakes use what they hold; if they
    /// no longer make a valid configuration, the last good one stays and
    /// the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// The configuration for a handshake starting now.
    pub(super) fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether clients must show a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = material::load_certs(&files.cert)?;
    let key = material::load_key(&files.key)?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = material::load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::Config(format!(
            "{} and {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })
}

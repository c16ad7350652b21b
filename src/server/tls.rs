//! The server's TLS: its certificate and key, reloaded on request (SIGHUP)
//! without touching the connections already open, and optional client
//! certificates (mutual TLS).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

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
    /// A reload (SIGHUP) that has not read the files after this long keeps
    /// the last good pair: a path that is a FIFO, or on a hung mount, can
    /// block a read for ever.
    pub reload_timeout: Duration,
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
    /// A reload's thread is still reading the files.
    reading: AtomicBool,
    /// Bumped at each reload that took: what holds a configuration made
    /// from these keys (QUIC's endpoints) makes it again.
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("files", &self.files).finish()
    }
}

/// Why a reload kept the last good pair.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files do not make a valid configuration.
    #[error(transparent)]
    Files(#[from] TlsError),
    /// Reading them did not finish in time.
    #[error(
        "the files were not read within {}s (is a path a FIFO, or on a mount that hangs?)",
        .0.as_secs_f64()
    )]
    TimedOut(Duration),
    /// An earlier reload is still stuck reading them.
    #[error("an earlier reload is still waiting to read the files")]
    StillReading,
    /// No thread could be started to read them.
    #[error("cannot start a thread to read the files: {0}")]
    Thread(std::io::Error),
}

impl Keys {
    /// Reads and checks the files: every problem is found here, at start,
    /// rather than at the first client. Returns what is wrong with the
    /// certificate's validity period now, if anything (see
    /// [`material::validity_problem`]): a warning, not a refusal.
    pub fn load(files: TlsFiles) -> Result<(Keys, Option<String>), TlsError> {
        material::warm_up();
        let (config, validity) = server_config(&files)?;
        let keys = Keys {
            files,
            current: RwLock::new(Arc::new(config)),
            reading: AtomicBool::new(false),
            generation: tokio::sync::watch::Sender::new(0),
        };
        Ok((keys, validity))
    }

    /// Reads the files again, on a thread of its own so that no runtime
    /// worker ever waits on a file, for at most `limit`. New handshakes use
    /// what they hold; if they no longer make a valid configuration, or
    /// cannot be read in time, the last good one stays and the error says
    /// why. A thread still stuck reading is left to finish (its result is
    /// dropped), and further reloads are refused until it has. On success,
    /// returns what is wrong with the new certificate's validity period now.
    pub async fn reload(self: &Arc<Self>, limit: Duration) -> Result<Option<String>, ReloadError> {
        if self.reading.swap(true, Ordering::AcqRel) {
            return Err(ReloadError::StillReading);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let keys = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("upcase-tls-reload".into())
            .spawn(move || {
                let built = server_config(&keys.files);
                keys.reading.store(false, Ordering::Release);
                let _ = tx.send(built);
            });
        if let Err(e) = spawned {
            self.reading.store(false, Ordering::Release);
            return Err(ReloadError::Thread(e));
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(built)) => {
                let (config, validity) = built?;
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                self.generation.send_modify(|g| *g += 1);
                Ok(validity)
            }
            // The thread ended without a word: it panicked.
            Ok(Err(_)) => Err(ReloadError::Files(TlsError::Config(
                "reading the files failed unexpectedly".into(),
            ))),
            Err(_) => Err(ReloadError::TimedOut(limit)),
        }
    }

    /// Tells of each reload that took.
    pub(super) fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
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

/// The configuration `files` make, and what is wrong with the
/// certificate's validity period now, if anything.
fn server_config(files: &TlsFiles) -> Result<(ServerConfig, Option<String>), TlsError> {
    let certs = material::load_certs(&files.cert)?;
    let validity = material::validity_problem(&certs[0], SystemTime::now())
        .map(|problem| format!("{}: the certificate {problem}", files.cert.display()));
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
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::Config(format!(
            "{} and {}: {}",
            files.cert.display(),
            files.key.display(),
            material::describe_error(&e)
        ))
    })?;
    Ok((config, validity))
}

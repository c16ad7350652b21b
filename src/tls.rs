//! TLS material and settings shared by the server, the client, ping and
//! bench: PEM files read with a size cap, client configurations, and
//! one-line reasons for a handshake that failed.
//!
//! rustls (through tokio-rustls) with its default provider, aws-lc-rs: no
//! OpenSSL dependency, and rustls' safe defaults (TLS 1.3 and 1.2, AEAD
//! suites with forward secrecy only).

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use tokio_rustls::rustls;

use crate::io_error::error_text;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The port TLS is served on unless told otherwise (12000's neighbour in
/// spirit: 443's last digits).
pub const DEFAULT_PORT: u16 = 12443;

/// A PEM file larger than this is refused: a certificate chain is a few
/// KiB, and a path such as `/dev/zero` must not be read forever.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// TLS material that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read or holds nothing usable.
    #[error("{}: {why}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why, in a few words.
        why: String,
    },
    /// Files that each parse but do not go together (a key that is not
    /// the certificate's, ...), or a setting rustls refuses.
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, why: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// The bytes of a PEM file, at most [`MAX_PEM_BYTES`].
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let file = std::fs::File::open(path).map_err(|e| file_error(path, error_text(&e)))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(path, error_text(&e)))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(file_error(
            path,
            format!("larger than {MAX_PEM_BYTES} bytes: not a PEM file"),
        ));
    }
    Ok(bytes)
}

/// Every certificate in a PEM file, in order (a chain: the leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            file_error(
                path,
                format!("not a PEM certificate file: {}", pem_error(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(
            path,
            "no private key in it (expected PKCS#8, SEC1 or RSA in PEM)",
        ),
        e => file_error(path, format!("not a PEM key file: {}", pem_error(&e))),
    })
}

/// A PEM parsing error in words (its `Display` shows labels as byte lists).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    match e {
        Error::MissingSectionEnd { end_marker } => {
            format!(
                "a section has no end line (expected \"-----END {}-----\")",
                text(end_marker)
            )
        }
        Error::IllegalSectionStart { line } => {
            format!(
                "a section starts with a line that is not PEM: {:?}",
                text(line)
            )
        }
        Error::Base64Decode(why) => format!("the base64 inside is broken ({why})"),
        Error::Io(e) => error_text(e),
        Error::NoItemsFound => "nothing in PEM form in it".into(),
        other => other.to_string(),
    }
}

/// What is wrong with the validity period of `cert` at `now`, if anything:
/// `expired on ...` or `not valid before ...` (UTC). None when it cannot be
/// parsed: the handshake reports that in its own words.
pub fn validity_problem(cert: &CertificateDer, now: std::time::SystemTime) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let validity = parsed.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        let secs = u64::try_from(t.timestamp()).unwrap_or(0);
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
    };
    let now_secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if validity.not_after.timestamp() < now_secs {
        Some(format!("expired on {}", at(&validity.not_after)))
    } else if validity.not_before.timestamp() > now_secs {
        Some(format!("not valid before {}", at(&validity.not_before)))
    } else {
        None
    }
}

/// The certificates of a PEM file as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Initializes the crypto library's random generator now. Its first use
/// in a process seeds it, which takes tens of milliseconds (measured: 35
/// ms here); done before a server serves or a client times its handshake,
/// no client and no measurement pays for it.
pub fn warm_up() {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut byte = [0u8; 1];
    if let Err(e) = provider.secure_random.fill(&mut byte) {
        tracing::warn!(error = ?e, "TLS: the random generator failed to start");
    }
}

/// TLS to set up on each connection a client makes: what
/// [`ClientTls::config`] and [`ClientTls::server_name`] give.
#[derive(Clone, Debug)]
pub struct TlsConnect {
    /// Trust, client certificate, ...
    pub config: Arc<ClientConfig>,
    /// The name asked for (SNI) and verified.
    pub name: ServerName<'static>,
}

impl TlsConnect {
    /// Shakes hands over `stream` (tokio's), within `limit`: a handshake
    /// without an answer in time is `TimedOut`.
    pub async fn handshake(
        &self,
        stream: tokio::net::TcpStream,
        limit: Duration,
    ) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        tokio::time::timeout(limit, connector.connect(self.name.clone(), stream))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }
}

/// How a client connects over TLS: `--ca`, `--insecure`, `--sni`,
/// `--cert` and `--key`.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// Trust this CA (or self-signed certificate) instead of the system's
    /// roots.
    pub ca: Option<PathBuf>,
    /// Verify nothing about the server's certificate.
    pub insecure: bool,
    /// The name to ask for and verify, instead of the host connected to.
    pub sni: Option<String>,
    /// A client certificate (chain), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The rustls configuration these settings describe.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        warm_up();
        let builder = ClientConfig::builder();
        let builder = if self.insecure {
            let provider = builder.crypto_provider().clone();
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| {
                    TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display()))
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config(
                    "--cert and --key go together: a client certificate needs its key".into(),
                ));
            }
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        if let Some(ca) = &self.ca {
            return load_roots(ca);
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsError::Config(
                "no trusted CA certificates on this system (install ca-certificates), \
                 and no --ca FILE given"
                    .into(),
            ));
        }
        Ok(roots)
    }

    /// The name to verify the server's certificate against: `--sni`, or
    /// the host as given (a name, or an IP address checked against the
    /// certificate's IP addresses).
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.sni.as_deref().unwrap_or(host);
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        ServerName::try_from(bare.to_owned())
            .map_err(|_| TlsError::Config(format!("'{name}' is not a valid TLS server name")))
    }
}

/// `--insecure`: accepts any certificate, but still checks that the
/// handshake is signed by the key of the certificate shown (as curl's `-k`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS error inside an I/O error from a handshake or a TLS stream.
pub fn inner_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A name a certificate presents, as webpki writes it (`DnsName("a.b")`,
/// `IpAddress(127.0.0.1)`), plain.
fn plain_name(presented: &str) -> String {
    if let Some(ip) = presented
        .strip_prefix("IpAddress(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        // webpki writes IPv6 its own way (`0::1`): as the address reads.
        return ip
            .parse::<std::net::IpAddr>()
            .map_or_else(|_| ip.to_owned(), |ip| ip.to_string());
    }
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .unwrap_or(presented)
        .to_owned()
}

/// What is wrong with a certificate, in words: rustls' and webpki's own
/// texts are Rust debug output (`DnsName("localhost")`,
/// `Other(OtherError(UnsupportedCertVersion))`).
pub fn describe_certificate_error(cert: &rustls::CertificateError) -> String {
    use rustls::CertificateError as Cert;
    match cert {
        Cert::UnknownIssuer => "unknown issuer: it is not signed by a CA trusted here".into(),
        Cert::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<String> = presented.iter().map(|p| plain_name(p)).collect();
            let valid = if names.is_empty() {
                "no name at all (no subjectAltName)".to_owned()
            } else {
                names.join(", ")
            };
            format!(
                "name mismatch: it is for {valid}, not for {}",
                expected.to_str()
            )
        }
        Cert::NotValidForName => "name mismatch: it is not for the name asked".into(),
        Cert::Expired | Cert::ExpiredContext { .. } => format!("expired: {cert}"),
        Cert::NotValidYet | Cert::NotValidYetContext { .. } => format!("not valid yet: {cert}"),
        Cert::BadEncoding => "it is not a well-formed X.509 certificate".into(),
        Cert::BadSignature => "its signature does not verify".into(),
        #[allow(deprecated)]
        Cert::UnsupportedSignatureAlgorithm | Cert::UnsupportedSignatureAlgorithmContext { .. } => {
            "it is signed with an algorithm this TLS library does not accept".into()
        }
        Cert::Revoked => "it has been revoked".into(),
        Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => {
            "it is not for this use (its extended key usage: a server certificate used by a \
             client, or the other way round)"
                .into()
        }
        Cert::Other(other) => {
            let text = other.to_string();
            match text.as_str() {
                "UnsupportedCertVersion" => "it is not an X.509 version 3 certificate (an old \
                    or hand-made one: make it again with the v3 extensions, e.g. \
                    subjectAltName)"
                    .into(),
                "CaUsedAsEndEntity" => "it is a CA's certificate, used as a server's or \
                    client's"
                    .into(),
                "EndEntityUsedAsCa" => "a server's or client's certificate is used as a CA".into(),
                "UnsupportedCriticalExtension" => {
                    "it has a critical extension this TLS library does not know".into()
                }
                other => format!("it was refused ({other})"),
            }
        }
        other => other.to_string(),
    }
}

/// A rustls error in words, for logs and messages.
pub fn describe_error(e: &rustls::Error) -> String {
    use rustls::{Error, InconsistentKeys};
    match e {
        Error::InvalidCertificate(cert) => describe_certificate_error(cert),
        Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            "the private key is not the certificate's key".into()
        }
        Error::InconsistentKeys(InconsistentKeys::Unknown) => {
            "the private key and the certificate could not be checked against each other".into()
        }
        Error::NoCertificatesPresented => "the peer showed no certificate".into(),
        Error::AlertReceived(alert) => {
            format!("the peer sent TLS alert {}", alert_name(u8::from(*alert)))
        }
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => {
            "the peer does not speak TLS (or not this TLS)".into()
        }
        Error::PeerIncompatible(why) => {
            format!("the peer is incompatible: {}", words(&format!("{why:?}")))
        }
        other => other.to_string(),
    }
}

/// A TLS alert's name as RFC 8446 (6) spells it.
pub fn alert_name(alert: u8) -> String {
    let name = match alert {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        other => return format!("alert {other}"),
    };
    name.to_owned()
}

/// A rustls enum variant's name (its `Debug` text, any fields dropped) as
/// lower-case words: `NoCipherSuitesInCommon` is "no cipher suites in
/// common". rustls gives these no text of their own.
fn words(variant: &str) -> String {
    let name = variant.split(['(', ' ', '{']).next().unwrap_or(variant);
    let mut out = String::with_capacity(name.len() + 8);
    for (i, c) in name.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Why a client's handshake failed, in one line: the certificate's fault
/// (unknown issuer, name mismatch, expired) named plainly, with what to do.
pub fn describe_client_failure(e: &io::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error};
    let Some(tls) = inner_error(e) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the TLS handshake".into()
            }
            _ => error_text(e),
        };
    };
    match tls {
        Error::InvalidCertificate(cert) => {
            let why = describe_certificate_error(cert);
            let hint = match cert {
                Cert::UnknownIssuer => " (--ca FILE trusts one)",
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => {
                    " (--sni NAME asks for another name)"
                }
                _ => "",
            };
            format!("certificate verification failed: {why}{hint}")
        }
        Error::AlertReceived(Alert::CertificateRequired) => {
            "the server requires a client certificate (--cert FILE --key FILE)".into()
        }
        Error::AlertReceived(
            alert @ (Alert::BadCertificate | Alert::UnknownCA | Alert::CertificateUnknown),
        ) => format!("the server refused the client certificate ({alert:?} alert)"),
        Error::AlertReceived(alert) => format!("the server ended the handshake: {alert:?} alert"),
        Error::InvalidMessage(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. } => {
            "the server does not speak TLS there (a plain port?)".into()
        }
        other => format!("TLS handshake failed: {}", describe_error(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_are_told_in_words_not_debug_text() {
        use rustls::{AlertDescription, Error, PeerIncompatible};
        let alert = describe_error(&Error::AlertReceived(AlertDescription::UnknownCA));
        assert_eq!(alert, "the peer sent TLS alert unknown_ca");
        let why = describe_error(&Error::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon,
        ));
        assert_eq!(why, "the peer is incompatible: no cipher suites in common");
        assert_eq!(alert_name(200), "alert 200");
    }

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("upcase-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_file_without_pem_names_the_file_and_what_was_expected() {
        let path = temp_file("plain.txt", b"hello\n");
        let e = load_certs(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("no certificate in it"), "{e}");
        let e = load_key(&path).unwrap_err().to_string();
        assert!(e.contains("no private key in it"), "{e}");
    }

    #[test]
    fn an_endless_file_is_refused_not_read_forever() {
        let e = load_certs(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = load_key(Path::new("/nonexistent/key.pem"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/nonexistent/key.pem: no such file or directory");
    }

    #[test]
    fn a_cert_without_its_key_is_a_usage_error() {
        let tls = ClientTls {
            cert: Some("/x.pem".into()),
            insecure: true,
            ..ClientTls::default()
        };
        assert!(
            tls.config()
                .unwrap_err()
                .to_string()
                .contains("go together")
        );
    }

    #[test]
    fn server_names_take_hosts_and_bracketed_addresses() {
        let tls = ClientTls::default();
        assert!(matches!(
            tls.server_name("localhost").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            tls.server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(tls.server_name("bad name").is_err());
        let sni = ClientTls {
            sni: Some("upcase.test".into()),
            ..ClientTls::default()
        };
        assert_eq!(
            sni.server_name("127.0.0.1").unwrap().to_str(),
            "upcase.test"
        );
    }
}

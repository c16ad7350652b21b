//! Throwaway certificates for the TLS tests, made with rcgen in a fresh
//! directory per test: nothing trusted, no private key committed.

use std::path::PathBuf;

use super::Server;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, date_time_ymd,
};

/// A directory of PEM files: two CAs and certificates they signed.
///
/// | file | what |
/// |---|---|
/// | `ca.pem` | the CA that signed the server's certificates |
/// | `server.pem`, `server.key` | localhost, 127.0.0.1 and ::1; serial 1 |
/// | `server2.pem`, `server2.key` | the same names, serial 2 (a renewal) |
/// | `expired.pem`, `expired.key` | the same names, expired in 2020 |
/// | `client-ca.pem` | the CA that signs client certificates |
/// | `client.pem`, `client.key` | a client certificate it signed |
/// | `rogue.pem`, `rogue.key` | a client certificate another CA signed |
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("upcase-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let ca = pki.ca("ca", "upcase test CA");
        let names = ["localhost", "127.0.0.1", "::1"];
        pki.leaf("server", &ca, &names, 1, false, false);
        pki.leaf("server2", &ca, &names, 2, false, false);
        pki.leaf("expired", &ca, &names, 3, true, false);
        let client_ca = pki.ca("client-ca", "upcase test client CA");
        pki.leaf("client", &client_ca, &["client.test"], 4, false, true);
        let other = pki.ca("other-ca", "another CA");
        pki.leaf("rogue", &other, &["rogue.test"], 5, false, true);
        pki
    }

    /// `upcase server --tcp` with TLS from the pair `PAIR.pem`, `PAIR.key`
    /// in the directory, on a free TLS port, with `args`.
    pub fn server(&self, pair: &str, args: &[&str]) -> Server {
        let (cert, key) = (
            self.path(&format!("{pair}.pem")),
            self.path(&format!("{pair}.key")),
        );
        let mut all = vec![
            "--tcp",
            "--tls-port",
            "0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// The path of `name` in the directory, as a string for command lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The DER of the first certificate in `name`.
    pub fn der(&self, name: &str) -> Vec<u8> {
        use upcase::tls::rustls::pki_types::CertificateDer;
        use upcase::tls::rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_file(self.dir.join(name))
            .unwrap()
            .to_vec()
    }

    fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.join(name), contents).unwrap();
    }

    fn ca(&self, name: &str, common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        self.write(&format!("{name}.pem"), &ca.pem());
        ca
    }

    fn leaf(
        &self,
        name: &str,
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        serial: u64,
        expired: bool,
        client: bool,
    ) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

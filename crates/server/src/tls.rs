//! TLS configuration, built on rustls with the aws-lc-rs crypto provider selected explicitly (no
//! process-wide default provider needed): the server side for TURN/STUN over TLS (`turns:`) and
//! HTTPS, and the client side's trust anchors (the system CA bundle or a configured PEM file) for
//! the TURN client and the SIP gateway's TLS upstream.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The server certificate, swappable while the server runs (SIGHUP reloads it): every new
/// handshake uses the certificate current at that moment; connections made before keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: parking_lot::RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Read `cert` and `key` again and use them from the next handshake on. On error the old
    /// certificate stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        let ck = load_certified_key(cert, key)?;
        *self.current.write() = Arc::new(ck);
        Ok(())
    }

    /// The certificate in use (its leaf, DER), for tests and logs.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.read().cert.first().cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    CertifiedKey::from_der(certs, key_der, &provider()).with_context(|| {
        format!(
            "TLS certificate {} and private key {} cannot be used together \
             (does the key belong to the certificate?)",
            cert.display(),
            key.display()
        )
    })
}

/// Load a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1) and
/// build a rustls server configuration using the aws-lc-rs provider: TLS 1.2 and 1.3 only, the
/// certificate in a [`CertStore`] so that it can be replaced later.
///
/// Errors name the file and say what is wrong with it: missing/unreadable, no certificate or key
/// inside, malformed PEM, or a key that does not belong to the certificate.
pub fn load_server_config(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<CertStore>)> {
    let store = Arc::new(CertStore {
        current: parking_lot::RwLock::new(Arc::new(load_certified_key(cert, key)?)),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("the aws-lc-rs crypto provider does not support TLS 1.2 and 1.3")?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    Ok((Arc::new(config), store))
}

fn open(path: &Path, what: &str) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path)
        .with_context(|| format!("cannot read TLS {what} file {}", path.display()))?;
    Ok(BufReader::new(file))
}

/// The PEM certificates in `path` (a chain, or CA certificates); at least one.
pub(crate) fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut reader = open(path, "certificate")?;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("TLS certificate file {} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "TLS certificate file {} contains no PEM \"BEGIN CERTIFICATE\" block; \
             give the certificate chain in PEM format, leaf certificate first",
            path.display()
        );
    }
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let mut reader = open(path, "private key")?;
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => bail!(
            "TLS private key file {} contains no PEM private key \
             (expected a \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| {
            format!("TLS private key file {} is not valid PEM", path.display())
        }),
    }
}

/// Candidate locations of the system CA bundle (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine,
/// and the extracted bundle of p11-kit).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// The system CA bundle: `$SSL_CERT_FILE` when it names a file (as for OpenSSL), else the first
/// of the usual distribution paths that exists. `None` when there is none.
pub fn system_ca_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    SYSTEM_CA_FILES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The CA certificates of the PEM file `path` as trust anchors; an error when the file cannot be
/// read or holds no usable CA certificate.
pub fn root_store(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        bail!("no usable CA certificates in {}", path.display());
    }
    Ok(roots)
}

/// A client configuration (aws-lc-rs; TLS 1.2 and 1.3) that verifies servers against `roots`
/// (chain and name, as rustls's WebPKI verifier does).
pub fn client_config(roots: rustls::RootCertStore) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the aws-lc-rs crypto provider does not support TLS 1.2 and 1.3")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::PathBuf;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "icebreaker-tls-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u64>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn generate() -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn loads_generated_certificate() {
        let dir = TempDir::new("ok");
        let (cert, key) = generate();
        let c = dir.write("cert.pem", &cert);
        let k = dir.write("key.pem", &key);
        let (cfg, store) = load_server_config(&c, &k).unwrap();
        assert!(cfg.alpn_protocols.is_empty());
        let first = store.leaf().unwrap();
        // Reload: a new certificate is used; a broken one leaves the old in place.
        let (cert2, key2) = generate();
        let c2 = dir.write("cert2.pem", &cert2);
        let k2 = dir.write("key2.pem", &key2);
        store.reload(&c2, &k2).unwrap();
        let second = store.leaf().unwrap();
        assert_ne!(first, second);
        assert!(store.reload(&c, &k2).is_err());
        assert_eq!(store.leaf().unwrap(), second);
    }

    #[test]
    fn missing_files_are_named() {
        let dir = TempDir::new("missing");
        let (_, key) = generate();
        let k = dir.write("key.pem", &key);
        let err = load_server_config(&dir.0.join("nope.pem"), &k).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("cannot read TLS certificate file"), "{msg}");
        assert!(msg.contains("nope.pem"), "{msg}");
    }

    #[test]
    fn garbage_and_swapped_files_are_rejected() {
        let dir = TempDir::new("bad");
        let (cert, key) = generate();
        let c = dir.write("cert.pem", &cert);
        let k = dir.write("key.pem", &key);
        let junk = dir.write("junk.pem", "hello, not a pem file\n");

        let msg = format!("{:#}", load_server_config(&junk, &k).unwrap_err());
        assert!(msg.contains("contains no PEM"), "{msg}");
        let msg = format!("{:#}", load_server_config(&c, &junk).unwrap_err());
        assert!(msg.contains("contains no PEM private key"), "{msg}");
        // Key file given as certificate and vice versa.
        let msg = format!("{:#}", load_server_config(&k, &c).unwrap_err());
        assert!(msg.contains("contains no PEM"), "{msg}");
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let dir = TempDir::new("mismatch");
        let (cert, _) = generate();
        let (_, other_key) = generate();
        let c = dir.write("cert.pem", &cert);
        let k = dir.write("key.pem", &other_key);
        let msg = format!("{:#}", load_server_config(&c, &k).unwrap_err());
        assert!(msg.contains("cannot be used together"), "{msg}");
    }
}

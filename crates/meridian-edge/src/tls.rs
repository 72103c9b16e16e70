//! TLS for the public listener: rustls with the `ring` provider (one provider, chosen here,
//! no process-wide default installed), certificates and key from PEM files, re-read on demand
//! (SIGHUP) without dropping a connection. And TLS towards `https://` app backends
//! ([`backend_client_config`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

fn config_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config {
        message: format!(
            "{}: {what}: {e}; give a PEM file (certificate chain, leaf first; key in PKCS#8, \
             PKCS#1 or SEC1 form)",
            path.display()
        ),
    }
}

/// The listener's certificate chain and key, from two PEM files. Every TLS handshake uses
/// the pair loaded last; [`CertFiles::reload`] swaps in a new pair only when it is valid.
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CertFiles {
    /// Reads a PEM certificate chain (leaf first) and its PEM private key; an error says which
    /// file is wrong and how.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertFiles>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(cert, key, &provider)?;
        Ok(Arc::new(CertFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Reads both files again. On success new handshakes use the new pair (open connections
    /// keep theirs); on error nothing changes and the error says why.
    pub fn reload(&self) -> Result<(), Error> {
        let pair = read_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// A server configuration presenting the current pair, offering HTTP/2 and HTTP/1.1 by
    /// ALPN, TLS 1.2 and 1.3.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config {
                message: format!("TLS protocol versions: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let (certs, key_der) = read_pem_pair(cert, key)?;
    CertifiedKey::from_der(certs, key_der, provider).map_err(|e| Error::Config {
        message: format!(
            "{}: the key does not fit the certificate: {e}",
            cert.display()
        ),
    })
}

/// A PEM certificate chain (at least one certificate) and a PEM private key.
fn read_pem_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| config_error(cert, "cannot read certificates", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| config_error(cert, "bad certificate", e))?;
    if certs.is_empty() {
        return Err(config_error(
            cert,
            "no certificate",
            "the file has no CERTIFICATE block",
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| config_error(key, "bad key", e))?;
    Ok((certs, key_der))
}

/// A server configuration from a PEM certificate chain and key that are never re-read (see
/// [`CertFiles`] for one that can be).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    CertFiles::load(cert, key)?.server_config()
}

/// The client configuration for `https://` app backends: TLS 1.2 and 1.3 with the `ring`
/// provider, HTTP/1.1 by ALPN, the server's certificate checked against the CA certificates of
/// `ca` (a PEM bundle, for a private CA) when given, else against the system's trust store
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the platform's bundle), and — with `client` (certificate
/// chain and key, PEM) — that certificate presented to backends that ask for one (mutual
/// TLS). System certificates that cannot be read or parsed are skipped with a warning; an
/// unreadable or empty `ca` file, or a bad client pair, is an error.
pub fn backend_client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_error(path, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca_error(path, e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ca_error(path, "the file has no usable CERTIFICATE block"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a system CA certificate could not be loaded");
            }
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::warn!(
                    ignored,
                    "system CA certificates that do not parse were skipped"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            message: format!("TLS protocol versions: {e}"),
        })?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (certs, key_der) = read_pem_pair(cert, key)?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| Error::Config {
                    message: format!(
                        "{}: the key does not fit the certificate: {e}",
                        cert.display()
                    ),
                })?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn ca_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config {
        message: format!(
            "{}: cannot read CA certificates: {e}; give a PEM file of the CA certificates \
             that sign the app backends' certificates",
            path.display()
        ),
    }
}

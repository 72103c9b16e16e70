//! TLS for the public listener: rustls with the `ring` provider (one provider, chosen here,
//! no process-wide default installed), certificates and key from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
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

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key,
/// offering HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and 1.3.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
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
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| config_error(key, "bad key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            message: format!("TLS protocol versions: {e}"),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config {
            message: format!(
                "{}: the key does not fit the certificate: {e}",
                cert.display()
            ),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

//! TLS for the HTTP surface: a rustls server config from PEM files, on the
//! ring provider chosen explicitly (two providers linked in would make
//! rustls panic at `ServerConfig::builder()`). ALPN (`h2`, `http/1.1`) is
//! added by actix-web when it listens. And the client config of peer links
//! to nodes that serve TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("certificate {0}: {1}")]
    Cert(String, String),
    /// The key file could not be read or holds no private key.
    #[error("private key {0}: {1}")]
    Key(String, String),
    /// rustls refused the pair.
    #[error("certificate and key do not make a TLS config: {0}")]
    Config(#[from] rustls::Error),
}

/// A server config serving the certificate chain in `cert` with the private
/// key in `key` (PEM; PKCS#8, PKCS#1 or SEC1 keys).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_name = cert.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(cert_name.clone(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(
            cert_name,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key(key.display().to_string(), e.to_string()))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    Ok(config)
}

/// The client config a node dials its TLS peers with: it trusts the
/// certificates in `ca` (PEM: the cluster's CA, or the peers' self-signed
/// certificates) and offers HTTP/1.1 only (awc cannot open a WebSocket over
/// an HTTP/2 connection).
pub fn peer_client_config(ca: &Path) -> Result<ClientConfig, TlsError> {
    let name = ca.display().to_string();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .map_err(|e| TlsError::Cert(name.clone(), e.to_string()))?
    {
        let cert = cert.map_err(|e| TlsError::Cert(name.clone(), e.to_string()))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Cert(name, "no certificate in the file".into()));
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

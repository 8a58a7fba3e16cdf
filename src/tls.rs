//! TLS with rustls (ring provider): the PEM certificate chain and key of `[server.tls]`, ALPN
//! `h2` and `http/1.1`, and reload without a restart.
//!
//! The acceptor in use sits behind a lock; each new connection takes a clone of the current one,
//! so [`Tls::reload`] (on SIGHUP) changes what *new* handshakes present while connections already
//! open — and the downloads streaming on them — carry on with the session they negotiated. A
//! reload that fails (missing file, key not matching) keeps the old certificate and says why.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {message}")]
    Cert { path: String, message: String },
    #[error("cannot read private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub struct Tls {
    config: TlsConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl Tls {
    pub fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let acceptor = acceptor(config)?;
        Ok(Tls { config: config.clone(), acceptor: RwLock::new(acceptor) })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().expect("not poisoned").clone()
    }

    /// Whether TLS is on for the public (`true`) or admin (`false`) listener.
    pub fn serves(&self, public: bool) -> bool {
        if public {
            self.config.public
        } else {
            self.config.admin
        }
    }

    /// Reads the certificate and key files again; on error the old ones stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.config)?;
        *self.acceptor.write().expect("not poisoned") = fresh;
        Ok(())
    }
}

fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |message: String| TlsError::Cert { path: config.cert.display().to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    // The error names the file, never its contents.
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| TlsError::Key { path: config.key.display().to_string(), message: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

//! rustls client configuration: system roots plus `SSL_CERT_FILE`, or no
//! verification at all with `DD_SKIP_SSL_VALIDATION`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::agent::config::TlsSettings;

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The extra roots file could not be read or parsed.
    #[error("SSL_CERT_FILE {path}: {detail}")]
    Roots {
        /// File.
        path: String,
        /// Why.
        detail: String,
    },
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider used everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client configuration for the forwarder.
pub fn client_config(settings: &TlsSettings) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let cfg = if settings.skip_validation {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCert)).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &settings.extra_roots_file {
            // rustls-native-certs replaces the system store with SSL_CERT_FILE;
            // we want it *added*, so load the usual system bundle as well.
            for sys in ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"] {
                if let Ok(bytes) = std::fs::read(sys) {
                    for c in rustls_pemfile::certs(&mut &bytes[..]).flatten() {
                        let _ = roots.add(c);
                    }
                }
            }
            let err = |detail: String| TlsError::Roots { path: path.display().to_string(), detail };
            let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let mut added = 0;
            for c in rustls_pemfile::certs(&mut &bytes[..]) {
                let c = c.map_err(|e| err(e.to_string()))?;
                roots.add(c).map_err(|e| err(e.to_string()))?;
                added += 1;
            }
            if added == 0 {
                return Err(err("no PEM certificate found".into()));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // ALPN is left empty: the HTTPS connector sets it from the enabled protocols.
    Ok(cfg)
}

/// `DD_SKIP_SSL_VALIDATION=true`: the user asked for no verification.
#[derive(Debug)]
struct AcceptAnyCert;

impl ServerCertVerifier for AcceptAnyCert {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

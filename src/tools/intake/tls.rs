//! TLS for the intake: PEM files given by the user, or a self-signed
//! certificate generated (once) into a directory.
//!
//! Why the self-signed certificate is a plain end-entity certificate (no
//! basicConstraints, EKU serverAuth): webpki (rustls) accepts a certificate
//! added to its root store as the trust anchor for *itself* only when it is
//! not marked `CA:TRUE` (`CaUsedAsEndEntity` otherwise); OpenSSL also accepts
//! such a self-signed leaf in `SSL_CERT_FILE`. Clients therefore trust the
//! intake with `SSL_CERT_FILE=<dir>/cert.pem`.

use std::fs;
use std::io::{BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::tools::intake::IntakeError;

/// File name of the generated certificate inside the self-signed directory.
pub const CERT_FILE: &str = "cert.pem";
/// File name of the generated private key inside the self-signed directory.
pub const KEY_FILE: &str = "key.pem";

fn tls_err(msg: impl Into<String>) -> IntakeError {
    IntakeError::Tls(msg.into())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IntakeError> {
    let f = fs::File::open(path).map_err(|e| tls_err(format!("cannot read certificate {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(f))
            .collect::<Result<_, _>>()
            .map_err(|e| tls_err(format!("cannot parse certificate {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("no certificate found in {}", path.display())));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, IntakeError> {
    let f = fs::File::open(path).map_err(|e| tls_err(format!("cannot read private key {}: {e}", path.display())))?;
    rustls_pemfile::private_key(&mut BufReader::new(f))
        .map_err(|e| tls_err(format!("cannot parse private key {}: {e}", path.display())))?
        .ok_or_else(|| tls_err(format!("no private key found in {}", path.display())))
}

/// Builds a rustls server configuration (ring provider, TLS 1.2 + 1.3,
/// ALPN `http/1.1`) from PEM files.
pub fn server_config(cert: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, IntakeError> {
    let certs = read_certs(cert)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(format!("certificate {} / key {} rejected: {e}", cert.display(), key_path.display())))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Makes sure `dir/cert.pem` and `dir/key.pem` exist and are usable,
/// generating a fresh self-signed pair when either is missing or unusable.
/// Returns `(cert_path, key_path)`.
///
/// The certificate names `localhost`, `127.0.0.1`, `::1` and, when given,
/// `extra_ip` (the listen address when it is a specific non-loopback IP).
pub fn ensure_self_signed(dir: &Path, extra_ip: Option<IpAddr>) -> Result<(PathBuf, PathBuf), IntakeError> {
    fs::create_dir_all(dir).map_err(|e| tls_err(format!("cannot create {}: {e}", dir.display())))?;
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.is_file() && key_path.is_file() && server_config(&cert_path, &key_path).is_ok() {
        return Ok((cert_path, key_path));
    }
    if cert_path.exists() || key_path.exists() {
        tracing::warn!(
            "intake: {} / {} missing or unusable, generating a new self-signed pair",
            cert_path.display(),
            key_path.display()
        );
    }
    let (cert_pem, key_pem) = generate_self_signed(extra_ip)?;
    write_file(&key_path, key_pem.as_bytes(), true)?;
    write_file(&cert_path, cert_pem.as_bytes(), false)?;
    Ok((cert_path, key_path))
}

/// Generates a self-signed ECDSA P-256 certificate; returns `(cert_pem, key_pem)`.
pub fn generate_self_signed(extra_ip: Option<IpAddr>) -> Result<(String, String), IntakeError> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(ip) = extra_ip {
        if !ip.is_loopback() && !ip.is_unspecified() {
            names.push(ip.to_string());
        }
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| tls_err(format!("certificate parameters: {e}")))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "edgestat intake");
    dn.push(rcgen::DnType::OrganizationName, "edgestat");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::NoCa;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(|e| tls_err(format!("key generation: {e}")))?;
    let cert = params.self_signed(&key).map_err(|e| tls_err(format!("self-signing: {e}")))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes atomically (temp file + rename); the key is created 0600 on Unix.
fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), IntakeError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        tls_err(format!("cannot write {}: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ensure_self_signed(dir.path(), None).unwrap();
        let pem1 = fs::read_to_string(&c).unwrap();
        assert!(pem1.contains("BEGIN CERTIFICATE"));
        assert!(fs::read_to_string(&k).unwrap().contains("PRIVATE KEY"));
        let (c2, _) = ensure_self_signed(dir.path(), None).unwrap();
        assert_eq!(fs::read_to_string(c2).unwrap(), pem1, "existing pair reused");
        // Corrupt cert → regenerated.
        fs::write(&c, "garbage").unwrap();
        ensure_self_signed(dir.path(), None).unwrap();
        assert_ne!(fs::read_to_string(&c).unwrap(), pem1);
        assert!(server_config(&c, &k).is_ok());
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        fs::write(&p, "nothing").unwrap();
        let e = server_config(&p, &p).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        let e = server_config(&dir.path().join("missing"), &p).unwrap_err().to_string();
        assert!(e.contains("cannot read certificate"), "{e}");
    }
}

//! https for the receiver: the certificate chain and key of [`TlsFiles`], read and checked
//! before anything binds, as a TLS acceptor each connection goes through before HTTP.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::{ReceiveError, TlsFiles};

/// The acceptor for `files` (None: plain http).
pub(crate) fn acceptor(files: Option<&TlsFiles>) -> Result<Option<TlsAcceptor>, ReceiveError> {
    let Some(files) = files else { return Ok(None) };
    let bad = |flag: &str, path: &std::path::Path, why: String| {
        ReceiveError::Options(format!("{flag} {}: {why}", path.display()))
    };
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| bad(flag, path, format!("cannot read it: {e}")))
    };
    let cert_pem = read("--tls-cert", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("--tls-cert", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "--tls-cert",
            &files.cert,
            "no certificate in it; give the PEM certificate chain, the receiver's own first".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("--tls-key", &files.key)?).map_err(|e| {
        bad(
            "--tls-key",
            &files.key,
            format!("{e}; give the certificate's private key as PEM"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ReceiveError::Internal(format!("rustls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            ReceiveError::Options(format!(
                "--tls-cert {} with --tls-key {}: {e}; pass the certificate and its own private key",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not PEM\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key, named) in [(&junk, &junk, &junk), (&missing, &junk, &missing)] {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            };
            let e = acceptor(Some(&files)).err().expect("refused").to_string();
            assert!(
                e.contains("--tls-cert") && e.contains(&named.display().to_string()),
                "{e}"
            );
        }
        assert!(acceptor(None).unwrap().is_none());
    }
}

//! TLS to the source: `--ssl-mode`, `--ssl-ca`, `--ssl-cert`/`--ssl-key`, checked and loaded
//! once into [`TlsSettings`], and what each of binsync's two clients of the source needs from
//! them: the rustls configuration of the dump connection (`source::wire`) and the driver's
//! `SslOpts` (queries, lookups, preflight).
//!
//! The modes are the mysql client's:
//! - `disabled`: plain TCP.
//! - `preferred` (the default): TLS when the server offers it, plain otherwise; the
//!   certificate is not checked (it protects against listening, not against an impostor).
//! - `required`: TLS or a definite error; the certificate is not checked.
//! - `verify-ca`: TLS, and the certificate must be signed by `--ssl-ca`; its host names are
//!   not compared with `--source`.
//! - `verify-identity`: `verify-ca`, and the certificate must name the host of `--source`.
//!
//! As with the mysql client, `--ssl-ca` without `--ssl-mode` means `verify-ca`. A setting that
//! would be ignored (`--ssl-ca` with `disabled`, `required` or `preferred`; a client
//! certificate with `disabled`; `--ssl-cert` without `--ssl-key`) is an error, not a guess.
//! Only the given CA is trusted, never a public root store.
//!
//! Certificates and keys are read and parsed here, at start-up, so that a bad file is a
//! definite error naming it before anything connects.
//!
//! The driver (mysql_async 0.37.1) cannot check a chain without the host name: its
//! `skip_domain_validation` is inert with rustls 0.23 (blackbeam/mysql_async#404). For
//! `verify-ca` the driver is therefore told to expect a name the certificate holds, learnt by
//! the dump connection's own verifier after it has verified the chain ([`DriverName`]); a
//! certificate without any subjectAltName cannot be checked by the driver, which is a definite
//! error naming the way out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// How the connections to the source use TLS (the mysql client's `--ssl-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP.
    Disabled,
    /// TLS if the server offers it, plain otherwise; the certificate is not checked.
    Preferred,
    /// TLS, or stop; the certificate is not checked.
    Required,
    /// TLS with a certificate signed by --ssl-ca (host names not compared).
    VerifyCa,
    /// TLS with a certificate signed by --ssl-ca that names the host of --source.
    VerifyIdentity,
}

impl SslMode {
    pub fn wants_tls(self) -> bool {
        self != SslMode::Disabled
    }

    /// Without TLS the connection must fail.
    pub fn requires_tls(self) -> bool {
        !matches!(self, SslMode::Disabled | SslMode::Preferred)
    }

    fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyIdentity)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disabled => "disabled",
            SslMode::Preferred => "preferred",
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyIdentity => "verify-identity",
        })
    }
}

/// TLS failures: each is definite and names its way out.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A setting that cannot be used (a meaningless combination, an unreadable file).
    #[error("{0}")]
    Settings(String),
    #[error("the source's certificate is not signed by --ssl-ca {}: {detail}; pass the CA certificate that signed the server's certificate (the file the server's ssl_ca names)", ca.display())]
    Untrusted { ca: PathBuf, detail: String },
    #[error("the source's certificate is not valid for the host `{host}` of --source: it names {names}; connect with one of those names in --source, or use --ssl-mode verify-ca to check only that --ssl-ca signed it")]
    WrongHost { host: String, names: String },
    #[error("the source {addr} does not offer TLS, and --ssl-mode is {mode}; give the server ssl_cert and ssl_key (then restart it), or use --ssl-mode preferred")]
    NotOffered { addr: String, mode: SslMode },
    #[error("the source requires TLS (error {code}: {message}); use --ssl-mode required (or verify-ca/verify-identity with --ssl-ca)")]
    Required { code: u16, message: String },
    #[error("the source's certificate names no host (it has no subjectAltName), and binsync's query connections (mysql_async 0.37) cannot check a certificate without one under --ssl-mode verify-ca; give the server a certificate with a subjectAltName, or use --ssl-mode required")]
    Nameless,
    #[error("the TLS handshake with the source {addr} failed: {detail}; {fix}{}", if *.preferred { " (--ssl-mode preferred uses the TLS a server offers; --ssl-mode disabled connects in clear)" } else { "" })]
    Handshake {
        addr: String,
        detail: String,
        fix: &'static str,
        /// Under `preferred`: the way back to what binsync did before TLS.
        preferred: bool,
    },
}

/// What the driver must expect as the certificate's name under `verify-ca` (see the module
/// docs), as learnt by the last verification of the dump connection's verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverName {
    /// No certificate verified yet.
    Unknown,
    /// The certificate names the host of `--source`.
    Host,
    /// It does not, but it names this one.
    Other(String),
    /// It names nothing the driver could compare.
    Nameless,
}

/// The TLS settings of the source, checked and loaded (see the module docs). Cloning shares
/// the loaded material. `Debug` shows the mode and the file names only.
#[derive(Clone)]
pub struct TlsSettings {
    mode: SslMode,
    ca: Option<Pem>,
    identity: Option<(Pem, Pem)>,
    /// The dump connection's rustls configuration (None when disabled).
    client: Option<Arc<ClientConfig>>,
    driver_name: Arc<Mutex<DriverName>>,
    /// Whether the server offered TLS at the last handshake seen (0 not known yet, 1 yes,
    /// 2 no): under `preferred` the driver then connects in clear at once, instead of
    /// asking for TLS, being refused, and connecting again.
    offered: Arc<AtomicU8>,
}

/// A file and its bytes, read at start-up.
#[derive(Clone)]
struct Pem {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("mode", &self.mode)
            .field("ca", &self.ca.as_ref().map(|p| &p.path))
            .field("cert", &self.identity.as_ref().map(|(c, _)| &c.path))
            .finish()
    }
}

impl Default for TlsSettings {
    /// `preferred`, without files.
    fn default() -> Self {
        TlsSettings::new(None, None, None, None).expect("preferred without files is valid")
    }
}

/// The one crypto provider (ring, as reqwest's); also installed as the process default so
/// that the driver's `ClientConfig::builder()` finds it.
fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// Checks the combination and loads the files. `mode` None: `verify-ca` with a CA,
    /// `preferred` without (the mysql client's defaults).
    pub fn new(
        mode: Option<SslMode>,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<TlsSettings, TlsError> {
        let bad = |m: String| Err(TlsError::Settings(m));
        let mode = mode.unwrap_or(match ca {
            Some(_) => SslMode::VerifyCa,
            None => SslMode::Preferred,
        });
        match (mode, ca) {
            (SslMode::VerifyCa | SslMode::VerifyIdentity, None) => {
                return bad(format!("--ssl-mode {mode} needs --ssl-ca FILE: the CA certificate that signed the source's certificate"));
            }
            (SslMode::Disabled | SslMode::Preferred | SslMode::Required, Some(ca)) => {
                return bad(format!(
                    "--ssl-ca {} means nothing with --ssl-mode {mode}, which does not check the source's certificate; use --ssl-mode verify-ca (or verify-identity), or drop --ssl-ca",
                    ca.display()
                ));
            }
            _ => {}
        }
        match (cert, key) {
            (Some(_), None) => {
                return bad(
                    "--ssl-cert needs --ssl-key FILE (the client certificate's private key)".into(),
                )
            }
            (None, Some(_)) => {
                return bad("--ssl-key needs --ssl-cert FILE (the client certificate)".into())
            }
            (Some(_), Some(_)) if mode == SslMode::Disabled => {
                return bad("--ssl-cert and --ssl-key mean nothing with --ssl-mode disabled; drop them, or choose another --ssl-mode".into());
            }
            _ => {}
        }
        let provider = provider();
        let ca = ca.map(|p| read("--ssl-ca", p)).transpose()?;
        let roots = match &ca {
            Some(ca) => Some(Arc::new(root_store(ca)?)),
            None => None,
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read("--ssl-cert", c)?, read("--ssl-key", k)?)),
            _ => None,
        };
        let driver_name = Arc::new(Mutex::new(DriverName::Unknown));
        let client = match mode.wants_tls() {
            false => None,
            true => {
                let verifier = Arc::new(Verifier {
                    mode,
                    roots,
                    algs: provider.signature_verification_algorithms,
                    driver_name: driver_name.clone(),
                });
                let builder = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Settings(format!("rustls: {e}")))?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier);
                let config = match &identity {
                    None => builder.with_no_client_auth(),
                    Some((c, k)) => {
                        let (chain, key) = client_identity(c, k)?;
                        builder.with_client_auth_cert(chain, key).map_err(|e| {
                            TlsError::Settings(format!(
                                "--ssl-cert {} with --ssl-key {}: {e}; pass the certificate and its own private key",
                                c.path.display(),
                                k.path.display()
                            ))
                        })?
                    }
                };
                Some(Arc::new(config))
            }
        };
        Ok(TlsSettings {
            mode,
            ca,
            identity,
            client,
            driver_name,
            offered: Arc::new(AtomicU8::new(0)),
        })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    pub fn has_client_cert(&self) -> bool {
        self.identity.is_some()
    }

    /// Notes whether the server offered TLS (CLIENT_SSL) in its handshake.
    pub(crate) fn set_offered(&self, offered: bool) {
        self.offered
            .store(if offered { 1 } else { 2 }, Ordering::Relaxed);
    }

    /// The server did not offer TLS at the last handshake seen.
    pub(crate) fn known_plain(&self) -> bool {
        self.offered.load(Ordering::Relaxed) == 2
    }

    /// The dump connection's configuration; None when disabled.
    pub(crate) fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.client.clone()
    }

    pub(crate) fn driver_name(&self) -> DriverName {
        self.driver_name
            .lock()
            .map(|n| n.clone())
            .unwrap_or(DriverName::Unknown)
    }

    /// The driver's TLS options (None when disabled). `name` is the certificate name to expect
    /// under `verify-ca` (see [`DriverName`]).
    pub(crate) fn driver_opts(&self, name: Option<&str>) -> Option<mysql_async::SslOpts> {
        if !self.mode.wants_tls() {
            return None;
        }
        let mut opts = mysql_async::SslOpts::default();
        if let Some(ca) = &self.ca {
            // Only the given CA (the driver refuses an empty store, so the public roots stay
            // in it for the modes that check nothing).
            opts = opts
                .with_disable_built_in_roots(true)
                .with_root_certs(vec![ca.bytes.clone().into()]);
        }
        if let Some((c, k)) = &self.identity {
            opts = opts.with_client_identity(Some(mysql_async::ClientIdentity::new(
                c.bytes.clone().into(),
                k.bytes.clone().into(),
            )));
        }
        match self.mode {
            SslMode::Preferred | SslMode::Required => {
                opts = opts.with_danger_accept_invalid_certs(true);
            }
            SslMode::VerifyCa => {
                opts = opts.with_danger_skip_domain_validation(true);
                if let Some(name) = name {
                    opts = opts.with_danger_tls_hostname_override(Some(name.to_string()));
                }
            }
            SslMode::VerifyIdentity | SslMode::Disabled => {}
        }
        Some(opts)
    }

    /// A failed TLS handshake with the source at `addr` (`host` as in --source), as a definite
    /// error naming the fix.
    pub(crate) fn handshake_error(&self, addr: &str, host: &str, e: &rustls::Error) -> TlsError {
        let handshake = |fix| TlsError::Handshake {
            addr: addr.to_string(),
            detail: e.to_string(),
            fix,
            preferred: self.mode == SslMode::Preferred,
        };
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::NotValidForName => TlsError::WrongHost {
                    host: host.to_string(),
                    names: "other names".into(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    let names: Vec<String> =
                        presented.iter().filter_map(|p| presented_name(p)).collect();
                    TlsError::WrongHost {
                        host: host.to_string(),
                        names: match names.is_empty() {
                            true => "no host (it has no subjectAltName)".into(),
                            false => names.join(", "),
                        },
                    }
                }
                #[allow(deprecated)]
                CertificateError::UnknownIssuer
                | CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithm
                | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                    match &self.ca {
                        Some(ca) => TlsError::Untrusted {
                            ca: ca.path.clone(),
                            detail: e.to_string(),
                        },
                        None => handshake("check the server's certificate"),
                    }
                }
                _ => handshake("the server's certificate cannot be used (expired, not yet valid, or not for a server): renew it on the server"),
            },
            rustls::Error::AlertReceived(_) => handshake("the server refused binsync's side of the handshake: if it asks for a client certificate (REQUIRE X509, ssl_ca on the server), pass one it trusts with --ssl-cert and --ssl-key"),
            _ => handshake("check the server's TLS settings (ssl_cert, ssl_key, tls_version)"),
        }
    }
}

/// `--ssl-ca` and the like, read whole.
fn read(flag: &str, path: &Path) -> Result<Pem, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| {
        TlsError::Settings(format!("{flag} {}: cannot read it: {e}", path.display()))
    })?;
    Ok(Pem {
        path: path.to_path_buf(),
        bytes,
    })
}

/// The certificates of a PEM file: at least one, all of them parsed.
fn certificates(flag: &str, pem: &Pem) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| {
        TlsError::Settings(format!(
            "{flag} {}: {why}; give a PEM file of certificates (-----BEGIN CERTIFICATE-----)",
            pem.path.display()
        ))
    };
    let certs = CertificateDer::pem_slice_iter(&pem.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(certs)
}

fn root_store(ca: &Pem) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("--ssl-ca", ca)? {
        roots.add(cert).map_err(|e| {
            TlsError::Settings(format!(
                "--ssl-ca {}: a certificate in it cannot be a CA: {e}",
                ca.path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn client_identity(
    cert: &Pem,
    key: &Pem,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates("--ssl-cert", cert)?;
    let key = PrivateKeyDer::from_pem_slice(&key.bytes).map_err(|e| {
        TlsError::Settings(format!(
            "--ssl-key {}: {e}; give the client certificate's private key as PEM (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            key.path.display()
        ))
    })?;
    Ok((chain, key))
}

/// A subjectAltName as webpki presents it in a name mismatch (`DnsName("db.example")`,
/// `IpAddress(10.0.0.1)`), as a name to connect by; None for other kinds.
fn presented_name(p: &str) -> Option<String> {
    if let Some(dns) = p
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
    {
        return Some(dns.to_string());
    }
    p.strip_prefix("IpAddress(")
        .and_then(|s| s.strip_suffix(')'))
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string)
}

/// The dump connection's certificate check, by mode (see the module docs). Handshake
/// signatures are always verified: even unchecked certificates must prove their key.
#[derive(Debug)]
struct Verifier {
    mode: SslMode,
    roots: Option<Arc<RootCertStore>>,
    algs: WebPkiSupportedAlgorithms,
    driver_name: Arc<Mutex<DriverName>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.mode.verifies() {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(roots) = &self.roots else {
            // Settings never build a verifying mode without a CA.
            return Err(CertificateError::UnknownIssuer.into());
        };
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let named = rustls::client::verify_server_name(&cert, server_name);
        if self.mode == SslMode::VerifyIdentity {
            named?;
            return Ok(ServerCertVerified::assertion());
        }
        // verify-ca: the chain is enough; learn which name the driver must expect.
        let learnt = match named {
            Ok(()) => DriverName::Host,
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => presented
                .iter()
                .find_map(|p| presented_name(p))
                .map_or(DriverName::Nameless, DriverName::Other),
            Err(_) => DriverName::Nameless,
        };
        if let Ok(mut slot) = self.driver_name.lock() {
            *slot = learnt;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn meaningless_combinations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let ca = write(dir.path(), "ca.pem", &ca.cert.pem());
        let ca = Some(ca.as_path());
        let refused = |mode, ca, cert, key| {
            TlsSettings::new(mode, ca, cert, key)
                .unwrap_err()
                .to_string()
        };
        use SslMode::*;
        for (e, want) in [
            (
                refused(Some(Disabled), ca, None, None),
                "--ssl-mode verify-ca",
            ),
            (refused(Some(Required), ca, None, None), "means nothing"),
            (refused(Some(VerifyCa), None, None, None), "needs --ssl-ca"),
            (
                refused(Some(VerifyIdentity), None, None, None),
                "needs --ssl-ca",
            ),
            (refused(None, None, ca, None), "needs --ssl-key"),
            (refused(Some(Disabled), None, ca, ca), "mean nothing"),
        ] {
            assert!(e.contains(want), "{e}");
        }
        // The mysql client's default: a CA alone means verify-ca.
        assert_eq!(
            TlsSettings::new(None, ca, None, None).unwrap().mode(),
            SslMode::VerifyCa
        );
        assert_eq!(TlsSettings::default().mode(), SslMode::Preferred);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "junk.pem", "not a certificate\n");
        let missing = dir.path().join("missing.pem");
        for (path, want) in [(&junk, "no certificate"), (&missing, "cannot read")] {
            let e = TlsSettings::new(None, Some(path), None, None)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains(want),
                "{e}"
            );
        }
        let cert = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        let cert = write(dir.path(), "client.pem", &cert.cert.pem());
        let e = TlsSettings::new(None, None, Some(&cert), Some(&junk))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ssl-key") && e.contains("junk.pem"), "{e}");
    }

    /// The dump connection's verifier, by mode, on certificates of a CA and of another CA.
    #[test]
    fn the_dump_connections_verifier_checks_what_the_mode_says() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            let path = write(dir.path(), name, &cert.pem());
            (cert, key, path)
        };
        let (ca_cert, ca_key, ca_path) = ca("ca.pem");
        let (_, _, other_path) = ca("other.pem");
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["db.example".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let check = |mode, ca: &Path, host: &str| {
            let driver_name = Arc::new(Mutex::new(DriverName::Unknown));
            let verifier = Verifier {
                mode,
                roots: Some(Arc::new(
                    root_store(&read("--ssl-ca", ca).unwrap()).unwrap(),
                )),
                algs: provider().signature_verification_algorithms,
                driver_name: driver_name.clone(),
            };
            let name = ServerName::try_from(host.to_string()).unwrap();
            let r = verifier.verify_server_cert(leaf.der(), &[], &name, &[], UnixTime::now());
            let learnt = driver_name.lock().unwrap().clone();
            (r.map(drop), learnt)
        };
        use SslMode::*;
        let (r, _) = check(VerifyIdentity, &ca_path, "db.example");
        assert!(r.is_ok(), "{r:?}");
        let (r, _) = check(VerifyIdentity, &ca_path, "127.0.0.1");
        assert!(
            matches!(
                r,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{r:?}"
        );
        let (r, learnt) = check(VerifyCa, &ca_path, "127.0.0.1");
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(learnt, DriverName::Other("db.example".into()));
        let (_, learnt) = check(VerifyCa, &ca_path, "db.example");
        assert_eq!(learnt, DriverName::Host);
        // The other CA has the same (default) name: the signature is what fails.
        for mode in [VerifyCa, VerifyIdentity] {
            let (r, learnt) = check(mode, &other_path, "db.example");
            let Err(e) = r else {
                panic!("{mode}: a certificate of another CA passed")
            };
            assert!(
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(
                        CertificateError::BadSignature | CertificateError::UnknownIssuer
                    )
                ),
                "{mode}: {e:?}"
            );
            let msg = TlsSettings::new(Some(mode), Some(&other_path), None, None)
                .unwrap()
                .handshake_error("mysql://cdc@db.example:3306", "db.example", &e)
                .to_string();
            assert!(msg.contains("not signed by --ssl-ca"), "{msg}");
            assert_eq!(learnt, DriverName::Unknown);
        }
    }

    /// The names of a mismatch come from webpki's `Debug` of a subjectAltName: this pins the
    /// form [`presented_name`] reads.
    #[test]
    fn presented_names_are_read_from_webpki() {
        let c = rcgen::generate_simple_self_signed(vec!["db.example".into(), "10.1.2.3".into()])
            .unwrap();
        let der = c.cert.der().clone();
        let cert = rustls::server::ParsedCertificate::try_from(&der).unwrap();
        let host = ServerName::try_from("127.0.0.1").unwrap();
        let e = rustls::client::verify_server_name(&cert, &host).unwrap_err();
        let rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) = &e
        else {
            panic!("{e:?}")
        };
        let names: Vec<_> = presented.iter().filter_map(|p| presented_name(p)).collect();
        assert_eq!(names, ["db.example", "10.1.2.3"]);
        let msg = TlsSettings::default()
            .handshake_error("mysql://cdc@127.0.0.1:3306", "127.0.0.1", &e)
            .to_string();
        assert!(
            msg.contains("`127.0.0.1`") && msg.contains("db.example, 10.1.2.3"),
            "{msg}"
        );
    }
}

//! TLS to the source and to the sink, against real servers on 127.0.0.1, with certificates
//! made in the test (a CA, a server certificate, a client certificate, and a second CA that
//! signed nothing the servers use):
//!
//! - `verify-identity` with the right CA delivers the rows, and they never cross the network in
//!   clear (a relay between binsync and the server sees the row's text only with TLS off);
//! - a wrong CA, and a certificate for another host, each stop binsync with one line naming
//!   the fix; `verify-ca` accepts the certificate for another host;
//! - an account with REQUIRE SSL (and one with REQUIRE X509) works with `--ssl-mode required`
//!   (and the client certificate), and is refused with a line naming `--ssl-mode` with
//!   `disabled`; `require_secure_transport=ON` likewise; `required` against a server without
//!   TLS stops;
//! - the reference receiver serves https with `--tls-cert/--tls-key`; binsync delivers to it
//!   with `--sink-ca`, and without it stops with one line naming `--sink-ca`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::workload::Receiver;
use common::{MariaDb, Proc, ServerOpts};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The files of a test PKI, in a temp dir.
struct Pki {
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        Pki {
            dir: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A CA; its certificate is written to `NAME.pem`.
    fn ca(&self, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("binsync test {name}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        self.write(&format!("{name}.pem"), &cert.pem());
        Ca { cert, key }
    }

    /// A certificate for `names` (subjectAltNames) signed by `ca`: `NAME.pem`, `NAME.key`.
    fn leaf(&self, name: &str, ca: &Ca, names: &[&str], client: bool) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (
            self.write(&format!("{name}.pem"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A MariaDB serving TLS with `cert`/`key`, trusting client certificates signed by `ca`.
fn tls_server(ca: &Path, cert: &Path, key: &Path) -> MariaDb {
    let args = vec![
        format!("--ssl-ca={}", s(ca)),
        format!("--ssl-cert={}", s(cert)),
        format!("--ssl-key={}", s(key)),
    ];
    let db = MariaDb::start(ServerOpts {
        extra_args: args,
        ..ServerOpts::default()
    });
    assert_eq!(
        db.sql("SELECT @@have_ssl").trim(),
        "YES",
        "{}",
        db.error_log()
    );
    db
}

const MARKER: &str = "tls-marker-5c0f9e";

/// A table with one row whose text is [`MARKER`].
fn setup(db: &MariaDb) {
    db.sql(&format!(
        "CREATE DATABASE shop;
         CREATE TABLE shop.products (id INT PRIMARY KEY, name VARCHAR(40));
         INSERT INTO shop.products VALUES (1, '{MARKER}');"
    ));
}

/// `binsync run --exit-at-end` from `url` into a file; its exit status, the file, stderr.
fn run(url: &str, extra: &[&str]) -> (bool, String, String) {
    run_into(url, None, extra)
}

/// [`run`] into `sink` (default: a file, whose text is returned).
fn run_into(url: &str, sink: Option<&str>, extra: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let state = s(&dir.path().join("state"));
    let file = format!("file:{}", out.display());
    let mut args = vec![
        "run",
        "--source",
        url,
        "--server-id",
        "4747",
        "--state-dir",
        &state,
        "--sink",
        sink.unwrap_or(&file),
        "--exit-at-end",
        "--connect-timeout",
        "20s",
    ];
    args.extend(extra);
    let mut p = Proc::spawn(&args, &[]);
    let st = p
        .wait_timeout(Duration::from_secs(60))
        .expect("binsync did not return");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    (st.success(), text, p.stderr())
}

/// The one error line binsync ends with, checked to be there and single.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("binsync: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{stderr}");
    eprintln!("{}", lines[0]);
    lines[0].to_string()
}

/// A TCP relay to `to` on 127.0.0.1 that keeps every byte it passes, both ways.
struct Relay {
    port: u16,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let kept = kept.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            kept.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = into.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, seen }
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    fn saw(&self, text: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.windows(text.len()).any(|w| w == text.as_bytes())
    }
}

#[test]
fn verify_identity_with_the_right_ca_delivers_and_nothing_crosses_in_clear() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost", "127.0.0.1"], false);
    let db = tls_server(&pki.path("ca.pem"), &cert, &key);
    setup(&db);
    let ca_pem = s(&pki.path("ca.pem"));

    let relay = Relay::start(db.port());
    let (ok, out, err) = run(
        &relay.url(),
        &["--ssl-mode", "verify-identity", "--ssl-ca", &ca_pem],
    );
    assert!(ok, "{err}");
    assert!(out.contains(MARKER), "the row is delivered: {out}\n{err}");
    assert!(
        !relay.saw(MARKER),
        "the row crossed the network in clear with verify-identity"
    );

    // The same relay sees it without TLS: the check above can see what it looks for.
    let relay = Relay::start(db.port());
    let (ok, out, err) = run(&relay.url(), &["--ssl-mode", "disabled"]);
    assert!(ok && out.contains(MARKER), "{err}");
    assert!(relay.saw(MARKER), "the relay saw no row in clear");
}

#[test]
fn a_wrong_ca_stops_with_one_line_naming_the_ca_file() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    pki.ca("other-ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost", "127.0.0.1"], false);
    let db = tls_server(&pki.path("ca.pem"), &cert, &key);
    setup(&db);
    let other = s(&pki.path("other-ca.pem"));
    for mode in ["verify-ca", "verify-identity"] {
        let (ok, out, err) = run(&db.url(), &["--ssl-mode", mode, "--ssl-ca", &other]);
        assert!(!ok && out.is_empty(), "{mode}: {err}");
        let line = error_line(&err);
        assert!(
            line.contains("not signed by --ssl-ca") && line.contains(&other),
            "{mode}: {line}"
        );
    }
}

#[test]
fn a_certificate_for_another_host_fails_verify_identity_and_passes_verify_ca() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["db.example"], false);
    let db = tls_server(&pki.path("ca.pem"), &cert, &key);
    setup(&db);
    let ca_pem = s(&pki.path("ca.pem"));
    let (ok, _, err) = run(
        &db.url(),
        &["--ssl-mode", "verify-identity", "--ssl-ca", &ca_pem],
    );
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("`127.0.0.1`") && line.contains("db.example") && line.contains("verify-ca"),
        "{line}"
    );
    // verify-ca checks the signature only (both the dump connection and the driver's).
    let (ok, out, err) = run(&db.url(), &["--ssl-ca", &ca_pem]);
    assert!(ok && out.contains(MARKER), "{err}");
}

#[test]
fn accounts_requiring_tls_work_with_ssl_mode_required_and_are_refused_clearly_without() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost", "127.0.0.1"], false);
    let (ccert, ckey) = pki.leaf("client", &ca, &["binsync"], true);
    let db = tls_server(&pki.path("ca.pem"), &cert, &key);
    setup(&db);
    let grants = "REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.*";
    db.create_user("cdc_ssl", "pw-ssl", grants);
    db.create_user("cdc_x509", "pw-x509", grants);
    db.sql("ALTER USER 'cdc_ssl'@'%' REQUIRE SSL; ALTER USER 'cdc_x509'@'%' REQUIRE X509;");
    let ssl_url = db.url_as("cdc_ssl", "pw-ssl");

    let (ok, out, err) = run(&ssl_url, &["--ssl-mode", "required"]);
    assert!(ok && out.contains(MARKER), "{err}");
    let (ok, _, err) = run(&ssl_url, &["--ssl-mode", "disabled"]);
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(line.contains("--ssl-mode required"), "{line}");
    assert!(!line.contains("pw-ssl"), "{line}");

    // A client certificate for REQUIRE X509.
    let x509_url = db.url_as("cdc_x509", "pw-x509");
    let (ok, out, err) = run(
        &x509_url,
        &[
            "--ssl-mode",
            "required",
            "--ssl-cert",
            &s(&ccert),
            "--ssl-key",
            &s(&ckey),
        ],
    );
    assert!(ok && out.contains(MARKER), "{err}");
    let (ok, _, err) = run(&x509_url, &["--ssl-mode", "required"]);
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(line.contains("--ssl-cert"), "{line}");
}

#[test]
fn require_secure_transport_is_met_by_tls_and_named_without_it() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("server", &ca, &["localhost", "127.0.0.1"], false);
    let db = tls_server(&pki.path("ca.pem"), &cert, &key);
    setup(&db);
    db.sql("SET GLOBAL require_secure_transport = ON");
    // preferred (the default) takes the TLS the server offers.
    for extra in [&[][..], &["--ssl-mode", "required"][..]] {
        let (ok, out, err) = run(&db.url(), extra);
        assert!(ok && out.contains(MARKER), "{extra:?}: {err}");
    }
    let (ok, _, err) = run(&db.url(), &["--ssl-mode", "disabled"]);
    assert!(!ok, "{err}");
    let line = error_line(&err);
    // MariaDB refuses it as it refuses a wrong password (error 1045; MySQL has error 3159).
    assert!(
        line.contains("require_secure_transport") && line.contains("--ssl-mode required"),
        "{line}"
    );
}

#[test]
fn ssl_mode_required_against_a_server_without_tls_stops() {
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let (ok, _, err) = run(&db.url(), &["--ssl-mode", "required"]);
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(line.contains("does not offer TLS"), "{line}");
    // preferred (the default) goes on in clear.
    let (ok, out, err) = run(&db.url(), &[]);
    assert!(ok && out.contains(MARKER), "{err}");
}

#[test]
fn an_https_sink_is_reached_with_sink_ca_and_refused_clearly_without() {
    let pki = Pki::new();
    let ca = pki.ca("ca");
    let (cert, key) = pki.leaf("receiver", &ca, &["localhost", "127.0.0.1"], false);
    let db = MariaDb::start(ServerOpts::default());
    setup(&db);
    let rdir = tempfile::tempdir().unwrap();
    let mut recv = Receiver::start(
        rdir.path(),
        &["--tls-cert", &s(&cert), "--tls-key", &s(&key)],
    );
    let url = format!("https://{}/sync", recv.addr);
    let ca_pem = s(&pki.path("ca.pem"));

    // Without --sink-ca: the receiver's certificate is not trusted; binsync stops at once.
    let (ok, _, err) = run_to(&db, &url, &[]);
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(line.contains("--sink-ca") && line.contains(&url), "{line}");
    // A file that holds no certificate is refused before anything starts.
    let junk = pki.write("junk.pem", "not a certificate\n");
    let (ok, _, err) = run_to(&db, &url, &["--sink-ca", &s(&junk)]);
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(line.contains(&s(&junk)), "{line}");
    // --sink-ca with a plain http sink means nothing.
    let plain = format!("http://{}/sync", recv.addr);
    let (ok, _, err) = run_to(&db, &plain, &["--sink-ca", &ca_pem]);
    assert!(!ok, "{err}");
    assert!(error_line(&err).contains("https://"), "{err}");

    let (ok, _, err) = run_to(&db, &url, &["--sink-ca", &ca_pem]);
    assert!(ok, "{err}");
    let (state, _) = recv.dump();
    assert!(
        state.values().any(|v| v.to_string().contains(MARKER)),
        "the receiver holds the row: {state:?}"
    );
}

/// `binsync run --exit-at-end` from `db` into the sync API at `url`.
fn run_to(db: &MariaDb, url: &str, extra: &[&str]) -> (bool, String, String) {
    run_into(&db.url(), Some(url), extra)
}

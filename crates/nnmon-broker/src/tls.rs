//! TLS towards the broker: the CA, client certificate and key files an operator gives, and
//! the certificate problems that no retry can fix.
//!
//! Every `amqps://` connection is made with a rustls connector (the client's, see
//! `client`) made from the files, which are read once, on the first connection attempt and before it; later
//! reconnections reuse it. `--tls-ca-file` *replaces* the system's roots: the broker's
//! certificate must then come from one of those CAs. Without it the system's roots are used,
//! through the platform's verifier on both clients. Messages name files, hosts and what went
//! wrong, never a key's bytes.

use crate::BrokerUrl;
use crate::client::{self, AmqpError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tracing::warn;

/// A client certificate chain (its own certificate first) and its private key.
pub(crate) type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The files of `--tls-ca-file`, `--tls-cert-file` and `--tls-key-file`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificates that replace the system's roots for the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// The client's PEM certificate chain, its own certificate first.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// A TLS problem that retrying cannot fix: a file that cannot be used, or a certificate
/// the broker or nnmon refuses. Each names the files or the host concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file `{}`", path.display())]
    Unreadable {
        what: FileRole,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("no PEM certificate in the TLS {what} file `{}`", path.display())]
    NoCertificate { what: FileRole, path: PathBuf },
    #[error("the TLS CA file `{}` holds a certificate that cannot be a trust anchor: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("the TLS key file `{}` is encrypted; nnmon reads unencrypted keys only (e.g. `openssl pkey -in KEY -out KEY.plain`, then chmod 600)", path.display())]
    EncryptedKey { path: PathBuf },
    #[error("no PEM private key (PKCS#8, PKCS#1 or SEC1) in the TLS key file `{}`", path.display())]
    NoKey { path: PathBuf },
    #[error("the TLS key file `{}` does not hold the key of the certificate in `{}`", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the client certificate `{}` and key `{}` cannot be used: {reason}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot set up TLS: {reason}")]
    Setup { reason: String },
    #[error("the broker's TLS certificate ({broker}) is not signed by {trusted}")]
    UntrustedServer { broker: String, trusted: Trusted },
    #[error("the broker's TLS certificate ({broker}) {when}")]
    ExpiredServer { broker: String, when: String },
    #[error(
        "the broker's TLS certificate is not valid for `{host}`, the host in the URL ({detail})"
    )]
    HostMismatch { host: String, detail: String },
    #[error("the broker's TLS certificate ({broker}) was refused: {detail}")]
    BadServerCertificate { broker: String, detail: String },
    #[error(
        "the broker ({broker}) requires a client certificate: give one with --tls-cert-file and --tls-key-file (TLS alert {alert:?})"
    )]
    ClientCertificateRequired {
        broker: String,
        alert: AlertDescription,
    },
    #[error("the broker ({broker}) rejected the client certificate `{}` (TLS alert {alert:?}{hint})", cert.display())]
    ClientCertificateRejected {
        broker: String,
        cert: PathBuf,
        alert: AlertDescription,
        hint: &'static str,
    },
}

/// Which of the three files a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    Ca,
    Certificate,
    Key,
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ca => "CA",
            Self::Certificate => "client certificate",
            Self::Key => "key",
        })
    }
}

/// Whom the broker's certificate was checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trusted {
    CaFile(PathBuf),
    SystemRoots,
}

impl fmt::Display for Trusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaFile(path) => write!(f, "a CA in `{}` (--tls-ca-file)", path.display()),
            Self::SystemRoots => {
                f.write_str("a CA the system trusts (give the broker's CA with --tls-ca-file)")
            }
        }
    }
}

/// The TLS files of a [`BrokerUrl`] and, once loaded, the connector made of them.
pub(crate) struct Tls {
    pub(crate) files: TlsFiles,
    connector: OnceLock<client::Connector>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("loaded", &self.connector.get().is_some())
            .finish()
    }
}

impl Tls {
    pub(crate) fn new(files: TlsFiles) -> Self {
        Self {
            files,
            connector: OnceLock::new(),
        }
    }

    /// The connector, reading the files the first time (and warning then about a key file
    /// others can read).
    pub(crate) fn connector(&self) -> Result<client::Connector, TlsError> {
        if let Some(connector) = self.connector.get() {
            return Ok(connector.clone());
        }
        let connector = load(&self.files)?;
        Ok(self.connector.get_or_init(|| connector).clone())
    }
}

/// The shortest and longest wait for a broker's verdict on the client (see [`await_verdict`]).
const VERDICT_WAIT: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(3));

/// In TLS 1.3 the client is done with the handshake before the broker has checked the
/// client's certificate (or noticed there is none). Were the AMQP header sent at once, a
/// broker refusing the certificate would close the socket with that header unread, and the
/// reset this causes often destroys its alert before nnmon reads it: the refusal would look
/// like a network failure, retried. So wait for the verdict, three handshakes' time (within
/// [`VERDICT_WAIT`]): an alert comes back as the error, silence means accepted (an AMQP
/// broker says nothing before the client's header).
///
/// `read` reads one byte of the TLS stream; `tls13`: the version the handshake agreed on.
pub(crate) async fn await_verdict(
    tls13: bool,
    handshake: Duration,
    read: impl Future<Output = std::io::Result<usize>>,
) -> std::io::Result<()> {
    if !tls13 {
        return Ok(()); // in TLS 1.2 the broker's Finished was the verdict
    }
    let wait = (3 * handshake).clamp(VERDICT_WAIT.0, VERDICT_WAIT.1);
    match tokio::time::timeout(wait, read).await {
        Err(_silence) => Ok(()),
        Ok(Err(error)) => Err(error),
        Ok(Ok(0)) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the broker closed the connection right after the TLS handshake",
        )),
        Ok(Ok(_)) => Err(std::io::Error::other(
            "the broker spoke before the AMQP protocol header",
        )),
    }
}

fn read(what: FileRole, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Unreadable {
        what,
        path: path.to_owned(),
        error,
    })
}

/// Every PEM certificate in `path`; at least one.
fn certificates(what: FileRole, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let none = || TlsError::NoCertificate {
        what,
        path: path.to_owned(),
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| none())?;
    if certificates.is_empty() {
        return Err(none());
    }
    Ok(certificates)
}

/// The private key in `path`. Its text never reaches a message: a PEM parser's error can
/// quote the line it stumbled on.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    warn_if_others_can_read(path);
    let pem = read(FileRole::Key, path)?;
    let encrypted = |marker: &[u8]| pem.windows(marker.len()).any(|w| w == marker);
    if encrypted(b"ENCRYPTED PRIVATE KEY") || encrypted(b"Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey {
        path: path.to_owned(),
    })
}

/// A private key readable by group or others is a leak waiting to happen: say so, once
/// (the files are read once).
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(metadata) = std::fs::metadata(path) else {
        return; // reading it will say what is wrong
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        warn!(
            key_file = %path.display(),
            mode = %format_args!("{mode:o}"),
            "the TLS key file is readable by other users; restrict it (chmod 600)"
        );
    }
}

/// The connector for `files`: every file read and checked before any connection.
fn load(files: &TlsFiles) -> Result<client::Connector, TlsError> {
    let roots = match &files.ca_file {
        Some(path) => {
            let cas = certificates(FileRole::Ca, path)?;
            // A client library could skip an unusable CA in silence; refuse it instead.
            let mut check = rustls::RootCertStore::empty();
            for ca in &cas {
                check.add(ca.clone()).map_err(|e| TlsError::BadCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            Some(cas)
        }
        None => None,
    };
    match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let identity = (
                certificates(FileRole::Certificate, cert)?,
                private_key(key)?,
            );
            client::connector(roots, Some(identity)).map_err(|error| {
                match rustls_error_in(&error) {
                    Some(rustls::Error::InconsistentKeys(_)) => TlsError::KeyMismatch {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    _ => TlsError::Identity {
                        cert: cert.clone(),
                        key: key.clone(),
                        reason: error.to_string(),
                    },
                }
            })
        }
        // The command line requires both or neither.
        _ => client::connector(roots, None).map_err(|error| TlsError::Setup {
            reason: error.to_string(),
        }),
    }
}

/// The rustls error an I/O error carries, if any.
pub(crate) fn rustls_error_in(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Alerts with which a broker refuses the client's certificate.
fn rejects_the_client_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
    )
}

/// Whether `error` is a certificate problem (see [`certificate_problem`]).
pub(crate) fn is_certificate_problem(error: &AmqpError) -> bool {
    match error.rustls_error() {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => true,
        Some(rustls::Error::AlertReceived(alert)) => {
            *alert == AlertDescription::CertificateRequired
                || rejects_the_client_certificate(*alert)
        }
        _ => false,
    }
}

/// `error` as a certificate problem, for good: the broker's certificate refused here (not
/// from a trusted CA, expired, for another host…) or the client's refused by the broker
/// (missing, from a CA it does not trust, expired…). Other TLS failures (a reset in the
/// middle of a handshake, a plain-AMQP port) are not: they are retried.
pub(crate) fn certificate_problem(error: &AmqpError, url: &BrokerUrl) -> Option<TlsError> {
    if !is_certificate_problem(error) {
        return None;
    }
    let broker = url.host_port();
    let files = url.tls_files();
    Some(match error.rustls_error()? {
        rustls::Error::InvalidCertificate(problem) => server_problem(problem, url, broker),
        rustls::Error::AlertReceived(alert) => match files.and_then(|f| f.cert_file.as_ref()) {
            Some(cert) if *alert != AlertDescription::CertificateRequired => {
                TlsError::ClientCertificateRejected {
                    broker,
                    cert: cert.clone(),
                    alert: *alert,
                    hint: match alert {
                        AlertDescription::UnknownCA => ": it does not trust the CA that issued it",
                        AlertDescription::CertificateExpired => ": it has expired",
                        _ => "",
                    },
                }
            }
            _ => TlsError::ClientCertificateRequired {
                broker,
                alert: *alert,
            },
        },
        other => TlsError::BadServerCertificate {
            broker,
            detail: other.to_string(),
        },
    })
}

fn server_problem(problem: &CertificateError, url: &BrokerUrl, broker: String) -> TlsError {
    match problem {
        CertificateError::UnknownIssuer => TlsError::UntrustedServer {
            broker,
            trusted: match url.tls_files().and_then(|f| f.ca_file.clone()) {
                Some(path) => Trusted::CaFile(path),
                None => Trusted::SystemRoots,
            },
        },
        CertificateError::ExpiredContext { not_after, .. } => TlsError::ExpiredServer {
            broker,
            when: format!("expired on {}", utc(not_after.as_secs())),
        },
        CertificateError::Expired => TlsError::ExpiredServer {
            broker,
            when: "has expired".into(),
        },
        CertificateError::NotValidYetContext { not_before, .. } => TlsError::ExpiredServer {
            broker,
            when: format!("is not valid before {}", utc(not_before.as_secs())),
        },
        CertificateError::NotValidYet => TlsError::ExpiredServer {
            broker,
            when: "is not valid yet".into(),
        },
        CertificateError::NotValidForNameContext { presented, .. } => TlsError::HostMismatch {
            host: url.host().to_owned(),
            detail: if presented.is_empty() {
                "it names no host".into()
            } else {
                let names: Vec<&str> = presented.iter().map(|name| plain_name(name)).collect();
                format!("it names {}", names.join(", "))
            },
        },
        CertificateError::NotValidForName => TlsError::HostMismatch {
            host: url.host().to_owned(),
            detail: "it names other hosts".into(),
        },
        other => TlsError::BadServerCertificate {
            broker,
            detail: other.to_string(),
        },
    }
}

/// A name rustls reports as `DnsName("localhost")` or `IpAddress(127.0.0.1)`, as an
/// operator writes it.
fn plain_name(name: &str) -> &str {
    let inner = |prefix: &str, suffix: &str| name.strip_prefix(prefix)?.strip_suffix(suffix);
    inner("DnsName(\"", "\")")
        .or_else(|| inner("IpAddress(", ")"))
        .unwrap_or(name)
}

/// `seconds` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
fn utc(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_read_as_written() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("URI"), "URI");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_577_923_200), "2020-01-02 00:00:00 UTC");
        assert_eq!(utc(951_782_400 + 3_661), "2000-02-29 01:01:01 UTC");
    }

    fn tls_error(error: rustls::Error) -> AmqpError {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error).into()
    }

    #[test]
    fn certificate_problems_are_told_apart_from_other_tls_failures() {
        let url: BrokerUrl = "amqps://u:pw@broker:5671/%2f".parse().expect("valid");
        let untrusted = tls_error(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let text = certificate_problem(&untrusted, &url)
            .expect("a certificate problem")
            .to_string();
        assert!(
            text.contains("broker:5671") && text.contains("system trusts"),
            "{text}"
        );
        let required = tls_error(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        let text = certificate_problem(&required, &url)
            .expect("a certificate problem")
            .to_string();
        assert!(text.contains("--tls-cert-file"), "{text}");
        for other in [
            rustls::Error::DecryptError,
            rustls::Error::AlertReceived(AlertDescription::InternalError),
        ] {
            assert!(certificate_problem(&tls_error(other), &url).is_none());
        }
        let reset = AmqpError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!is_certificate_problem(&reset));
    }

    #[test]
    fn unreadable_and_unusable_files_are_named_without_their_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let files = TlsFiles {
            ca_file: Some(missing.clone()),
            ..TlsFiles::default()
        };
        let Err(error) = load(&files) else {
            panic!("a missing CA file was accepted")
        };
        assert!(
            matches!(&error, TlsError::Unreadable { what: FileRole::Ca, path, .. } if *path == missing)
        );
        let key = dir.path().join("client.key");
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==!!\n-----END PRIVATE KEY-----\n";
        std::fs::write(&key, secret).expect("write");
        let error = private_key(&key).expect_err("not a key");
        let text = error.to_string();
        assert!(
            text.contains("client.key") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        std::fs::write(
            &key,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .expect("write");
        assert!(matches!(
            private_key(&key),
            Err(TlsError::EncryptedKey { .. })
        ));
    }
}

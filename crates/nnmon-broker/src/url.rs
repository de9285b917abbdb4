use crate::tls::{Tls, TlsFiles};
use lapin::uri::AMQPScheme;
use lapin::uri::SASLMechanism;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Heartbeat interval asked of the broker when the URL names none: a dead peer is noticed
/// within two intervals instead of at the next TCP timeout.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// An AMQP URL (`amqp://` or `amqps://`), validated, whose `Display` hides the password;
/// an `amqps://` one with its TLS settings ([`with_tls`](Self::with_tls); the system's
/// roots and no client certificate by default): everything needed to reach the broker
/// and log in.
#[derive(Clone)]
pub struct BrokerUrl {
    uri: lapin::uri::AMQPUri,
    redacted: String,
    /// For `amqps://` only. Shared by clones, so the files are read once whoever connects.
    tls: Option<Arc<Tls>>,
}

/// The reason a URL was refused; never contains the password.
#[derive(Debug, thiserror::Error)]
#[error("invalid AMQP URL {redacted}: {reason}")]
pub struct InvalidUrl {
    redacted: String,
    reason: String,
}

/// The URL with its password replaced by `***`.
///
/// Works on the text, not a parsed URL: a password with an unencoded `/`, `#` or `?`
/// makes URL parsers see a port or a path instead, and would print it in full.
fn redact(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return "<not a URL>".into();
    };
    let Some(at) = rest.rfind('@') else {
        return raw.to_owned();
    };
    let (user_info, host_and_path) = rest.split_at(at);
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{host_and_path}"),
        None => raw.to_owned(),
    }
}

impl FromStr for BrokerUrl {
    type Err = InvalidUrl;

    fn from_str(raw: &str) -> Result<Self, InvalidUrl> {
        let redacted = redact(raw);
        let mut uri = lapin::uri::AMQPUri::from_str(raw).map_err(|reason| InvalidUrl {
            redacted: redacted.clone(),
            // lapin's message may echo the input; keep only what cannot hold a secret.
            reason: if reason.contains(raw) {
                "not an amqp:// or amqps:// URL".into()
            } else {
                reason
            },
        })?;
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        let tls =
            (uri.scheme == AMQPScheme::AMQPS).then(|| Arc::new(Tls::new(TlsFiles::default())));
        Ok(Self { uri, redacted, tls })
    }
}

impl BrokerUrl {
    /// This URL with TLS files (none: `TlsFiles::default()`): a CA that replaces the
    /// system's roots, a client certificate and its key. Refused unless the URL is
    /// `amqps://`; a URL asking for `auth_mechanism=external` needs the certificate. The
    /// files are read on the first connection attempt.
    pub fn with_tls(mut self, files: TlsFiles) -> Result<Self, InvalidUrl> {
        let invalid = |reason: &str| InvalidUrl {
            redacted: self.redacted.clone(),
            reason: reason.into(),
        };
        if self.tls.is_none() {
            if !files.is_empty() {
                return Err(invalid(
                    "TLS files (--tls-ca-file, --tls-cert-file, --tls-key-file) need an amqps:// URL",
                ));
            }
        } else {
            self.tls = Some(Arc::new(Tls::new(files)));
        }
        let has_certificate = self.tls_files().is_some_and(|f| f.cert_file.is_some());
        if self.uses_external_auth() && !has_certificate {
            return Err(invalid(
                "auth_mechanism=external logs in with a client certificate: give --tls-cert-file and --tls-key-file",
            ));
        }
        Ok(self)
    }

    pub(crate) fn uri(&self) -> lapin::uri::AMQPUri {
        self.uri.clone()
    }

    pub(crate) fn tls(&self) -> Option<&Tls> {
        self.tls.as_deref()
    }

    /// The TLS files of an `amqps://` URL (none given: all `None`).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|tls| &tls.files)
    }

    /// Whether the client certificate alone logs in (`auth_mechanism=external`).
    pub fn uses_external_auth(&self) -> bool {
        self.uri.query.auth_mechanism == Some(SASLMechanism::External)
    }

    /// The host the URL names, as the broker's certificate must name it.
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// `host:port`, for messages.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }

    /// Who logs in, for messages: the URL's user, or with EXTERNAL the client certificate.
    pub fn login(&self) -> String {
        match self.tls_files().and_then(|f| f.cert_file.as_ref()) {
            Some(cert) if self.uses_external_auth() => {
                format!("<the subject of {}> (EXTERNAL)", cert.display())
            }
            _ => self.user().to_owned(),
        }
    }

    /// The user name the broker is asked to log in (decoded, never the password).
    pub fn user(&self) -> &str {
        &self.uri.authority.userinfo.username
    }

    /// The virtual host asked for (decoded: `%2f` is `/`).
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tls_files() {
            Some(files) => write!(f, "BrokerUrl({}, {files:?})", self.redacted),
            None => write!(f, "BrokerUrl({})", self.redacted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shows() {
        let url: BrokerUrl = "amqp://user:s3cret@broker:5672/%2f".parse().expect("valid");
        assert_eq!(url.to_string(), "amqp://user:***@broker:5672/%2f");
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn unencoded_delimiters_in_the_password_do_not_leak_it() {
        for raw in [
            "amqp://user:12/ss@host/",
            "amqp://user:12#ss@host/",
            "amqp://user:a@b@host/",
        ] {
            let shown = redact(raw);
            assert!(
                shown.starts_with("amqp://user:***@"),
                "{raw} shown as {shown}"
            );
            assert!(
                !shown.contains("ss") && !shown.contains("a@b"),
                "{raw} shown as {shown}"
            );
        }
    }

    #[test]
    fn tls_urls_are_accepted_and_heartbeat_defaults() {
        let url: BrokerUrl = "amqps://u:p@broker/vhost".parse().expect("valid");
        assert_eq!(url.uri().query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        let url: BrokerUrl = "amqp://u:p@broker/?heartbeat=30".parse().expect("valid");
        assert_eq!(url.uri().query.heartbeat, Some(30));
    }

    #[test]
    fn tls_files_need_amqps_and_external_needs_a_certificate() {
        let files = TlsFiles {
            ca_file: Some("ca.pem".into()),
            ..TlsFiles::default()
        };
        let plain: BrokerUrl = "amqp://u:s3cret@broker/".parse().expect("valid");
        let error = plain
            .with_tls(files.clone())
            .expect_err("amqp:// with TLS files");
        let text = error.to_string();
        assert!(
            text.contains("amqps://") && !text.contains("s3cret"),
            "{text}"
        );
        let tls: BrokerUrl = "amqps://u:s3cret@broker/".parse().expect("valid");
        assert!(tls.with_tls(files.clone()).is_ok());

        let external: BrokerUrl = "amqps://broker:5671/%2f?auth_mechanism=external"
            .parse()
            .expect("valid");
        for without_certificate in [TlsFiles::default(), files.clone()] {
            let error = external
                .clone()
                .with_tls(without_certificate)
                .expect_err("EXTERNAL without a certificate");
            assert!(error.to_string().contains("--tls-cert-file"), "{error}");
        }
        let identity = TlsFiles {
            cert_file: Some("client.pem".into()),
            key_file: Some("client.key".into()),
            ..files
        };
        let url = external
            .with_tls(identity)
            .expect("EXTERNAL with a certificate");
        assert!(url.uses_external_auth());
        assert_eq!(url.login(), "<the subject of client.pem> (EXTERNAL)");
        assert_eq!(url.host_port(), "broker:5671");
    }

    #[test]
    fn user_and_vhost_are_decoded() {
        let url: BrokerUrl = "amqp://ops%40site:pw@broker/%2f".parse().expect("valid");
        assert_eq!((url.user(), url.vhost()), ("ops@site", "/"));
        let url: BrokerUrl = "amqp://u:pw@broker/staging".parse().expect("valid");
        assert_eq!((url.user(), url.vhost()), ("u", "staging"));
    }

    #[test]
    fn bad_urls_are_refused_without_leaking() {
        let err = "http://u:topsecret@host/"
            .parse::<BrokerUrl>()
            .expect_err("wrong scheme");
        assert!(!err.to_string().contains("topsecret"), "{err}");
        assert!("not a url".parse::<BrokerUrl>().is_err());
    }
}

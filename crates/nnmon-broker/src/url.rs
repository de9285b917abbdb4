use crate::tls::{Tls, TlsFiles};
use lapin::uri::AMQPScheme;
use lapin::uri::SASLMechanism;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Heartbeat interval asked of the broker when the URL names none: a dead peer is noticed
/// within two intervals instead of at the next TCP timeout.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Why the compiled-in client cannot keep the heartbeat interval `secs` a URL asks for
/// (`amqprs`: whether that client is the one), or `None` when it can.
///
/// Both clients follow RabbitMQ's negotiation: the smaller of the client's and the
/// broker's intervals, or when one side says 0 the other side's. So `heartbeat=0` turns
/// heartbeats off only when the broker's own setting is 0 too; against a broker left at
/// its default (60 s) the broker's interval applies. lapin does exactly that, and keeps
/// any interval from 1 s (it ticks at half the interval, in milliseconds). amqprs 2.1
/// cannot: it ticks at half the interval in whole seconds, so 1 s gives a zero tick and
/// its writer sends heartbeats without pause; and a negotiated 0 makes its reader count
/// missed heartbeats at once and drop the connection. Neither is honoured silently.
fn heartbeat_problem(secs: u16, amqprs: bool) -> Option<&'static str> {
    match secs {
        0 if amqprs => Some(
            "heartbeat=0 cannot turn heartbeats off with the amqprs client (it would take the broker's interval, and drop the connection when the broker's is 0 too); give heartbeat=2 or more, or build nnmon on lapin (--no-default-features), where heartbeat=0 turns them off if the broker's heartbeat setting is 0 too",
        ),
        1 if amqprs => Some(
            "heartbeat=1 is too short for the amqprs client (it sends heartbeats every heartbeat/2 whole seconds, so 1 would send them without pause); give heartbeat=2 or more",
        ),
        _ => None,
    }
}

/// The shortest interval the compiled-in client keeps (see [`heartbeat_problem`]); a
/// broker configured below it is refused after the handshake.
#[cfg(feature = "client-amqprs")]
pub(crate) const MIN_HEARTBEAT_SECS: u16 = 2;

/// An AMQP URL (`amqp://` or `amqps://`), validated, whose `Display` hides the password;
/// an `amqps://` one with its TLS settings ([`with_tls`](Self::with_tls); the system's
/// roots and no client certificate by default): everything needed to reach the broker
/// and log in.
///
/// `?heartbeat=N` asks for a heartbeat every N seconds (10 when the URL says nothing); the
/// broker's setting may lower it. `heartbeat=0` leaves the interval to the broker, and
/// turns heartbeats off only where the broker's setting is 0 too (RabbitMQ's rule: both
/// sides must say 0); the default client, amqprs, refuses `heartbeat=0` and `heartbeat=1`
/// at parsing, as it cannot keep them (lapin, `--no-default-features`, takes both).
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
        let heartbeat = *uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        if let Some(reason) = heartbeat_problem(heartbeat, cfg!(feature = "client-amqprs")) {
            return Err(InvalidUrl {
                redacted,
                reason: reason.into(),
            });
        }
        // The vhost travels as an AMQP short string (amqprs would panic on a longer one).
        if uri.vhost.len() > crate::connection::MAX_NAME_BYTES {
            return Err(InvalidUrl {
                redacted,
                reason: format!(
                    "the vhost is {} bytes long, and AMQP carries at most {}",
                    uri.vhost.len(),
                    crate::connection::MAX_NAME_BYTES
                ),
            });
        }
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
    pub fn with_tls(self, files: TlsFiles) -> Result<Self, InvalidUrl> {
        self.with_shared_tls(&Arc::new(Tls::new(files)))
    }

    /// [`with_tls`](Self::with_tls) with settings shared by several URLs (the nodes of a
    /// [`BrokerUrls`]), so that the files are read, and warned about, once.
    fn with_shared_tls(mut self, tls: &Arc<Tls>) -> Result<Self, InvalidUrl> {
        let invalid = |reason: &str| InvalidUrl {
            redacted: self.redacted.clone(),
            reason: reason.into(),
        };
        if self.tls.is_none() {
            if !tls.files.is_empty() {
                return Err(invalid(
                    "TLS files (--tls-ca-file, --tls-cert-file, --tls-key-file) need an amqps:// URL",
                ));
            }
        } else {
            self.tls = Some(tls.clone());
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

/// The brokers a service may use: one URL, or the nodes of a cluster, tried in order.
///
/// Parsed from a comma-separated list (`AMQP_URL=amqp://u:p@a/%2f,amqp://u:p@b/%2f`), each
/// URL validated and redacted like a [`BrokerUrl`]; TLS files apply to every one. A comma
/// starts a new URL only where another `scheme://` follows, so a password holding a comma
/// still parses. [`Broker::connect`](crate::Broker::connect) tries them from a given
/// node on, and says which one it reached.
#[derive(Clone, Debug)]
pub struct BrokerUrls {
    nodes: Vec<BrokerUrl>,
}

impl BrokerUrls {
    /// These URLs with TLS files, as [`BrokerUrl::with_tls`] (one set of files, read once,
    /// for every node).
    pub fn with_tls(self, files: TlsFiles) -> Result<Self, InvalidUrl> {
        let tls = Arc::new(Tls::new(files));
        let nodes = self
            .nodes
            .into_iter()
            .map(|url| url.with_shared_tls(&tls))
            .collect::<Result<_, _>>()?;
        Ok(Self { nodes })
    }

    /// The URLs, in the order they are tried.
    pub fn nodes(&self) -> &[BrokerUrl] {
        &self.nodes
    }

    /// The first URL (there is always one).
    pub fn first(&self) -> &BrokerUrl {
        &self.nodes[0]
    }
}

impl From<BrokerUrl> for BrokerUrls {
    fn from(url: BrokerUrl) -> Self {
        Self { nodes: vec![url] }
    }
}

impl FromStr for BrokerUrls {
    type Err = InvalidUrl;

    fn from_str(raw: &str) -> Result<Self, InvalidUrl> {
        let mut pieces: Vec<String> = Vec::new();
        for piece in raw.split(',') {
            // A piece with no `scheme://` continues the previous URL's password while that
            // URL has not reached its `@` yet; anywhere else (a host without a scheme, an
            // empty entry) it stays apart, to be refused.
            let in_password = |url: &str| {
                url.split_once("://")
                    .is_some_and(|(_, rest)| !rest.contains('@'))
            };
            match pieces.last_mut() {
                Some(last)
                    if !piece.trim().is_empty() && !piece.contains("://") && in_password(last) =>
                {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => pieces.push(piece.to_owned()),
            }
        }
        let nodes = pieces
            .iter()
            .map(|piece| match piece.trim() {
                "" => Err(InvalidUrl {
                    redacted: pieces
                        .iter()
                        .map(|p| redact(p.trim()))
                        .collect::<Vec<_>>()
                        .join(","),
                    reason: "an empty entry in the comma-separated list".into(),
                }),
                url => url.parse(),
            })
            .collect::<Result<Vec<BrokerUrl>, _>>()?;
        // One amqps:// node beside an amqp:// one would send the password in clear text
        // whenever the TLS node is down.
        if nodes
            .iter()
            .any(|url| url.uri.scheme != nodes[0].uri.scheme)
        {
            return Err(InvalidUrl {
                redacted: nodes.iter().map(|url| url.redacted.as_str()).collect::<Vec<_>>().join(","),
                reason: "the list mixes amqp:// and amqps:// nodes (the password would travel in clear text to the amqp:// ones); use one scheme for every node".into(),
            });
        }
        Ok(Self { nodes })
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, url) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{url}")?;
        }
        Ok(())
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
    fn heartbeats_the_client_cannot_keep_are_refused() {
        // amqprs: neither 0 (never off) nor 1 (a zero tick) can be kept.
        for secs in [0, 1] {
            let reason = heartbeat_problem(secs, true).expect("refused on amqprs");
            assert!(
                reason.contains(&format!("heartbeat={secs}")) && reason.contains("heartbeat=2"),
                "{reason}"
            );
        }
        assert_eq!(heartbeat_problem(2, true), None);
        assert_eq!(heartbeat_problem(u16::MAX, true), None);
        // lapin keeps every value (0: off where the broker's setting is 0 too).
        for secs in [0, 1, 2, 60] {
            assert_eq!(heartbeat_problem(secs, false), None);
        }
        // And parsing applies the compiled-in client's rule, without leaking the password.
        let amqprs = cfg!(feature = "client-amqprs");
        for secs in [0, 1] {
            let raw = format!("amqp://u:s3cret@broker/%2f?heartbeat={secs}");
            match raw.parse::<BrokerUrl>() {
                Ok(url) => {
                    assert!(!amqprs, "{raw} accepted on amqprs");
                    assert_eq!(url.uri().query.heartbeat, Some(secs));
                }
                Err(error) => {
                    assert!(amqprs, "{raw} refused on lapin: {error}");
                    let text = error.to_string();
                    assert!(
                        text.contains("amqprs") && !text.contains("s3cret"),
                        "{text}"
                    );
                }
            }
        }
        let url: BrokerUrl = "amqp://u:p@broker/%2f?heartbeat=2".parse().expect("valid");
        assert_eq!(url.uri().query.heartbeat, Some(2));
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
    fn a_vhost_over_255_bytes_is_refused() {
        let fits = format!("amqp://u:s3cret@broker/{}", "v".repeat(255));
        assert!(fits.parse::<BrokerUrl>().is_ok());
        let long = format!("amqp://u:s3cret@broker/{}", "v".repeat(256));
        let text = long
            .parse::<BrokerUrl>()
            .expect_err("256 bytes")
            .to_string();
        assert!(
            text.contains("vhost is 256 bytes") && !text.contains("s3cret"),
            "{text}"
        );
    }

    #[test]
    fn user_and_vhost_are_decoded() {
        let url: BrokerUrl = "amqp://ops%40site:pw@broker/%2f".parse().expect("valid");
        assert_eq!((url.user(), url.vhost()), ("ops@site", "/"));
        let url: BrokerUrl = "amqp://u:pw@broker/staging".parse().expect("valid");
        assert_eq!((url.user(), url.vhost()), ("u", "staging"));
    }

    #[test]
    fn a_comma_list_is_several_brokers_each_redacted() {
        let urls: BrokerUrls =
            "amqp://u:s3cret@a:5681/%2f, amqp://u:s3cret@b:5682/%2f,amqp://u:s3cret@c/%2f"
                .parse()
                .expect("valid");
        let hosts: Vec<String> = urls.nodes().iter().map(BrokerUrl::host_port).collect();
        assert_eq!(hosts, ["a:5681", "b:5682", "c:5672"]);
        assert_eq!(
            urls.to_string(),
            "amqp://u:***@a:5681/%2f,amqp://u:***@b:5682/%2f,amqp://u:***@c/%2f"
        );
        assert!(!format!("{urls:?}").contains("s3cret"));
        let one: BrokerUrls = "amqp://u:p@a/%2f".parse().expect("valid");
        assert_eq!(one.nodes().len(), 1);
    }

    #[test]
    fn a_comma_in_a_password_does_not_split_the_list() {
        let urls: BrokerUrls = "amqp://u:se,cr,et@a/%2f,amqp://u:p@b/%2f"
            .parse()
            .expect("valid");
        assert_eq!(urls.nodes().len(), 2);
        assert_eq!(urls.first().host(), "a");
        assert!(!urls.to_string().contains("cr"), "{urls}");
    }

    #[test]
    fn every_url_of_a_list_is_checked_and_gets_the_tls_files() {
        for bad in [
            "",
            "amqp://u:p@a/%2f,",
            "amqp://u:p@a/%2f,,amqp://u:p@b/%2f",
            "amqp://u:p@a/%2f,http://u:topsecret@b/",
        ] {
            let error = bad.parse::<BrokerUrls>().expect_err(bad);
            assert!(!error.to_string().contains("topsecret"), "{error}");
        }
        let files = TlsFiles {
            ca_file: Some("ca.pem".into()),
            ..TlsFiles::default()
        };
        let tls: BrokerUrls = "amqps://u:p@a/%2f,amqps://u:p@b/%2f"
            .parse()
            .expect("valid");
        let tls = tls.with_tls(files.clone()).expect("amqps:// everywhere");
        for url in tls.nodes() {
            assert_eq!(url.tls_files(), Some(&files));
        }
        let plain: BrokerUrls = "amqp://u:p@a/%2f,amqp://u:s3cret@b/%2f"
            .parse()
            .expect("valid");
        let error = plain
            .with_tls(files)
            .expect_err("TLS files with amqp:// nodes");
        assert!(error.to_string().contains("amqp://u:***@a"), "{error}");
    }

    #[test]
    fn a_list_mixing_tls_and_plain_nodes_is_refused() {
        let error = "amqps://u:s3cret@a/%2f,amqp://u:s3cret@b/%2f"
            .parse::<BrokerUrls>()
            .expect_err("mixed schemes");
        let text = error.to_string();
        assert!(
            text.contains("mixes amqp:// and amqps://") && !text.contains("s3cret"),
            "{text}"
        );
    }

    #[test]
    fn an_entry_without_a_scheme_is_refused_not_glued_to_the_previous_url() {
        let error = "amqp://u:s3cret@a:5681/%2f,127.0.0.1:5682"
            .parse::<BrokerUrls>()
            .expect_err("no scheme");
        assert!(!error.to_string().contains("s3cret"), "{error}");
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

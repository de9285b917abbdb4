use std::fmt;
use std::str::FromStr;

/// Heartbeat interval asked of the broker when the URL names none: a dead peer is noticed
/// within two intervals instead of at the next TCP timeout.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// An AMQP URL (`amqp://` or `amqps://`), validated, whose `Display` hides the password.
#[derive(Clone)]
pub struct BrokerUrl {
    uri: lapin::uri::AMQPUri,
    redacted: String,
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
        Ok(Self { uri, redacted })
    }
}

impl BrokerUrl {
    pub(crate) fn uri(&self) -> lapin::uri::AMQPUri {
        self.uri.clone()
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
        write!(f, "BrokerUrl({})", self.redacted)
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

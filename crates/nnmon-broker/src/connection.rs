use crate::client::{self, AmqpError, CLIENT};
use crate::message::{HeaderValue, Headers};
use crate::tls::{self, TlsError};
use crate::{BrokerUrl, BrokerUrls, Inbox, Publisher};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What can go wrong talking to the broker. Every variant but [`Refused`](Self::Refused)
/// and [`Tls`](Self::Tls) means "this connection is no longer trustworthy": the caller
/// rebuilds it and carries on (see [`is_permanent`](Self::is_permanent)).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("AMQP error")]
    Amqp(#[from] AmqpError),
    /// The broker refused this user for good: a wrong password, a missing or forbidden
    /// vhost, or missing permissions. Retrying cannot help.
    #[error("the broker refused user `{user}` on vhost `{vhost}`: {reason}")]
    Refused {
        user: String,
        vhost: String,
        reason: String,
    },
    /// A TLS file that cannot be used, or a certificate refused by nnmon (the broker's) or
    /// by the broker (the client's). Retrying cannot help either.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the broker refused (nacked) a published message")]
    Nacked,
    #[error("a published message was returned as unroutable (its queue is gone)")]
    Returned,
    /// The broker's version could not be learnt: see [`Broker::server_version`].
    #[error("no version from the broker: {0}")]
    Greeting(String),
    /// A socket error outside the AMQP client (lapin's greeting reader, see
    /// [`Broker::server_version`]).
    #[error("talking to the broker")]
    Io(#[from] std::io::Error),
    #[error("the broker cancelled the consumer of queue {queue} (deleted, or a failover?)")]
    ConsumerCancelled { queue: String },
    /// The queue exists as another type than the one asked for. Permanent: RabbitMQ cannot
    /// change a queue's type in place, and going on would run the pipeline without the
    /// guarantees its `--queue-type` promised (see [`Broker::declare_queue`]).
    #[error(
        "queue {queue} already exists on the broker, but not as a {wanted} queue ({broker_says}); \
         run every service with the queue type it was made with (--queue-type / NNMON_QUEUE_TYPE), \
         or delete the queue (its messages go with it) to make it again as {wanted}"
    )]
    QueueTypeMismatch {
        queue: String,
        wanted: QueueType,
        broker_says: String,
    },
    /// A queue or exchange name, a routing key or a message property longer than AMQP's
    /// short strings hold (255 bytes): refused before it reaches the client (amqprs would
    /// panic, lapin send a malformed frame). Permanent: the same name fails every time.
    #[error(
        "the {what} `{start}...` is {bytes} bytes long, and AMQP carries at most {MAX_NAME_BYTES}; \
         shorten it"
    )]
    TooLong {
        what: &'static str,
        /// The name's first characters.
        start: String,
        bytes: usize,
    },
}

/// The most bytes an AMQP short string holds: queue and exchange names, routing keys, the
/// vhost, a message's ID and its other text properties.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// `value` (a `what`) if it fits an AMQP short string, else [`BrokerError::TooLong`].
pub(crate) fn short_string(what: &'static str, value: &str) -> Result<(), BrokerError> {
    if value.len() <= MAX_NAME_BYTES {
        return Ok(());
    }
    let mut cut = 40;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    Err(BrokerError::TooLong {
        what,
        start: value[..cut].to_owned(),
        bytes: value.len(),
    })
}

impl BrokerError {
    /// Whether retrying cannot help: a refusal (see [`is_refusal`]), a TLS problem, or a
    /// broker setting the client cannot keep.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Refused { .. }
            | Self::Tls(_)
            | Self::QueueTypeMismatch { .. }
            | Self::TooLong { .. } => true,
            Self::Amqp(error) => {
                is_refusal(error) || tls::is_certificate_problem(error) || error.is_unsupported()
            }
            _ => false,
        }
    }

    /// `error` as [`Refused`](Self::Refused), naming `url`'s user and vhost, when it is a
    /// refusal (`connecting`: it answered the login, see [`refusal_reason`]); as
    /// [`Tls`](Self::Tls) when a certificate was refused, by either side.
    pub(crate) fn classify(error: AmqpError, url: &BrokerUrl, connecting: bool) -> Self {
        if let Some(problem) = tls::certificate_problem(&error, url) {
            return Self::Tls(problem);
        }
        match refusal_reason(&error, connecting) {
            Some(reason) => Self::Refused {
                user: url.login(),
                vhost: url.vhost().to_owned(),
                reason,
            },
            None => Self::Amqp(error),
        }
    }
}

/// Whether `error` is the broker's ACCESS_REFUSED (403): wrong credentials at login, or
/// missing permissions for what was asked later. Retrying cannot help.
pub fn is_refusal(error: &AmqpError) -> bool {
    refusal_reason(error, false).is_some()
}

/// The broker's text when `error` refuses this user for good. At login (`connecting`)
/// NOT_ALLOWED (530) counts too: RabbitMQ answers a missing vhost, or one the user has
/// no permissions on, with it — but not a connection limit reached (of the node, the vhost
/// or the user) or one it could not check in time: those pass as connections close, and
/// are retried like an unreachable broker. (A vhost that is down, restarting, comes as
/// INTERNAL_ERROR, 541, which is retried too.) Later, NOT_ALLOWED means something else and
/// is not permanent.
fn refusal_reason(error: &AmqpError, connecting: bool) -> Option<String> {
    let (code, text) = error.reply()?;
    let refused = match code {
        ACCESS_REFUSED => true,
        NOT_ALLOWED => connecting && !is_passing_limit(text),
        _ => false,
    };
    refused.then(|| text.to_owned())
}

/// Whether a NOT_ALLOWED text at login is one of RabbitMQ's connection limits (`node
/// connection limit (N) is reached`, `... connection limit (N) is reached` of a vhost or
/// user) or `connection limit cannot be queried, timeout`, not a missing or forbidden vhost.
fn is_passing_limit(text: &str) -> bool {
    text.contains("connection limit")
        && (text.contains("is reached") || text.contains("cannot be queried"))
}

/// AMQP reply codes nnmon tells apart.
pub(crate) const ACCESS_REFUSED: u16 = 403;
pub(crate) const PRECONDITION_FAILED: u16 = 406;
pub(crate) const NOT_ALLOWED: u16 = 530;
pub(crate) const COMMAND_INVALID: u16 = 503;

/// The broker's text when `error` is its 406 PRECONDITION_FAILED: the queue (or the
/// exchange) exists with other properties. (Other soft errors, such as ACCESS_REFUSED, are
/// real failures.)
pub(crate) fn precondition_failed(error: &AmqpError) -> Option<&str> {
    match error.reply()? {
        (PRECONDITION_FAILED, text) => Some(text),
        _ => None,
    }
}

/// Whether the broker's 406 text says the existing queue is of another type than `wanted`.
/// RabbitMQ names the argument (`inequivalent arg 'x-queue-type' ...`); a quorum queue is
/// always durable, so a transient queue (`inequivalent arg 'durable'`) is not one either.
fn is_type_mismatch(wanted: QueueType, text: &str) -> bool {
    text.contains("'x-queue-type'") || (wanted == QueueType::Quorum && text.contains("'durable'"))
}

/// The kind of queue nnmon declares for the pipeline (`--queue-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// RabbitMQ's classic queue, on the node it was declared on: what the seed and a single
    /// broker use. Declared without an `x-queue-type`, as before queue types existed.
    #[default]
    Classic,
    /// A quorum queue (`x-queue-type: quorum`, always durable): replicated over the
    /// cluster's nodes by Raft, it survives the loss of a minority of them. Only confirmed
    /// publishes are safe, which is how nnmon publishes anyway.
    Quorum,
}

impl QueueType {
    /// The declaration's arguments.
    fn arguments(self) -> Headers {
        let mut arguments = Headers::new();
        if self == Self::Quorum {
            arguments.insert("x-queue-type".into(), HeaderValue::from("quorum"));
        }
        arguments
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        })
    }
}

impl FromStr for QueueType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "classic" => Ok(Self::Classic),
            "quorum" => Ok(Self::Quorum),
            other => Err(format!("`{other}` is not a queue type: classic or quorum")),
        }
    }
}

/// The longest one connection attempt may take (TCP, TLS, AMQP handshake): a node that
/// swallows packets must not keep a service from trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long to wait between connection attempts: exponential backoff with jitter, never
/// shorter than `initial` nor longer than `max`. The jitter keeps services that lost the
/// broker together (a broker restart) from reconnecting in lockstep.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The successive delays of one run of failures, without end. backon draws each from
    /// `[base, 2 base)`, the base doubling from `initial`; capping the base at `max / 2`
    /// keeps every delay under `max` while the jitter stays as wide at the cap.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let max = self.max;
        ExponentialBuilder::new()
            .with_min_delay(self.initial)
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times()
            .build()
            .map(move |delay| delay.min(max))
    }
}

/// How a queue declaration went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Durable, as nnmon wants it (created now or before).
    Durable,
    /// It existed with other properties (e.g. a seed deployment's transient queue) and is
    /// used as it is: messages in it do not survive a broker restart.
    ExistingWithOtherProperties,
}

/// One connection to one broker node.
pub struct Broker {
    connection: client::Connection,
    /// Names the user and vhost when the broker refuses them.
    url: BrokerUrl,
    /// Which of the [`BrokerUrls`] it is.
    node: usize,
}

impl Broker {
    /// Connects to the first node of `urls` that answers, trying them in order from node
    /// `from` (wrapping round); after a full round of failures it waits (backoff) and goes
    /// round again. Returns `Ok(None)` if `cancel` fires first, and at once
    /// [`BrokerError::Refused`] when a broker answers but refuses the login or the vhost,
    /// or [`BrokerError::Tls`] when a TLS file cannot be used (checked before the first
    /// attempt) or a certificate is refused: retrying cannot fix those (a cluster's nodes
    /// share their users, and should share a CA).
    ///
    /// [`node`](Self::node) says which node it reached; a caller that lost it starts the
    /// next attempt with the node after it.
    pub async fn connect(
        urls: &BrokerUrls,
        from: usize,
        name: &str,
        retry: RetryPolicy,
        cancel: &CancellationToken,
    ) -> Result<Option<Self>, BrokerError> {
        let nodes = urls.nodes();
        let connectors = nodes
            .iter()
            .map(|url| url.tls().map(|tls| tls.connector()).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let mut backoff = retry.backoff();
        let mut attempt = 0u32;
        let mut node = from % nodes.len();
        loop {
            let url = &nodes[node];
            let connecting = client::Connection::open(url, name, connectors[node].clone());
            let result = tokio::select! {
                result = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => result,
                () = cancel.cancelled() => return Ok(None),
            };
            attempt += 1;
            let error = match result {
                Ok(Ok(connection)) => {
                    let of = nodes.len();
                    match (attempt, of) {
                        (1, 1) => info!(broker = %url, client = CLIENT, "connected to the broker"),
                        (_, 1) => {
                            info!(broker = %url, client = CLIENT, attempts = attempt, "connected to the broker")
                        }
                        _ => {
                            info!(broker = %url, client = CLIENT, node = node + 1, of, attempts = attempt, "connected to the broker")
                        }
                    }
                    let url = url.clone();
                    return Ok(Some(Self {
                        connection,
                        url,
                        node,
                    }));
                }
                Ok(Err(error)) => match BrokerError::classify(error, url, true) {
                    BrokerError::Amqp(error) => error.to_string(),
                    refused => return Err(refused),
                },
                Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
            };
            node = (node + 1) % nodes.len();
            if node != from % nodes.len() {
                warn!(broker = %url, %error, "broker node not reachable; trying the next one");
                continue;
            }
            let delay = backoff.next().unwrap_or(retry.max);
            warn!(broker = %url, %error, attempt, retry_in_ms = delay.as_millis() as u64, "broker not reachable yet; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }

    /// Which node of the [`BrokerUrls`] this connection reached (0 for the first).
    pub fn node(&self) -> usize {
        self.node
    }

    /// The URL of the node this connection reached.
    pub fn url(&self) -> &BrokerUrl {
        &self.url
    }

    /// Declares a durable queue of type `queue_type`, or accepts an existing one with other
    /// properties as it is (a seed deployment's transient queue) — but not one of another
    /// type: that is [`BrokerError::QueueTypeMismatch`], permanent. Missing permissions are
    /// [`BrokerError::Refused`].
    ///
    /// Why a type mismatch is refused while other differences are accepted: `--queue-type
    /// quorum` promises that the pipeline survives a node's loss, and a classic queue found
    /// in its place would silently break that promise; the other way round, services left
    /// at the default would be running on queues whose behaviour (replication, leader
    /// moves, memory) their operator did not choose. Either way the fix is one setting,
    /// and saying so at start-up beats finding out in a failover.
    pub async fn declare_queue(
        &self,
        queue: &str,
        queue_type: QueueType,
    ) -> Result<QueueState, BrokerError> {
        short_string("queue name", queue)?;
        let refused = |error| BrokerError::classify(error, &self.url, false);
        match self
            .connection
            .declare_queue(queue, false, &queue_type.arguments())
            .await
        {
            Ok(_) => Ok(QueueState::Durable),
            Err(error)
                if precondition_failed(&error)
                    .is_some_and(|text| is_type_mismatch(queue_type, text)) =>
            {
                Err(BrokerError::QueueTypeMismatch {
                    queue: queue.to_owned(),
                    wanted: queue_type,
                    broker_says: precondition_failed(&error).unwrap_or_default().to_owned(),
                })
            }
            Err(error) if precondition_failed(&error).is_some() => {
                // PRECONDITION_FAILED closed that channel; ask on a fresh one whether the
                // queue exists at all, without asserting its properties.
                self.connection
                    .declare_queue(queue, true, &Headers::new())
                    .await
                    .map_err(refused)?;
                warn!(queue, %error, "queue exists with other properties (a seed deployment's transient queue?); using it as it is, so its messages will not survive a broker restart");
                Ok(QueueState::ExistingWithOtherProperties)
            }
            Err(error) => Err(refused(error)),
        }
    }

    /// Declares every queue in `queues`, of type `queue_type`.
    pub async fn declare_queues(
        &self,
        queues: &[&str],
        queue_type: QueueType,
    ) -> Result<(), BrokerError> {
        for queue in queues {
            self.declare_queue(queue, queue_type).await?;
        }
        Ok(())
    }

    /// A confirm-mode channel allowing `window` unconfirmed messages at once.
    pub async fn publisher<T>(&self, window: usize) -> Result<Publisher<T>, BrokerError> {
        let channel = self.connection.publisher().await?;
        Ok(Publisher::new(channel, window))
    }

    /// A channel of its own consuming `queue`, with `prefetch` unacked messages at most.
    pub async fn inbox(&self, queue: &str, prefetch: u16) -> Result<Inbox, BrokerError> {
        short_string("queue name", queue)?;
        Inbox::open(&self.connection, queue, prefetch).await
    }

    /// The AMQP connection, for the crate's other modules (exchanges, see `exchange`).
    pub(crate) fn connection(&self) -> &client::Connection {
        &self.connection
    }

    /// Closes the connection politely; unacked deliveries go back to their queues.
    pub async fn close(self) {
        if let Err(error) = self.connection.close().await {
            warn!(%error, "closing the broker connection failed");
        }
    }
}

impl Broker {
    /// Messages ready in `queue` (a passive declare: the queue must exist).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        short_string("queue name", queue)?;
        self.connection
            .declare_queue(queue, true, &Headers::new())
            .await
            .map_err(|error| BrokerError::classify(error, &self.url, false))
    }

    /// Deletes `queue` with its messages; a queue already gone is fine.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BrokerError> {
        short_string("queue name", queue)?;
        self.connection
            .delete_queue(queue)
            .await
            .map_err(|error| BrokerError::classify(error, &self.url, false))
    }

    /// The version the broker at `url` gives in its `connection.start` server properties
    /// (RabbitMQ: `3.10.8`): the server's own, not a CLI's. How depends on the client
    /// (see its `server_version`): amqprs logs in and keeps the properties; lapin keeps no
    /// copy of them, so on lapin nnmon reads the broker's greeting itself and leaves
    /// before logging in (the broker logs a warning about it on every call).
    pub async fn server_version(url: &BrokerUrl) -> Result<String, BrokerError> {
        let connector = url.tls().map(|tls| tls.connector()).transpose()?;
        match tokio::time::timeout(CONNECT_TIMEOUT, client::server_version(url, connector)).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::Greeting(format!(
                "no answer within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_within_its_bounds() {
        let policy = RetryPolicy::default();
        let runs: Vec<Vec<Duration>> = (0..20)
            .map(|_| policy.backoff().take(12).collect())
            .collect();
        for run in &runs {
            assert!(run[0] < 2 * policy.initial, "{run:?}");
            for delay in run {
                assert!(
                    (policy.initial..=policy.max).contains(delay),
                    "{delay:?} out of bounds in {run:?}"
                );
            }
            // Still growing early on: the jitter never reaches the next base.
            assert!(run[0] < run[2] && run[2] < run[4], "{run:?}");
        }
        // Services failing together draw different delays, at the start and at the cap.
        for step in [0, 11] {
            let first = runs[0][step];
            assert!(
                runs.iter().any(|run| run[step] != first),
                "every run waited {first:?} at step {step}"
            );
        }
    }

    #[test]
    fn a_queue_of_another_type_is_told_apart_from_other_differences() {
        // RabbitMQ 3.10.8's own texts.
        let classic_asked = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received none but current is the value 'quorum' of type 'longstr'";
        let quorum_asked = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received the value 'quorum' of type 'longstr' but current is none";
        let transient = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'";
        assert!(is_type_mismatch(QueueType::Classic, classic_asked));
        assert!(is_type_mismatch(QueueType::Quorum, quorum_asked));
        // A seed's transient queue is still a classic one (used as it is) but never a
        // quorum one.
        assert!(!is_type_mismatch(QueueType::Classic, transient));
        assert!(is_type_mismatch(QueueType::Quorum, transient));
        let mismatch = BrokerError::QueueTypeMismatch {
            queue: "features".into(),
            wanted: QueueType::Quorum,
            broker_says: quorum_asked.into(),
        };
        assert!(mismatch.is_permanent());
        let text = mismatch.to_string();
        assert!(
            text.contains("not as a quorum queue") && text.contains("--queue-type"),
            "{text}"
        );
        assert_eq!("quorum".parse(), Ok(QueueType::Quorum));
        assert_eq!(QueueType::default().to_string(), "classic");
        assert!("stream".parse::<QueueType>().is_err());
    }

    #[test]
    fn names_over_255_bytes_are_refused_for_good_without_quoting_them_whole() {
        assert!(short_string("queue name", &"q".repeat(MAX_NAME_BYTES)).is_ok());
        let long = "é".repeat(128); // 256 bytes, a character boundary off the cut
        let error = short_string("queue name", &long).expect_err("256 bytes");
        assert!(error.is_permanent());
        let text = error.to_string();
        assert!(
            text.contains("queue name") && text.contains("256 bytes"),
            "{text}"
        );
        assert!(text.len() < 400, "{text}");
    }

    #[test]
    fn refusals_are_permanent_and_other_failures_are_not() {
        let url: BrokerUrl = "amqp://ops:s3cret@broker/staging".parse().expect("valid");
        let login = || {
            AmqpError::from_reply(
                ACCESS_REFUSED,
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN.",
            )
        };
        let vhost = || AmqpError::from_reply(NOT_ALLOWED, "NOT_ALLOWED - vhost staging not found");
        let unreachable =
            AmqpError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let refused = BrokerError::classify(login(), &url, true);
        assert!(refused.is_permanent());
        let text = refused.to_string();
        assert!(
            text.contains("`ops`") && text.contains("`staging`") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(BrokerError::classify(vhost(), &url, true).is_permanent());
        // RabbitMQ's texts for a vhost the user may not use: permanent too.
        let forbidden = AmqpError::from_reply(
            NOT_ALLOWED,
            "NOT_ALLOWED - access to vhost 'staging' refused for user 'ops'",
        );
        assert!(BrokerError::classify(forbidden, &url, true).is_permanent());
        // A vhost that is down (restarting; RabbitMQ says so with INTERNAL_ERROR, 541) and
        // a connection limit reached are retried: transient on either client.
        let passing = [
            (
                541,
                "INTERNAL_ERROR - access to vhost 'staging' refused for user 'ops': vhost 'staging' is down",
            ),
            (
                NOT_ALLOWED,
                "NOT_ALLOWED - access to vhost 'staging' refused for user 'ops': connection limit (10) is reached",
            ),
            (
                NOT_ALLOWED,
                "NOT_ALLOWED - node connection limit (500) is reached",
            ),
            (
                NOT_ALLOWED,
                "NOT_ALLOWED - connection limit cannot be queried, timeout",
            ),
        ];
        for (code, text) in passing {
            let classified = BrokerError::classify(AmqpError::from_reply(code, text), &url, true);
            assert!(
                matches!(classified, BrokerError::Amqp(_)) && !classified.is_permanent(),
                "{text}: {classified:?}"
            );
            assert!(!is_refusal(&AmqpError::from_reply(code, text)));
        }
        // NOT_ALLOWED after the login is about something else (and says so itself).
        assert!(!BrokerError::classify(vhost(), &url, false).is_permanent());
        // ACCESS_REFUSED later on: missing permissions for what was asked.
        assert!(BrokerError::Amqp(login()).is_permanent());
        assert!(!BrokerError::classify(unreachable, &url, true).is_permanent());
        assert!(!BrokerError::Nacked.is_permanent());
    }
}

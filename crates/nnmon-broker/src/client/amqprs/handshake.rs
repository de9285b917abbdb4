//! Why a connection attempt failed, asked again of the broker in a handshake of nnmon's
//! own. amqprs reports a failed TLS handshake or login as text only, and announces no
//! `authentication_failure_close` capability, so RabbitMQ answers a refused login by
//! closing the socket without saying why. After amqprs failed, nnmon repeats the TLS
//! handshake (keeping rustls's typed error, and waiting for the broker's verdict on the
//! client certificate, see [`tls::await_verdict`]) and the AMQP login up to
//! `connection.open`, announcing the capability: the broker's `connection.close` then
//! says what it refuses (ACCESS_REFUSED, NOT_ALLOWED for a vhost...). Only failures that
//! amqprs could not explain (a TLS handshake, a login refused by closing the socket) pay
//! for this second connection: not a socket that never connected, nor a `connection.close`
//! answering `connection.open`, whose reply amqprs's message holds (see [`failure`]).

use super::{Error, Reply};
use crate::{BrokerUrl, tls};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The longest the diagnosis may take.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(5);

/// What nnmon makes of amqprs's failure to open a connection, before trying again itself:
/// the broker's own reply when amqprs got one, or whether a diagnosis can tell more.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The broker answered `connection.open` with `connection.close` (a vhost missing,
    /// forbidden or down): amqprs's message holds the reply, no second login is needed.
    Reply(Reply),
    /// The socket was never connected (refused, unreachable, no such host, timed out): a
    /// diagnosis would only fail the same way. During a broker outage every retry ends
    /// here, and must not knock twice.
    Socket,
    /// Anything else — a TLS handshake or a login refused by closing the socket, which
    /// amqprs reports as text only: worth a diagnosis ([`diagnose`]).
    Unexplained,
}

/// Sorts amqprs's error from `Connection::open` (see [`Failure`]).
pub(super) fn failure(error: &amqprs::error::Error) -> Failure {
    use amqprs::error::Error as E;
    match error {
        E::ConnectionOpenError(text) => {
            open_close_reply(text).map_or(Failure::Unexplained, Failure::Reply)
        }
        E::NetworkError(text) if is_socket_failure(text) => Failure::Socket,
        _ => Failure::Unexplained,
    }
}

/// Whether amqprs's network error text is a failure to connect the socket (as the OS
/// words it: `Connection refused (os error 111)`, `No route to host`, ...; or the name
/// lookup's), not one on a socket that was connected (reset, closed: a refused login).
fn is_socket_failure(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "connection refused",
        "no route to host",
        "network is unreachable",
        "host is unreachable",
        "connection timed out",
        "cannot assign requested address",
        "failed to lookup address",
        "name or service not known",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// The reply in amqprs 2.1's `failed to open connection, reason: Close(MethodHeader {
/// .. }, Close { reply_code: 530, reply_text: ShortStr(len, "..."), .. })` (its frame's
/// `Debug`).
fn open_close_reply(text: &str) -> Option<Reply> {
    let (_, close) = text.split_once("reason: Close(")?;
    let (_, after_code) = close.split_once("reply_code: ")?;
    let digits: String = after_code
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let code = digits.parse().ok()?;
    let (_, after_text) = close.split_once("reply_text: ShortStr(")?;
    let (_, quoted) = after_text.split_once('"')?;
    let mut reply = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next()? {
            '"' => break,
            '\\' => match chars.next()? {
                'n' => reply.push('\n'),
                't' => reply.push('\t'),
                'r' => reply.push('\r'),
                escaped => reply.push(escaped),
            },
            plain => reply.push(plain),
        }
    }
    Some(Reply { code, text: reply })
}

/// The failure the broker (or TLS) names when `url` is tried again; `None` when it says
/// nothing more (unreachable, or accepted this time).
pub(super) async fn diagnose(url: &BrokerUrl, connector: Option<&TlsConnector>) -> Option<Error> {
    tokio::time::timeout(DIAGNOSIS_TIMEOUT, attempt(url, connector))
        .await
        .ok()
        .flatten()
}

async fn attempt(url: &BrokerUrl, connector: Option<&TlsConnector>) -> Option<Error> {
    let uri = url.uri();
    let tcp = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port))
        .await
        .ok()?;
    let Some(connector) = connector else {
        return login(tcp, url).await.map(Error::Reply);
    };
    let name = rustls::pki_types::ServerName::try_from(uri.authority.host.clone()).ok()?;
    let started = Instant::now();
    let mut stream = match connector.connect(name, tcp).await {
        Ok(stream) => stream,
        Err(error) => return Some(Error::Io(error)),
    };
    let tls13 = stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    let mut byte = [0u8; 1];
    if let Err(error) = tls::await_verdict(tls13, started.elapsed(), stream.read(&mut byte)).await {
        return Some(Error::Io(error));
    }
    login(stream, url).await.map(Error::Reply)
}

/// AMQP 0-9-1 frame and method numbers used here.
const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;
const CONNECTION: u16 = 10;
const START: u16 = 10;
const START_OK: u16 = 11;
const TUNE: u16 = 30;
const TUNE_OK: u16 = 31;
const OPEN: u16 = 40;
const OPEN_OK: u16 = 41;
const CLOSE: u16 = 50;

/// Logs in as amqprs would, announcing `authentication_failure_close`; the broker's
/// `connection.close` reply, if it sends one before `connection.open-ok`.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, url: &BrokerUrl) -> Option<Reply> {
    let uri = url.uri();
    stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
    let (method, _) = read_method(&mut stream).await?;
    if method != START {
        return None;
    }
    let (mechanism, response) = if url.uses_external_auth() {
        ("EXTERNAL", Vec::new())
    } else {
        let user = &uri.authority.userinfo;
        let mut response = vec![0];
        response.extend_from_slice(user.username.as_bytes());
        response.push(0);
        response.extend_from_slice(user.password.as_bytes());
        ("PLAIN", response)
    };
    let mut start_ok = method_header(START_OK);
    // client-properties: {capabilities: {authentication_failure_close: true}}
    let mut capabilities = Vec::new();
    short_string(&mut capabilities, "authentication_failure_close");
    capabilities.extend_from_slice(b"t\x01");
    let mut properties = Vec::new();
    short_string(&mut properties, "capabilities");
    properties.push(b'F');
    long_bytes(&mut properties, &capabilities);
    long_bytes(&mut start_ok, &properties);
    short_string(&mut start_ok, mechanism);
    long_bytes(&mut start_ok, &response);
    short_string(&mut start_ok, "en_US");
    write_method(&mut stream, &start_ok).await?;
    let (method, arguments) = read_method(&mut stream).await?;
    match method {
        CLOSE => return close_reply(&arguments),
        TUNE if arguments.len() >= 8 => {
            let mut tune_ok = method_header(TUNE_OK);
            tune_ok.extend_from_slice(&arguments[..6]); // channel-max, frame-max as offered
            tune_ok.extend_from_slice(&[0, 0]); // no heartbeat
            write_method(&mut stream, &tune_ok).await?;
        }
        _ => return None,
    }
    let mut open = method_header(OPEN);
    short_string(&mut open, &uri.vhost);
    short_string(&mut open, "");
    open.push(0);
    write_method(&mut stream, &open).await?;
    let (method, arguments) = read_method(&mut stream).await?;
    match method {
        CLOSE => close_reply(&arguments),
        OPEN_OK => {
            // Accepted this time: leave politely; the caller's error stands.
            let mut close = method_header(CLOSE);
            close.extend_from_slice(&200u16.to_be_bytes());
            short_string(&mut close, "");
            close.extend_from_slice(&[0, 0, 0, 0]);
            let _ = write_method(&mut stream, &close).await;
            None
        }
        _ => None,
    }
}

fn method_header(method: u16) -> Vec<u8> {
    let mut payload = CONNECTION.to_be_bytes().to_vec();
    payload.extend_from_slice(&method.to_be_bytes());
    payload
}

fn short_string(buffer: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(255)];
    buffer.push(bytes.len() as u8);
    buffer.extend_from_slice(bytes);
}

fn long_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buffer.extend_from_slice(bytes);
}

async fn write_method<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> Option<()> {
    let mut frame = vec![FRAME_METHOD, 0, 0];
    long_bytes(&mut frame, payload);
    frame.push(FRAME_END);
    stream.write_all(&frame).await.ok()?;
    stream.flush().await.ok()
}

/// The next method frame on channel 0 of the connection class: its method and arguments.
async fn read_method<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(u16, Vec<u8>)> {
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).await.ok()?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    // The broker's frames before open-ok are small; refuse to buffer anything huge.
    if header[0] != FRAME_METHOD || !(4..=1 << 20).contains(&size) {
        return None;
    }
    let mut payload = vec![0u8; size as usize + 1];
    stream.read_exact(&mut payload).await.ok()?;
    if payload.pop() != Some(FRAME_END) || payload[..2] != CONNECTION.to_be_bytes() {
        return None;
    }
    let method = u16::from_be_bytes([payload[2], payload[3]]);
    Some((method, payload.split_off(4)))
}

/// `connection.close`'s reply code and text.
fn close_reply(arguments: &[u8]) -> Option<Reply> {
    let code = u16::from_be_bytes([*arguments.first()?, *arguments.get(1)?]);
    let length = usize::from(*arguments.get(2)?);
    let text = arguments.get(3..3 + length)?;
    Some(Reply {
        code,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reply_is_read_and_a_short_one_refused() {
        let mut arguments = 403u16.to_be_bytes().to_vec();
        short_string(&mut arguments, "ACCESS_REFUSED - Login was refused");
        arguments.extend_from_slice(&[0, 10, 0, 11]);
        let reply = close_reply(&arguments).expect("a reply");
        assert_eq!(reply.code, 403);
        assert_eq!(reply.text, "ACCESS_REFUSED - Login was refused");
        assert!(close_reply(&arguments[..10]).is_none());
    }

    #[test]
    fn a_close_answering_connection_open_is_read_from_amqprs_message() {
        for (code, text) in [
            (
                541,
                "INTERNAL_ERROR - access to vhost 'staging' refused for user 'ops': vhost 'staging' is down",
            ),
            (
                530,
                "NOT_ALLOWED - access to vhost 'a \"b\"' refused for user 'ops'",
            ),
            (
                320,
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
            ),
        ] {
            // amqprs 2.1.5's words: its frame's Debug (`Frame::Close(&MethodHeader, Close)`),
            // with its own ShortStr's Debug.
            let short = amqprs::ShortStr::try_from(text).expect("short");
            let message = format!(
                "failed to open connection, reason: Close(MethodHeader {{ class_id: 10, method_id: 50 }}, Close {{ reply_code: {code}, reply_text: {short:?}, class_id: 10, method_id: 40 }})"
            );
            let error = amqprs::error::Error::ConnectionOpenError(message);
            assert_eq!(
                failure(&error),
                Failure::Reply(Reply {
                    code,
                    text: text.to_owned()
                }),
                "{error}"
            );
        }
        let other = amqprs::error::Error::ConnectionOpenError("failed to tune".into());
        assert_eq!(failure(&other), Failure::Unexplained);
    }

    #[test]
    fn socket_failures_are_not_diagnosed_and_closed_sockets_are() {
        let refused = std::io::Error::from_raw_os_error(111).to_string();
        for text in [
            format!("network io error: {refused}"),
            "network io error: No route to host (os error 113)".into(),
            "network io error: failed to lookup address information: Name or service not known"
                .into(),
        ] {
            let error = amqprs::error::Error::NetworkError(text);
            assert_eq!(failure(&error), Failure::Socket, "{error}");
        }
        for text in [
            "peer shutdown",
            "network io error: Connection reset by peer (os error 104)",
            "network io error: invalid peer certificate: UnknownIssuer",
        ] {
            let error = amqprs::error::Error::NetworkError(text.into());
            assert_eq!(failure(&error), Failure::Unexplained, "{error}");
        }
    }

    #[tokio::test]
    async fn amqprs_failing_to_reach_a_closed_port_is_a_socket_failure() {
        // A port nothing listens on (bound, then released): amqprs's own error for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let arguments =
            amqprs::connection::OpenConnectionArguments::new("127.0.0.1", port, "u", "p");
        let Err(error) = amqprs::connection::Connection::open(&arguments).await else {
            panic!("nothing listens on port {port}");
        };
        assert_eq!(failure(&error), Failure::Socket, "{error}");
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut payload = method_header(CLOSE);
        payload.extend_from_slice(&530u16.to_be_bytes());
        short_string(&mut payload, "NOT_ALLOWED - vhost x not found");
        write_method(&mut client, &payload).await.expect("written");
        let (method, arguments) = read_method(&mut server).await.expect("a frame");
        assert_eq!(method, CLOSE);
        assert_eq!(close_reply(&arguments).expect("reply").code, 530);
    }
}

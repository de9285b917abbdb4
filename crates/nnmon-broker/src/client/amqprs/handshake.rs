//! Why a connection attempt failed, asked again of the broker in a handshake of nnmon's
//! own. amqprs reports a failed TLS handshake or login as text only, and announces no
//! `authentication_failure_close` capability, so RabbitMQ answers a refused login by
//! closing the socket without saying why. After amqprs failed, nnmon repeats the TLS
//! handshake (keeping rustls's typed error, and waiting for the broker's verdict on the
//! client certificate, see [`tls::await_verdict`]) and the AMQP login up to
//! `connection.open`, announcing the capability: the broker's `connection.close` then
//! says what it refuses (ACCESS_REFUSED, NOT_ALLOWED for a vhost...). Only failures pay
//! for this second connection.

use super::{Error, Reply};
use crate::{BrokerUrl, tls};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The longest the diagnosis may take.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(5);

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

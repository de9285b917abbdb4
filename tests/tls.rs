//! TLS as brokers really run it, end to end: a RabbitMQ node of its own (started by
//! `scripts/tls-broker`, left running for the next run) listening with TLS only, its
//! certificate from a private CA, client certificates required (`verify_peer`,
//! `fail_if_no_peer_cert`) and EXTERNAL offered; the real binary as separate processes.
//!
//! When the node cannot be started here the tests are skipped, which fails them under CI.

mod common;

use common::{MINUTE, Pipeline, assert_exactly_the_confirmed_items, run_script, skip};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The password of the node's user `nnmon-tls`, which must never be printed.
const PASSWORD: &str = "nnmon-tls-pw-0451";
/// Where the node listens (`scripts/tls-broker`'s default).
const PORT: u16 = 5691;

/// The running TLS node and its certificates.
struct TlsNode {
    certs: PathBuf,
}

impl TlsNode {
    fn cert(&self, name: &str) -> String {
        self.certs
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }

    /// `amqps://nnmon-tls:<password>@<host>:5691/%2f`.
    fn url(&self, host: &str) -> String {
        format!("amqps://nnmon-tls:{PASSWORD}@{host}:{PORT}/%2f")
    }

    /// The three TLS variables for the CA, client certificate and key `ca`, `client`.
    fn env(&self, ca: &str, client: &str) -> [(&'static str, String); 3] {
        [
            ("NNMON_TLS_CA_FILE", self.cert(&format!("{ca}.pem"))),
            ("NNMON_TLS_CERT_FILE", self.cert(&format!("{client}.pem"))),
            ("NNMON_TLS_KEY_FILE", self.cert(&format!("{client}.key"))),
        ]
    }

    /// The base64 lines of every private key the tests use: none may ever be printed.
    fn key_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(&self.certs).expect("certs").flatten() {
            if entry.path().extension().is_some_and(|e| e == "key") {
                let text = std::fs::read_to_string(entry.path()).expect("key");
                lines.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() > 16)
                        .map(str::to_owned),
                );
            }
        }
        assert!(!lines.is_empty());
        lines
    }

    /// Asserts that `text` shows neither the password nor any key.
    fn assert_no_secret(&self, text: &str) {
        assert!(!text.contains(PASSWORD), "password leaked:\n{text}");
        for line in self.key_lines() {
            assert!(!text.contains(&line), "a private key leaked:\n{text}");
        }
    }
}

/// Starts the TLS node once for this test binary (or finds it running), or says why not.
///
/// Sets `AMQP_URL` to the node for this process, so that `common::broker()` hands out a
/// broker the [`Pipeline`]s can be made from; the services get their URL from the pipeline.
fn node() -> Option<&'static TlsNode> {
    static NODE: OnceLock<Result<TlsNode, String>> = OnceLock::new();
    let node = NODE.get_or_init(|| {
        if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
            return Err("NNMON_SKIP_BROKER_TESTS=1".into());
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-broker");
        let started = Instant::now();
        let stdout = run_script("tls-broker", &["start".as_ref(), dir.as_os_str()])?;
        eprintln!(
            "TLS node ready in {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            stdout.trim()
        );
        let node = TlsNode {
            certs: dir.join("certs"),
        };
        // SAFETY: this runs once, while every test of this binary that connects anywhere
        // waits on this OnceLock; the one test that does not wait only spawns processes,
        // and std reads the environment for that under the same lock as `set_var`.
        unsafe { std::env::set_var("AMQP_URL", node.url("127.0.0.1")) };
        Ok(node)
    });
    match node {
        Ok(node) => Some(node),
        Err(reason) => {
            skip(&format!("no TLS broker: {reason}"));
            None
        }
    }
}

/// A pipeline whose services reach the TLS node with `url` and the TLS variables `env`.
async fn tls_pipeline(test: &str, url: &str, env: &[(&str, String)]) -> Pipeline {
    let broker = common::broker().await.expect("AMQP_URL is set");
    let mut pipeline = Pipeline::new(&broker, test);
    pipeline.url = url.to_owned();
    for (key, value) in env {
        pipeline.set_env(key, value);
    }
    pipeline
}

/// Everything every service of `pipeline` wrote on stderr.
fn all_output(pipeline: &Pipeline) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(pipeline.log_dir())
        .expect("log dir")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "stderr") {
            text += &std::fs::read_to_string(entry.path()).unwrap_or_default();
        }
    }
    text
}

/// Stops the pipeline's services and deletes its queues on the TLS node (the pipeline's own
/// clean-up connects without the test CA). Services still running would declare the
/// queues again.
async fn delete_queues(node: &TlsNode, pipeline: &mut Pipeline) {
    for service in ["features", "model", "metric"] {
        pipeline.kill(service);
    }
    let read = |name: &str| std::fs::read(node.certs.join(name)).expect("cert");
    let config = OwnedTLSConfig {
        identity: Some(OwnedIdentity::PKCS8 {
            pem: read("client.pem"),
            key: read("client.key"),
        }),
        cert_chain: Some(String::from_utf8(read("ca.pem")).expect("PEM")),
    };
    let connection = Connection::connect_with_config(
        &node.url("127.0.0.1"),
        ConnectionProperties::default(),
        config,
        lapin::runtime::default_runtime().expect("runtime"),
    )
    .await
    .expect("connect to the TLS node");
    let channel = connection.create_channel().await.expect("channel");
    for queue in pipeline.queues.all() {
        channel
            .queue_delete(queue.into(), Default::default())
            .await
            .expect("delete queue");
    }
    let _ = connection.close(200, "test done".into()).await;
}

/// Streams `items` through model and metric (features with `--count`), checks that every
/// confirmed item became exactly one row, draws the chart, and that no secret was printed.
async fn stream_exactly_once(node: &TlsNode, pipeline: &mut Pipeline, items: usize) {
    pipeline.start_stream(items);
    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());
    assert_exactly_the_confirmed_items(pipeline, items).await;
    let plot = pipeline.run("plot", &["plot", "--once"], MINUTE).await;
    assert!(plot.success(), "plot: {plot}\n{}", pipeline.logs());
    node.assert_no_secret(&all_output(pipeline));
}

#[tokio::test]
async fn the_four_services_move_items_over_amqps_with_client_certificates_exactly_once() {
    let Some(node) = node() else { return };
    let url = node.url("127.0.0.1");
    let mut pipeline = tls_pipeline("tls.pipeline", &url, &node.env("ca", "client")).await;
    stream_exactly_once(node, &mut pipeline, 500).await;
    let text = all_output(&pipeline);
    assert!(
        text.contains("connected to the broker") && !text.contains("TLS key file"),
        "{text}"
    );
    delete_queues(node, &mut pipeline).await;
}

#[tokio::test]
async fn external_auth_logs_in_with_the_certificate_alone() {
    let Some(node) = node() else { return };
    // No user, no password: the node has no guest, so only EXTERNAL can let it in.
    let url = format!("amqps://127.0.0.1:{PORT}/%2f?auth_mechanism=external");
    let env = node.env("ca", "client");
    let mut pipeline = tls_pipeline("tls.external", &url, &env).await;
    stream_exactly_once(node, &mut pipeline, 200).await;
    delete_queues(node, &mut pipeline).await;

    // The same URL without EXTERNAL logs in as guest, whom the node refuses.
    let plain = format!("amqps://127.0.0.1:{PORT}/%2f");
    let line = assert_fails_at_once(node, &plain, &env, &["refused user `guest`"]);
    assert!(line.contains("ACCESS_REFUSED"), "{line}");
    // A certificate the broker trusts, for a user it does not have: refused, and said so.
    let stranger = node.env("ca", "stranger");
    assert_fails_at_once(
        node,
        &url,
        &stranger,
        &[
            "refused user `<the subject of",
            &stranger[1].1,
            "(EXTERNAL)",
        ],
    );
}

/// Runs `nnmon model` as a user would (`RUST_LOG` unset) against `url` with the TLS
/// variables `env`: it must exit 1 within seconds, with one ERROR line holding every one
/// of `says`, and print neither the password nor a key. Returns that line.
fn assert_fails_at_once(
    node: &TlsNode,
    url: &str,
    env: &[(&str, String)],
    says: &[&str],
) -> String {
    let (status, elapsed, text) = run_model(url, env);
    assert_eq!(status.code(), Some(1), "must exit 1 at once:\n{text}");
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?}:\n{text}"
    );
    assert!(
        !text.contains("retrying"),
        "a certificate problem is permanent:\n{text}"
    );
    node.assert_no_secret(&text);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(errors.len(), 1, "one clear line:\n{text}");
    for needle in says {
        assert!(
            errors[0].contains(needle),
            "`{needle}` missing from:\n{text}"
        );
    }
    eprintln!("{}: {}", url.replace(PASSWORD, "***"), errors[0]);
    errors[0].to_owned()
}

/// Runs `nnmon model` with a 30 s limit; returns how it exited, how long it took and what
/// it printed.
fn run_model(url: &str, env: &[(&str, String)]) -> (ExitStatus, Duration, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("tls.refused.{}.", uuid::Uuid::now_v7().simple());
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["model", "--queue-prefix", &prefix])
        .env("AMQP_URL", url)
        .env("NNMON_LOG_DIR", dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("NNMON_TLS_CA_FILE")
        .env_remove("NNMON_TLS_CERT_FILE")
        .env_remove("NNMON_TLS_KEY_FILE")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nnmon");
    let output = wait_output(output, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status, started.elapsed(), text)
}

/// Waits for `child` to finish, killing it past `timeout`.
fn wait_output(mut child: Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_exits_at_once() {
    let Some(node) = node() else { return };
    let other_ca = node.cert("other-ca.pem");
    let mut env = node.env("ca", "client").to_vec();
    env[0].1 = other_ca.clone();
    assert_fails_at_once(
        node,
        &node.url("127.0.0.1"),
        &env,
        &["not signed by a CA in", &other_ca, "127.0.0.1:5691"],
    );
}

#[tokio::test]
async fn without_a_ca_file_the_system_roots_refuse_the_private_ca_at_once() {
    let Some(node) = node() else { return };
    let env = node.env("ca", "client");
    let (status, elapsed, text) = run_model(&node.url("127.0.0.1"), &env[1..]);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(elapsed < Duration::from_secs(10), "{text}");
    node.assert_no_secret(&text);
    // The platform verifier's own line is off by default, like the AMQP client's: one line.
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    let ours: Vec<&str> = errors
        .iter()
        .copied()
        .filter(|l| l.contains(" ERROR nnmon:"))
        .collect();
    assert_eq!((errors.len(), ours.len()), (1, 1), "{text}");
    assert!(
        ours[0].contains("not signed by a CA the system trusts")
            && ours[0].contains("--tls-ca-file"),
        "{text}"
    );
    eprintln!("{}", ours[0]);
}

/// An `openssl s_server` presenting `cert`/`key` on a free port, killed when dropped: one
/// RabbitMQ node presents one certificate, and a broker's expired certificate is refused by
/// the client before any AMQP is spoken.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(cert: &str, key: &str) -> Self {
        let port = common::free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", cert, "-key", key])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_expired_server_certificate_exits_at_once() {
    let Some(node) = node() else { return };
    let server = TlsServer::start(&node.cert("expired.pem"), &node.cert("expired.key"));
    let url = format!("amqps://nnmon-tls:{PASSWORD}@127.0.0.1:{}/%2f", server.port);
    assert_fails_at_once(
        node,
        &url,
        &node.env("ca", "client"),
        &[
            "the broker's TLS certificate",
            "expired on 2020-01-02 00:00:00 UTC",
        ],
    );
}

#[tokio::test]
async fn a_host_name_the_server_certificate_does_not_name_exits_at_once() {
    let Some(node) = node() else { return };
    // The node listens on 127.0.0.2 too; its certificate names 127.0.0.1 and localhost.
    assert_fails_at_once(
        node,
        &node.url("127.0.0.2"),
        &node.env("ca", "client"),
        &["not valid for `127.0.0.2`", "it names 127.0.0.1, localhost"],
    );
}

#[tokio::test]
async fn a_missing_client_certificate_exits_at_once() {
    let Some(node) = node() else { return };
    let env = node.env("ca", "client");
    assert_fails_at_once(
        node,
        &node.url("127.0.0.1"),
        &env[..1],
        &[
            "requires a client certificate",
            "--tls-cert-file",
            "CertificateRequired",
        ],
    );
}

#[tokio::test]
async fn a_client_certificate_the_broker_does_not_trust_exits_at_once() {
    let Some(node) = node() else { return };
    let env = node.env("ca", "other-client");
    assert_fails_at_once(
        node,
        &node.url("127.0.0.1"),
        &env,
        &["rejected the client certificate", &env[1].1, "UnknownCA"],
    );
}

#[tokio::test]
async fn unusable_certificate_or_key_files_exit_before_any_connection() {
    let Some(node) = node() else { return };
    // A listener nobody else knows: the service must not even connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("address").port();
    let url = format!("amqps://nnmon-tls:{PASSWORD}@127.0.0.1:{port}/%2f");
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    let (missing_key, missing_cert, missing_ca) = (
        missing("missing-client.key"),
        missing("missing-client.pem"),
        missing("missing-ca.pem"),
    );
    let not_a_key = dir.path().join("not-a-key.key");
    std::fs::write(&not_a_key, "just some text\n").expect("write");
    let not_a_key = not_a_key.to_str().expect("utf-8").to_owned();
    let good = node.env("ca", "client");
    let with = |index: usize, path: &str| {
        let mut env = good.to_vec();
        env[index].1 = path.to_owned();
        env
    };
    let other_key = node.cert("other-client.key");
    let cases = [
        (
            with(2, &missing_key),
            vec![
                "cannot read the TLS key file",
                missing_key.as_str(),
                "No such file",
            ],
        ),
        (
            with(1, &missing_cert),
            vec![
                "cannot read the TLS client certificate file",
                missing_cert.as_str(),
            ],
        ),
        (
            with(0, &missing_ca),
            vec!["cannot read the TLS CA file", missing_ca.as_str()],
        ),
        (
            with(2, &not_a_key),
            vec!["no PEM private key", not_a_key.as_str()],
        ),
        (
            with(1, &not_a_key),
            vec![
                "no PEM certificate in the TLS client certificate file",
                not_a_key.as_str(),
            ],
        ),
        (
            with(2, &other_key),
            vec![
                "does not hold the key of the certificate",
                other_key.as_str(),
                good[1].1.as_str(),
            ],
        ),
    ];
    for (env, says) in &cases {
        assert_fails_at_once(node, &url, env, says);
    }
    assert!(
        listener
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a service connected although its TLS files were unusable"
    );
}

#[tokio::test]
async fn a_key_file_others_can_read_is_warned_about_once() {
    use std::os::unix::fs::PermissionsExt;
    let Some(node) = node() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("client.key");
    std::fs::copy(node.certs.join("client.key"), &key).expect("copy");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut env = node.env("ca", "client").to_vec();
    env[2].1 = key.to_str().expect("utf-8").to_owned();
    let url = node.url("127.0.0.1");
    let mut pipeline = tls_pipeline("tls.keymode", &url, &env).await;
    // A readable key is a warning, not an error: the stream goes through.
    stream_exactly_once(node, &mut pipeline, 50).await;
    for service in ["features", "model", "metric"] {
        let path = pipeline.log_dir().join(format!("{service}.stderr"));
        let text = std::fs::read_to_string(path).expect("stderr");
        let warnings: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains("TLS key file"))
            .collect();
        assert_eq!(warnings.len(), 1, "{service}:\n{text}");
        assert!(
            warnings[0].contains(&env[2].1) && warnings[0].contains("mode=644"),
            "{service}:\n{text}"
        );
    }
    delete_queues(node, &mut pipeline).await;
}

#[test]
fn contradictory_tls_settings_are_usage_errors() {
    let nnmon = |url: &str, args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
            .arg("model")
            .args(args)
            .env("AMQP_URL", url)
            .env_remove("NNMON_TLS_CA_FILE")
            .env_remove("NNMON_TLS_CERT_FILE")
            .env_remove("NNMON_TLS_KEY_FILE")
            .output()
            .expect("run nnmon");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
        stderr
    };
    let tls = "amqps://u:s3cret@127.0.0.1:1/%2f";
    let text = nnmon(
        "amqp://u:s3cret@127.0.0.1:1/%2f",
        &["--tls-ca-file", "ca.pem"],
    );
    assert!(text.contains("need an amqps:// URL"), "{text}");
    let text = nnmon(tls, &["--tls-cert-file", "client.pem"]);
    assert!(text.contains("--tls-key-file"), "{text}");
    let text = nnmon(tls, &["--tls-key-file", "client.key"]);
    assert!(text.contains("--tls-cert-file"), "{text}");
    let text = nnmon(&format!("{tls}?auth_mechanism=external"), &[]);
    assert!(
        text.contains("auth_mechanism=external") && text.contains("--tls-cert-file"),
        "{text}"
    );
}

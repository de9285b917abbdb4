//! The command line as a user meets it: flags, start-up, logging, signals, and the broker
//! refusing a user (those few tests use the broker of the end-to-end tests).

mod common;

use common::procfs::{processes, runs, stat_fields};
use common::{Pipeline, broker, host_rabbitmqctl, skip};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn nnmon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(args)
        .env_remove("AMQP_URL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run nnmon")
}

/// Runs `nnmon <args>` and asserts that it succeeded.
fn nnmon_succeeds(args: &[&std::ffi::OsStr]) {
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(args)
        .output()
        .expect("run nnmon");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn bad_flags_exit_with_code_2_and_say_why() {
    for (args, says) in [
        (&["features", "--delay=-1"][..], "--delay"),
        (&["features", "--count", "lots"], "--count"),
        (
            &["model", "--amqp-url", "http://user:hunter2@host/"],
            "--amqp-url",
        ),
        (&["plot", "--interval", "soon"], "--interval"),
        (&["serve"], "serve"),
    ] {
        let output = nnmon(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    }
}

#[test]
fn env_vars_are_flag_twins() {
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["features"])
        .env("NNMON_DELAY", "-5")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn metric_refuses_a_log_with_another_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("metric_log.csv");
    std::fs::write(&log, "id,y_true,y_pred,absolute_error\n1,2,3,1\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["metric", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"])
        .env("NNMON_LOG_DIR", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("metric_log.csv")
            && stderr.contains("id,y_true,y_pred,absolute_error,latency_us")
            && stderr.contains("`id,y_true,y_pred,absolute_error`"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("read"),
        "id,y_true,y_pred,absolute_error\n1,2,3,1\n",
        "the file must be left alone"
    );
}

#[test]
fn train_writes_the_shipped_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output_path = dir.path().join("ols.json");
    nnmon_succeeds(&[
        "train".as_ref(),
        "--output".as_ref(),
        output_path.as_os_str(),
    ]);
    let written = nnmon_model::LinearModel::load(&output_path).expect("valid artifact");
    let shipped = nnmon_model::LinearModel::default_ols().expect("shipped artifact");
    // Bit-identical results are not promised across optimisation levels; 1e-9 relative is.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(
        close(written.intercept, shipped.intercept),
        "models/ols.json is out of date: run `nnmon train`"
    );
    for (a, b) in written.coefficients.iter().zip(shipped.coefficients) {
        assert!(close(*a, b), "models/ols.json is out of date: {a} vs {b}");
    }
}

#[test]
fn plot_once_draws_a_chart_even_before_any_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    nnmon_succeeds(&[
        "plot".as_ref(),
        "--once".as_ref(),
        "--log-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    let png = std::fs::read(dir.path().join("error_distribution.png")).expect("chart");
    assert!(png.starts_with(b"\x89PNG"));
}

/// Where no broker listens: services retry it forever.
const NO_BROKER: &str = "amqp://guest:secret@127.0.0.1:1/%2f";

/// Starts `nnmon <args>` as a user would (`RUST_LOG` unset), its stdout and stderr to
/// `nnmon.out` in `dir`.
fn spawn_nnmon(args: &[&str], dir: &Path) -> Child {
    let out = std::fs::File::create(dir.join("nnmon.out")).expect("output file");
    Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(args)
        .env("NNMON_LOG_DIR", dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .spawn()
        .expect("spawn")
}

/// Starts `nnmon metric` against a port where no broker listens.
fn spawn_metric_without_broker(log_dir: &Path) -> Child {
    spawn_nnmon(&["metric", "--amqp-url", NO_BROKER], log_dir)
}

/// What `nnmon` wrote to `nnmon.out` in `dir` so far.
fn output(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("nnmon.out")).unwrap_or_default()
}

/// Waits until the output in `dir` shows `needle`; returns the whole text.
fn wait_for_output(child: &mut Child, dir: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = output(dir);
        if text.contains(needle) {
            return text;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("never logged `{needle}`:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `timeout` for `child` to exit; kills it and returns `None` past that.
fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (`TERM`, `INT`) to process `pid`, as `kill` does.
fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success());
}

#[test]
fn a_missing_broker_is_retried_and_said_so_without_leaking_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_metric_without_broker(dir.path());
    let text = wait_for_output(&mut child, dir.path(), "broker not reachable yet; retrying");
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "metric must keep retrying:\n{text}"
    );
    assert!(!text.contains("secret"), "password leaked:\n{text}");
    send("TERM", child.id());
    assert_eq!(
        child.wait().expect("exit").code(),
        Some(0),
        "SIGTERM while connecting exits 0"
    );
}

#[test]
fn a_torn_last_line_is_cut_off_on_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("metric_log.csv");
    let header = "id,y_true,y_pred,absolute_error,latency_us\n";
    std::fs::write(&log, format!("{header}a,1,2,1,\nb,3,4")).expect("write");
    let mut child = spawn_metric_without_broker(dir.path());
    wait_for_output(&mut child, dir.path(), "cut off a torn last line");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        std::fs::read_to_string(&log).expect("read"),
        format!("{header}a,1,2,1,\n")
    );
}

#[test]
fn default_output_is_info_and_above() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_nnmon(&["model", "--amqp-url", NO_BROKER], dir.path());
    // The second attempt: the AMQP client has had its say about the first one.
    let text = wait_for_output(&mut child, dir.path(), "attempt=2");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !text.contains(" DEBUG ") && !text.contains(" TRACE "),
        "below info with RUST_LOG unset:\n{text}"
    );
    assert!(
        text.contains("model loaded") && text.contains("source=built-in OLS"),
        "the model must say where its coefficients come from:\n{text}"
    );
}

#[test]
fn sigterm_stops_a_service_whose_stderr_reader_is_gone() {
    // `just up`'s sed dies first on a terminal's Ctrl-C: every later log line hits EPIPE.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["model", "--amqp-url", NO_BROKER])
        .env("NNMON_LOG_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stderr.take());
    // Long enough for the start-up line and a few "not reachable yet" warnings to fail.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "a failed log write must not stop the service: {:?}",
        child.try_wait()
    );
    send("TERM", child.id());
    let status = exit_within(&mut child, Duration::from_secs(5))
        .expect("the service must stop within 5 s of SIGTERM, its stderr closed or not");
    assert_eq!(status.code(), Some(0));
}

/// The parts of an `amqp://user:password@host:port/vhost` URL that tests change.
#[derive(Clone)]
struct AmqpUrl {
    scheme: String,
    user: String,
    password: String,
    authority: String,
    /// `/` and the vhost as written (`/%2f`), or empty.
    path: String,
}

impl AmqpUrl {
    fn parse(url: &str) -> Self {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (user_info, rest) = rest.rsplit_once('@').expect("user info in AMQP_URL");
        let (user, password) = user_info.split_once(':').expect("a password in AMQP_URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        Self {
            scheme: scheme.into(),
            user: user.into(),
            password: password.into(),
            authority: authority.into(),
            path: path.into(),
        }
    }
}

impl std::fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            scheme,
            user,
            password,
            authority,
            path,
        } = self;
        write!(f, "{scheme}://{user}:{password}@{authority}{path}")
    }
}

/// Runs `nnmon model` against `url`, which the broker must refuse: it has to exit 1 within
/// seconds with one ERROR line naming the user and `vhost`, never the password, and no
/// line from the AMQP client. Returns that line.
fn assert_refused(url: &AmqpUrl, vhost: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("cli.refused.{}.", uuid::Uuid::now_v7().simple());
    let started = Instant::now();
    let mut child = spawn_nnmon(
        &[
            "model",
            "--amqp-url",
            &url.to_string(),
            "--queue-prefix",
            &prefix,
        ],
        dir.path(),
    );
    let status = exit_within(&mut child, Duration::from_secs(15));
    let text = output(dir.path());
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "a refusal is permanent: exit 1 at once\n{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{text}");
    // guest's password is its user name: then only the URL's form of it can be looked for.
    let secret = if url.user.contains(&url.password) {
        format!(":{}@", url.password)
    } else {
        url.password.clone()
    };
    assert!(!text.contains(&secret), "password leaked:\n{text}");
    // No line logged by the AMQP client itself (its targets are its crate's modules; the
    // connection line names the client as a value, `client="lapin"`, which is fine).
    let from_client = |line: &str| {
        [" lapin:", " amq_protocol", " amqprs:"]
            .iter()
            .any(|target| line.contains(target))
    };
    assert!(
        !text.lines().any(from_client) && !text.contains("retrying"),
        "{text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one clear line:\n{text}");
    let line = errors[0];
    assert!(
        line.contains(&format!("user `{}`", url.user))
            && line.contains(&format!("vhost `{vhost}`")),
        "{line}"
    );
    line.to_owned()
}

#[tokio::test]
async fn a_wrong_password_exits_at_once_naming_user_and_vhost() {
    let Some(broker) = broker().await else { return };
    let mut url = AmqpUrl::parse(&broker.url);
    url.password = "not-the-password-0451".into();
    let line = assert_refused(&url, "/");
    assert!(line.contains("ACCESS_REFUSED"), "{line}");
}

#[tokio::test]
async fn a_missing_vhost_exits_at_once_naming_it() {
    let Some(broker) = broker().await else { return };
    let mut url = AmqpUrl::parse(&broker.url);
    url.path = "/nnmon-no-such-vhost".into();
    assert_refused(&url, "nnmon-no-such-vhost");
}

/// Deletes the broker user `name` when dropped. (Through `host_rabbitmqctl`, as Drop
/// cannot await: a broker in a container started by the tests goes away with its users.)
struct BrokerUser(String);

impl Drop for BrokerUser {
    fn drop(&mut self) {
        host_rabbitmqctl(&["delete_user", &self.0]);
    }
}

#[tokio::test]
async fn missing_permissions_exit_at_once_naming_user_and_vhost() {
    let Some(broker) = broker().await else { return };
    let name = format!("nnmon-cli-{}", uuid::Uuid::now_v7().simple());
    let password = "nnmon-cli-pw-0451";
    if !broker.rabbitmqctl(&["add_user", &name, password]).await {
        skip("rabbitmqctl cannot reach the broker, so no user can be made for the test");
        return;
    }
    let _user = BrokerUser(name.clone());
    // Let in to the vhost, but allowed to configure, write and read nothing.
    assert!(
        broker
            .rabbitmqctl(&["set_permissions", "-p", "/", &name, "^$", "^$", "^$"])
            .await
    );
    let mut url = AmqpUrl::parse(&broker.url);
    url.user = name.clone();
    url.password = password.into();
    url.path = "/%2f".into();
    let line = assert_refused(&url, "/");
    assert!(line.contains("declaring the pipeline's queues"), "{line}");
}

/// A TCP relay to the broker that can stop passing bytes on, leaving both connections
/// open: from the client's side, a broker that hangs.
struct Relay {
    address: String,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    fn to(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let frozen = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let flag = Arc::clone(&frozen);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(client_out), Ok(server_out)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                for (from, to) in [(client, server_out), (server, client_out)] {
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || pump(from, to, &flag));
                }
            }
        });
        Self { address, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`; once `frozen`, holds what it read (for the rest of the test).
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer) {
        while frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[tokio::test]
async fn a_second_signal_stops_a_service_stuck_in_shutdown_at_once() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "secondsignal");
    let mut url = AmqpUrl::parse(&broker.url);
    let relay = Relay::to(&url.authority);
    url.authority = relay.address.clone();
    let ids = pipeline.confirmed_ids_path();
    pipeline.start(
        "features",
        &[
            "features",
            "--amqp-url",
            &url.to_string(),
            "--delay",
            "0.005",
            "--confirmed-ids",
            ids.to_str().expect("utf-8 path"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while pipeline.confirmed_ids().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "no confirms\n{}",
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The broker hangs with messages in flight: their confirms never come.
    relay.freeze();
    tokio::time::sleep(Duration::from_millis(500)).await;
    send("TERM", pipeline.pid("features"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        pipeline.is_running("features"),
        "the first signal waits for the confirms\n{}",
        pipeline.logs()
    );
    let status = pipeline
        .stop("features", "TERM", Duration::from_secs(2))
        .await;
    assert_eq!(status.code(), Some(143), "{}", pipeline.logs());
}

/// Processes whose parent is `parent` and whose program is nnmon's binary: the services a
/// script started.
fn nnmon_children(parent: u32) -> Vec<u32> {
    let nnmon = Path::new(env!("CARGO_BIN_EXE_nnmon"));
    processes()
        .into_iter()
        .filter(|(pid, folder)| {
            let ppid = stat_fields(*pid)
                .and_then(|fields| fields.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()));
            ppid == Some(parent)
                && std::fs::read_link(folder.join("exe")).is_ok_and(|exe| exe == nnmon)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// SIGKILLs the processes it holds when dropped, so that a failed test leaves none behind.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|pid| runs(**pid)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_just_up_whose_output_reader_died_first() {
    // `just up 2>&1 | tee up.log`, then Ctrl-C: the terminal signals the whole foreground
    // group, and `tee` is gone before the script has stopped the services.
    let Some(broker) = broker().await else { return };
    let pipeline = Pipeline::new(&broker, "up-tee");
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let mut up = pipeline.wired(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/up"));
    up.env("NNMON_BIN", env!("CARGO_BIN_EXE_nnmon"))
        .env(
            "NNMON_HTTP_ADDR",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("NNMON_DELAY", "0.01")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("pipe"))
        .stderr(writer)
        // A group of its own, as a terminal's foreground job is.
        .process_group(0);
    let mut script = up.spawn().expect("scripts/up");
    drop(up);
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut chunk = [0; 4096];
    while !String::from_utf8_lossy(&output).contains("nnmon: up:") {
        assert!(
            Instant::now() < deadline,
            "never up:\n{}",
            String::from_utf8_lossy(&output)
        );
        let read = reader.read(&mut chunk).expect("read the script's output");
        assert!(
            read > 0,
            "the script ended:\n{}",
            String::from_utf8_lossy(&output)
        );
        output.extend_from_slice(&chunk[..read]);
    }
    let services = KillOnDrop(nnmon_children(script.id()));
    assert_eq!(
        services.0.len(),
        4,
        "four services:\n{}",
        String::from_utf8_lossy(&output)
    );
    drop(reader);
    let group = format!("-{}", script.id());
    let sent = Command::new("kill").args(["-INT", "--", &group]).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -INT -- {group}");
    let status = exit_within(&mut script, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    while services.0.iter().any(|pid| runs(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<_> = services.0.iter().filter(|pid| runs(**pid)).collect();
    assert!(
        left.is_empty(),
        "services still running after Ctrl-C: {left:?}"
    );
    assert!(
        status.is_some(),
        "scripts/up did not exit within 60 s of Ctrl-C"
    );
    assert!(
        !pipeline.rows().is_empty(),
        "the pipeline ran: rows were logged"
    );
}

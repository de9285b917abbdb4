//! Shared harness of the end-to-end tests: a real broker, the real `nnmon` binary as
//! separate processes, one queue prefix and log folder per test, queues deleted afterwards.
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod procfs;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use nnmon_proto::{QueueNames, ShardNames};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use testcontainers_modules::rabbitmq::RabbitMq;
use testcontainers_modules::testcontainers::core::{CmdWaitFor, ExecCommand};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

/// A broker for one test: `AMQP_URL` when set, else a RabbitMQ container of its own.
pub struct TestBroker {
    pub url: String,
    _container: Option<ContainerAsync<RabbitMq>>,
}

/// Says why a test is skipped; under CI (`CI` set, as GitHub Actions does) a skipped test
/// fails instead, so that a guarantee is never reported green without being tested.
pub fn skip(reason: &str) {
    if std::env::var_os("CI").is_some_and(|ci| !ci.is_empty()) {
        panic!("CI is set, so this test must run, but it would be skipped: {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// The broker to test against, or `None` when broker tests are switched off
/// (`NNMON_SKIP_BROKER_TESTS=1`, as in the Nix sandbox, which has no broker).
///
/// With `AMQP_URL` unset, starts a RabbitMQ container for this test (the image
/// `rabbitmq:3.13-management`; testcontainers-modules' own default tag is end-of-life),
/// removed when the [`TestBroker`] is dropped. No Docker engine fails the test.
pub async fn broker() -> Option<TestBroker> {
    if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        skip("NNMON_SKIP_BROKER_TESTS=1");
        return None;
    }
    if let Ok(url) = std::env::var("AMQP_URL") {
        return Some(TestBroker {
            url,
            _container: None,
        });
    }
    let container = RabbitMq::default()
        .with_tag("3.13-management")
        .start()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "AMQP_URL is unset and no RabbitMQ container could be started \
                 (is Docker running, with the image rabbitmq:3.13-management?): {e}"
            )
        });
    let port = container
        .get_host_port_ipv4(5672)
        .await
        .expect("mapped AMQP port");
    Some(TestBroker {
        url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        _container: Some(container),
    })
}

impl TestBroker {
    /// A broker already running at `url` (one URL, or a cluster's comma-separated list).
    pub fn at(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            _container: None,
        }
    }

    /// Whether this broker is a container started for the test (removed with it).
    pub fn in_container(&self) -> bool {
        self._container.is_some()
    }

    /// Runs `rabbitmqctl` against this broker: inside its container (`docker exec`, whose
    /// exit code is read), or as [`host_rabbitmqctl`] does. `true` only when it ran and
    /// exited 0; otherwise says why on stderr and returns `false`.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> bool {
        let Some(container) = &self._container else {
            return host_rabbitmqctl(args);
        };
        exec_in(container, "rabbitmqctl", args).await
    }

    /// Enables the consistent-hash exchange (`--shards N`) in this test's container. A
    /// broker named by `AMQP_URL` must have it already (`scripts/ensure-broker` enables it
    /// on a local one).
    pub async fn enable_consistent_hash(&self) {
        if let Some(container) = &self._container {
            let plugin = ["enable", "rabbitmq_consistent_hash_exchange"];
            assert!(
                exec_in(container, "rabbitmq-plugins", &plugin).await,
                "enabling the consistent-hash exchange in the container"
            );
        }
    }
}

/// Runs `program args` in `container`; `true` only when it exited 0 (else says why).
async fn exec_in(container: &ContainerAsync<RabbitMq>, program: &str, args: &[&str]) -> bool {
    let command = ExecCommand::new(std::iter::once(program).chain(args.iter().copied()))
        .with_cmd_ready_condition(CmdWaitFor::exit());
    let mut exec = match container.exec(command).await {
        Ok(exec) => exec,
        Err(e) => {
            eprintln!(
                "{program} {}: exec in the container failed: {e}",
                args.join(" ")
            );
            return false;
        }
    };
    match exec.exit_code().await {
        Ok(Some(0)) => true,
        code => {
            let stdout = exec.stdout_to_vec().await.unwrap_or_default();
            let stderr = exec.stderr_to_vec().await.unwrap_or_default();
            eprintln!(
                "{program} {} in the container: exit code {code:?}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
            false
        }
    }
}

/// Runs `rabbitmqctl` for the broker at `AMQP_URL`: the command `NNMON_RABBITMQCTL` names
/// (split on spaces, e.g. `docker exec <container> rabbitmqctl` for a broker in a
/// container, as in CI), or `rabbitmqctl` on this machine. `false` when it failed.
pub fn host_rabbitmqctl(args: &[&str]) -> bool {
    let configured = std::env::var("NNMON_RABBITMQCTL").unwrap_or_default();
    let mut words = configured.split_whitespace();
    let program = words.next().unwrap_or("rabbitmqctl");
    Command::new(program)
        .args(words)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub const MINUTE: Duration = Duration::from_secs(60);

/// Runs `scripts/<name> <args>` of this checkout (a broker of its own beside the system
/// one: the TLS node, the cluster), returning its stdout, or why it failed.
pub fn run_script(name: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let output = Command::new(&script)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}):\n{stdout}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout)
}

/// A TCP port nothing listens on right now, for a service's HTTP endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Streams `items` at a steady rate with model and metric running, calls `fault` once a
/// quarter of the rows are in, then checks that the logged IDs are exactly the confirmed ones.
pub async fn stream_through(
    pipeline: &mut Pipeline,
    items: usize,
    fault: impl AsyncFnOnce(&mut Pipeline),
) {
    pipeline.start_stream(items);
    pipeline.wait_for_rows(items / 4, MINUTE).await;
    fault(pipeline).await;
    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());
    assert_exactly_the_confirmed_items(pipeline, items).await;
}

pub async fn assert_exactly_the_confirmed_items(pipeline: &mut Pipeline, items: usize) {
    let confirmed: HashSet<String> = pipeline.confirmed_ids().into_iter().collect();
    assert_eq!(
        confirmed.len(),
        items,
        "features confirmed {} distinct items",
        confirmed.len()
    );
    pipeline.wait_for_rows(items, MINUTE).await;
    // Duplicates would arrive after the last new row: give them time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = pipeline.rows();
    let logged: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        rows.len(),
        logged.len(),
        "a row was written twice\n{}",
        pipeline.logs()
    );
    assert_eq!(logged, confirmed, "logged IDs differ from confirmed IDs");
    for row in &rows {
        assert_eq!(row.absolute_error, (row.y_true - row.y_pred).abs());
    }
}

/// One CSV row of `metric_log.csv`.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub y_true: f64,
    pub y_pred: f64,
    pub absolute_error: f64,
    pub latency_us: Option<u64>,
}

/// A pipeline of `nnmon` processes with its own queues and log folder.
pub struct Pipeline {
    pub url: String,
    pub prefix: String,
    pub queues: QueueNames,
    /// The sharded topology's names, once [`use_shards`](Self::use_shards) asked for one.
    pub shards: Option<ShardNames>,
    log_dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    /// Extra environment of every service started from now on.
    env: Vec<(String, String)>,
}

impl Pipeline {
    pub fn new(broker: &TestBroker, test: &str) -> Self {
        let prefix = format!("e2e.{test}.{}.", uuid::Uuid::now_v7().simple());
        Self {
            url: broker.url.clone(),
            queues: QueueNames::with_prefix(&prefix),
            shards: None,
            prefix,
            log_dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets `key=value` in the environment of every service started from now on (a flag's
    /// environment twin, say).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Runs every service started from now on with `--shards count` (`NNMON_SHARDS`); the
    /// sharded queues and exchanges are deleted with the pipeline.
    pub fn use_shards(&mut self, count: u16) {
        self.set_env("NNMON_SHARDS", &count.to_string());
        self.shards = Some(ShardNames::new(&self.prefix, count));
    }

    /// `metric_log.csv` of metric shard `shard` (in its folder `<log-dir>/shard-I`).
    pub fn shard_log(&self, shard: u16) -> PathBuf {
        self.log_dir()
            .join(format!("shard-{shard}"))
            .join("metric_log.csv")
    }

    pub fn log_dir(&self) -> &Path {
        self.log_dir.path()
    }

    /// `nnmon <args>` wired to this pipeline's broker, prefix and log folder, its stderr
    /// appended to `<log-dir>/<name>.stderr`.
    pub fn command(&self, name: &str, args: &[&str]) -> Command {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir().join(format!("{name}.stderr")))
            .expect("stderr file");
        let mut command = self.wired(env!("CARGO_BIN_EXE_nnmon"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        command
    }

    /// `program` with this pipeline's broker, prefix and log folder in its environment
    /// (the services' flags' twins), as a service or a script that starts services sees them.
    pub fn wired(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("AMQP_URL", &self.url)
            .env("NNMON_QUEUE_PREFIX", &self.prefix)
            .env("NNMON_LOG_DIR", self.log_dir())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts model and metric, then features sending `items` at a steady rate and
    /// writing the IDs the broker confirmed to [`confirmed_ids_path`](Self::confirmed_ids_path).
    pub fn start_stream(&mut self, items: usize) {
        self.start("model", &["model"]);
        self.start("metric", &["metric"]);
        self.start_features(items, "0.004");
    }

    /// Starts features sending `items`, `delay` seconds apart, writing the IDs the broker
    /// confirmed to [`confirmed_ids_path`](Self::confirmed_ids_path).
    pub fn start_features(&mut self, items: usize, delay: &str) {
        let ids = self.confirmed_ids_path();
        let count = items.to_string();
        self.start(
            "features",
            &[
                "features",
                "--delay",
                delay,
                "--count",
                &count,
                "--confirmed-ids",
                ids.to_str().expect("utf-8 path"),
            ],
        );
    }

    /// Starts a long-running service under `name`.
    pub fn start(&mut self, name: &str, args: &[&str]) {
        let child = self.command(name, args).spawn().expect("spawn nnmon");
        self.children.push((name.to_owned(), child));
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .expect("known service")
    }

    /// Whether the service `name` is still running.
    pub fn is_running(&mut self, name: &str) -> bool {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("known service");
        matches!(child.try_wait(), Ok(None))
    }

    /// SIGKILLs `name` and forgets it.
    pub fn kill(&mut self, name: &str) {
        if let Some(index) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Removes the service `name` from those the pipeline kills on drop, handing it over.
    fn take(&mut self, name: &str) -> Child {
        let index = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .expect("known service");
        self.children.remove(index).1
    }

    /// Sends `signal` to `name` and waits for it to exit.
    pub async fn stop(&mut self, name: &str, signal: &str, timeout: Duration) -> ExitStatus {
        let mut child = self.take(name);
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success());
        wait_exit(&mut child, timeout)
            .await
            .unwrap_or_else(|| panic!("{name} did not exit within {timeout:?}\n{}", self.logs()))
    }

    /// Waits for the service `name` to exit by itself.
    pub async fn wait(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        let mut child = self.take(name);
        match wait_exit(&mut child, timeout).await {
            Some(status) => status,
            None => {
                let _ = child.kill();
                panic!("{name} did not finish within {timeout:?}\n{}", self.logs())
            }
        }
    }

    /// Resident memory of the service `name`, in KiB.
    pub fn rss_kib(&self, name: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(name)))
            .expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The IDs `features --confirmed-ids <log-dir>/confirmed_ids.txt` wrote.
    pub fn confirmed_ids(&self) -> Vec<String> {
        std::fs::read_to_string(self.confirmed_ids_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn confirmed_ids_path(&self) -> PathBuf {
        self.log_dir().join("confirmed_ids.txt")
    }

    /// Messages ready in `queue` (nnmon-broker's passive declare, as the scenario runner
    /// counts dead letters).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let broker = self.nnmon_broker().await;
        let depth = broker.queue_depth(queue).await.expect("queue exists");
        broker.close().await;
        depth
    }

    /// Deletes `queue` as an operator would: its messages are gone, its consumers cancelled.
    pub async fn delete_queue(&self, queue: &str) {
        let broker = self.nnmon_broker().await;
        broker.delete_queue(queue).await.expect("delete the queue");
        broker.close().await;
    }

    /// A connection through nnmon-broker, whose queue helpers the tests share with the
    /// runner instead of keeping copies.
    pub async fn nnmon_broker(&self) -> nnmon_broker::Broker {
        let urls: nnmon_broker::BrokerUrls = self.url.parse().expect("a valid AMQP URL");
        let never = tokio_util::sync::CancellationToken::new();
        let connecting = nnmon_broker::Broker::connect(
            &urls,
            0,
            "nnmon-tests",
            nnmon_broker::RetryPolicy::default(),
            &never,
        );
        tokio::time::timeout(Duration::from_secs(60), connecting)
            .await
            .expect("the broker answers within 60 s")
            .expect("connect")
            .expect("not cancelled")
    }

    /// Runs `nnmon <args>` to completion, with a timeout.
    pub async fn run(&self, name: &str, args: &[&str], timeout: Duration) -> ExitStatus {
        let mut child = self.command(name, args).spawn().expect("spawn nnmon");
        match wait_exit(&mut child, timeout).await {
            Some(status) => status,
            None => {
                let _ = child.kill();
                panic!(
                    "`nnmon {}` did not finish within {timeout:?}\n{}",
                    args.join(" "),
                    self.logs()
                )
            }
        }
    }

    /// Every service's stderr, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.log_dir()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "stderr") {
                    let body = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = body.lines().rev().take(40).collect();
                    text += &format!(
                        "--- {} (last lines)\n{}\n",
                        path.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        text
    }

    pub fn metric_log(&self) -> PathBuf {
        self.log_dir().join("metric_log.csv")
    }

    /// The rows of `metric_log.csv` so far (complete lines only).
    pub fn rows(&self) -> Vec<Row> {
        rows_of(&self.metric_log())
    }

    /// Waits until `metric_log.csv` holds at least `count` rows.
    pub async fn wait_for_rows(&self, count: usize, timeout: Duration) -> Vec<Row> {
        let what = format!("{count} rows in {}", self.metric_log().display());
        self.eventually(timeout, &what, || {
            let rows = self.rows();
            (rows.len() >= count).then_some(rows)
        })
        .await
    }

    /// Polls `check` every 100 ms until it gives a value; after `timeout`, fails saying
    /// `what` was awaited, with the services' logs.
    pub async fn eventually<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {timeout:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A raw AMQP connection, for publishing like a seed service would (to the first node
    /// that answers, when the URL is a cluster's list).
    pub async fn connect(&self) -> Connection {
        connect_any(&self.url).await.expect("connect")
    }
}

/// The rows of a metric log (`metric_log.csv` or a shard's) so far (complete lines only).
pub fn rows_of(log: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    csv::Reader::from_reader(complete.as_bytes())
        .records()
        .map(|record| {
            let record = record.expect("a CSV row");
            let float = |i: usize| {
                record[i]
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad float in {record:?}"))
            };
            Row {
                id: record[0].to_owned(),
                y_true: float(1),
                y_pred: float(2),
                absolute_error: float(3),
                latency_us: record.get(4).and_then(|f| f.parse().ok()),
            }
        })
        .collect()
}

/// `plot`'s `/api/summary` at `base` (`http://host:port`), parsed; `None` while the server
/// is not answering yet (or has nothing to show yet).
pub fn api_summary(base: &str) -> Option<serde_json::Value> {
    let body = ureq::get(&format!("{base}/api/summary"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    serde_json::from_str(&body).ok()
}

/// A connection to the first broker of `urls` (one URL, or a comma-separated list) that
/// answers.
pub async fn connect_any(urls: &str) -> lapin::Result<Connection> {
    let mut last = None;
    for url in urls.split(',') {
        match Connection::connect(url, ConnectionProperties::default()).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = Some(error),
        }
    }
    Err(last.expect("at least one URL"))
}

/// Publishes `body` to `queue` on the default exchange, as the seed's pika code does.
pub async fn publish_raw(connection: &Connection, queue: &str, body: &[u8]) {
    publish_many(connection, queue, std::iter::once(body.to_vec())).await;
}

/// Publishes every body to `queue`, waiting until the broker has confirmed them all.
pub async fn publish_many(
    connection: &Connection,
    queue: &str,
    bodies: impl IntoIterator<Item = Vec<u8>>,
) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    for body in bodies {
        let properties = BasicProperties::default().with_delivery_mode(2);
        // A dropped confirm is collected by `wait_for_confirms` below.
        drop(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .expect("publish"),
        );
    }
    channel.wait_for_confirms().await.expect("confirms");
}

/// Declares `queue` the way nnmon does: durable.
pub async fn declare_durable(connection: &Connection, queue: &str) {
    let channel = connection.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .expect("declare");
}

/// Declares `queue` the way the seed does: transient.
pub async fn declare_transient(connection: &Connection, queue: &str) {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
}

async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete_queues(url: String, queues: Vec<String>, exchanges: Vec<String>) {
    let Ok(connection) = connect_any(&url).await else {
        return;
    };
    for queue in queues {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in exchanges {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test done".into()).await;
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Runs on its own thread and runtime: Drop cannot await, and may run inside a test's runtime.
        let url = self.url.clone();
        let mut queues: Vec<String> = self.queues.all().iter().map(|q| q.to_string()).collect();
        let mut exchanges = Vec::new();
        if let Some(shards) = &self.shards {
            queues.extend(shards.queues());
            exchanges = shards.exchanges();
        }
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(delete_queues(url, queues, exchanges));
            }
        })
        .join();
    }
}

//! One run of the real pipeline on a broker or cluster and a topology of nnmon's: what
//! `benches/pipeline.rs` pairs up with the bare broker's ceiling ([`ceiling`](super::ceiling))
//! on one broker, and `benches/scaling.rs` across topologies. Both are timed the same way:
//! **from the first message published to the last message handled** (see
//! `benches/pipeline.rs` for why), and both keep nnmon's guarantees.

use super::broker_process::{BrokerProcess, BrokerWork};
use super::{LineCounter, delete_queues, queue_state};
use lapin::Connection;
use lapin::options::ExchangeDeleteOptions;
use nnmon::services::metric::{METRIC_LOG, shard_dir};
use nnmon_proto::{QueueNames, ShardNames};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unconfirmed messages in flight per publisher, and prefetch per consumer: nnmon's default.
pub const WINDOW: usize = 500;
/// How long one run may take before the bench gives up.
pub const ITERATION_TIMEOUT: Duration = Duration::from_secs(180);

/// How nnmon is laid out for a run: the queues' type, how many `model` replicas share
/// `features`, how many metric shards, and the prefetch (also the confirm window).
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    /// `classic` or `quorum` (`--queue-type`).
    pub queue_type: &'static str,
    pub model_replicas: usize,
    pub shards: u16,
    pub prefetch: u16,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            queue_type: "classic",
            model_replicas: 1,
            shards: 1,
            prefetch: WINDOW as u16,
        }
    }
}

pub fn fresh_prefix(kind: &str) -> String {
    format!("bench.{kind}.{}.", uuid::Uuid::now_v7().simple())
}

/// CPU time (user + system) of process `pid` so far, in clock ticks (100 a second on
/// Linux). Still readable while the process is a zombie, i.e. until it is waited for.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at field 3, `state`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Busy CPU time of the whole machine so far, in clock ticks (everything but idle/iowait).
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else {
        return 0;
    };
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    ticks.iter().take(8).sum::<u64>() - ticks.get(3).unwrap_or(&0) - ticks.get(4).unwrap_or(&0)
}

pub const TICKS_PER_SECOND: f64 = 100.0;

/// Percentile `p` (0–100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of values (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// What the bench reads back from a metric log: when the first item was published (the
/// earliest UUIDv7 in the `id` column) and every row's `latency_us`.
fn read_log(log: &Path) -> (SystemTime, Vec<u64>) {
    let text = std::fs::read_to_string(log).expect("read the metric log");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|&c| c == name)
            .unwrap_or_else(|| panic!("no `{name}` column in {header:?}"))
    };
    let (id_at, latency_at) = (column("id"), column("latency_us"));
    let mut first_ms = u64::MAX;
    let mut latencies = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let id = uuid::Uuid::parse_str(fields[id_at]).expect("a UUIDv7 item ID");
        let (seconds, nanos) = id.get_timestamp().expect("a UUIDv7 item ID").to_unix();
        first_ms = first_ms.min(seconds * 1000 + u64::from(nanos) / 1_000_000);
        if let Some(latency) = fields.get(latency_at).and_then(|f| f.parse().ok()) {
            latencies.push(latency);
        }
    }
    assert!(first_ms < u64::MAX, "the metric log has no rows");
    (UNIX_EPOCH + Duration::from_millis(first_ms), latencies)
}

/// One run of the real pipeline.
pub struct PipelineRun {
    /// From the first item published to the last row seen in the logs.
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
    /// CPU seconds of features, the model replicas and the metric shards, and of the whole
    /// machine, from the start of `features` to the last row.
    pub cpu: [f64; 4],
    /// That window: from the start of `features` to the last row.
    pub cpu_window: Duration,
    /// The broker's CPU and disk syncs over that window, when it is local.
    pub broker: Option<BrokerWork>,
}

struct Services {
    /// The `nnmon` binary run.
    binary: PathBuf,
    log_dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Services {
    fn spawn(&mut self, name: &str, args: &[&str], url: &str, prefix: &str, topology: Topology) {
        let stderr =
            File::create(self.log_dir.path().join(format!("{name}.stderr"))).expect("stderr file");
        let child = Command::new(&self.binary)
            .args(args)
            .env("AMQP_URL", url)
            .env("NNMON_QUEUE_PREFIX", prefix)
            .env("NNMON_QUEUE_TYPE", topology.queue_type)
            .env("NNMON_SHARDS", topology.shards.to_string())
            .env("NNMON_PREFETCH", topology.prefetch.to_string())
            .env("NNMON_LOG_DIR", self.log_dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start nnmon");
        self.children.push((name.to_owned(), child));
    }

    /// The services' stderr, for failure messages.
    fn logs(&self) -> String {
        let mut all = String::new();
        for (name, _) in &self.children {
            let path = self.log_dir.path().join(format!("{name}.stderr"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            all += &format!("--- {name} (last lines)\n");
            for line in tail.into_iter().rev() {
                all += line;
                all.push('\n');
            }
        }
        all
    }

    fn fail(&mut self, why: &str) -> ! {
        let logs = self.logs();
        self.kill_all();
        panic!("{why}\n{logs}");
    }

    fn kill_all(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// CPU ticks so far of the services whose names start with `name`.
    fn ticks(&self, name: &str) -> u64 {
        self.children
            .iter()
            .filter(|(n, _)| n.starts_with(name))
            .map(|(_, child)| cpu_ticks(child.id()))
            .sum()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Deletes a run's queues and, sharded, its exchanges.
async fn delete_topology(
    connection: &Connection,
    queues: &QueueNames,
    shards: Option<&ShardNames>,
) {
    let mut names: Vec<String> = queues.all().iter().map(|q| q.to_string()).collect();
    if let Some(shards) = shards {
        names.extend(shards.queues());
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    delete_queues(connection, &names).await;
    if let Some(shards) = shards {
        let channel = connection.create_channel().await.expect("channel");
        for exchange in shards.exchanges() {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = channel.close(200, "done".into()).await;
    }
}

/// Runs the real `nnmon` binary (`binary`, e.g. [`nnmon_binary`]) with `topology` on the
/// broker(s) of `url` (one URL or a cluster's list; `connection` is to one of them) until
/// every one of `items` items is a row: `model` replicas and `metric` shards first, then
/// `features --delay 0 --count N`.
pub async fn run_pipeline(
    connection: &Connection,
    url: &str,
    items: u64,
    topology: Topology,
    binary: &Path,
) -> PipelineRun {
    let prefix = fresh_prefix("pipeline");
    let queues = QueueNames::with_prefix(&prefix);
    let shards = (topology.shards > 1).then(|| ShardNames::new(&prefix, topology.shards));
    let mut services = Services {
        binary: binary.to_owned(),
        log_dir: tempfile::tempdir().expect("tempdir"),
        children: Vec::new(),
    };
    for replica in 1..=topology.model_replicas {
        services.spawn(
            &format!("model-{replica}"),
            &["model"],
            url,
            &prefix,
            topology,
        );
    }
    let mut inputs = Vec::new();
    let mut logs = Vec::new();
    for shard in 0..topology.shards {
        let index = shard.to_string();
        services.spawn(
            &format!("metric-{shard}"),
            &["metric", "--shard", &index],
            url,
            &prefix,
            topology,
        );
        match &shards {
            Some(names) => {
                inputs.extend([names.y_true(shard), names.y_pred(shard)]);
                logs.push(shard_dir(services.log_dir.path(), shard).join(METRIC_LOG));
            }
            None => {
                inputs.extend([queues.y_true.to_string(), queues.y_pred.to_string()]);
                logs.push(services.log_dir.path().join(METRIC_LOG));
            }
        }
    }

    // Ready once every replica consumes `features` and every shard its two queues.
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let consumers = |state: Option<(u32, u32)>| state.map_or(0, |(_, c)| c) as usize;
        let mut ready =
            consumers(queue_state(connection, &queues.features).await) >= topology.model_replicas;
        for queue in &inputs {
            ready &= consumers(queue_state(connection, queue).await) > 0;
        }
        if ready {
            break;
        }
        if Instant::now() > ready_by {
            services.fail("model and metric did not start consuming within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut counters: Vec<LineCounter> = logs.iter().cloned().map(LineCounter::new).collect();
    let count = items.to_string();
    let cpu_before = [services.ticks("model"), services.ticks("metric")];
    let broker = BrokerProcess::find(url).map(BrokerProcess::start);
    let busy_before = machine_busy_ticks();
    let spawned = Instant::now();
    services.spawn(
        "features",
        &["features", "--delay", "0", "--count", &count],
        url,
        &prefix,
        topology,
    );
    // Each log's header is one line.
    let rows = |counters: &mut Vec<LineCounter>| {
        counters
            .iter_mut()
            .map(|c| c.lines().saturating_sub(1))
            .sum::<u64>()
    };
    while rows(&mut counters) < items {
        if spawned.elapsed() > ITERATION_TIMEOUT {
            let rows = rows(&mut counters);
            services.fail(&format!(
                "only {rows} of {items} rows after {ITERATION_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last_row = SystemTime::now();
    let cpu_window = spawned.elapsed();
    let busy = machine_busy_ticks() - busy_before;
    let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
    let cpu = [
        seconds(services.ticks("features")),
        seconds(services.ticks("model").saturating_sub(cpu_before[0])),
        seconds(services.ticks("metric").saturating_sub(cpu_before[1])),
        seconds(busy),
    ];
    let broker = broker.map(|span| span.finish());

    // `features` exits 0 once all its items are confirmed, which is before the last row.
    let features_done_by = Instant::now() + Duration::from_secs(30);
    loop {
        let status = services
            .children
            .iter_mut()
            .find(|(name, _)| name == "features")
            .and_then(|(_, child)| child.try_wait().ok().flatten());
        match status {
            Some(status) if status.success() => break,
            Some(status) => services.fail(&format!("features exited with {status}")),
            None if Instant::now() > features_done_by => {
                services.fail("features did not exit after all rows arrived")
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    services.kill_all();
    delete_topology(connection, &queues, shards.as_ref()).await;
    let mut first_published = SystemTime::now();
    let mut latencies_us = Vec::new();
    for log in &logs {
        let (first, latencies) = read_log(log);
        first_published = first_published.min(first);
        latencies_us.extend(latencies);
    }
    assert_eq!(latencies_us.len() as u64, items, "rows with a latency");
    latencies_us.sort_unstable();
    let elapsed = last_row
        .duration_since(first_published)
        .expect("the last row is seen after the first item is published");
    PipelineRun {
        elapsed,
        latencies_us,
        cpu,
        cpu_window,
        broker,
    }
}

//! End-to-end throughput against a real broker, next to the broker's own ceiling, in
//! alternating pairs.
//!
//! Each iteration runs one pair: first the pipeline, then the ceiling, on fresh queues (a
//! random prefix, deleted afterwards). Alternating keeps slow drift of the shared machine
//! (other work, the broker's memory and disk state) out of the comparison: the two runs of a
//! pair see nearly the same machine, so the pair's ratio is what is reported, not a ratio of
//! two separate series.
//!
//! - pipeline: the real `nnmon` binary (`model` and `metric` running, then
//!   `features --delay 0 --count N`) until `metric_log.csv` holds N rows.
//! - ceiling: a bare lapin publisher → consumer on each of three queues at once (one per
//!   message of an item), with nnmon's guarantees: durable queues, persistent messages,
//!   confirms awaited in windows of 500, prefetch 500 and batched `multiple` acks.
//!
//! Both are timed the same way: **from the first message published to the last message
//! handled**. Connection set-up is outside the clock on both sides: it is a fixed cost that
//! does not grow with N (so it would bend the ratio by N), and starting a process and
//! connecting it is not comparable with opening a connection inside a running one. The
//! pipeline's start is the publish time carried by its first item's ID (a UUIDv7, stamped
//! just before `features` publishes it; millisecond precision, read back from the log), its
//! end the moment the bench sees the Nth row in `metric_log.csv` (polled every 2 ms). The
//! ceiling's start is the first `basic_publish` of its three publishers (channels and
//! confirm mode set up before), its end the last consumer's final ack.
//!
//! Criterion runs the pairs (`iter_custom`, one pair per iteration) and reports the
//! pipeline's time as `pipeline/items`; its first call is the warm-up pair, left out of the
//! summary. The summary prints the median of the per-pair ratios (pipeline items/s ÷ ceiling
//! items/s of the same pair) with their min and max, each side's median items/s, and the
//! p50/p99/max of the rows' `latency_us`.
//!
//! `AMQP_URL` names the broker (default: the local one); `NNMON_BENCH_ITEMS` changes N
//! (default 15 000).
//!
//! `cargo bench --bench pipeline` (the bench builds the `nnmon` binary itself).

mod support;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use nnmon::services::metric::METRIC_LOG;
use nnmon_proto::QueueNames;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{LineCounter, amqp_url, connect, delete_queues, nnmon_binary, queue_state};
use tokio::runtime::Runtime;

const DEFAULT_ITEMS: u64 = 15_000;
/// Unconfirmed messages in flight per publisher, and prefetch per consumer: nnmon's default.
const WINDOW: usize = 500;
const BODY_BYTES: usize = 200;
const SAMPLES: usize = 10;
/// How long one iteration may take before the bench gives up.
const ITERATION_TIMEOUT: Duration = Duration::from_secs(180);

fn items() -> u64 {
    std::env::var("NNMON_BENCH_ITEMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_ITEMS)
}

fn fresh_prefix(kind: &str) -> String {
    format!("bench.{kind}.{}.", uuid::Uuid::now_v7().simple())
}

/// A group for runs of whole seconds: `SAMPLES` runs of `items` items each, no warm-up to
/// speak of.
fn long_group<'a>(c: &'a mut Criterion, name: &str, items: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(items));
    group
}

/// CPU time (user + system) of process `pid` so far, in clock ticks (100 a second on
/// Linux). Still readable while the process is a zombie, i.e. until it is waited for.
fn cpu_ticks(pid: u32) -> u64 {
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
fn machine_busy_ticks() -> u64 {
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

const TICKS_PER_SECOND: f64 = 100.0;

/// Percentile `p` (0–100) of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of values (the mean of the middle two for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
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
struct PipelineRun {
    /// From the first item published to the last row seen in the log.
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// CPU seconds of features, model and metric, and of the whole machine, from the start
    /// of `features` to the last row.
    cpu: [f64; 4],
    /// That window: from the start of `features` to the last row.
    cpu_window: Duration,
}

struct Services {
    log_dir: tempfile::TempDir,
    children: Vec<(&'static str, Child)>,
}

impl Services {
    fn spawn(&mut self, name: &'static str, args: &[&str], url: &str, prefix: &str) {
        let stderr =
            File::create(self.log_dir.path().join(format!("{name}.stderr"))).expect("stderr file");
        let child = Command::new(nnmon_binary())
            .args(args)
            .env("AMQP_URL", url)
            .env("NNMON_QUEUE_PREFIX", prefix)
            .env("NNMON_LOG_DIR", self.log_dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start nnmon");
        self.children.push((name, child));
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
}

impl Drop for Services {
    fn drop(&mut self) {
        self.kill_all();
    }
}

async fn run_pipeline(connection: &Connection, url: &str, items: u64) -> PipelineRun {
    let prefix = fresh_prefix("pipeline");
    let queues = QueueNames::with_prefix(&prefix);
    let mut services = Services {
        log_dir: tempfile::tempdir().expect("tempdir"),
        children: Vec::new(),
    };
    services.spawn("model", &["model"], url, &prefix);
    services.spawn("metric", &["metric"], url, &prefix);

    // Ready once model consumes `features` and metric consumes `y_true` and `y_pred`.
    let ready_by = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ready = true;
        for queue in [&queues.features, &queues.y_true, &queues.y_pred] {
            ready &= queue_state(connection, queue)
                .await
                .map_or(0, |(_, consumers)| consumers)
                > 0;
        }
        if ready {
            break;
        }
        if Instant::now() > ready_by {
            services.fail("model and metric did not start consuming within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let log = services.log_dir.path().join(METRIC_LOG);
    let mut counter = LineCounter::new(log.clone());
    let count = items.to_string();
    let cpu_before: Vec<u64> = services
        .children
        .iter()
        .map(|(_, child)| cpu_ticks(child.id()))
        .collect();
    let busy_before = machine_busy_ticks();
    let spawned = Instant::now();
    services.spawn(
        "features",
        &["features", "--delay", "0", "--count", &count],
        url,
        &prefix,
    );
    // The header is one line.
    while counter.lines() < items + 1 {
        if spawned.elapsed() > ITERATION_TIMEOUT {
            let rows = counter.lines().saturating_sub(1);
            services.fail(&format!(
                "only {rows} of {items} rows after {ITERATION_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last_row = SystemTime::now();
    let cpu_window = spawned.elapsed();
    let busy = machine_busy_ticks() - busy_before;
    let ticks = |name: &str| {
        services
            .children
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, child)| cpu_ticks(child.id()))
    };
    let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
    let cpu = [
        seconds(ticks("features")),
        seconds(ticks("model").saturating_sub(cpu_before[0])),
        seconds(ticks("metric").saturating_sub(cpu_before[1])),
        seconds(busy),
    ];

    // `features` exits 0 once all its items are confirmed, which is before the last row.
    let features_done_by = Instant::now() + Duration::from_secs(30);
    loop {
        let status = services
            .children
            .iter_mut()
            .find(|(name, _)| *name == "features")
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
    delete_queues(connection, &queues.all()).await;
    let (first_published, mut latencies_us) = read_log(&log);
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
    }
}

/// Publishes `count` persistent messages to `queue` on `channel` (in confirm mode), confirms
/// awaited in windows. Returns when the first message was published.
async fn publish(connection: Connection, channel: Channel, queue: String, count: u64) -> Instant {
    let body = vec![b'x'; BODY_BYTES];
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::with_capacity(WINDOW);
    let first = Instant::now();
    for _ in 0..count {
        if in_flight.len() >= WINDOW
            && let Some(confirm) = in_flight.pop_front()
        {
            let confirmation = confirm.await.expect("confirm");
            assert!(confirmation.is_ack(), "the broker nacked a message");
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let confirm = channel
            .basic_publish("".into(), queue.as_str().into(), options, &body, properties)
            .await
            .expect("publish");
        in_flight.push_back(confirm);
    }
    for confirm in in_flight {
        assert!(confirm.await.expect("confirm").is_ack(), "nacked");
    }
    let _ = connection.close(200, "done".into()).await;
    first
}

/// Consumes `count` messages from `queue`, acking what is buffered in one `multiple` ack.
/// Returns when the last message was acked.
async fn consume(connection: Connection, mut consumer: lapin::Consumer, count: u64) -> Instant {
    let mut received = 0u64;
    while received < count {
        let first = consumer
            .next()
            .await
            .expect("consumer cancelled")
            .expect("delivery");
        let mut newest = first;
        received += 1;
        while received < count {
            match futures_util::FutureExt::now_or_never(consumer.next()) {
                Some(Some(delivery)) => {
                    newest = delivery.expect("delivery");
                    received += 1;
                }
                Some(None) => panic!("consumer cancelled"),
                None => break,
            }
        }
        newest
            .acker
            .ack(BasicAckOptions { multiple: true })
            .await
            .expect("ack");
    }
    let last = Instant::now();
    let _ = connection.close(200, "done".into()).await;
    last
}

/// One run of the bare broker: `items` messages on each of three queues at once.
async fn run_ceiling(connection: &Connection, url: &str, items: u64) -> Duration {
    let queues = QueueNames::with_prefix(&fresh_prefix("ceiling"));
    let names = [&queues.features, &queues.y_true, &queues.y_pred];
    let declare = connection.create_channel().await.expect("channel");
    for name in names {
        declare
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
    }
    let _ = declare.close(200, "done".into()).await;

    // Connections, channels and consumers are set up before the clock starts, as nnmon's
    // services are before their first message.
    let mut publishers = Vec::new();
    let mut consumers = Vec::new();
    for name in names {
        let publisher_connection = connect(url).await;
        let channel = publisher_connection
            .create_channel()
            .await
            .expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm_select");
        publishers.push((publisher_connection, channel, name.clone()));
        let consumer_connection = connect(url).await;
        let channel = consumer_connection.create_channel().await.expect("channel");
        channel
            .basic_qos(WINDOW as u16, BasicQosOptions::default())
            .await
            .expect("qos");
        let consumer = channel
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        consumers.push((consumer_connection, consumer));
    }

    let consumed: Vec<_> = consumers
        .into_iter()
        .map(|(connection, consumer)| tokio::spawn(consume(connection, consumer, items)))
        .collect();
    let published: Vec<_> = publishers
        .into_iter()
        .map(|(connection, channel, queue)| {
            tokio::spawn(publish(connection, channel, queue, items))
        })
        .collect();
    let all = futures_util::future::join(
        futures_util::future::join_all(published),
        futures_util::future::join_all(consumed),
    );
    let (published, consumed) = tokio::time::timeout(ITERATION_TIMEOUT, all)
        .await
        .expect("the ceiling run timed out");
    let instants = |results: Vec<Result<Instant, tokio::task::JoinError>>| {
        results
            .into_iter()
            .map(|r| r.expect("a publisher or consumer failed"))
            .collect::<Vec<_>>()
    };
    let first_published = instants(published).into_iter().min().expect("publishers");
    let last_handled = instants(consumed).into_iter().max().expect("consumers");
    delete_queues(connection, &queues.all()).await;
    last_handled - first_published
}

/// One iteration: a pipeline run, then a ceiling run.
struct Pair {
    pipeline: PipelineRun,
    ceiling: Duration,
}

fn pipeline_vs_ceiling(c: &mut Criterion) {
    if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        eprintln!("pipeline bench skipped: NNMON_SKIP_BROKER_TESTS=1");
        return;
    }
    let binary = nnmon_binary();
    let runtime = Runtime::new().expect("tokio runtime");
    let url = amqp_url();
    let items = items();
    let connection = runtime.block_on(connect(&url));
    eprintln!(
        "pipeline: {items} items per run, pipeline and ceiling alternating, binary {}",
        binary.display()
    );

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let rate = |elapsed: Duration| items as f64 / elapsed.as_secs_f64();
    let pairs = RefCell::new(Vec::<Pair>::new());
    let mut group = long_group(c, "pipeline", items);
    group.bench_function("items", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (connection, url, pairs) = (&connection, &url, &pairs);
            async move {
                // Criterion gets the pipeline's time; the ceiling's goes to the summary.
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let pipeline = run_pipeline(connection, url, items).await;
                    let ceiling = run_ceiling(connection, url, items).await;
                    let n = pairs.borrow().len() + 1;
                    let lat = &pipeline.latencies_us;
                    let [features, model, metric, busy] = pipeline.cpu;
                    eprintln!(
                        "pair {n}: pipeline {:.2?} = {:.0} items/s, latency p50 {:.1} ms, p99 {:.1} ms; \
                         ceiling {ceiling:.2?} = {:.0} items/s (x3 queues); ratio {:.2}",
                        pipeline.elapsed,
                        rate(pipeline.elapsed),
                        percentile(lat, 50.0) as f64 / 1000.0,
                        percentile(lat, 99.0) as f64 / 1000.0,
                        rate(ceiling),
                        rate(pipeline.elapsed) / rate(ceiling),
                    );
                    eprintln!(
                        "pair {n}: pipeline CPU s from features' start to the last row: features {features:.2}, \
                         model {model:.2}, metric {metric:.2}, rest (broker, bench) {:.2}, machine busy {busy:.2} of {:.2}",
                        busy - features - model - metric,
                        cores * pipeline.cpu_window.as_secs_f64(),
                    );
                    total += pipeline.elapsed;
                    pairs.borrow_mut().push(Pair { pipeline, ceiling });
                }
                total
            }
        })
    });
    group.finish();
    runtime.block_on(async {
        let _ = connection.close(200, "done".into()).await;
    });

    let pairs = pairs.into_inner();
    if pairs.is_empty() {
        return; // filtered out
    }
    // Criterion's first call is the warm-up pair: left out, unless it is the only one.
    let measured = if pairs.len() > 1 {
        &pairs[1..]
    } else {
        &pairs[..]
    };
    let pipeline: Vec<f64> = measured.iter().map(|p| rate(p.pipeline.elapsed)).collect();
    let ceiling: Vec<f64> = measured.iter().map(|p| rate(p.ceiling)).collect();
    let ratios: Vec<f64> = pipeline.iter().zip(&ceiling).map(|(p, c)| p / c).collect();
    let (min, max) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    let mut latencies: Vec<u64> = measured
        .iter()
        .flat_map(|p| p.pipeline.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let n = measured.len();
    let warm_up = if measured.len() < pairs.len() {
        ", warm-up pair excluded"
    } else {
        ""
    };
    println!(
        "pipeline/ceiling ratio, median of {n} pair(s): {:.2} (min {min:.2}, max {max:.2}); \
         each timed from its first message published to its last message handled{warm_up}",
        median(&ratios)
    );
    println!(
        "median items/s over the same {n} pair(s): pipeline {:.0}, ceiling {:.0}",
        median(&pipeline),
        median(&ceiling)
    );
    println!(
        "pipeline latency_us over {} rows of {n} run(s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 50.0) as f64 / 1000.0,
        percentile(&latencies, 99.0) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

/// Criterion without its HTML plots: its plotting backend needs system fonts, which this
/// machine does not have.
fn config() -> Criterion {
    Criterion::default().without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = pipeline_vs_ceiling
}

fn main() {
    benches();
    config().configure_from_args().final_summary();
}

//! Memory of `nnmon metric` while a stream of orphans goes through it.
//!
//! Starts `nnmon metric --join-ttl 1` on fresh queues, publishes `y_true` messages that
//! never get a partner (`{"id": "orphan-<n>", "body": 1.0}`, persistent, confirms awaited in
//! windows of 500) as fast as the broker takes them, and samples the metric process's
//! VmRSS (and the kernel's high-water mark, VmHWM) every second. Prints the peak after
//! 100k, 500k and 1M messages consumed; the join's bounds (TTL, pending cap, dedup window)
//! must keep it flat.
//!
//! `cargo bench --bench memory`. `NNMON_BENCH_ORPHANS` changes the count (default
//! 1 000 000); under `cargo test --benches` it runs a 20 000-message smoke version.

mod support;

use futures_util::FutureExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties, PublisherConfirm};
use nnmon::services::metric::ORPHANS_LOG;
use nnmon_proto::QueueNames;
use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{LineCounter, amqp_url, nnmon_binary, queue_state};

const WINDOW: usize = 500;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long metric may take to drain the queue once everything is published.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Metric {
    child: Child,
    stderr: PathBuf,
}

impl Metric {
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let logs = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        panic!("{why}\n--- metric stderr\n{logs}");
    }
}

impl Drop for Metric {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One memory sample.
struct Sample {
    at: Duration,
    consumed: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

async fn run(url: &str, total: u64) {
    let prefix = format!("bench.memory.{}.", uuid::Uuid::now_v7().simple());
    let queues = QueueNames::with_prefix(&prefix);
    let log_dir = tempfile::tempdir().expect("tempdir");
    let stderr = log_dir.path().join("metric.stderr");
    let child = Command::new(nnmon_binary())
        .args(["metric", "--join-ttl", "1"])
        .env("AMQP_URL", url)
        .env("NNMON_QUEUE_PREFIX", &prefix)
        .env("NNMON_LOG_DIR", log_dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start nnmon metric");
    let mut metric = Metric { child, stderr };
    let pid = metric.child.id();

    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the broker at AMQP_URL ({e}); is it running?"));
    let ready_by = Instant::now() + Duration::from_secs(30);
    while queue_state(&connection, &queues.y_true)
        .await
        .is_none_or(|(_, consumers)| consumers == 0)
    {
        if Instant::now() > ready_by {
            metric.fail("metric did not start consuming within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (start_rss, _) = memory_kib(pid).unwrap_or_default();
    eprintln!(
        "memory: metric (pid {pid}) consuming {}, RSS at start {:.1} MiB; publishing {total} orphan y_true messages",
        queues.y_true,
        mib(start_rss)
    );

    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm_select");
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::with_capacity(WINDOW);
    let mut published = 0u64;
    let mut confirmed = 0u64;
    let mut samples: Vec<Sample> = Vec::new();
    let mut orphans = LineCounter::new(log_dir.path().join(ORPHANS_LOG));
    let start = Instant::now();
    let mut next_sample = start;
    let mut drained_at: Option<Instant> = None;
    loop {
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            let Some((rss_kib, hwm_kib)) = memory_kib(pid) else {
                metric.fail("metric exited");
            };
            let ready = queue_state(&connection, &queues.y_true)
                .await
                .map_or(0, |(ready, _)| u64::from(ready));
            // Taken by metric: published and no longer waiting in the queue.
            let consumed = confirmed.saturating_sub(ready);
            let at = start.elapsed();
            if samples.len().is_multiple_of(10) {
                eprintln!(
                    "memory: t={:>3.0}s published {published:>8} consumed {consumed:>8} orphans.csv {:>8} rows; metric RSS {:.1} MiB (peak {:.1} MiB)",
                    at.as_secs_f64(),
                    orphans.lines().saturating_sub(1),
                    mib(rss_kib),
                    mib(hwm_kib)
                );
            }
            samples.push(Sample {
                at,
                consumed,
                rss_kib,
                hwm_kib,
            });
            if published == total && in_flight.is_empty() && ready == 0 {
                let drained = *drained_at.get_or_insert_with(Instant::now);
                // Once the queue is empty, wait for every orphan to be evicted (TTL 1 s).
                if orphans.lines().saturating_sub(1) >= total
                    || drained.elapsed() > Duration::from_secs(5)
                {
                    break;
                }
            }
            if start.elapsed() > Duration::from_secs(60) + DRAIN_TIMEOUT + published_time(total) {
                metric.fail("metric did not drain the queue in time");
            }
        }
        // Settle confirms already in, then publish or wait for the oldest.
        while let Some(front) = in_flight.front_mut() {
            match front.now_or_never() {
                Some(confirmation) => {
                    assert!(confirmation.expect("confirm").is_ack(), "nacked");
                    in_flight.pop_front();
                    confirmed += 1;
                }
                None => break,
            }
        }
        if published < total && in_flight.len() < WINDOW {
            // IDs without a time, so that each waits by the wall clock (`--join-ttl 1`):
            // a UUIDv7 half waits for the prediction side, which this bench keeps silent.
            let body = format!(r#"{{"id": "orphan-{published}", "body": 1.0}}"#);
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queues.y_true.as_str().into(),
                    options,
                    body.as_bytes(),
                    properties,
                )
                .await
                .expect("publish");
            in_flight.push_back(confirm);
            published += 1;
        } else if let Some(front) = in_flight.front_mut() {
            let wait = next_sample.saturating_duration_since(Instant::now());
            if let Ok(confirmation) = tokio::time::timeout(wait, front).await {
                assert!(confirmation.expect("confirm").is_ack(), "nacked");
                in_flight.pop_front();
                confirmed += 1;
            }
        } else {
            tokio::time::sleep_until(next_sample.into()).await;
        }
    }
    let elapsed = start.elapsed();
    let orphan_rows = orphans.lines().saturating_sub(1);
    let (end_rss, end_hwm) = memory_kib(pid).unwrap_or_default();
    drop(metric);
    let cleanup = connection.create_channel().await.expect("channel");
    for queue in queues.all() {
        cleanup
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("deleting queue {queue}: {e}"));
    }
    let _ = connection.close(200, "done".into()).await;

    println!(
        "memory: {total} orphans through `metric --join-ttl 1` in {:.1?} ({:.0} msg/s); orphans.csv has {orphan_rows} rows",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
    println!("memory: metric RSS at start {:.1} MiB", mib(start_rss));
    let mut checkpoints: Vec<u64> = [100_000, 500_000, 1_000_000]
        .into_iter()
        .filter(|&n| n < total)
        .collect();
    checkpoints.push(total);
    for checkpoint in checkpoints {
        // The first sample at which metric had taken `checkpoint` messages.
        let Some(reached) = samples.iter().position(|s| s.consumed >= checkpoint) else {
            println!("memory: {checkpoint} messages never reached by a sample");
            continue;
        };
        let upto = &samples[..=reached];
        let peak_sampled = upto.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let hwm = upto.last().map_or(0, |s| s.hwm_kib);
        println!(
            "memory: after {checkpoint:>7} messages (t={:.0}s): peak RSS sampled {:.1} MiB, VmHWM {:.1} MiB, RSS now {:.1} MiB",
            upto[reached].at.as_secs_f64(),
            mib(peak_sampled),
            mib(hwm),
            mib(upto[reached].rss_kib)
        );
    }
    println!(
        "memory: at the end RSS {:.1} MiB, VmHWM {:.1} MiB",
        mib(end_rss),
        mib(end_hwm)
    );
    assert!(
        orphan_rows >= total,
        "only {orphan_rows} of {total} orphans were logged"
    );
}

/// A generous bound on publishing time at 5 000 messages/s.
fn published_time(total: u64) -> Duration {
    Duration::from_secs(total / 5_000)
}

fn main() {
    if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        eprintln!("memory bench skipped: NNMON_SKIP_BROKER_TESTS=1");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Like criterion: `--bench` means measure; without it (cargo test --benches) just check
    // that it works. A name filter that does not match `metric_memory` skips it.
    let benchmarking = args.iter().any(|a| a == "--bench");
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-'))
        && !"metric_memory".contains(filter.as_str())
    {
        return;
    }
    let total = std::env::var("NNMON_BENCH_ORPHANS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(if benchmarking { 1_000_000 } else { 20_000 });
    let url = amqp_url();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(&url, total));
}

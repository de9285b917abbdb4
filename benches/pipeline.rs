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
use std::cell::RefCell;
use std::time::Duration;
use support::run::{PipelineRun, Topology, median, percentile, run_ceiling, run_pipeline};
use support::{amqp_url, connect, nnmon_binary};
use tokio::runtime::Runtime;

const DEFAULT_ITEMS: u64 = 15_000;
const SAMPLES: usize = 10;

fn items() -> u64 {
    std::env::var("NNMON_BENCH_ITEMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_ITEMS)
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
                    let pipeline =
                        run_pipeline(connection, url, items, Topology::default()).await;
                    let ceiling = run_ceiling(connection, url, items, "classic").await;
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

//! Micro benchmarks of the pure parts every message goes through: wire decoding and
//! encoding, the ID join, the model and its input-drift test, the CSV append, histogram
//! binning and the chart, and on a 10-million-row log the metric's restart and the plot
//! service's refresh.
//!
//! `cargo bench --bench micro` (add a filter after `--` to run some of them only).

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use nnmon::services::metric::{Ledger, METRIC_HEADER, METRIC_LOG, row_record};
use nnmon::services::plot::Monitor;
use nnmon_csvlog::{CsvAppender, Record};
use nnmon_join::{Half, Join, JoinLimits, Offer, Pair, Side};
use nnmon_model::{LinearModel, diabetes};
use nnmon_proto::{FeaturesMessage, MessageId, ValueMessage};
use nnmon_report::chart;
use nnmon_stats::{DIABETES_FEATURE_NAMES, ErrorStats, FeatureDrift, FeatureDriftConfig};
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Rows of the plot benchmark's pre-existing log.
const PLOT_ROWS: u64 = 10_000_000;
/// Rows appended before each plot refresh.
const REFRESH_ROWS: u64 = 100;
/// Rows `metric` flushes at most at once (its default prefetch).
const FLUSH_EVERY: u64 = 500;

/// The UUIDv7-shaped value that IDs count up from.
const ID_BASE: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0000;
/// Where the IDs of halves that never get a partner start, far from the paired ones.
const UNPAIRED: u64 = 1 << 48;

/// A distinct ID for every `n`, shaped like the UUIDv7 strings nnmon sends.
fn id(n: u64) -> MessageId {
    MessageId::from(Uuid::from_u128(ID_BASE + u128::from(n)))
}

fn model() -> LinearModel {
    LinearModel::default_ols().expect("the built-in model")
}

/// Absolute errors of the model, cycling through the data set until `n` values.
fn errors(n: usize) -> Vec<f64> {
    let model = model();
    diabetes()
        .iter()
        .map(|s| (s.target - model.predict(&s.features)).abs())
        .cycle()
        .take(n)
        .collect()
}

/// Tunes a group for a short run: the whole `micro` suite must fit in about a minute.
fn quick(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(20);
}

fn proto(c: &mut Criterion) {
    let rows = diabetes();
    let model = model();
    let features: Vec<FeaturesMessage> = rows
        .iter()
        .enumerate()
        .map(|(n, s)| FeaturesMessage {
            id: id(n as u64),
            features: s.features,
            published_us: Some(1_764_000_000_000_000 + n as u64),
            item: Some(n as u64),
        })
        .collect();
    let values: Vec<ValueMessage> = rows
        .iter()
        .enumerate()
        .map(|(n, s)| ValueMessage {
            id: id(n as u64),
            value: model.predict(&s.features),
            published_us: Some(1_764_000_000_000_000 + n as u64),
        })
        .collect();
    // The bytes nnmon itself puts on the wire.
    let feature_bytes: Vec<Vec<u8>> = features.iter().map(|m| m.encode().unwrap()).collect();
    let value_bytes: Vec<Vec<u8>> = values.iter().map(|m| m.encode().unwrap()).collect();

    let mut group = c.benchmark_group("proto");
    quick(&mut group);
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("features/decode", |b| {
        b.iter(|| {
            for bytes in &feature_bytes {
                black_box(FeaturesMessage::decode(black_box(bytes)).unwrap());
            }
        })
    });
    group.bench_function("features/encode", |b| {
        b.iter(|| {
            for message in &features {
                black_box(black_box(message).encode().unwrap());
            }
        })
    });
    group.bench_function("value/decode", |b| {
        b.iter(|| {
            for bytes in &value_bytes {
                black_box(ValueMessage::decode(black_box(bytes)).unwrap());
            }
        })
    });
    group.bench_function("value/encode", |b| {
        b.iter(|| {
            for message in &values {
                black_box(black_box(message).encode().unwrap());
            }
        })
    });
    group.finish();
}

/// The wall clock the join benches run at: just after the halves were published.
const NOW_MS: u64 = 1_700_000_001_000;

fn half(side: Side, n: u64) -> Half {
    Half {
        side,
        id: id(n),
        value: n as f64,
        published_us: Some(1_700_000_000_000_000 + n),
    }
}

/// Both halves of `pairs` fresh items, truth first, starting at ID `first`.
fn pairs_from(first: u64, pairs: u64) -> Vec<Half> {
    (first..first + pairs)
        .flat_map(|n| [half(Side::Truth, n), half(Side::Prediction, n)])
        .collect()
}

fn join(c: &mut Criterion) {
    const PAIRS: u64 = 1000;
    const PENDING: u64 = 100_000;
    let limits = JoinLimits {
        max_pending: 1_000_000,
        ..JoinLimits::default()
    };
    let mut group = c.benchmark_group("join");
    quick(&mut group);
    group.throughput(Throughput::Elements(PAIRS));

    for pending in [0, PENDING] {
        let mut join = Join::new(limits);
        // Halves that never get a partner.
        for n in 0..pending {
            join.offer(half(Side::Truth, UNPAIRED + n), NOW_MS);
        }
        let mut next = 0u64;
        let name = if pending == 0 {
            "insert_match_pairs/empty".to_owned()
        } else {
            format!("insert_match_pairs/{}k_pending", pending / 1000)
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    next += PAIRS;
                    pairs_from(next - PAIRS, PAIRS)
                },
                |halves| {
                    for h in halves {
                        black_box(join.offer(h, NOW_MS));
                    }
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(join.pending_len() as u64, pending);
    }

    // Only the matching offer is timed: its partner is already waiting among 100k halves.
    let mut join = Join::new(limits);
    for n in 0..PENDING {
        join.offer(half(Side::Truth, UNPAIRED + n), NOW_MS);
    }
    let mut next = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function(
        format!("match_a_waiting_half/{}k_pending", PENDING / 1000),
        |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(10_000);
                    for n in next..next + chunk {
                        join.offer(half(Side::Truth, n), NOW_MS);
                    }
                    let partners: Vec<Half> = (next..next + chunk)
                        .map(|n| half(Side::Prediction, n))
                        .collect();
                    let start = Instant::now();
                    for h in partners {
                        let offer = join.offer(h, NOW_MS);
                        debug_assert!(matches!(offer, Offer::Matched(_)));
                        black_box(offer);
                    }
                    elapsed += start.elapsed();
                    next += chunk;
                    left -= chunk;
                }
                elapsed
            })
        },
    );
    assert_eq!(join.pending_len() as u64, PENDING);
    group.finish();
}

fn predict(c: &mut Criterion) {
    let model = model();
    let rows = diabetes();
    let mut group = c.benchmark_group("model");
    quick(&mut group);
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("predict/diabetes_rows", |b| {
        b.iter(|| {
            for sample in rows {
                black_box(black_box(&model).predict(black_box(&sample.features)));
            }
        })
    });
    group.finish();
}

/// What `model` does with every feature vector besides predicting it: the input-drift
/// detector with its default window and cadence, against the data set it was trained on.
fn feature_drift(c: &mut Criterion) {
    let rows: Vec<_> = diabetes().iter().map(|sample| sample.features).collect();
    let mut drift = FeatureDrift::new(&rows, DIABETES_FEATURE_NAMES, FeatureDriftConfig::default());
    // A full window, so that every `evaluate_every`-th push runs the tests.
    for row in rows
        .iter()
        .cycle()
        .take(FeatureDriftConfig::default().window)
    {
        drift.push(row);
    }
    let mut group = c.benchmark_group("model");
    quick(&mut group);
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("feature_drift/push_diabetes_rows", |b| {
        b.iter(|| {
            for row in &rows {
                black_box(drift.push(black_box(row)));
            }
        })
    });
    group.finish();
}

fn csv_append(c: &mut Criterion) {
    let model = model();
    let rows = diabetes();
    let predictions: Vec<(f64, f64)> = rows
        .iter()
        .map(|s| (s.target, model.predict(&s.features)))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(METRIC_LOG);
    let open = |path: &Path| {
        let _ = std::fs::remove_file(path);
        CsvAppender::open(path, METRIC_HEADER)
            .expect("open the log")
            .0
    };
    let mut log = open(&path);
    let mut written = 0u64;
    let mut record = Record::default();
    let ids: Vec<MessageId> = (0..4096).map(id).collect();

    let mut group = c.benchmark_group("csvlog");
    quick(&mut group);
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_metric_row/flush_every_500", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let n = written + i;
                let (y_true, y_pred) = predictions[n as usize % predictions.len()];
                let pair = Pair {
                    id: ids[n as usize % ids.len()].clone(),
                    y_true,
                    y_pred,
                    published_us: None,
                };
                row_record(&mut record, &pair, Some(6775));
                log.append(&record).expect("append");
                if (n + 1).is_multiple_of(FLUSH_EVERY) {
                    log.flush().expect("flush");
                }
            }
            log.flush().expect("flush");
            let elapsed = start.elapsed();
            written += iters;
            // Keep the temporary file small: start over, untimed, past two million rows.
            if written > 2_000_000 {
                log = open(&path);
                written = 0;
            }
            elapsed
        })
    });
    group.finish();
}

/// Statistics of `errors` as absolute errors of predictions of 0.
fn error_stats(errors: &[f64]) -> ErrorStats {
    let mut stats = ErrorStats::new(1000, 0.0);
    errors.iter().for_each(|&e| stats.push(0.0, e));
    stats
}

fn report(c: &mut Criterion) {
    let mut group = c.benchmark_group("report");
    quick(&mut group);
    for values in [errors(10_000), errors(1_000_000)] {
        let n = values.len();
        let stats = error_stats(&values);
        // Binning reads the sketch's buckets: its cost does not grow with the rows.
        group.bench_function(BenchmarkId::new("histogram_30_bins", n), |b| {
            b.iter(|| black_box(stats.histogram(chart::BINS)))
        });
        group.bench_function(BenchmarkId::new("render_png", n), |b| {
            b.iter(|| black_box(chart::render_stats(black_box(&stats), 0).expect("chart")))
        });
    }
    group.finish();
}

/// Resident memory of this process, in MiB, from /proc (0 where there is none).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The tails (`,y_true,y_pred,absolute_error,`) of metric rows for every data set row.
fn row_tails() -> Vec<String> {
    let model = model();
    diabetes()
        .iter()
        .map(|s| {
            let y_pred = model.predict(&s.features);
            format!(",{},{},{},", s.target, y_pred, (s.target - y_pred).abs())
        })
        .collect()
}

/// Writes rows `first..first + count` of a synthetic metric log to `out`.
fn write_rows(out: &mut impl Write, tails: &[String], first: u64, count: u64) {
    for n in first..first + count {
        let id = Uuid::from_u128(ID_BASE + u128::from(n));
        let tail = &tails[(n % tails.len() as u64) as usize];
        writeln!(out, "{}{tail}{}", id.hyphenated(), 2000 + n % 9000).expect("write a row");
    }
}

fn plot_refresh(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(METRIC_LOG);
    let tails = row_tails();
    let start = Instant::now();
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).expect("create"));
        writeln!(out, "{METRIC_HEADER}").expect("header");
        write_rows(&mut out, &tails, 0, PLOT_ROWS);
        out.flush().expect("flush");
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "plot: wrote {PLOT_ROWS} rows ({:.0} MiB) in {:.2?}",
        size as f64 / (1 << 20) as f64,
        start.elapsed()
    );
    // A restarted metric reads only the end of the log, whatever its length.
    let start = Instant::now();
    let ledger = Ledger::open(dir.path(), JoinLimits::default(), 0).expect("metric's state");
    eprintln!(
        "metric: Ledger::open on the {PLOT_ROWS}-row log (dedup window {}) took {:.2?}",
        JoinLimits::default().remembered,
        start.elapsed()
    );
    drop(ledger);
    let rss_before = rss_mib();
    let start = Instant::now();
    let mut plotter = Monitor::new(dir.path(), 1000);
    let read = plotter.read_new().expect("initial read");
    eprintln!(
        "plot: first read_new of {read} rows took {:.2?}; this process's RSS went from {rss_before:.0} MiB to {:.0} MiB",
        start.elapsed(),
        rss_mib()
    );
    assert_eq!(read as u64, PLOT_ROWS);
    let chart_path = dir.path().join("error_distribution.png");
    let start = Instant::now();
    write_chart(&mut plotter, &chart_path);
    eprintln!(
        "plot: first write_chart with {} rows took {:.2?}",
        plotter.rows(),
        start.elapsed()
    );

    let mut appender = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open for appending");
    let mut next = PLOT_ROWS;
    let mut batch = Vec::with_capacity(16 << 10);
    let mut group = c.benchmark_group("plot_refresh_10M_rows");
    // Each refresh adds rows: few and short samples keep the log near its 10M rows
    // (about 10 000 refreshes, +1M rows, for the first benchmark).
    group
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(500))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(REFRESH_ROWS));
    group.bench_function("append_100_rows+read_new", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                batch.clear();
                write_rows(&mut batch, &tails, next, REFRESH_ROWS);
                next += REFRESH_ROWS;
                let start = Instant::now();
                appender.write_all(&batch).expect("append rows");
                let rows = plotter.read_new().expect("read_new");
                elapsed += start.elapsed();
                assert_eq!(rows as u64, REFRESH_ROWS);
            }
            elapsed
        })
    });
    eprintln!(
        "plot: the log holds {} rows after the read_new benchmark",
        plotter.rows()
    );
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("append_100_rows+read_new+write_chart", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                batch.clear();
                write_rows(&mut batch, &tails, next, REFRESH_ROWS);
                next += REFRESH_ROWS;
                let start = Instant::now();
                appender.write_all(&batch).expect("append rows");
                let rows = plotter.read_new().expect("read_new");
                write_chart(&mut plotter, &chart_path);
                elapsed += start.elapsed();
                assert_eq!(rows as u64, REFRESH_ROWS);
            }
            elapsed
        })
    });
    group.finish();

    // Where the full refresh's time goes, outside criterion: one breakdown, best of three.
    let time = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let mut summary = plotter.summary(0);
    let summarise = time(&mut || {
        summary = black_box(plotter.summary(0));
    });
    let render = time(&mut || {
        black_box(Monitor::render_chart(&summary).expect("chart"));
    });
    eprintln!(
        "plot: with {} rows, best of 3: Monitor::summary {summarise:.2?}, render_chart {render:.2?}; RSS now {:.0} MiB",
        plotter.rows(),
        rss_mib()
    );
}

/// What `plot` does at each refresh after reading: the summary, then the chart.
fn write_chart(plotter: &mut Monitor, path: &Path) {
    let summary = plotter.summary(0);
    let png = Monitor::render_chart(&summary).expect("chart");
    std::fs::write(path, png).expect("write the chart");
}

/// Criterion without its HTML plots: its plotting backend needs system fonts, which
/// containers like this machine's do not have (it panics with `FontUnavailable`).
fn config() -> Criterion {
    Criterion::default().without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = proto, join, predict, feature_drift, csv_append, report, plot_refresh
}

fn main() {
    benches();
    config().configure_from_args().final_summary();
}

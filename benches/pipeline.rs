//! End-to-end throughput and CPU against a real broker, next to the broker's own ceiling,
//! in alternating rounds.
//!
//! Each iteration runs one round on fresh queues (a random prefix, deleted afterwards):
//! the pipeline once per `nnmon` build, then the ceiling with a raw lapin and a raw amqprs
//! client, then the ceiling through nnmon-broker on each build's client, then the chain
//! through nnmon-broker on each build's client. Alternating keeps
//! slow drift of the shared machine (other work, the broker's memory and disk state) out
//! of the comparison: the runs of a round see nearly the same machine, so ratios are taken
//! within a round, then their median reported, not a ratio of two separate series.
//!
//! - pipeline: the real `nnmon` binary (`model` and `metric` running, then
//!   `features --delay 0 --count N`) until `metric_log.csv` holds N rows.
//! - ceiling (`support::ceiling`): a publisher → consumer on each of three queues at once
//!   (one per message of an item, each carrying the pipeline's own messages for it), with
//!   nnmon's guarantees: durable queues, persistent mandatory messages, confirms awaited in
//!   windows of 500, prefetch 500 and batched `multiple` acks; each queue moved by a
//!   child process on a current-thread runtime, as each nnmon service runs. The movers: a raw client (`support::raw_lapin`,
//!   `support::raw_amqprs`), and nnmon-broker's `Publisher` and `Inbox` with none of the
//!   services' work (`support::seam`), whose CPU set beside the raw client's of the same
//!   library is what nnmon's AMQP layer costs.
//! - chain (`support::chain`): the same three queues and messages moved through
//!   nnmon-broker in the pipeline's own order, by three processes standing in for the
//!   services and doing none of their work: `model`'s stand-in publishes a prediction per
//!   features message delivered and acks it once that is confirmed, `metric`'s acks what
//!   it reads. Between the ceiling and the pipeline, it tells the cost of chaining the
//!   queues (on the broker above all) from that of the services' work.
//!
//! All are timed the same way: **from the first message published to the last message
//! handled**. Connection set-up is outside the clock on both sides: it is a fixed cost that
//! does not grow with N (so it would bend the ratio by N), and starting a process and
//! connecting it is not comparable with opening a connection inside a running one. The
//! pipeline's start is the publish time carried by its first item's ID (a UUIDv7, stamped
//! just before `features` publishes it; millisecond precision, read back from the log), its
//! end the moment the bench sees the Nth row in `metric_log.csv` (polled every 2 ms). A
//! ceiling's (or the chain's) start is the first publish of its three children
//! (connections, channels and confirm mode set up before), its end the last consumer's
//! final ack (the chain's: that of `metric`'s stand-in).
//!
//! CPU: the services' from `/proc` (features from its start, so its few milliseconds of
//! start-up count, model and metric over the same span; 10 ms ticks), a ceiling's from
//! `getrusage` in each child over its run (every thread, to the microsecond); the broker's
//! from `/proc` of the local process listening on the AMQP port, over the services' span
//! (so `features`' connection and declarations count, as its own start-up does) and over a
//! ceiling's from `go` to its children's exit (`support::broker_process`; "-" when the
//! broker is not local). Over the same spans, the broker's disk syncs as RabbitMQ counts
//! them (`rabbitmqctl eval`, read outside the CPU spans; "-" when `rabbitmqctl` does not
//! reach that broker): a classic queue syncs before it confirms, whenever it runs out of
//! work with confirms owed, so they count how often the queues went idle mid-stream.
//!
//! Criterion runs the rounds (`iter_custom`, one round per iteration) and reports the
//! pipelines' time as `pipeline/items` (with several builds, the sum of their runs); its
//! first call is the warm-up round, left out of the summary. The summary is one table row
//! per build: medians of items/s, the per-round items/s ratio to the raw client of its own
//! library, the p50/p99 of every row's `latency_us`, CPU per item per service, and the
//! per-round CPU ratios of the services and of nnmon-broker to that raw client, and the
//! broker's CPU per item and disk syncs per 1 000 items on the pipeline and on that raw
//! client's ceiling. A second table takes the gap between that ceiling and the pipeline
//! apart, one step at a time: the raw ceiling, the same ceiling through nnmon-broker, the
//! chain, the pipeline; each step's items/s and its ratio to the step before (per round,
//! then the median), the CPU per item of the chain's stages beside the services', and the
//! broker's CPU and disk syncs on each step.
//!
//! `AMQP_URL` names the broker (default: the local one); `NNMON_BENCH_ITEMS` changes N
//! (default 15 000) and `NNMON_BENCH_WINDOW` the confirm window and prefetch of every run
//! (default nnmon's 500). `NNMON_BENCH_BINARIES` (`CLIENT=PATH,...`) runs several `nnmon` builds
//! in each round, one per AMQP client; the ceiling through nnmon-broker on a client other
//! than this bench's needs a bench binary built with it, named in `NNMON_BENCH_SEAMS`
//! (`CLIENT=PATH`). `just bench-clients` builds both and runs this (see README, "Two AMQP
//! clients").
//!
//! `cargo bench --bench pipeline` (the bench builds the `nnmon` binary itself).

mod support;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;
use support::broker_process::BrokerWork;
use support::ceiling::{Ceiling, Mover, run_ceiling, serve_if_child};
use support::run::{PipelineRun, Topology, WINDOW, median, percentile, run_pipeline};
use support::{amqp_url, bench_binaries, client_paths, connect};
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

/// The confirm window and prefetch of every run: `NNMON_BENCH_WINDOW`, else nnmon's
/// default prefetch ([`WINDOW`]).
fn window() -> u16 {
    std::env::var("NNMON_BENCH_WINDOW")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(WINDOW as u16)
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

/// The raw clients a ceiling is run with, each nnmon build compared with its own.
const RAW_CLIENTS: [&str; 2] = ["lapin", "amqprs"];

/// One iteration: a pipeline run per nnmon binary, then a ceiling run per raw client, then
/// one through nnmon-broker per nnmon binary's client, then a chain per nnmon binary's
/// client (those two when a bench binary of that client is at hand).
struct Round {
    pipelines: Vec<PipelineRun>,
    /// Per raw client.
    ceilings: Vec<Ceiling>,
    /// Per nnmon binary.
    seams: Vec<Option<Ceiling>>,
    /// The chain through nnmon-broker, per nnmon binary.
    chains: Vec<Option<Ceiling>>,
}

/// For each nnmon binary's client, the bench binary that moves a ceiling through
/// nnmon-broker on it: this one for the client it was built with, else one named in
/// `NNMON_BENCH_SEAMS` (`CLIENT=PATH,...`, built by `just bench-binaries`).
fn seam_benches(binaries: &[(String, PathBuf)]) -> Vec<Option<PathBuf>> {
    let others = client_paths("NNMON_BENCH_SEAMS").unwrap_or_default();
    binaries
        .iter()
        .map(|(client, _)| {
            if client == nnmon_broker::CLIENT {
                Some(std::env::current_exe().expect("the bench binary's path"))
            } else {
                others
                    .iter()
                    .find(|(other, _)| other == client)
                    .map(|(_, path)| path.clone())
            }
        })
        .collect()
}

fn pipeline_vs_ceiling(c: &mut Criterion) {
    if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        eprintln!("pipeline bench skipped: NNMON_SKIP_BROKER_TESTS=1");
        return;
    }
    let binaries = bench_binaries();
    let seams = seam_benches(&binaries);
    let this_bench = std::env::current_exe().expect("the bench binary's path");
    let runtime = Runtime::new().expect("tokio runtime");
    let url = amqp_url();
    let items = items();
    let window = window();
    let connection = runtime.block_on(connect(&url));
    let topology = Topology {
        prefetch: window,
        ..Topology::default()
    };
    for (client, binary) in &binaries {
        eprintln!(
            "pipeline: {items} items per run, window and prefetch {window}, nnmon on {client}: {}",
            binary.display()
        );
    }
    eprintln!(
        "ceilings: raw {} (a child process per queue)",
        RAW_CLIENTS.join(", raw ")
    );
    for ((client, _), seam) in binaries.iter().zip(&seams) {
        match seam {
            Some(bench) => eprintln!(
                "ceiling through nnmon-broker on {client}: {}",
                bench.display()
            ),
            None => eprintln!(
                "no ceiling through nnmon-broker on {client}: no bench binary built with it \
                 (NNMON_BENCH_SEAMS; `just bench-clients` builds one)"
            ),
        }
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let rate = |elapsed: Duration| items as f64 / elapsed.as_secs_f64();
    let rounds = RefCell::new(Vec::<Round>::new());
    let mut group = long_group(c, "pipeline", items);
    group.bench_function("items", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (connection, url, rounds, binaries, seams, this_bench) =
                (&connection, &url, &rounds, &binaries, &seams, &this_bench);
            async move {
                // Criterion gets the pipelines' time; the ceilings' go to the summary.
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = rounds.borrow().len() + 1;
                    let mut pipelines = Vec::new();
                    for (client, binary) in binaries {
                        let pipeline =
                            run_pipeline(connection, url, items, topology, binary)
                                .await;
                        let lat = &pipeline.latencies_us;
                        let [features, model, metric, busy] = pipeline.cpu;
                        eprintln!(
                            "round {n}: nnmon on {client} {:.2?} = {:.0} items/s, latency p50 {:.1} ms, \
                             p99 {:.1} ms; CPU s features {features:.2}, model {model:.2}, metric {metric:.2}, \
                             broker {}, rest (broker, bench) {:.2}, machine busy {busy:.2} of {:.2}",
                            pipeline.elapsed,
                            rate(pipeline.elapsed),
                            percentile(lat, 50.0) as f64 / 1000.0,
                            percentile(lat, 99.0) as f64 / 1000.0,
                            broker_or_dash(pipeline.broker),
                            busy - features - model - metric,
                            cores * pipeline.cpu_window.as_secs_f64(),
                        );
                        total += pipeline.elapsed;
                        pipelines.push(pipeline);
                    }
                    let mut ceilings = Vec::new();
                    for raw in RAW_CLIENTS {
                        let mover = Mover::raw(raw).expect("a raw client");
                        let ceiling =
                            run_ceiling(connection, url, items, "classic", window, mover, this_bench)
                                .await;
                        eprintln!(
                            "round {n}: {}",
                            ceiling_line(&format!("raw {raw} ceiling"), &ceiling, items)
                        );
                        ceilings.push(ceiling);
                    }
                    // Through nnmon-broker: the ceiling, then the chain.
                    let mut through_nnmon_broker = [Vec::new(), Vec::new()];
                    for (runs, (mover, what)) in through_nnmon_broker.iter_mut().zip([
                        (Mover::Seam, "ceiling"),
                        (Mover::Chain, "chained"),
                    ]) {
                        for ((client, _), seam) in binaries.iter().zip(seams) {
                            let Some(bench) = seam else {
                                runs.push(None);
                                continue;
                            };
                            let run =
                                run_ceiling(connection, url, items, "classic", window, mover, bench)
                                    .await;
                            let what = format!("nnmon-broker on {client} {what}");
                            eprintln!("round {n}: {}", ceiling_line(&what, &run, items));
                            runs.push(Some(run));
                        }
                    }
                    let [seam_runs, chain_runs] = through_nnmon_broker;
                    rounds.borrow_mut().push(Round {
                        pipelines,
                        ceilings,
                        seams: seam_runs,
                        chains: chain_runs,
                    });
                }
                total
            }
        })
    });
    group.finish();
    runtime.block_on(async {
        let _ = connection.close(200, "done".into()).await;
    });

    let rounds = rounds.into_inner();
    if rounds.is_empty() {
        return; // filtered out
    }
    // Criterion's first call is the warm-up round: left out, unless it is the only one.
    let measured = if rounds.len() > 1 {
        &rounds[1..]
    } else {
        &rounds[..]
    };
    let n = measured.len();
    let warm_up = if n < rounds.len() {
        ", warm-up round excluded"
    } else {
        ""
    };
    let per_item_us = |seconds: f64| seconds * 1e6 / items as f64;
    let per_thousand = |count: u64| count as f64 * 1000.0 / items as f64;
    // Ratios are taken within each round, then their median; "-" where a side is missing.
    let median_of = |values: Vec<Option<f64>>, digits: usize| -> String {
        let values: Option<Vec<f64>> = values.into_iter().collect();
        match values {
            Some(values) if !values.is_empty() => format!("{:.digits$}", median(&values)),
            _ => "-".into(),
        }
    };
    println!(
        "nnmon vs the raw client of the same library, {items} items per run, medians of {n} round(s){warm_up}; \
         items/s timed from the first message published to the last handled; CPU from /proc \
         (nnmon: features + model + metric from features' start to the last row) and getrusage \
         (a ceiling: its three processes during their run, 3 publishes + 3 consumes per item \
         like a pipeline item; raw: the client alone; nnmon-broker: nnmon's AMQP layer on it)"
    );
    println!(
        "| client | nnmon items/s | raw items/s | items/s ratio | latency p50 / p99 ms | \
         nnmon CPU µs/item: features / model / metric = total | raw CPU µs/item | services / raw CPU | \
         nnmon-broker CPU µs/item | nnmon-broker / raw CPU | broker CPU µs/item: pipeline / raw ceiling | \
         broker disk syncs per 1 000 items: pipeline / raw ceiling |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // The second table's rows: the gap between the ceiling and the pipeline, taken apart.
    let mut gap_rows = Vec::new();
    for (index, (client, _)) in binaries.iter().enumerate() {
        let raw = RAW_CLIENTS.iter().position(|r| r == client);
        // A ceiling's time and CPU seconds.
        let raw_of = |round: &Round| raw.map(|raw| round.ceilings[raw].figures());
        let seam_of = |round: &Round| round.seams[index].as_ref().map(Ceiling::figures);
        let services_cpu = |round: &Round| {
            let cpu = &round.pipelines[index].cpu;
            cpu[0] + cpu[1] + cpu[2]
        };
        let each = |f: &dyn Fn(&Round) -> Option<f64>| measured.iter().map(f).collect::<Vec<_>>();
        let pipeline_broker = |round: &Round| round.pipelines[index].broker;
        let raw_broker = |round: &Round| raw.and_then(|raw| round.ceilings[raw].broker);
        let nnmon_rate = each(&|r| Some(rate(r.pipelines[index].elapsed)));
        let service_cpu =
            |i: usize| median_of(each(&|r| Some(per_item_us(r.pipelines[index].cpu[i]))), 1);
        let mut latencies: Vec<u64> = measured
            .iter()
            .flat_map(|r| r.pipelines[index].latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        println!(
            "| {client} | {} | {} | {} | {:.1} / {:.1} | {} / {} / {} = {} | {} | {} | {} | {} | {} / {} | {} / {} |",
            median_of(nnmon_rate, 0),
            median_of(each(&|r| raw_of(r).map(|(elapsed, _)| rate(elapsed))), 0),
            median_of(
                each(&|r| raw_of(r)
                    .map(|(elapsed, _)| rate(r.pipelines[index].elapsed) / rate(elapsed))),
                2
            ),
            percentile(&latencies, 50.0) as f64 / 1000.0,
            percentile(&latencies, 99.0) as f64 / 1000.0,
            service_cpu(0),
            service_cpu(1),
            service_cpu(2),
            median_of(each(&|r| Some(per_item_us(services_cpu(r)))), 1),
            median_of(each(&|r| raw_of(r).map(|(_, cpu)| per_item_us(cpu))), 1),
            median_of(
                each(&|r| raw_of(r).map(|(_, cpu)| services_cpu(r) / cpu)),
                2
            ),
            median_of(each(&|r| seam_of(r).map(|(_, cpu)| per_item_us(cpu))), 1),
            median_of(each(&|r| Some(seam_of(r)?.1 / raw_of(r)?.1)), 2),
            median_of(
                each(&|r| pipeline_broker(r).map(|w| per_item_us(w.cpu_s))),
                1
            ),
            median_of(each(&|r| raw_broker(r).map(|w| per_item_us(w.cpu_s))), 1),
            median_of(each(&|r| pipeline_broker(r)?.syncs.map(per_thousand)), 1),
            median_of(each(&|r| raw_broker(r)?.syncs.map(per_thousand)), 1),
        );
        // The four steps from the raw ceiling to nnmon, each a run of this round: its time
        // and the broker's work, where there is such a run.
        let steps = |round: &Round| {
            let run = |ceiling: Option<Ceiling>| ceiling.map(|c| (c.elapsed, c.broker));
            [
                raw.and_then(|raw| run(Some(round.ceilings[raw]))),
                run(round.seams[index]),
                run(round.chains[index]),
                Some((
                    round.pipelines[index].elapsed,
                    round.pipelines[index].broker,
                )),
            ]
        };
        let step_rates = (0..4)
            .map(|i| median_of(each(&|r| Some(rate(steps(r)[i]?.0))), 0))
            .collect::<Vec<_>>()
            .join(" / ");
        let step_ratios = (1..4)
            .map(|i| {
                median_of(
                    each(&|r| Some(rate(steps(r)[i]?.0) / rate(steps(r)[i - 1]?.0))),
                    2,
                )
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let step_broker = |figure: &dyn Fn(BrokerWork) -> Option<f64>| {
            (0..4)
                .map(|i| median_of(each(&|r| figure(steps(r)[i]?.1?)), 1))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let chain_of = |round: &Round| round.chains[index];
        let chain_stage_cpu = |i: usize| {
            median_of(
                each(&|r| Some(per_item_us(chain_of(r)?.children_cpu_s[i]))),
                1,
            )
        };
        gap_rows.push(format!(
            "| {client} | {step_rates} | {step_ratios} | {} / {} / {} = {} | {} / {} / {} = {} | {} | {} |",
            chain_stage_cpu(0),
            chain_stage_cpu(1),
            chain_stage_cpu(2),
            median_of(each(&|r| chain_of(r).map(|c| per_item_us(c.cpu_s))), 1),
            service_cpu(0),
            service_cpu(1),
            service_cpu(2),
            median_of(each(&|r| Some(per_item_us(services_cpu(r)))), 1),
            step_broker(&|w| Some(per_item_us(w.cpu_s))),
            step_broker(&|w| w.syncs.map(per_thousand)),
        ));
    }
    println!();
    println!(
        "The gap taken apart, step by step: the raw ceiling (three queues side by side, the \
         raw client), the same ceiling through nnmon-broker, the chain (the same queues \
         chained as the services chain them, through nnmon-broker, with none of their work), \
         and nnmon; same rounds, medians, ratios per round"
    );
    println!(
        "| client | items/s: raw ceiling / nnmon-broker ceiling / chain / nnmon | \
         ratio of each step to the one before: nnmon-broker / chain / nnmon | \
         chain CPU µs/item: features / model / metric = total | \
         nnmon CPU µs/item: features / model / metric = total | \
         broker CPU µs/item: raw ceiling / nnmon-broker ceiling / chain / nnmon | \
         broker disk syncs per 1 000 items: raw ceiling / nnmon-broker ceiling / chain / nnmon |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in gap_rows {
        println!("{row}");
    }
}

/// A round's line for a ceiling or chain run called `what`, of `items` items.
fn ceiling_line(what: &str, run: &Ceiling, items: u64) -> String {
    format!(
        "{what} {:.2?} = {:.0} items/s (x3 queues), CPU {:.2} s, broker {}",
        run.elapsed,
        items as f64 / run.elapsed.as_secs_f64(),
        run.cpu_s,
        broker_or_dash(run.broker),
    )
}

/// The broker's CPU seconds to two places and its disk syncs, or "-" for what could not
/// be read (the broker is not a local process, or `rabbitmqctl` does not reach it).
fn broker_or_dash(work: Option<BrokerWork>) -> String {
    let Some(work) = work else {
        return "-".into();
    };
    let syncs = work.syncs.map_or_else(|| "-".into(), |n| n.to_string());
    format!("{:.2} s, {syncs} disk syncs", work.cpu_s)
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
    serve_if_child();
    benches();
    config().configure_from_args().final_summary();
}

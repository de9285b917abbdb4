//! Scaling out, side by side in one run: classic queues on one broker against quorum queues
//! on the 3-node cluster, with 1, 2 and 3 `model` replicas and 1 and 2 metric shards, each
//! next to the broker's own ceiling on the same broker and queue type.
//!
//! Every row runs `NNMON_SCALING_PAIRS` (3) pairs, each a run of the real pipeline
//! (`support::run::run_pipeline`: the replicas and shards, then `features --delay 0 --count
//! N`) followed by a run of the bare broker (`support::ceiling::run_ceiling`: three queues of the
//! same type, one publisher and one consumer each, with nnmon's guarantees, by a raw client
//! of the library nnmon was built on), both timed from
//! the first message published to the last one handled, as in `benches/pipeline.rs`. A row
//! prints the medians of the pairs: pipeline items/s, ceiling items/s, their ratio (median of
//! the per-pair ratios), the p99 of every row's publish → CSV latency, and the CPU seconds
//! per 1 000 items of nnmon's services and of everything else (broker, bench). One
//! warm-up run per broker comes first and is not counted. A last row runs quorum queues
//! with a prefetch and confirm window of 32, RabbitMQ's `quorum_commands_soft_limit`.
//!
//! The single broker is `AMQP_URL` (default: the local one); the cluster is
//! `scripts/cluster`'s, started when it does not run (as root; it stays up afterwards).
//! `NNMON_SCALING_ITEMS` (10 000) items a run.
//!
//! `cargo bench --bench scaling` (the bench builds the `nnmon` binary itself).

mod support;

use std::path::Path;
use std::process::Command;
use support::ceiling::{Mover, run_ceiling, serve_if_child};
use support::run::{Topology, median, percentile, run_pipeline};
use support::{amqp_url, connect, nnmon_binary};
use tokio::runtime::Runtime;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// The cluster's URLs (comma-separated), starting it when needed.
fn cluster_urls() -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster");
    let output = Command::new(&script)
        .arg("start")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} start: {}\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    stdout
        .trim()
        .rsplit_once(": ")
        .map(|(_, urls)| urls.to_owned())
        .ok_or_else(|| format!("no URLs in `{stdout}`"))
}

/// Where a row runs: a name for the table, the services' URL(s), the queue type.
struct Broker {
    name: &'static str,
    urls: String,
    queue_type: &'static str,
}

impl Broker {
    fn first_url(&self) -> &str {
        self.urls.split(',').next().unwrap_or_default()
    }
}

/// A row's figures.
struct Row {
    broker: &'static str,
    queue_type: &'static str,
    topology: Topology,
    pipeline: f64,
    ceiling: f64,
    ratio: f64,
    p99_ms: f64,
    services_cpu: f64,
    rest_cpu: f64,
}

fn main() {
    serve_if_child();
    if std::env::var("NNMON_SKIP_BROKER_TESTS").as_deref() == Ok("1") {
        eprintln!("scaling bench skipped: NNMON_SKIP_BROKER_TESTS=1");
        return;
    }
    // `cargo bench -- FILTER` runs this bench only when FILTER is part of its name.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "scaling".contains(f.as_str())) {
        return;
    }
    let items = setting("NNMON_SCALING_ITEMS", 10_000);
    let pairs = setting("NNMON_SCALING_PAIRS", 3) as usize;
    let cluster = match cluster_urls() {
        Ok(urls) => urls,
        Err(why) => {
            eprintln!("scaling bench skipped: no 3-node cluster ({why})");
            return;
        }
    };
    let brokers = [
        Broker {
            name: "1 node",
            urls: amqp_url(),
            queue_type: "classic",
        },
        Broker {
            name: "3-node cluster",
            urls: cluster,
            queue_type: "quorum",
        },
    ];
    let runtime = Runtime::new().expect("tokio runtime");
    let mut rows = Vec::new();
    for broker in &brokers {
        let connection = runtime.block_on(connect(broker.first_url()));
        let base = Topology {
            queue_type: broker.queue_type,
            ..Topology::default()
        };
        let warm_up = runtime.block_on(run_pipeline(
            &connection,
            &broker.urls,
            items / 5,
            base,
            &nnmon_binary(),
        ));
        eprintln!(
            "{}: warm-up run {:.0} items/s",
            broker.name,
            (items / 5) as f64 / warm_up.elapsed.as_secs_f64()
        );
        let mut shapes = vec![
            base,
            Topology {
                model_replicas: 2,
                ..base
            },
            Topology {
                model_replicas: 3,
                ..base
            },
            Topology { shards: 2, ..base },
        ];
        if broker.queue_type == "quorum" {
            shapes.push(Topology {
                prefetch: 32,
                ..base
            });
        }
        for topology in shapes {
            let row = runtime.block_on(measure(&connection, broker, topology, items, pairs));
            rows.push(row);
        }
        runtime.block_on(async {
            let _ = connection.close(200, "done".into()).await;
        });
    }
    print_table(&rows, items, pairs);
}

async fn measure(
    connection: &lapin::Connection,
    broker: &Broker,
    topology: Topology,
    items: u64,
    pairs: usize,
) -> Row {
    let rate = |elapsed: std::time::Duration| items as f64 / elapsed.as_secs_f64();
    let (mut pipeline, mut ceiling, mut ratios, mut latencies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut services_cpu, mut rest_cpu) = (Vec::new(), Vec::new());
    for pair in 1..=pairs {
        let run = run_pipeline(connection, &broker.urls, items, topology, &nnmon_binary()).await;
        let bare = run_ceiling(
            connection,
            broker.first_url(),
            items,
            topology.queue_type,
            topology.prefetch,
            Mover::raw(nnmon_broker::CLIENT).expect("a raw client of nnmon's library"),
            &std::env::current_exe().expect("the bench binary's path"),
        )
        .await
        .elapsed;
        let [features, models, metrics, busy] = run.cpu;
        let services = features + models + metrics;
        eprintln!(
            "{} {} x{} model, {} shard(s), prefetch {}: pair {pair}: pipeline {:.0} items/s, \
             p99 {:.1} ms; ceiling {:.0} items/s; CPU s: features {features:.2}, model {models:.2}, \
             metric {metrics:.2}, rest {:.2}",
            broker.name,
            topology.queue_type,
            topology.model_replicas,
            topology.shards,
            topology.prefetch,
            rate(run.elapsed),
            percentile(&run.latencies_us, 99.0) as f64 / 1000.0,
            rate(bare),
            busy - services,
        );
        pipeline.push(rate(run.elapsed));
        ceiling.push(rate(bare));
        ratios.push(rate(run.elapsed) / rate(bare));
        services_cpu.push(services * 1000.0 / items as f64);
        rest_cpu.push((busy - services) * 1000.0 / items as f64);
        latencies.extend(run.latencies_us);
    }
    latencies.sort_unstable();
    Row {
        broker: broker.name,
        queue_type: topology.queue_type,
        topology,
        pipeline: median(&pipeline),
        ceiling: median(&ceiling),
        ratio: median(&ratios),
        p99_ms: percentile(&latencies, 99.0) as f64 / 1000.0,
        services_cpu: median(&services_cpu),
        rest_cpu: median(&rest_cpu),
    }
}

fn print_table(rows: &[Row], items: u64, pairs: usize) {
    println!(
        "\nscaling: {items} items a run, medians of {pairs} pipeline/ceiling pairs a row \
         ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| broker | queues | model replicas | metric shards | prefetch | pipeline items/s | p99 latency | ceiling items/s | pipeline / ceiling | CPU s per 1 000 items: nnmon / rest |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0} ms | {:.0} | {:.2} | {:.2} / {:.2} |",
            row.broker,
            row.queue_type,
            row.topology.model_replicas,
            row.topology.shards,
            row.topology.prefetch,
            row.pipeline,
            row.p99_ms,
            row.ceiling,
            row.ratio,
            row.services_cpu,
            row.rest_cpu,
        );
    }
}

//! A sharded pipeline (`--shards 2`): the consistent-hash exchange splits the items between
//! two metric shards, each ID whole in one of them, through a crash of a shard; `plot`
//! shows the union of their logs, gathered over the broker.

mod common;

use common::{MINUTE, Pipeline, api_summary, broker, free_port, rows_of};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use nnmon::services::Topology;
use nnmon_broker::{Broker, BrokerError, BrokerUrls, QueueType, RetryPolicy, message_properties};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const ITEMS: usize = 1200;

/// The IDs of a metric log, each once, and how many rows it has.
fn ids_of(log: &std::path::Path) -> (HashSet<String>, usize) {
    let rows = rows_of(log);
    let ids: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    (ids, rows.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_one_killed_mid_stream_log_every_item_once_and_plot_shows_the_union() {
    let Some(broker) = broker().await else { return };
    broker.enable_consistent_hash().await;
    let mut pipeline = Pipeline::new(&broker, "shards");
    pipeline.use_shards(2);
    pipeline.set_env("NNMON_STATUS_INTERVAL", "1");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    pipeline.start("model", &["model"]);
    pipeline.start("metric-0", &["metric", "--shard", "0"]);
    pipeline.start("metric-1", &["metric", "--shard", "1"]);
    pipeline.start(
        "plot",
        &[
            "plot",
            "--interval",
            "0.2",
            "--http",
            &format!("127.0.0.1:{port}"),
        ],
    );
    pipeline.start_features(ITEMS, "0.004");
    // A quarter of shard 1's share in, kill it without warning, and start it again.
    let shard_1 = pipeline.shard_log(1);
    pipeline
        .eventually(MINUTE, "150 rows in shard 1", || {
            (rows_of(&shard_1).len() >= 150).then_some(())
        })
        .await;
    pipeline.kill("metric-1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pipeline.start("metric-1", &["metric", "--shard", "1"]);
    let status = pipeline.wait("features", 2 * MINUTE).await;
    assert!(status.success(), "features: {status}\n{}", pipeline.logs());

    let confirmed: HashSet<String> = pipeline.confirmed_ids().into_iter().collect();
    assert_eq!(confirmed.len(), ITEMS, "features confirmed every item once");
    let logs = [pipeline.shard_log(0), pipeline.shard_log(1)];
    pipeline
        .eventually(MINUTE, "every item in a shard's log", || {
            let rows: usize = logs.iter().map(|log| rows_of(log).len()).sum();
            (rows >= ITEMS).then_some(())
        })
        .await;
    // Duplicates would arrive after the last new row: give them time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ids_0, rows_0) = ids_of(&logs[0]);
    let (ids_1, rows_1) = ids_of(&logs[1]);
    println!("shard 0: {rows_0} rows, shard 1: {rows_1} rows (shard 1 killed and restarted)");
    assert_eq!(rows_0, ids_0.len(), "a row written twice in shard 0");
    assert_eq!(rows_1, ids_1.len(), "a row written twice in shard 1");
    assert!(rows_0 > 0 && rows_1 > 0, "both shards got items");
    assert!(ids_0.is_disjoint(&ids_1), "an item in both shards");
    let union: HashSet<String> = ids_0.union(&ids_1).cloned().collect();
    assert_eq!(
        union, confirmed,
        "the shards' logs are not the confirmed items"
    );

    // The view of all shards: plot's summary and its combined log hold the union, once.
    let summary = pipeline
        .eventually(MINUTE, "plot showing every row", || {
            api_summary(&base).filter(|s| s["rows"].as_u64() == Some(ITEMS as u64))
        })
        .await;
    println!(
        "plot: {} rows, shards {}",
        summary["rows"], summary["shards"]
    );
    assert_eq!(summary["shards"]["shards"], 2);
    assert_eq!(summary["shards"]["reported"], 2);
    assert_eq!(
        summary["shards"]["rows"],
        serde_json::json!([rows_0, rows_1]),
        "rows per shard"
    );
    let (combined, combined_rows) = ids_of(&pipeline.log_dir().join("all_shards_log.csv"));
    assert_eq!(combined_rows, ITEMS, "the combined log has a row twice");
    assert_eq!(combined, union);
    // Each shard's status (the join's health) reaches the view too, merged.
    let summary = pipeline
        .eventually(MINUTE, "both shards' status in the view", || {
            api_summary(&base).filter(|s| s["shards"]["status"] == serde_json::json!([true, true]))
        })
        .await;
    assert_eq!(summary["metric"]["orphans"], 0, "{}", summary["metric"]);
    assert_eq!(
        summary["metric"]["dead_lettered"], 0,
        "{}",
        summary["metric"]
    );
    // No copy arrives late either.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let late = api_summary(&base).expect("plot answers");
    assert_eq!(late["rows"], summary["rows"]);
}

/// Makes `pipeline` one of two shards and declares its topology as a service would,
/// returning it and the broker connection that declared it.
async fn declare_two_shards(pipeline: &mut Pipeline) -> (Topology, Broker) {
    pipeline.use_shards(2);
    let topology = Topology::new(&pipeline.prefix, 2);
    let urls: BrokerUrls = pipeline.url.parse().expect("AMQP_URL");
    let cancel = CancellationToken::new();
    let broker = Broker::connect(&urls, 0, "nnmon-test", RetryPolicy::default(), &cancel)
        .await
        .expect("connect")
        .expect("not cancelled");
    topology
        .declare(&broker, QueueType::default())
        .await
        .expect("declare");
    (topology, broker)
}

/// Takes every message of `queue`, returning their `message_id`s.
async fn take_ids(connection: &lapin::Connection, queue: &str) -> HashSet<String> {
    let channel = connection.create_channel().await.expect("channel");
    let mut ids = HashSet::new();
    let options = BasicGetOptions { no_ack: true };
    while let Some(message) = channel
        .basic_get(queue.into(), options)
        .await
        .expect("basic.get")
    {
        let id = message.delivery.properties.message_id().clone();
        ids.insert(id.expect("a message ID").to_string());
    }
    ids
}

/// Publishes `side`'s half of each of `count` fresh IDs through the router, one at a
/// time; returns the IDs confirmed and those returned as unroutable.
async fn publish_halves(
    broker: &Broker,
    topology: &Topology,
    side: &str,
    ids: &[String],
) -> (HashSet<String>, HashSet<String>) {
    let (mut routed, mut returned) = (HashSet::new(), HashSet::new());
    for id in ids {
        let mut publisher = broker.publisher::<()>(1).await.expect("publisher");
        topology
            .publish_half(&mut publisher, side, b"{}", message_properties(id), ())
            .await
            .expect("publish");
        match publisher.confirmed().await {
            Ok(()) => routed.insert(id.clone()),
            Err(BrokerError::Returned) => returned.insert(id.clone()),
            Err(other) => panic!("publishing {id}: {other}"),
        };
    }
    (routed, returned)
}

fn fresh_ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_shard_queue_returns_its_halves_and_both_halves_keep_one_shard() {
    let Some(test_broker) = broker().await else {
        return;
    };
    test_broker.enable_consistent_hash().await;
    let mut pipeline = Pipeline::new(&test_broker, "shardroute");
    let (topology, broker) = declare_two_shards(&mut pipeline).await;
    let shards = pipeline.shards.clone().expect("sharded");
    let connection = pipeline.connect().await;
    let (y_true, y_pred) = (&topology.queues.y_true, &topology.queues.y_pred);

    // Both halves of every ID land in the same shard, and both shards get some.
    let ids = fresh_ids(100);
    for side in [y_true, y_pred] {
        let (_, returned) = publish_halves(&broker, &topology, side, &ids).await;
        assert!(returned.is_empty(), "{returned:?}");
    }
    let mut before = Vec::new();
    for shard in 0..2 {
        let truths = take_ids(&connection, &shards.y_true(shard)).await;
        let predictions = take_ids(&connection, &shards.y_pred(shard)).await;
        assert_eq!(truths, predictions, "shard {shard}");
        assert!(!truths.is_empty(), "shard {shard} got nothing");
        before.push(truths);
    }
    println!(
        "100 IDs: {} in shard 0, {} in shard 1",
        before[0].len(),
        before[1].len()
    );

    // With shard 1's prediction queue deleted, its predictions come back (mandatory) and
    // shard 0's are still confirmed; the truths of shard 1's IDs still go to shard 1.
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(
            shards.y_pred(1).as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the queue");
    let ids = fresh_ids(100);
    let (routed, returned) = publish_halves(&broker, &topology, y_pred, &ids).await;
    println!(
        "queue {} deleted: {} predictions confirmed, {} returned",
        shards.y_pred(1),
        routed.len(),
        returned.len()
    );
    assert!(!routed.is_empty() && !returned.is_empty());
    assert_eq!(take_ids(&connection, &shards.y_pred(0)).await, routed);
    let (_, none) = publish_halves(&broker, &topology, y_true, &ids).await;
    assert!(none.is_empty());
    assert_eq!(take_ids(&connection, &shards.y_true(0)).await, routed);
    assert_eq!(take_ids(&connection, &shards.y_true(1)).await, returned);

    // Declared again (as a service does on reconnecting), the queue is back in shard 1:
    // the router's ring did not move, so halves still meet.
    topology
        .declare(&broker, QueueType::default())
        .await
        .expect("declare again");
    let ids = fresh_ids(100);
    for side in [y_true, y_pred] {
        let (_, returned) = publish_halves(&broker, &topology, side, &ids).await;
        assert!(returned.is_empty(), "{returned:?}");
    }
    for shard in 0..2 {
        let truths = take_ids(&connection, &shards.y_true(shard)).await;
        let predictions = take_ids(&connection, &shards.y_pred(shard)).await;
        assert_eq!(
            truths, predictions,
            "shard {shard} after the queue came back"
        );
    }
    broker.close().await;
}

/// A service started with another `--shards` than the pipeline's topology is refused at
/// once, with a message naming the exchange and the difference, instead of binding shards
/// that nobody consumes (the router carries the count in its `alternate-exchange`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_another_shard_count_exits_with_a_clear_error() {
    let Some(test_broker) = broker().await else {
        return;
    };
    test_broker.enable_consistent_hash().await;
    let mut pipeline = Pipeline::new(&test_broker, "shardcount");
    let (topology, broker) = declare_two_shards(&mut pipeline).await;
    // The same count declares again without complaint.
    topology
        .declare(&broker, QueueType::default())
        .await
        .expect("declare again");

    let status = pipeline
        .run(
            "metric-of-3",
            &["metric", "--shards", "3", "--shard", "0"],
            MINUTE,
        )
        .await;
    let logs = pipeline.logs();
    assert!(!status.success(), "metric --shards 3 ran: {status}\n{logs}");
    let router = &pipeline.shards.as_ref().expect("sharded").router;
    let expected = format!("exchange {router} already exists on the broker with other properties");
    assert!(logs.contains(&expected), "{logs}");
    assert!(
        logs.contains("inequivalent arg 'alternate-exchange'"),
        "{logs}"
    );
    let first_line = logs
        .lines()
        .find(|line| line.contains(&expected))
        .unwrap_or_default();
    println!("metric --shards 3 on a 2-shard pipeline: {first_line}");
}

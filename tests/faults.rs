//! Nothing lost, nothing duplicated: every item `features` got confirmed ends up as exactly
//! one row, through crashes, poison messages, orphans and shutdowns.

mod common;

use common::{
    MINUTE, Pipeline, assert_exactly_the_confirmed_items, broker, declare_durable, publish_many,
    stream_through,
};
use nnmon_broker::{BrokerError, QueueType, message_properties};
use std::collections::HashSet;
use std::time::Duration;

/// SIGKILLs `service` a quarter into the stream and starts it again.
async fn kill_9_and_restart(service: &'static str) {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, &format!("kill{service}"));
    stream_through(&mut pipeline, 800, async |p: &mut Pipeline| {
        p.kill(service);
        tokio::time::sleep(Duration::from_millis(500)).await;
        p.start(service, &[service]);
    })
    .await;
    assert!(
        pipeline.is_running("metric") && pipeline.is_running("model"),
        "{}",
        pipeline.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_metric_mid_stream_loses_and_duplicates_nothing() {
    kill_9_and_restart("metric").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_model_mid_stream_loses_and_duplicates_nothing() {
    kill_9_and_restart("model").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_and_exits_0() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "sigterm");
    stream_through(&mut pipeline, 800, async |p: &mut Pipeline| {
        for service in ["model", "metric"] {
            let status = p.stop(service, "TERM", Duration::from_secs(25)).await;
            assert_eq!(
                status.code(),
                Some(0),
                "{service} after SIGTERM\n{}",
                p.logs()
            );
            p.start(service, &[service]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_features_stops_after_confirming_what_it_sent() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "termfeatures");
    pipeline.start("model", &["model"]);
    pipeline.start("metric", &["metric"]);
    let ids = pipeline.confirmed_ids_path();
    pipeline.start(
        "features",
        &[
            "features",
            "--delay",
            "0.004",
            "--confirmed-ids",
            ids.to_str().expect("utf-8 path"),
        ],
    );
    pipeline.wait_for_rows(100, MINUTE).await;
    let status = pipeline
        .stop("features", "TERM", Duration::from_secs(25))
        .await;
    assert_eq!(status.code(), Some(0), "{}", pipeline.logs());
    let confirmed = pipeline.confirmed_ids().len();
    assert!(confirmed >= 100);
    assert_exactly_the_confirmed_items(&mut pipeline, confirmed).await;
}

/// Bodies that must each be dead-lettered, with the reason the header must give.
fn poison(queue_takes_features: bool) -> Vec<(Vec<u8>, &'static str)> {
    let good_features = "[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]";
    let body = if queue_takes_features {
        good_features
    } else {
        "1.5"
    };
    vec![
        (b"not json at all".to_vec(), "not_json"),
        (br#"{"id": "a", "body": NaN}"#.to_vec(), "not_json"),
        (
            format!(r#"{{"id": "", "body": {body}}}"#).into_bytes(),
            "empty_id",
        ),
        (format!(r#"{{"body": {body}}}"#).into_bytes(), "wrong_shape"),
        (
            br#"{"id": "x", "body": {"nested": true}}"#.to_vec(),
            "wrong_shape",
        ),
        (
            br#"{"id": "x", "body": [1, 2, 3]}"#.to_vec(),
            if queue_takes_features {
                "feature_count"
            } else {
                "wrong_shape"
            },
        ),
        (vec![b' '; 100 * 1024], "too_large"),
        (
            format!(r#"{{"id": "{}", "body": {body}}}"#, "i".repeat(300)).into_bytes(),
            "id_too_long",
        ),
        (
            format!(r#"{{"id": "a\nb", "body": {body}}}"#).into_bytes(),
            "bad_id",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_flood_is_dead_lettered_and_changes_nothing_else() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "poison");
    let connection = pipeline.connect().await;
    // Declared as nnmon declares them, so the flood waits in durable queues.
    for queue in pipeline.queues.all() {
        declare_durable(&connection, queue).await;
    }
    const FLOOD: usize = 10_000;
    let mut flooded = 0;
    for (queue, takes_features) in [
        (&pipeline.queues.features, true),
        (&pipeline.queues.y_true, false),
        (&pipeline.queues.y_pred, false),
    ] {
        let kinds = poison(takes_features);
        let bodies = (0..FLOOD).map(|i| kinds[i % kinds.len()].0.clone());
        publish_many(&connection, queue, bodies).await;
        flooded += FLOOD;
    }
    stream_through(&mut pipeline, 400, async |_: &mut Pipeline| {}).await;
    assert!(
        pipeline.is_running("metric") && pipeline.is_running("model"),
        "{}",
        pipeline.logs()
    );

    // Every poison message is in the dead-letter queue, once, with its reason.
    let deadline = std::time::Instant::now() + MINUTE;
    while (pipeline.queue_depth(&pipeline.queues.dead_letter).await as usize) < flooded {
        assert!(
            std::time::Instant::now() < deadline,
            "dead-letter queue short\n{}",
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        pipeline.queue_depth(&pipeline.queues.dead_letter).await as usize,
        flooded
    );
    let channel = connection.create_channel().await.expect("channel");
    let sample = channel
        .basic_get(
            pipeline.queues.dead_letter.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .expect("get")
        .expect("a dead letter");
    let headers = sample
        .delivery
        .properties
        .headers()
        .clone()
        .expect("headers");
    let reasons: Vec<&str> = poison(true)
        .iter()
        .chain(poison(false).iter())
        .map(|(_, r)| *r)
        .collect();
    let reason = headers
        .inner()
        .get("x-nnmon-reject-reason")
        .and_then(|v| v.as_long_string())
        .map(|s| s.to_string())
        .expect("reason header");
    assert!(reasons.contains(&reason.as_str()), "{reason}");
    // Logged once per reason and service, not once per message.
    let warnings = pipeline.logs().matches("dead-lettering").count();
    assert!(warnings <= 16, "{warnings} poison warnings logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_given_up_after_the_grace_and_memory_stays_bounded() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "orphans");
    pipeline.start("metric", &["metric", "--join-ttl", "1"]);
    pipeline.start("model", &["model"]);
    // A steady stream, so that the prediction side keeps moving on.
    pipeline.start("features", &["features", "--delay", "0.01"]);
    pipeline.wait_for_rows(50, MINUTE).await;
    let connection = pipeline.connect().await;

    // Two waves of truths whose predictions never come: one with nnmon's UUIDv7 IDs
    // (given up once later predictions are a second past them), one with IDs that carry
    // no time (given up after a second by the wall clock).
    let mut orphan_ids = HashSet::new();
    let mut rss_after_wave = Vec::new();
    for wave in 0..2 {
        let ids: Vec<String> = (0..20_000)
            .map(|n| match wave {
                0 => uuid::Uuid::now_v7().to_string(),
                _ => format!("timeless-{n}"),
            })
            .collect();
        let bodies = ids
            .iter()
            .map(|id| format!(r#"{{"id": "{id}", "body": 100.0}}"#).into_bytes());
        publish_many(&connection, &pipeline.queues.y_true, bodies).await;
        orphan_ids.extend(ids);
        wait_for_orphans(&pipeline, orphan_ids.len()).await;
        rss_after_wave.push(pipeline.rss_kib("metric"));
    }
    let text =
        std::fs::read_to_string(pipeline.log_dir().join("orphans.csv")).expect("orphans.csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,side,value,arrived_ms,evicted_ms,cause")
    );
    let listed: HashSet<String> = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(
                (fields[1], fields[2], fields[5]),
                ("y_true", "100", "expired"),
                "{line}"
            );
            fields[0].to_owned()
        })
        .collect();
    assert_eq!(listed, orphan_ids);
    let rows = pipeline.rows();
    assert!(
        rows.iter().all(|row| !orphan_ids.contains(&row.id)),
        "orphans must not become rows"
    );
    // The second wave is absorbed in the memory the first one left: the join does not grow.
    let growth_mib = rss_after_wave[1].saturating_sub(rss_after_wave[0]) / 1024;
    assert!(
        growth_mib < 16,
        "metric grew by {growth_mib} MiB between waves: {rss_after_wave:?} KiB"
    );

    // A late partner is reported as an orphan, not a row.
    let late = orphan_ids.iter().next().expect("an orphan").clone();
    publish_many(
        &connection,
        &pipeline.queues.y_pred,
        [format!(r#"{{"id": "{late}", "body": 90.0}}"#).into_bytes()],
    )
    .await;
    wait_for_orphans(&pipeline, orphan_ids.len() + 1).await;
    let text =
        std::fs::read_to_string(pipeline.log_dir().join("orphans.csv")).expect("orphans.csv");
    assert!(
        text.lines().any(|l| l.starts_with(&late)
            && l.ends_with("late_partner")
            && l.contains(",y_pred,90,")),
        "late partner not listed"
    );
    assert!(pipeline.rows().iter().all(|row| row.id != late));
    assert!(pipeline.is_running("metric"), "{}", pipeline.logs());
}

async fn wait_for_orphans(pipeline: &Pipeline, count: usize) {
    let path = pipeline.log_dir().join("orphans.csv");
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let lines = std::fs::read_to_string(&path)
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0);
        if lines >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{lines} of {count} orphans\n{}",
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broker's reply code in `error`, if the broker closed a channel or the connection.
fn reply_code(error: &BrokerError) -> Option<u16> {
    match error {
        BrokerError::Amqp(error) => error.reply().map(|(code, _)| code),
        _ => None,
    }
}

/// A publish the broker refuses (404: no such exchange) closes its own channel only: the
/// next publish on that channel fails without reaching the broker (on a closed channel
/// RabbitMQ would answer 504 CHANNEL_ERROR and close the whole connection, every consumer
/// on it too), and the connection's other channels go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_fails_its_channel_and_not_the_connection() {
    let Some(broker) = broker().await else { return };
    let pipeline = Pipeline::new(&broker, "refusedpublish");
    let connection = pipeline.nnmon_broker().await;
    let queue = &pipeline.queues.features;
    connection
        .declare_queue(queue, QueueType::default())
        .await
        .expect("declare");
    let mut inbox = connection.inbox(queue, 10).await.expect("inbox");
    let missing = format!("{}missing", pipeline.prefix);
    let mut refused = connection.publisher::<()>(10).await.expect("publisher");
    refused
        .publish_to(&missing, "", b"{}", message_properties("refused-1"), ())
        .await
        .expect("sent");
    let error = refused.confirmed().await.expect_err("no such exchange");
    assert_eq!(reply_code(&error), Some(404), "{error:?}");
    let again = refused
        .publish_to(&missing, "", b"{}", message_properties("refused-2"), ())
        .await
        .expect_err("its channel is closed");
    // amqprs's publisher reports the reply that closed its channel; lapin says the channel
    // is closing (the reply came with the confirm above).
    if nnmon_broker::CLIENT == "amqprs" {
        assert_eq!(reply_code(&again), Some(404), "{again:?}");
    }
    // The connection survived: a new publisher and the inbox on it still work.
    let mut publisher = connection
        .publisher::<()>(10)
        .await
        .expect("a second publisher on the same connection");
    publisher
        .publish(queue, b"{}", message_properties("kept"), ())
        .await
        .expect("publish");
    publisher.drain().await.expect("confirmed");
    let batch = tokio::time::timeout(MINUTE, inbox.next_batch())
        .await
        .expect("a delivery within a minute")
        .expect("the inbox's channel is still open");
    assert_eq!(batch[0].properties.message_id.as_deref(), Some("kept"));
    inbox.ack(&batch).await.expect("ack");
    connection.close().await;
}
